"""cure-jax: CURE machine unlearning (GHR, GSR, GROGU) and baselines in JAX/Flax.

The public Python API, importable from here:

* :func:`make_unlearning_step` (and the :class:`UnlearningStep` it returns): a jitted
  unlearning step of any registry method for the user's own Flax model;
* :mod:`losses`: the per-example objectives on logits (GHR, GSR, ...);
* :mod:`grogu`: GROGU's projected direction over a batch;
* ``__version__``: the installed distribution's version.
"""
from importlib import metadata as _metadata

from cure_jax.unlearning import grogu, losses
from cure_jax.unlearning.user_step import UnlearningStep, make_unlearning_step

try:
  __version__ = _metadata.version('cure-jax')
except _metadata.PackageNotFoundError:   # a source tree on sys.path, not installed
  __version__ = '0+unknown'

__all__ = ['UnlearningStep', '__version__', 'grogu', 'losses', 'make_unlearning_step']
