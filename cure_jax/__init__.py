"""cure-jax: CURE machine unlearning (GHR, GSR, GROGU) and baselines in JAX/Flax.

``cure_jax.make_unlearning_step`` is imported on first use, so ``import cure_jax.x`` stays
as light as before.
"""

__all__ = ['make_unlearning_step']


def __getattr__(name):
  if name == 'make_unlearning_step':
    from cure_jax.unlearning_step import make_unlearning_step
    return make_unlearning_step
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
