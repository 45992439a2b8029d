"""Orbax checkpoints of small explicit train-state pytrees.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save never leaves a checkpoint that looks finished. A finished checkpoint can
still be damaged later (a flipped bit, a truncated copy): every restore is checked against
the target the config implies (tree, shapes, dtypes) and for non-finite values, because a
raw-encoded chunk with flipped bytes decodes without any error. A SHA-256 of the state,
stored in the step's orbax metadata (written atomically with it), catches flipped bytes that
still decode to finite numbers.
"""
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cure_jax.infra import console


class CheckpointError(RuntimeError):
  pass


def manager(directory, max_to_keep=2):
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


_DIGEST_KEY = 'cure_jax_sha256'


def _host_leaves(state):
  """[(path, numpy array)] of every leaf; None where some array spans other hosts."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  if not all(getattr(x, 'is_fully_addressable', True) for _, x in leaves):
    return None
  return [(path, np.asarray(x)) for (path, _), x in
          zip(leaves, jax.device_get([x for _, x in leaves]))]


def digest(state, host_leaves=None):
  """SHA-256 over every leaf's path, dtype, shape and bytes; None where arrays span hosts."""
  host_leaves = _host_leaves(state) if host_leaves is None else host_leaves
  if host_leaves is None:
    return None
  h = hashlib.sha256()
  for path, x in host_leaves:
    x = np.ascontiguousarray(x)
    h.update(f'{_path_name(path)}|{x.dtype}|{x.shape}|'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


def save(mgr, step, state):
  value = digest(state)
  mgr.save(step, args=ocp.args.StandardSave(state),
           custom_metadata={} if value is None else {_DIGEST_KEY: value})
  mgr.wait_until_finished()


def _stored_digest(mgr, step):
  try:
    return (mgr.metadata(step).custom_metadata or {}).get(_DIGEST_KEY)
  except Exception:  # no or unreadable step metadata: the other checks still run
    return None


def _first_line(error, limit=160):
  """An orbax/TensorStore error without its multi-page spec dump."""
  text = str(error).split('See full TensorStore details')[0].strip() or type(error).__name__
  text = text.splitlines()[0].rstrip(' .:')
  return text if len(text) <= limit else text[:limit] + '...'


def _path_name(path):
  return '.'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in path)


def check_restored(restored, target, where):
  """Raises :class:`CheckpointError` unless ``restored`` matches ``target`` and is finite.

  Returns the host copies of the leaves (None on multi-host) for the digest check.
  """
  got, got_def = jax.tree_util.tree_flatten_with_path(restored)
  want, want_def = jax.tree_util.tree_flatten_with_path(target)
  if got_def != want_def:
    raise CheckpointError(f'Checkpoint {where} holds another tree than the model the config '
                          'implies (written by a different model/config); delete it or use '
                          'another workdir.')
  for (path, x), (_, y) in zip(got, want):
    if np.shape(x) != np.shape(y) or jnp.result_type(x) != jnp.result_type(y):
      raise CheckpointError(
          f'Checkpoint {where}: {_path_name(path)} is {jnp.result_type(x)}{list(np.shape(x))} '
          f'but the config implies {jnp.result_type(y)}{list(np.shape(y))}; it was written by '
          'a different model/config: delete it or use another workdir.')
  host = full = _host_leaves(restored)
  if host is None:  # multi-host: each process checks the shards it holds
    host = [(path, np.concatenate([np.ravel(s.data) for s in x.addressable_shards]))
            for path, x in got]
  bad = [_path_name(path) for path, x in host
         if jnp.issubdtype(x.dtype, jnp.inexact) and not np.isfinite(x).all()]
  if bad:
    raise CheckpointError(
        f'Checkpoint {where} is corrupt: non-finite values in {len(bad)} array(s), e.g. '
        f'{bad[0]}; delete {where} (training resumes from an earlier step or starts again).')
  return full


def _check_digest(mgr, step, restored, where, host_leaves):
  stored = _stored_digest(mgr, step)
  if stored is not None and host_leaves is not None and digest(
      restored, host_leaves) != stored:
    raise CheckpointError(
        f'Checkpoint {where} is corrupt: its contents do not match the SHA-256 written with '
        f'it; delete {where} (training resumes from an earlier step or starts again).')


def _check_stored_layout(mgr, step, target, where):
  """Shapes/dtypes as stored (orbax would cast a float32 checkpoint into a bfloat16 target)."""
  try:
    item = epath.Path(str(mgr.directory)) / str(step) / 'default'
    meta = ocp.StandardCheckpointHandler().metadata(item)
    stored = jax.tree_util.tree_flatten_with_path(getattr(meta, 'tree', meta))[0]
  except Exception:  # unreadable metadata: the restore itself then reports the damage
    return
  wanted = {_path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  for path, meta in stored:
    name, shape, dtype = _path_name(path), getattr(meta, 'shape', None), getattr(
        meta, 'dtype', None)
    if name not in wanted or shape is None or dtype is None:
      continue
    x = wanted[name]
    if tuple(shape) != tuple(np.shape(x)) or jnp.dtype(dtype) != jnp.result_type(x):
      raise CheckpointError(
          f'Checkpoint {where}: {name} is stored as {jnp.dtype(dtype)}{list(shape)} but the '
          f'config implies {jnp.result_type(x)}{list(np.shape(x))}; it was written by a '
          'different model/config: delete it or use another workdir.')


def restore_latest(mgr, target):
  """The latest checkpoint restored into the structure/shardings of ``target``, or None.

  Raises :class:`CheckpointError` (one line naming the step directory) when it cannot be
  read or does not pass :func:`check_restored`.
  """
  step = mgr.latest_step()
  if step is None:
    return None
  where = os.path.join(str(mgr.directory), str(step))
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    _check_stored_layout(mgr, step, target, where)
  except CheckpointError:
    mgr.close()
    raise
  try:
    restored = mgr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises many types for unreadable files
    mgr.close()  # stops orbax's threads now rather than at interpreter exit
    raise CheckpointError(
        f'Checkpoint {where} cannot be read ({type(e).__name__}: {_first_line(e)}): it is '
        'corrupt or truncated, or was written by a different model/config; delete that step '
        'directory (or use another workdir) to start again.') from e
  try:
    host_leaves = check_restored(restored, target, where)
    _check_digest(mgr, step, restored, where, host_leaves)
  except CheckpointError:
    mgr.close()
    raise
  console.phase('checkpoint %s: restored and verified', where)
  return restored


def load(directory, target):
  """Restores the latest checkpoint in ``directory``; a clear error if there is none."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'No checkpoint directory {directory}; train it first '
                            '(--config.mode=train_original / train_retrain).')
  state = restore_latest(manager(directory), target)
  if state is None:
    raise FileNotFoundError(f'{directory} holds no finished checkpoint; train it first.')
  return state
