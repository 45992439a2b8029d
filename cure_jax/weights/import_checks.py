"""Checks on imported weights: every tensor finite.

A NaN/Inf in a checkpoint (a bad download, a broken conversion, 0xFF bytes in GGUF data)
would otherwise load silently and surface only as NaN losses much later. Each tensor is
checked once, where an importer turns it into an array, in bounded chunks so that the check
adds no second copy of a large embedding matrix.
"""
import numpy as np

_CHUNK_VALUES = 1 << 22   # values per isfinite pass: a 16 MiB float32 mask at most
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# What to do about a non-finite tensor in a checkpoint's own files.
SOURCE_FIX = 're-download or re-convert the checkpoint.'


class NonFiniteWeightsError(ValueError):
  """A tensor of an imported checkpoint holds NaN or Inf values."""


def _bad_count(chunk):
  if chunk.dtype.itemsize > 4 and chunk.dtype.kind == 'f':
    # float64 values beyond float32's range become Inf when the importer casts them.
    return int(chunk.size - np.count_nonzero(np.abs(chunk) <= _FLOAT32_MAX))
  return int(chunk.size - np.count_nonzero(np.isfinite(chunk)))


def check_finite(array, where, fix):
  """Raises :class:`NonFiniteWeightsError` ``'{where}: ... NaN/Inf ...; {fix}'`` if needed.

  Integer and boolean arrays pass unchecked (they cannot hold NaN); bfloat16 (ml_dtypes)
  is checked like the numpy float types.
  """
  array = np.asarray(array)
  if array.dtype.kind in 'biu':
    return array
  flat = array.reshape(-1)
  bad = sum(_bad_count(flat[i:i + _CHUNK_VALUES]) for i in range(0, flat.size, _CHUNK_VALUES))
  if bad:
    raise NonFiniteWeightsError(f'{where}: {bad} of {flat.size} values are NaN/Inf (or beyond '
                                f'float32 range); {fix}')
  return array
