"""Drop-in layer functions whose gradients XLA's CPU backend runs several times faster.

Both compute what the stock operation computes (``jax.custom_vjp`` where their gradients
take other loops); only the loops differ, and with them, for the convolution, the order of
its sums:

- :func:`max_pool_2x2` is ``nn.max_pool(x, (2, 2), strides=(2, 2))``. The stock pooling's
  backward is a select-and-scatter that costs more than the rest of a small network's step;
  here the differentiated forward is a reshape and a max, the backward four selects that
  send each window's cotangent where select-and-scatter sends it (the first maximum).
- :func:`conv_general_dilated` is ``lax.conv_general_dilated`` for ``nn.Conv``'s
  ``conv_general_dilated`` field. A 3 × 3 convolution of a single-channel image (a grey
  image's first layer) runs as nine shifted multiply-adds over channels-first planes (the
  stock kernel handles one input channel badly), its image gradient likewise as 9 × O shifted
  multiply-adds, its kernel gradient as the stock one's. They agree with the stock
  convolution to the rounding of a 9-term (9 × O-term) sum in another order. Every other
  convolution goes to ``lax`` unchanged.

Measured on a 2-core AMD EPYC (AVX2, no AVX-512), cnn_small, against the stock layers
(``benchmarks/cnn_throughput.py``): inference logits at batch 500 27.3 → 11.0 ms, the
training step at batch 128 37.7 → 10.0 ms; against the previous version of these layers the
logits 24.5 → 13.1 ms and the input-gradient metric 74.0 → 39.6 ms (docs/benchmarks.md).
Earlier, on the 2-core Xeon against the stock layers: the pooling's backward 5.7 → 0.7 ms per
layer, the training step 25.6 → 8.7 ms. The module stays an ``nn.Conv`` so that GROGU's fast path
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
  gradient of a plain ``max`` would). One broadcast expression, so that XLA writes the
  input-sized cotangent in a single loop (stacking four selects measured 2-3x slower)."""
  x, y = residuals
  b, h, w, c = x.shape
  hit = x.reshape(b, h // 2, 2, w // 2, 2, c) == y[:, :, None, :, None, :]
  second = jnp.arange(2) == 1                       # the window's second column / row
  # First hit along each window row: the right cell only when the left one missed.
  first_in_row = hit & ~(second[:, None] & hit[:, :, :, :, :1])
  # Then the bottom row only when the top row had no hit.
  top_hit = jnp.any(hit[:, :, :1], axis=4, keepdims=True)
  first = first_in_row & ~(second[:, None, None, None] & top_hit)
  g = g_BxhxwxC[:, :, None, :, None, :]
  return (jnp.where(first, g, jnp.zeros_like(g)).reshape(x.shape),)


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


def _unfused_transpose(x, subscripts):
  """The transpose ``subscripts`` names (``'bohw,op->bhwp'``: the channel axis ``o`` of
  ``x`` becomes ``p``) as a product with the identity matrix. The product is exact (each
  output is one term times 1 plus zeros) and XLA never fuses it, so its output is written
  once. A transpose would be fused into every consumer instead, and XLA would recompute
  the producers through a strided read in each (the batch statistics, the pooling, the
  backward's masks, GROGU's per-example cotangents), measured up to 1.6x slower for a GROGU
  step. (``lax.optimization_barrier`` does not stop that: the CPU pipeline removes barriers
  before fusion.)"""
  channels = x.shape[subscripts.split(',')[0].index('o')]
  return jnp.einsum(subscripts, x, jnp.eye(channels, dtype=x.dtype))


def _grey_shifted(x_BxHxWx1, kernel_3x3x1xO):
  """The convolution as nine shifted multiply-adds, laid out channels-first so that the
  loop's innermost dimension is the image width rather than the few output channels, then
  put back in NHWC (:func:`_unfused_transpose`)."""
  h, w = x_BxHxWx1.shape[1:3]
  padded_BxHxW = jnp.pad(x_BxHxWx1[..., 0], ((0, 0), (1, 1), (1, 1)))
  taps_9xO = kernel_3x3x1xO.reshape(9, kernel_3x3x1xO.shape[-1])
  y_BxOxHxW = sum(padded_BxHxW[:, None, dy:dy + h, dx:dx + w]
                  * taps_9xO[3 * dy + dx][None, :, None, None]
                  for dy in range(3) for dx in range(3))
  return _unfused_transpose(y_BxOxHxW, 'bohw,op->bhwp')


@jax.custom_vjp
def _grey_conv3x3(x_BxHxWx1, kernel_3x3x1xO):
  return _grey_shifted(x_BxHxWx1, kernel_3x3x1xO)


def _grey_fwd(x_BxHxWx1, kernel_3x3x1xO):
  return _grey_shifted(x_BxHxWx1, kernel_3x3x1xO), (x_BxHxWx1, kernel_3x3x1xO)


def _grey_bwd(residuals, g_BxHxWxO):
  x_BxHxWx1, kernel_3x3x1xO = residuals
  h, w = x_BxHxWx1.shape[1:3]
  # The kernel's gradient: the stock convolution's, fast for one input channel.
  _, kernel_vjp = jax.vjp(lambda k: _lax_conv(x_BxHxWx1, k), kernel_3x3x1xO)
  # The image's gradient (only an input-gradient metric asks for it; training drops it):
  # the transposed convolution as 9 x O shifted multiply-adds over channels-first planes.
  taps_9xO = kernel_3x3x1xO.reshape(9, kernel_3x3x1xO.shape[-1])
  # Channels-first once: a fused transpose would recompute the cotangent's producers in
  # each of the 9 x O terms.
  g_BxOxHxW = jnp.pad(_unfused_transpose(g_BxHxWxO, 'bhwo,op->bphw'),
                      ((0, 0), (0, 0), (1, 1), (1, 1)))
  dx_BxHxW = sum(g_BxOxHxW[:, o, 2 - dy:2 - dy + h, 2 - dx:2 - dx + w] * taps_9xO[3 * dy + dx, o]
                 for dy in range(3) for dx in range(3) for o in range(taps_9xO.shape[1]))
  return dx_BxHxW[..., None].astype(x_BxHxWx1.dtype), kernel_vjp(g_BxHxWxO)[0]


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

