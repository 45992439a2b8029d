import jax
import jax.numpy as jnp
import pytest

from cure_jax import models
from tests import tolerances


def _num_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('name,shape,expected_params', [
    ('resnet8', (8, 8, 1), None),
    ('resnet18_cifar', (32, 32, 3), 11_173_962),
    ('resnet50', (64, 64, 3), 23_528_522),
    ('cnn_small', (28, 28, 1), 52_162),
])
def test_models_return_logits_and_have_the_paper_sizes(name, shape, expected_params):
  model = models.get_model(name, 10)
  x = jnp.zeros((2, *shape))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert out.shape == (2, 10) and out.dtype == jnp.float32
  if expected_params is not None:
    assert _num_params(variables) == expected_params


def test_cifar_resnet18_has_no_maxpool_and_3x3_stem():
  model = models.get_model('resnet18_cifar', 10)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert variables['params']['stem_conv']['kernel'].shape == (3, 3, 3, 64)
  widths = [variables['params'][f'stage{i}_block1']['Conv_0']['kernel'].shape[-1]
            for i in range(1, 5)]
  assert widths == [64, 128, 256, 512]


def test_train_mode_updates_batch_stats_and_eval_mode_is_pure():
  model = models.get_model('resnet8', 3)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updates['batch_stats'],
                         variables['batch_stats'])
  assert any(jax.tree.leaves(changed))
  a = model.apply(variables, x, train=False)
  b = model.apply(variables, x[:2], train=False)
  # Examples do not interact at inference; another batch size may order each example's
  # reductions (3 x 3 x 64 = 576 terms at most) differently through ResNet-8's 19 modules:
  # the first-order logit bound (1.3e-3 of the largest logit), where a batch statistic would
  # move them by O(1).
  delta = tolerances.logits_bound(tolerances.reordered_sum(9 * 64), 19, float(jnp.abs(a).max()))
  assert float(jnp.abs(a[:2] - b).max()) <= delta


def test_unknown_model_name_is_a_clear_error():
  with pytest.raises(ValueError, match="Unknown model 'resnet9'.*cnn_small.*resnet18_cifar"):
    models.get_model('resnet9', 10)
