import os

import jax
import numpy as np
import pytest

from cure_jax import models
from cure_jax.classification import train
from cure_jax.infra import checkpointing, progress, sharding, train_state, trainer
from cure_jax.data import pipeline
from cure_jax.data.digits import load_digits
from tests import helpers, tolerances


@pytest.fixture(scope='module')
def data():
  return load_digits()


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])


def test_data_parallel_step_on_4_devices_equals_single_device(data):
  assert len(jax.devices()) == 4
  config = helpers.smoke_config()
  model = models.get_model('resnet8', 10)
  tx = train.make_optimizer(config.train)
  # Host copies: the jitted step donates its input state.
  variables = jax.device_get(train_state.init_variables(model, jax.random.key(0),
                                                        data.image_shape))
  batch = next(pipeline.batches(data.train, 16, mean=data.mean, std=data.std, seed=0))
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(devices)
    state = sharding.replicate(train_state.create(variables, tx), mesh)
    step = train.make_train_step(model, config.train, mesh)
    for _ in range(2):
      state, metrics = step(state, sharding.shard_batch(batch, mesh), np.int32(10))
    results.append((state, metrics))
  (s1, m1), (s4, m4) = results
  assert s4.params['head']['kernel'].sharding.mesh.devices.size == 4
  # Four devices reorder each step's reductions over the 16 x 8 x 8 batch positions; the
  # loss is a mean over the batch (of non-negative terms: its sum of |terms| is itself).
  terms = tolerances.conv_terms(16, data.image_shape)
  np.testing.assert_allclose(float(m1['loss']), float(m4['loss']),
                             rtol=tolerances.reordered_sum(terms))
  bound = tolerances.reordered_run(2, terms)
  assert tolerances.relative_norm(_flat(s4.params), _flat(s1.params)) <= bound
  assert tolerances.relative_norm(_flat(s4.batch_stats), _flat(s1.batch_stats)) <= bound


class Crash(Exception):
  pass


def test_resumed_training_reaches_the_uninterrupted_parameters(tmp_path, data):
  config = helpers.smoke_config(checkpoint_every=5)
  model = models.get_model('resnet8', 10)
  mesh = sharding.make_mesh()
  run = lambda d, **kw: train.train_classifier(config, str(tmp_path / d), 'original', data,
                                               model, mesh, (1,), **kw)
  straight = run('a')

  def crash_at_7(step):
    if step == 7:
      raise Crash()
  with pytest.raises(Crash):
    run('b', on_step=crash_at_7)
  ckpt = train.checkpoint_dir(str(tmp_path / 'b'), config, 'original')
  assert checkpointing.manager(ckpt).latest_step() == 5
  resumed = run('b')
  np.testing.assert_array_equal(_flat(straight), _flat(resumed))
  # A finished checkpoint is loaded, not retrained.
  again = run('b', on_step=lambda step: pytest.fail('retrained a finished model'))
  np.testing.assert_array_equal(_flat(again), _flat(resumed))


def test_nan_loss_stops_with_the_step_and_writes_no_checkpoint(tmp_path, data):
  config = helpers.smoke_config(lr=1e6, checkpoint_every=1000, log_every=1000)
  model = models.get_model('resnet8', 10)
  with pytest.raises(progress.NonFiniteLossError, match=r'at step \d+; no checkpoint'):
    train.train_classifier(config, str(tmp_path), 'original', data, model,
                           sharding.make_mesh(), (1,))
  assert checkpointing.manager(
      train.checkpoint_dir(str(tmp_path), config, 'original')).latest_step() is None


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, data):
  config, data, model, mesh, _ = helpers.trained(tmp_path, kinds=('original',))
  ckpt = train.checkpoint_dir(str(tmp_path), config, 'original')
  for root, _, files in os.walk(ckpt):
    for name in files:
      if 'metadata' not in name:
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')
  with pytest.raises(checkpointing.CheckpointError, match='corrupt|cannot be read'):
    train.train_classifier(config, str(tmp_path), 'original', data, model, mesh, (1,))


def test_retrain_model_never_sees_the_forget_class(data):
  source = train.training_source(data, 'retrain', (1, 7))
  assert not np.isin(source.labels, (1, 7)).any()
  assert len(source) == len(data.train) - np.isin(data.train.labels, (1, 7)).sum()


