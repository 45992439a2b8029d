"""The task-agnostic unlearning core: pure functions on logits and parameter pytrees.

``losses`` (objectives and the token view), ``batch`` (what a direction reads),
``objectives`` (per-example forget losses), ``directions`` / ``peers`` (update directions),
``methods`` (the one registry), ``hparams`` (every method hyperparameter), ``grogu`` /
``grogu_fast`` (+ ``ghost``, ``layer_calls``, ``grogu_checks``; the reference and the fast
GROGU direction and the one implementation chooser), ``saliency`` (SalUn's mask),
``step`` (the one step builder) and ``user_step`` (:func:`cure_jax.make_unlearning_step`).
Nothing here reads a config or knows the task.
"""
