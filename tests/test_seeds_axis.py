"""Many models in one program: the K models of a kind trained, and a method's runs unlearned,
together over the ``seeds`` mesh axis, equal the same models and runs one after another.

On 4 host devices; a model alone on one device group runs the unbatched program, so it is
compared with the same model on a mesh of that group's size."""
import jax
import numpy as np
import pytest

from cure_jax import models
from cure_jax.classification import compiled_runs, evaluate, model_groups, protocol, train
from cure_jax.data import views
from cure_jax.data.digits import load_digits
from cure_jax.infra import entry, sharding, trainer
from cure_jax.infra.rules import ConfigError
from tests import helpers
from tests.test_protocol import tiny_config

DROP = ('time_s', 'compile_s', 'time_ratio')


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])


def _close(got, want, tol=1e-6):
  for g, w in zip(got, want):
    np.testing.assert_allclose(_flat(g), _flat(w), rtol=tol, atol=tol)


def _sweep_config():
  config = tiny_config()
  config.scenarios = '1'
  config.model_seeds = 2
  config.reproduce.methods = ('ghr', 'scrub')   # a plain and a scheduled (two-stream) run
  return config


def _rows(rows):
  return [{k: v for k, v in r.items() if k not in DROP} for r in rows]


def _assert_rows_close(got, want):
  assert len(got) == len(want)
  for g, w in zip(_rows(got), _rows(want)):
    assert set(g) == set(w)
    for k in g:
      if isinstance(w[k], float):
        assert g[k] == pytest.approx(w[k], rel=1e-6, abs=1e-6), (k, g, w)
      elif k in ('per_class_acc', 'per_class_change'):
        np.testing.assert_allclose(np.asarray(g[k], float), np.asarray(w[k], float),
                                   rtol=1e-6, atol=1e-6)
      else:
        assert g[k] == w[k], (k, g[k], w[k])


def test_protocol_rows_together_equal_one_by_one(tmp_path, monkeypatch):
  """The whole sweep (2 original and 2 retrain models, GHR and SCRUB × 2 runs) with every
  model on its own device equals it run one by one on one device."""
  config = _sweep_config()
  config.seed_parallel = True   # seed_devices 0: 4 groups of one device; 2 models padded to 4
  together = entry.run(config, str(tmp_path / 'together'))
  make_mesh = sharding.make_mesh
  monkeypatch.setattr(sharding, 'make_mesh', lambda devices=None, fsdp=1: make_mesh(
      jax.devices()[:1], fsdp))
  config.seed_parallel = False
  one_by_one = entry.run(config, str(tmp_path / 'one_by_one'))
  _assert_rows_close(together, one_by_one)
  assert {r['status'] for r in together} == {'ok'}


@pytest.fixture(scope='module')
def setup():
  config = helpers.smoke_config()
  data = load_digits()
  return config, data, models.get_model('resnet8', 10)


def test_groups_of_two_devices_split_each_models_batch(setup, tmp_path):
  """Two groups of two devices (``data`` auto-partitioned inside the per-group program):
  training and a GROGU run equal the one-by-one ones on a two-device mesh."""
  config, data, model = setup
  pair = sharding.make_mesh(jax.devices()[:2])
  seeds_mesh = sharding.make_seeds_mesh(2)
  assert dict(zip(seeds_mesh.axis_names, seeds_mesh.devices.shape)) == {'seeds': 2, 'data': 2}
  alone = train.train_classifiers(config, str(tmp_path / 'a'), 'original', data, model, pair,
                                  (), [0, 1])
  grouped = train.train_classifiers(config, str(tmp_path / 'g'), 'original', data, model,
                                    pair, (), [0, 1], seeds_mesh)
  _close(grouped, alone)
  run = helpers.run_of(config, 'grogu', epochs=1.0)
  b = int(run.hparams.batch_size)
  x, y = evaluate.materialize(views.forget_retain(data.train, (1,))[0])
  size = compiled_runs.padded_size(len(y), b)
  run_data = compiled_runs.RunData(
      compiled_runs.pad_rows(x, size), compiled_runs.pad_rows(y, size), len(y),
      np.zeros((2, b, *x.shape[1:]), np.uint8), np.zeros((2, b), np.int32), b,
      np.arange(10) == 1)
  keys = [np.asarray(jax.random.key_data(jax.random.key(s))) for s in (0, 1)]
  mean, std = tuple(np.ravel(data.mean)), tuple(np.ravel(data.std))
  seq = compiled_runs.run_group(compiled_runs.programs(model, mean, std, pair), run,
                                run_data, alone, keys, False)
  par = compiled_runs.run_group(compiled_runs.programs(model, mean, std, seeds_mesh), run,
                                run_data, alone, keys, True)
  _close(par[0], seq[0], tol=1e-5)
  assert list(par[1]) == list(seq[1]) == [-1, -1]


def test_models_trained_together_are_the_cache_entries_of_models_trained_alone(setup,
                                                                             tmp_path):
  """A group writes each model's own directory, checkpoints and model.json: training the
  same seed alone afterwards restores it instead of training, and a second group run
  trains nothing."""
  config, data, model = setup
  mesh = sharding.make_mesh(jax.devices()[:1])
  workdir = str(tmp_path)
  grouped = train.train_classifiers(config, workdir, 'retrain', data, model, mesh, (3,),
                                    [5, 6, 7], sharding.make_seeds_mesh(0))
  info = trainer.read_info(train.checkpoint_dir(workdir, config, 'retrain', (3,), 6, data))
  assert info['steps'] > 0 and info['train_s'] > 0
  steps = []
  again = train.train_classifier(config, workdir, 'retrain', data, model, mesh, (3,),
                                 on_step=steps.append, seed=6)
  assert steps == []
  _close([again], grouped[1:2], tol=0)
  twice = train.train_classifiers(config, workdir, 'retrain', data, model, mesh, (3,),
                                  [5, 6, 7], sharding.make_seeds_mesh(0))
  _close(twice, grouped, tol=0)


@pytest.mark.parametrize('key,value', [('seed_devices', 3), ('seed_devices', -1),
                                       ('models_per_device', -2)])
def test_bad_group_settings_are_one_config_error(key, value, tmp_path):
  config = _sweep_config()
  config[key] = value
  with pytest.raises(ConfigError, match=f'config.{key}'):
    protocol.make_study(config, str(tmp_path))


def test_models_per_device_caps_a_program():
  four = sharding.make_seeds_mesh(0)
  assert model_groups.seed_groups(list(range(3)), None, 0) == [[0], [1], [2]]
  assert model_groups.seed_groups(list(range(5)), four, 0) == [list(range(5))]
  assert model_groups.seed_groups(list(range(10)), four, 2) == [list(range(8)), [8, 9]]
  assert sharding.seeds_size(four) == 4 and sharding.data_size(four) == 1
  assert sharding.data_size(sharding.make_mesh()) == 4
