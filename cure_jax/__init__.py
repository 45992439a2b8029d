"""cure-jax: CURE machine unlearning (GHR, GSR, GROGU) and baselines in JAX/Flax.

``cure_jax.make_unlearning_step`` and the core modules ``cure_jax.unlearning.losses`` /
``cure_jax.unlearning.grogu`` (which live in :mod:`cure_jax.unlearning`) are imported on first use,
so ``import cure_jax.x`` stays light.
"""
import importlib

__all__ = ['make_unlearning_step', 'losses', 'grogu']


def __getattr__(name):
  if name == 'make_unlearning_step':
    from cure_jax.unlearning.user_step import make_unlearning_step
    return make_unlearning_step
  if name in ('losses', 'grogu'):
    return importlib.import_module(f'cure_jax.unlearning.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
