"""The one training loop (cure_jax.infra.trainer) on a tiny state: resume, reuse, metadata,
refusal of a directory that holds another model."""
import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cure_jax.infra import sharding, train_state, trainer


class Crash(Exception):
  pass


def _fit(directory, settings, total=7, on_step=None, calls=None):
  """Gradient steps on ``0.5 * (w - batch)**2``; batch i is i (a function of the step)."""
  tx = optax.sgd(0.1)
  state = train_state.start({'params': {'w': jnp.zeros(3)}, 'batch_stats': {}}, tx,
                            sharding.make_mesh())

  def step_fn(state, step, batch):
    if calls is not None:
      calls.append(step)
    grads = {'w': state.params['w'] - batch}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {'loss': jnp.sum(grads['w'] ** 2)}

  def batches(start):
    return iter(np.float32(i) for i in range(start, total))
  return trainer.fit(state, step_fn, batches, total, str(directory), settings, name='tiny',
                     log_every=100, checkpoint_every=3, on_step=on_step)


def test_resumed_fit_equals_the_uninterrupted_one_and_writes_model_json(tmp_path):
  settings = {'kind': 'original', 'lr': 0.1, 'shape': (3,)}
  straight = _fit(tmp_path / 'a', settings)

  def crash_at_4(step):
    if step == 4:
      raise Crash()
  with pytest.raises(Crash):
    _fit(tmp_path / 'b', settings, on_step=crash_at_4)
  assert not (tmp_path / 'b' / trainer.INFO_NAME).exists()  # written when finished only
  calls = []
  resumed = _fit(tmp_path / 'b', settings, calls=calls)
  assert calls == [3, 4, 5, 6]                              # from the step-3 checkpoint
  np.testing.assert_array_equal(straight.params['w'], resumed.params['w'])
  info = trainer.read_info(tmp_path / 'b')
  assert info['settings'] == {'kind': 'original', 'lr': 0.1, 'shape': [3]}  # as JSON stores it
  assert info['steps'] == 7 and info['train_s'] is None     # resumed: no comparable time
  assert trainer.read_info(tmp_path / 'a')['train_s'] > 0
  calls = []
  again = _fit(tmp_path / 'a', settings, calls=calls)       # finished: restored, not trained
  assert calls == [] and int(again.step) == 7


def test_a_directory_of_other_settings_is_refused(tmp_path):
  _fit(tmp_path, {'kind': 'original', 'lr': 0.1})
  info = json.loads((tmp_path / trainer.INFO_NAME).read_text())
  with pytest.raises(ValueError, match=r"other settings \(changed: \['lr'\]\)"):
    _fit(tmp_path, dict(info['settings'], lr=0.2))


def test_model_dir_is_the_cache_or_the_workdir(tmp_path):
  import ml_collections
  config = ml_collections.ConfigDict({'model_cache': ''})
  settings = {'kind': 'retrain', 'x': 1}
  local = trainer.model_dir(config, str(tmp_path), settings)
  assert local.startswith(str(tmp_path / 'models' / 'retrain-'))
  config.model_cache = str(tmp_path / 'shared')
  assert trainer.model_dir(config, 'elsewhere', settings) == str(
      tmp_path / 'shared' / local.rsplit('/', 1)[1])


def test_new_data_trains_a_new_model_beside_the_old_and_says_so(tmp_path, caplog):
  from cure_jax.infra import fingerprint
  old = {'kind': 'original', 'lr': 0.1, 'data_digest': 'aaaa'}
  new = dict(old, data_digest='bbbb')
  _fit(tmp_path / fingerprint.model_fingerprint(old), old)
  calls = []
  with caplog.at_level('WARNING'):
    _fit(tmp_path / fingerprint.model_fingerprint(new), new, calls=calls)
  assert calls == list(range(7))                            # trained anew, not reused
  lines = [r.getMessage() for r in caplog.records if 'changed since' in r.getMessage()]
  assert lines == [f'tiny: the data changed since {fingerprint.model_fingerprint(old)} was '
                   'trained with these settings; training a new model '
                   f'{fingerprint.model_fingerprint(new)} beside it']
