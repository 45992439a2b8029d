"""Restored checkpoints are verified: damage is one clear error naming the step directory."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cure_jax.infra import checkpointing

STEP = 7


def _state(seed=0, shape=(64, 48), dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return {'params': {'w': jnp.asarray(rng.normal(size=shape), dtype),
                     'b': jnp.asarray(rng.normal(size=shape[-1:]), dtype)},
          'step': jnp.asarray(STEP, jnp.int32)}


def _write(tmp_path, state=None):
  directory = str(tmp_path / 'ckpt')
  mgr = checkpointing.manager(directory)
  checkpointing.save(mgr, STEP, _state() if state is None else state)
  mgr.close()
  return directory


def _data_files(directory):
  """The array chunk files of the step (OCDBT data under .../d/)."""
  files = [f for f in glob.glob(os.path.join(directory, str(STEP), '**', 'd', '*'),
                                recursive=True) if os.path.isfile(f)]
  assert files
  return sorted(files, key=os.path.getsize, reverse=True)


def _restore(directory, target=None):
  mgr = checkpointing.manager(directory)
  try:
    return checkpointing.restore_latest(mgr, _state(seed=1) if target is None else target)
  finally:
    mgr.close()


def _rewrite(path, change):
  with open(path, 'rb') as f:
    raw = bytearray(f.read())
  with open(path, 'wb') as f:
    f.write(change(raw))


def _flip16_middle(directory):
  def change(raw):
    middle = len(raw) // 2
    for i in range(middle, middle + 16):
      raw[i] ^= 0xFF
    return raw
  _rewrite(_data_files(directory)[0], change)


def _flip_low_bit(directory):
  """One low bit in the middle of the data: may decode to finite, plausible numbers."""
  def change(raw):
    raw[len(raw) // 2] ^= 0x01
    return raw
  _rewrite(_data_files(directory)[0], change)


def _truncate(directory):
  _rewrite(_data_files(directory)[0], lambda raw: raw[:len(raw) // 2])


def _delete_data(directory):
  for path in _data_files(directory):
    os.remove(path)


def _garbage_everywhere(directory):
  for root, _, files in os.walk(os.path.join(directory, str(STEP))):
    for name in files:
      if 'metadata' not in name.lower():
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')


@pytest.mark.parametrize('damage', [_flip16_middle, _flip_low_bit, _truncate, _delete_data,
                                    _garbage_everywhere])
def test_damaged_checkpoint_is_one_clear_error(tmp_path, damage):
  directory = _write(tmp_path)
  damage(directory)
  with pytest.raises(checkpointing.CheckpointError) as err:
    _restore(directory)
  message = str(err.value)
  assert os.path.join(os.path.abspath(directory), str(STEP)) in message
  assert 'corrupt' in message and 'delete' in message
  assert '\n' not in message and len(message) < 500
  assert "'driver'" not in message and 'TensorStore' not in message


@pytest.mark.parametrize('target', [_state(shape=(64, 32)), _state(dtype=jnp.bfloat16),
                                    {'params': _state()['params']}])
def test_checkpoint_of_another_model_is_refused(tmp_path, target):
  directory = _write(tmp_path)
  with pytest.raises(checkpointing.CheckpointError, match='different model/config') as err:
    _restore(directory, target)
  assert '\n' not in str(err.value)


def test_check_restored_names_the_non_finite_array():
  state = _state()
  state['params']['b'] = state['params']['b'].at[3].set(jnp.inf)
  with pytest.raises(checkpointing.CheckpointError, match=r'non-finite values in 1 array\(s\), '
                                                          r'e\.g\. params\.b'):
    checkpointing.check_restored(state, _state(), '/x/7')


def test_intact_checkpoint_restores_exactly_with_its_digest(tmp_path):
  directory = _write(tmp_path)
  restored = _restore(directory)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(_state())):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  stored = checkpointing._stored_digest(checkpointing.manager(directory), STEP)
  assert stored == checkpointing.digest(_state()) != checkpointing.digest(_state(seed=2))


def test_digest_is_sha256_of_paths_dtypes_shapes_and_bytes():
  import hashlib
  state = {'a': np.arange(3, dtype=np.int32), 'b': np.ones((2, 2), np.float32)}
  h = hashlib.sha256()
  for name, x in (('a', state['a']), ('b', state['b'])):
    h.update(f'{name}|{x.dtype}|{x.shape}|'.encode() + x.tobytes())
  assert checkpointing.digest(state) == h.hexdigest()


def test_checkpoint_without_digest_still_restores(tmp_path):
  directory = str(tmp_path / 'old')
  mgr = checkpointing.manager(directory)
  mgr.save(STEP, args=ocp.args.StandardSave(_state()))  # as written before digests existed
  mgr.wait_until_finished()
  mgr.close()
  restored = _restore(directory)
  np.testing.assert_array_equal(np.asarray(restored['params']['w']),
                                np.asarray(_state()['params']['w']))
