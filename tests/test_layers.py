"""The fast layer functions compute the stock functions; the in-memory batches are the
example-by-example batches."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cure_jax.data import pipeline
from cure_jax.data.sources import ArraySource, SubsetSource
from cure_jax.models import layers
from tests import tolerances


def _stock_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2))


@pytest.mark.parametrize('kind', ['ties', 'normal'])
def test_max_pool_and_its_gradient_are_flax_bit_for_bit(kind):
  rng = np.random.default_rng(0)
  # Small integers tie inside most windows: the gradient must go where flax sends it.
  x = (rng.integers(0, 3, (4, 8, 6, 3)) if kind == 'ties'
       else rng.normal(size=(4, 8, 6, 3))).astype(np.float32)
  g = rng.normal(size=(4, 4, 3, 3)).astype(np.float32)
  want, want_vjp = jax.vjp(_stock_pool, jnp.asarray(x))
  got, got_vjp = jax.vjp(layers.max_pool_2x2, jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  np.testing.assert_array_equal(np.asarray(got_vjp(g)[0]), np.asarray(want_vjp(g)[0]))


def test_max_pool_of_an_odd_size_is_refused():
  with pytest.raises(ValueError, match='even height and width'):
    layers.max_pool_2x2(jnp.zeros((1, 5, 4, 1)))


def _lax(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_grey_convolution_is_the_stock_one_up_to_the_order_of_its_sums():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 10, 12, 1)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, 1, 5)).astype(np.float32))
  ours = lambda a, b: layers.conv_general_dilated(a, b, (1, 1), [(1, 1), (1, 1)],
                                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  # Each output is a 9-term dot product: two summation orders are within 2 gamma(9) of the
  # sum of the terms' magnitudes (tests/tolerances.py), differentiated or not.
  bound = tolerances.reordered_sum(9) * np.asarray(_lax(jnp.abs(x), jnp.abs(k)))
  got, got_vjp = jax.vjp(ours, x, k)
  for out in (ours(x, k), jax.jit(ours)(x, k), got):
    assert np.all(np.abs(np.asarray(out) - np.asarray(_lax(x, k))) <= bound)
  # The differentiated forward is the plain one (its identity product is exact).
  np.testing.assert_array_equal(np.asarray(got), np.asarray(ours(x, k)))
  g = jnp.asarray(rng.normal(size=got.shape).astype(np.float32))
  got_dx, got_dk = got_vjp(g)
  want_vjp = jax.vjp(_lax, x, k)[1]
  want_dx, want_dk = want_vjp(g)
  np.testing.assert_array_equal(np.asarray(got_dk), np.asarray(want_dk))  # the stock one
  # The image's gradient: 9 taps x 5 channels = 45 terms per pixel in another order.
  dx_bound = tolerances.reordered_sum(45) * np.asarray(
      jax.vjp(_lax, x, jnp.abs(k))[1](jnp.abs(g))[0])
  assert np.all(np.abs(np.asarray(got_dx) - np.asarray(want_dx)) <= dx_bound)
  assert not np.array_equal(np.asarray(got_dx), np.zeros_like(got_dx))


@pytest.mark.parametrize('shape,kernel,strides', [
    ((2, 8, 8, 3), (3, 3, 3, 4), (1, 1)),   # three input channels
    ((2, 8, 8, 1), (3, 3, 1, 4), (2, 2)),   # strided
    ((2, 8, 8, 1), (1, 1, 1, 4), (1, 1)),   # 1 x 1
])
def test_every_other_convolution_is_the_stock_one(shape, kernel, strides):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  k = jnp.asarray(rng.normal(size=kernel).astype(np.float32))
  dims = ('NHWC', 'HWIO', 'NHWC')
  got = layers.conv_general_dilated(x, k, strides, 'SAME', dimension_numbers=dims)
  want = jax.lax.conv_general_dilated(x, k, strides, 'SAME', dimension_numbers=dims)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _sources():
  rng = np.random.default_rng(3)
  base = ArraySource(rng.integers(0, 256, (50, 4, 4, 1), dtype=np.uint8),
                     rng.integers(0, 5, 50))
  return {'array': base, 'view': SubsetSource(SubsetSource(base, np.arange(3, 47)),
                                              np.arange(0, 44, 2))}


class _PerExample:
  """The same examples behind an interface with no arrays (read one by one)."""

  def __init__(self, source):
    self.source, self.labels = source, source.labels

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return self.source[i]


@pytest.mark.parametrize('name', ['array', 'view'])
@pytest.mark.parametrize('kwargs', [dict(seed=5, start_step=7),
                                    dict(shuffle=False, num_epochs=1, drop_remainder=False)])
def test_in_memory_batches_are_the_per_example_batches(name, kwargs):
  source = _sources()[name]
  assert pipeline.in_memory(source) is not None
  assert pipeline.in_memory(_PerExample(source)) is None
  common = dict(mean=(0.4,), std=(0.3,), augment='none')
  fast = pipeline.batches(source, 8, **common, **kwargs)
  slow = pipeline.batches(_PerExample(source), 8, **common, **kwargs)
  for _ in range(12 if 'start_step' in kwargs else 3):
    a, b = next(fast), next(slow)
    for key in ('image', 'label'):
      assert a[key].dtype == b[key].dtype
      np.testing.assert_array_equal(a[key], b[key])
