"""open-unlearning's recipe switches and the values that keep cure-jax's own behaviour.

Each switch (``config.finetune`` / ``config.unlearn``; ``cure_jax.lm.defaults`` documents
them, ``configs/tofu.py`` sets open-unlearning's values) was added after models had been
fine-tuned and runs published. At these values a setting behaves as before the switch
existed, so settings written without it (an old run record, a hand-built namespace) read
them, and a fine-tuned model keyed before the switches keeps its fingerprint
(:mod:`cure_jax.infra.fingerprint`). One table serves both: they cannot drift apart.
"""

FINETUNE = {'lr_schedule': 'cosine', 'drop_last': True, 'decay_norms': True, 'adam_b2': 0.98}
UNLEARN = {'lr_schedule': 'constant', 'drop_last': True, 'loss_mean': 'sequence',
           'undial_positions': 'answer', 'decay_norms': True, 'grad_clip': 0.0}


def reader(defaults):
  """``recipe(cfg, key)``: ``cfg.<key>``, or its value in ``defaults`` where absent."""
  def recipe(cfg, key):
    return getattr(cfg, key, defaults[key])
  return recipe
