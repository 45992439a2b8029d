"""LLM concept unlearning (TOFU protocol): the LM task.

The roles every task has, under the same names as in :mod:`cure_jax.classification`:
``defaults`` (the complete config, :func:`cure_jax.lm.defaults.get_config`), ``validate``
(its checks), ``experiment`` (the modes behind ``experiments.main``), ``protocol`` (the QA
splits and the fine-tuned original and retrain models), ``train`` (fine-tuning),
``unlearn`` (the unlearning loop) and ``unlearn_batches`` (what each of its steps reads),
``evaluate`` and ``report``. Its own: ``setup`` (the model side of a run), ``exports``,
``ou_files`` (open-unlearning's result files). Checkpoint I/O is :mod:`cure_jax.weights`.
Configs: ``configs/authors.py`` (a byte-level LM from scratch), ``configs/authors_smollm2.py``
(the pretrained SmolLM2-135M-Instruct) and ``configs/tofu.py`` (real TOFU files on any
checkpoint :mod:`cure_jax.weights.pretrained` loads).
"""
