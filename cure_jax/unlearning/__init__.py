"""The task-agnostic unlearning core: pure functions on logits and parameter pytrees.

``losses`` (objectives and the token view), ``batch`` (what a direction reads),
``objectives`` (per-example forget losses), ``directions`` (update directions), ``methods``
(the one registry), ``hparams`` (every method hyperparameter and the one resolver of a run's
effective values), ``schedule`` (per-epoch passes), ``grogu/`` (the reference and the fast
GROGU direction and the one implementation chooser), ``baselines/`` (SalUn, SCRUB, DPO,
RMU), ``step`` (the one step builder) and ``user_step`` (:func:`cure_jax.make_unlearning_step`).
These read no config and know no task; ``plan`` turns a config's unlearning sections into
runs (each a method and its effective hyperparameters, by ``hparams.resolve``, the one
resolver the public step uses too).
"""
