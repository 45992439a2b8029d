"""Drop-in layer functions whose gradients XLA's CPU backend runs several times faster.

Both compute what the stock operation computes; only the loops of their differentiated
forms differ (``jax.custom_vjp``), and without differentiation they are the stock ones:

- :func:`max_pool_2x2` is ``nn.max_pool(x, (2, 2), strides=(2, 2))``. The stock pooling's
  backward is a select-and-scatter that costs more than the rest of a small network's step;
  here the differentiated forward is a reshape and a max, the backward four selects that
  send each window's cotangent where select-and-scatter sends it (the first maximum).
- :func:`conv_general_dilated` is ``lax.conv_general_dilated`` for ``nn.Conv``'s
  ``conv_general_dilated`` field. Differentiated, a 3 × 3 convolution of a single-channel
  image (a grey image's first layer) runs its forward as nine shifted multiply-adds in one
  fused loop instead of a convolution kernel that handles one input channel badly, and its
  backward as the stock convolution's. The two forwards agree to the rounding of a 9-term
  sum in another order. Every other convolution goes to ``lax`` unchanged.

Measured on the 2-core Xeon (AVX-512), cnn_small at batch 128, one thread: the pooling's
backward 5.7 → 0.7 ms per layer, the first convolution's forward 3.6 → 0.5 ms; the training
step 25.6 → 8.7 ms on two threads (``benchmarks/cnn_throughput.py``, docs/benchmarks.md).
The module stays an ``nn.Conv`` so that GROGU's fast path
(:mod:`cure_jax.unlearning.grogu.layer_calls`) still recognises it.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def _check_even(x_BxHxWxC):
  h, w = x_BxHxWxC.shape[1:3]
  if h % 2 or w % 2:
    raise ValueError(f'max_pool_2x2 needs even height and width, got {h} x {w}.')


@jax.custom_vjp
def max_pool_2x2(x_BxHxWxC):
  """2 × 2 max-pooling with stride 2 (H and W even)."""
  _check_even(x_BxHxWxC)
  # Not differentiated: the stock pooling (XLA fuses it with what comes before).
  return nn.max_pool(x_BxHxWxC, (2, 2), strides=(2, 2))


def _pool_fwd(x_BxHxWxC):
  _check_even(x_BxHxWxC)
  b, h, w, c = x_BxHxWxC.shape
  y = x_BxHxWxC.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))  # the same maxima
  return y, (x_BxHxWxC, y)


def _pool_bwd(residuals, g_BxhxwxC):
  """The cotangent goes to the first maximum of each window in row-major order, as
  ``nn.max_pool``'s select-and-scatter sends it (not split between tied maxima as the
  gradient of a plain ``max`` would)."""
  x, y = residuals
  b, h, w, c = x.shape
  hit = x.reshape(b, h // 2, 2, w // 2, 2, c) == y[:, :, None, :, None, :]
  first00 = hit[:, :, 0, :, 0]
  first01 = hit[:, :, 0, :, 1] & ~first00
  first10 = hit[:, :, 1, :, 0] & ~(first00 | first01)
  first11 = ~(first00 | first01 | first10)
  zero = jnp.zeros_like(g_BxhxwxC)
  pick = lambda mask: jnp.where(mask, g_BxhxwxC, zero)
  top = jnp.stack([pick(first00), pick(first01)], axis=3)
  bottom = jnp.stack([pick(first10), pick(first11)], axis=3)
  return (jnp.stack([top, bottom], axis=2).reshape(x.shape),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)


def _is_grey_3x3(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                 dimension_numbers, feature_group_count):
  """Whether the call is a stride-1 'SAME' 3 × 3 NHWC/HWIO convolution of one input channel."""
  if lhs.ndim != 4 or rhs.ndim != 4:
    return False
  # lax's own normalisations: layout strings or None -> ConvDimensionNumbers, 'SAME' -> pads.
  dims = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))
  if dims != nhwc or rhs.shape[:3] != (3, 3, 1) or lhs.shape[-1] != 1:
    return False
  pads = (jax.lax.padtype_to_pads(lhs.shape[1:3], (3, 3), window_strides, padding)
          if isinstance(padding, str) else padding)
  ones = lambda v: v is None or tuple(v) == (1, 1)
  return ([tuple(p) for p in pads] == [(1, 1), (1, 1)] and tuple(window_strides) == (1, 1)
          and ones(lhs_dilation) and ones(rhs_dilation) and feature_group_count == 1)


def _lax_conv(x_BxHxWx1, kernel_3x3x1xO):
  return jax.lax.conv_general_dilated(x_BxHxWx1, kernel_3x3x1xO, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@jax.custom_vjp
def _grey_conv3x3(x_BxHxWx1, kernel_3x3x1xO):
  # Not differentiated (inference, a teacher's logits): the stock convolution, which XLA
  # fuses with the BatchNorm, ReLU and pooling after it (measured faster than any rewrite).
  return _lax_conv(x_BxHxWx1, kernel_3x3x1xO)


def _grey_fwd(x_BxHxWx1, kernel_3x3x1xO):
  """Under differentiation the output is materialised for the backward anyway; the stock
  convolution then runs alone, slowly (one input channel), and nine shifted multiply-adds in
  one loop fusion replace it."""
  h, w = x_BxHxWx1.shape[1:3]
  padded = jnp.pad(x_BxHxWx1, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps_9xO = kernel_3x3x1xO.reshape(9, kernel_3x3x1xO.shape[-1])
  y = sum(padded[:, dy:dy + h, dx:dx + w] * taps_9xO[3 * dy + dx]
          for dy in range(3) for dx in range(3))
  return y, (x_BxHxWx1, kernel_3x3x1xO)


def _grey_bwd(residuals, g):
  # The stock convolution's gradients: its weight gradient is fast for one input channel.
  return jax.vjp(_lax_conv, *residuals)[1](g)


_grey_conv3x3.defvjp(_grey_fwd, _grey_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
  """``lax.conv_general_dilated`` with the single-channel 3 × 3 case computed as shifted
  multiply-adds (same function, rounding of a different summation order)."""
  if not kwargs and precision is None and _is_grey_3x3(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count):
    return _grey_conv3x3(lhs, rhs.astype(lhs.dtype))
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      precision=precision, **kwargs)