def test_batch_size_that_does_not_divide_over_devices_is_rejected(tmp_path, data):
  config = helpers.smoke_config(batch_size=6)
  with pytest.raises(ValueError, match='batch_size=6 does not divide over the 4 devices'):
    train.train_classifier(config, str(tmp_path), 'original', data,
                           models.get_model('resnet8', 10), sharding.make_mesh(), (1,))


@pytest.mark.parametrize('total,warmup_fraction', [(100, 0.05), (37, 0.2), (10, 0.0)])
def test_traced_schedule_equals_optax_warmup_cosine(total, warmup_fraction):
  import optax
  cfg = helpers.smoke_config(lr=0.3, warmup_fraction=warmup_fraction).train
  reference = (optax.warmup_cosine_decay_schedule(0.0, 0.3, max(int(warmup_fraction * total), 1),
                                                  total)
               if warmup_fraction else optax.cosine_decay_schedule(0.3, total))  # no warm-up
  # Two float32 evaluations of lr / 2 (1 + cos(pi frac)): the fraction (a subtraction and a
  # division), the angle (a product: an absolute error <= pi x 2 u, hence of the cosine),
  # the cosine, the sum and the scaling each round once, and the warm-up's ramp twice: within
  # 2 gamma(16) x lr (5.7e-7) of each other, where a warm-up or decay off by one step moves
  # the rate by ~lr / total (>= 3e-3).
  tol = 2 * tolerances.gamma(16) * cfg.lr
  for step in range(total + 1):
    got = float(train.learning_rate(cfg, step, np.int32(total)))
    assert abs(got - float(reference(step))) <= tol, (step, got, float(reference(step)))


def test_model_cache_key_changes_exactly_with_what_changes_the_model(tmp_path):
  config = helpers.smoke_config()
  base = train.checkpoint_dir(str(tmp_path), config, 'original')
  same = helpers.smoke_config(log_every=3, checkpoint_every=7, eval_batch_size=32)
  assert train.checkpoint_dir(str(tmp_path), same, 'original') == base
  for changed in (helpers.smoke_config(lr=0.05), helpers.smoke_config(epochs=2)):
    assert train.checkpoint_dir(str(tmp_path), changed, 'original') != base
  assert train.checkpoint_dir(str(tmp_path), config, 'original', seed=1) != base
  config.data.split_seed = 1
  assert train.checkpoint_dir(str(tmp_path), config, 'original') != base
  retrain = [train.checkpoint_dir(str(tmp_path), helpers.smoke_config(), 'retrain', c)
             for c in ((1,), (3,))]
  assert len({base, *retrain}) == 3


def test_changed_settings_train_a_new_model_beside_the_cached_one(tmp_path, data):
  model, mesh = models.get_model('resnet8', 10), sharding.make_mesh()
  first = helpers.smoke_config()
  a = train.train_classifier(first, str(tmp_path), 'original', data, model, mesh, ())
  info = trainer.read_info(train.checkpoint_dir(str(tmp_path), first, 'original'))
  assert info['fingerprint'].startswith('original-') and info['train_s'] > 0
  other = helpers.smoke_config(lr=0.05)
  b = train.train_classifier(other, str(tmp_path), 'original', data, model, mesh, ())
  assert not np.allclose(_flat(a), _flat(b))
  again = train.train_classifier(first, str(tmp_path), 'original', data, model, mesh, (),
                                 on_step=lambda step: pytest.fail('retrained a cached model'))
  np.testing.assert_array_equal(_flat(a), _flat(again))
  assert len(os.listdir(tmp_path / 'models')) == 2


def test_model_cache_is_shared_between_workdirs(tmp_path, data):
  """config.model_cache: a second workdir finds the model the first trained there."""
  model, mesh = models.get_model('resnet8', 10), sharding.make_mesh()
  config = helpers.smoke_config()
  config.model_cache = str(tmp_path / 'shared')
  a = train.train_classifier(config, str(tmp_path / 'w1'), 'original', data, model, mesh, ())
  again = train.train_classifier(config, str(tmp_path / 'w2'), 'original', data, model, mesh,
                                 (), on_step=lambda step: pytest.fail('retrained'))
  np.testing.assert_array_equal(_flat(a), _flat(again))
  assert [p.split('-')[0] for p in os.listdir(tmp_path / 'shared')] == ['original']
  assert not os.path.exists(tmp_path / 'w1' / 'models')
