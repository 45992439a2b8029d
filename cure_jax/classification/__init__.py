"""The classification task: class unlearning on image classifiers under the paper's protocol.

The roles every task has, under the same names as in :mod:`cure_jax.lm`: ``defaults`` (the
complete config), ``validate`` (its checks), ``experiment`` (the modes behind
``experiments.main``), ``protocol`` (the models a sweep needs and the sweep: scenarios ×
model seeds × methods × runs), ``train`` (original and retrain models), ``unlearn`` (an
unlearning run as one compiled program) and ``unlearn_batches`` (what each of its steps
reads), ``evaluate`` and ``report`` (what a run writes). Its own: ``tuning``, ``claims``,
``tables`` / ``plots``, ``model_groups``, ``sizes``.
"""
