"""Content digests of training data and weights, for model fingerprints.

A model trained from files is keyed by what the files hold, not where they are: the same
bytes in another folder give the same digest (no retraining), changed bytes at the same path
a new one (a new model beside the old). Hashing a file's bytes is done once per machine: the
result is kept in ``<cache>/file_digests.json`` under the file's real path, size and
modification time (``CURE_JAX_CACHE``, default ``~/.cache/cure_jax``), so a rerun costs a
``stat`` per file.
"""
import hashlib
import json
import os
import tempfile
import threading

import numpy as np
from absl import logging

_CHUNK = 1 << 22
_LOCK = threading.Lock()
_MEMORY = {}          # file key -> sha256 hex, this process
_CACHE_NAME = 'file_digests.json'


def cache_dir():
  """Where cure-jax keeps machine-wide caches (digests, imported checkpoints)."""
  return os.environ.get('CURE_JAX_CACHE') or os.path.join(os.path.expanduser('~'), '.cache',
                                                          'cure_jax')


def _key(path):
  stat = os.stat(path)
  return f'{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}'


def _load_cache():
  try:
    with open(os.path.join(cache_dir(), _CACHE_NAME)) as f:
      stored = json.load(f)
    return stored if isinstance(stored, dict) else {}
  except (OSError, ValueError):
    return {}   # absent, unreadable or corrupt: hash again (the cache only saves time)


def _save_cache(new):
  """Adds ``new`` to the machine-wide cache (atomically; a failure only costs a rehash)."""
  directory = cache_dir()
  try:
    os.makedirs(directory, exist_ok=True)
    stored = _load_cache()
    stored.update(new)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.digests-')
    with os.fdopen(fd, 'w') as f:
      json.dump(stored, f)
    os.replace(tmp, os.path.join(directory, _CACHE_NAME))
  except OSError as err:
    logging.info('file digests not cached in %s: %s', directory, err)


def sha256_file(path):
  """SHA-256 hex of the bytes of ``path``, read in chunks (not cached: callers that verify
  bytes need them read)."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(_CHUNK), b''):
      h.update(block)
  return h.hexdigest()


def file_digest(path):
  """SHA-256 of the bytes of ``path`` (cached by real path, size and mtime)."""
  key = _key(path)
  with _LOCK:
    if key not in _MEMORY:
      _MEMORY.update(_load_cache())
    if key in _MEMORY:
      return _MEMORY[key]
  value = sha256_file(path)
  with _LOCK:
    _MEMORY[key] = value
  _save_cache({key: value})
  return value


def files_digest(paths, length=16, names=None):
  """One digest of several files: their names (not folders; ``names`` instead of the base
  names, e.g. so a renamed copy digests the same), sizes and bytes."""
  names = [os.path.basename(p) for p in paths] if names is None else list(names)
  h = hashlib.sha256()
  for name, path in sorted(zip(names, paths)):
    h.update(f'{name}|{os.path.getsize(path)}|{file_digest(path)}\n'.encode())
  return h.hexdigest()[:length]


def bytes_digest(named_bytes, length=16):
  """One digest of in-memory files ``{name: bytes}`` (e.g. members read from a tarball)."""
  h = hashlib.sha256()
  for name in sorted(named_bytes):
    data = named_bytes[name]
    h.update(f'{name}|{len(data)}|{hashlib.sha256(data).hexdigest()}\n'.encode())
  return h.hexdigest()[:length]


def arrays_digest(*arrays, length=16):
  """One digest of arrays: dtypes, shapes and values."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f'{a.dtype.str}|{a.shape}\n'.encode())
    h.update(a.tobytes())
  return h.hexdigest()[:length]
