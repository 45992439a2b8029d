"""Per-example gradient inner products from layer inputs and output cotangents.

A weight used as ``y = x W`` (dense over the rows of ``x``) receives, from example j, the
gradient ``g_j = A_jᵀ B_j`` with ``A_j`` (n×p) the rows fed to it and ``B_j`` (n×q) their
output cotangents. Two such gradients meet in ``⟨A_jᵀB_j, A'_jᵀB'_j⟩ = ⟨A_j A'_jᵀ, B_j B'_jᵀ⟩``
("ghost" form, n×n Gram matrices) or by materialising ``A_jᵀB_j`` (p×q); :func:`leaf_plan`
picks the cheaper per parameter (:func:`ghost_is_cheaper`) and also returns the leaf's
coefficient-weighted direction ``Σ_j (a_j g_H,j + b_j g_S,j)``: the weighted sum of the
materialised gradients, or else ``Aᵀ(a B_H + b B_S)`` from the saved inputs and combined
cotangents (one weight-gradient product, no further pass through the network). A convolution is the same on im2col patches, a lookup table
the same with one-hot rows, a tied output head ``z = x Eᵀ`` the same with ``A = ∂z``.

Cotangent-dependent arrays come as a pair indexed by *seed* (seed 0: ``ℓ_H``, seed 1:
``ℓ_S``; a tuple or an array with a leading axis of 2); statistics come back as
``[⟨g_H,g_H⟩, ⟨g_S,g_S⟩, ⟨g_H,g_S⟩]``, each per example.
"""
import dataclasses
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp

# Seed pairs whose inner products GROGU needs: ‖g_H‖², ‖g_S‖², ⟨g_H, g_S⟩.
SEED_PAIRS = ((0, 0), (1, 1), (0, 1))


@dataclasses.dataclass(frozen=True)
class OneHot:
  """Rows ``one_hot(ids_BxN, size)`` without building them (embedding lookups)."""
  ids_BxN: Any
  size: int

  @property
  def rows(self):
    return self.ids_BxN.shape[-1]

  @property
  def width(self):
    return self.size


@dataclasses.dataclass(frozen=True)
class Factor:
  """One use of a weight: per-example gradient ``leftᵀ right``.

  ``left`` holds the rows ``BxNxP`` as a list of column blocks (concatenated they match the
  weight's leading axes flattened), a :class:`OneHot` or :class:`Patches`; ``right`` is
  ``BxNxQ``. A ``*_seeded`` side is a pair (one per seed) of such arrays.
  """
  left: Any
  right: Any
  left_seeded: bool = False
  right_seeded: bool = False

  @property
  def rows(self):
    if isinstance(self.left, (OneHot, Patches)):
      return self.left.rows
    return _seed(self.left[0], self.left_seeded, 0).shape[-2]

  @property
  def left_width(self):
    if isinstance(self.left, (OneHot, Patches)):
      return self.left.width
    return sum(_seed(block, self.left_seeded, 0).shape[-1] for block in self.left)

  @property
  def right_width(self):
    return _seed(self.right, self.right_seeded, 0).shape[-1]


@dataclasses.dataclass(frozen=True)
class Patches:
  """im2col rows of a convolution, produced one kernel offset at a time.

  Offset ``k`` (row-major over the kernel window) gives a ``BxNxC`` block; the blocks in
  order match the ``HWIO`` kernel reshaped to ``(-1, O)``. Loops over offsets run in
  ``lax.scan`` so that only one block is alive at a time (nine times the input otherwise).
  """
  x: Any
  pads: tuple
  kernel_size: tuple
  strides: tuple
  dilation: tuple
  out_size: tuple

  @property
  def num_offsets(self):
    return math.prod(self.kernel_size)

  @property
  def width(self):
    return self.num_offsets * self.x.shape[-1]

  @property
  def rows(self):
    return math.prod(self.out_size)

  def block(self, k):
    """Block of offset ``k`` (a Python int or a traced scalar)."""
    x = jnp.pad(self.x, [(0, 0)] + list(self.pads) + [(0, 0)])
    offset = jnp.unravel_index(k, self.kernel_size)
    extent = [(n - 1) * s + 1 for n, s in zip(self.out_size, self.strides)]
    start = [0] + [o * d for o, d in zip(offset, self.dilation)] + [0]
    size = (x.shape[0],) + tuple(extent) + (x.shape[-1],)
    window = jax.lax.dynamic_slice(x, start, size)
    strided = window[(slice(None),) + tuple(slice(None, None, s) for s in self.strides)]
    return strided.reshape(size[0], -1, size[-1])

  def blocks(self):
    return [self.block(k) for k in range(self.num_offsets)]

  def weight_grad(self, right_BxNxQ):
    """``Σ_b rowsᵀ right`` flat (``K*C*Q``): XLA's own convolution weight gradient."""
    rank = len(self.kernel_size)
    spatial = 'DHW'[-rank:] if rank <= 3 else None
    dims = ('N' + spatial + 'C', spatial + 'IO', 'N' + spatial + 'C')
    batch, channels = self.x.shape[0], self.x.shape[-1]
    kernel = jnp.zeros(self.kernel_size + (channels, right_BxNxQ.shape[-1]), right_BxNxQ.dtype)
    conv = lambda k: jax.lax.conv_general_dilated(
        self.x, k, self.strides, self.pads, rhs_dilation=self.dilation, dimension_numbers=dims)
    cot = right_BxNxQ.reshape((batch,) + self.out_size + (right_BxNxQ.shape[-1],))
    return jax.vjp(conv, kernel)[1](cot)[0].ravel()

  def scan(self, fn, init):
    """``fold(fn, blocks, init)`` with one block alive at a time."""
    return jax.lax.scan(lambda acc, k: (fn(acc, self.block(k)), None), init,
                        jnp.arange(self.num_offsets))[0]


def conv_patches(x_BxHxWxC, kernel_size, strides, padding, dilation):
  """The :class:`Patches` of a convolution; ``padding`` is 'SAME', 'VALID' or pairs."""
  spatial = x_BxHxWxC.shape[1:-1]
  dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
  if isinstance(padding, str):
    pads = jax.lax.padtype_to_pads(spatial, dilated, strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  pads = tuple(tuple(p) for p in pads)
  out = tuple((size + lo + hi - kd) // s + 1
              for size, (lo, hi), kd, s in zip(spatial, pads, dilated, strides))
  # Padding happens per offset inside the scan: a padded copy of every conv input, made
  # early by the scheduler, would otherwise stay alive through the backward passes.
  return Patches(x_BxHxWxC, tuple(pads), tuple(kernel_size), tuple(strides), tuple(dilation),
                 out)


def _seed(array, seeded, s):
  return array[s] if seeded else array


def _as_blocks(left):
  return left.blocks() if isinstance(left, Patches) else left


def _left_gram(a, b):
  """``L_a L_bᵀ`` per example, ``BxNxM``, for block lists, one-hot rows or patches."""
  if isinstance(a, Patches) and a is b:
    init = jnp.zeros((a.x.shape[0], a.rows, a.rows), a.x.dtype)
    return a.scan(lambda acc, x: acc + jnp.einsum('bnc,bmc->bnm', x, x), init)
  a, b = _as_blocks(a), _as_blocks(b)
  if isinstance(a, OneHot) and isinstance(b, OneHot):
    return (a.ids_BxN[:, :, None] == b.ids_BxN[:, None, :]).astype(jnp.float32)
  if isinstance(b, OneHot):
    return jnp.swapaxes(_left_gram(b, a), 1, 2)
  if isinstance(a, OneHot):
    dense_BxMxV = b[0] if len(b) == 1 else jnp.concatenate(b, axis=-1)
    # (onehot(ids) Lᵀ)[n, m] = L[m, ids[n]]: a gather instead of an N×V matrix.
    return jnp.take_along_axis(dense_BxMxV, a.ids_BxN[:, None, :], axis=2).swapaxes(1, 2)
  if len(a) != len(b) or any(x.shape[-1] != y.shape[-1] for x, y in zip(a, b)):
    a, b = [jnp.concatenate(a, axis=-1)], [jnp.concatenate(b, axis=-1)]
  return sum(jnp.einsum('bnp,bmp->bnm', x, y) for x, y in zip(a, b))


def _pick_left(left, seeded, s):
  if isinstance(left, (OneHot, Patches)):
    return left
  return [_seed(block, seeded, s) for block in left]


def ghost_stats(factors):
  """``3xB`` seed-pair inner products of ``Σ_c`` factor gradients through Gram matrices."""
  grams = {}  # a seed-independent Gram matrix serves all three seed pairs

  def gram(kind, i, j, s, t):
    f, g = factors[i], factors[j]
    if kind == 'left':
      seeded = f.left_seeded or g.left_seeded
      key = (kind, i, j) + ((s, t) if seeded else ())
      if key not in grams:
        grams[key] = _left_gram(_pick_left(f.left, f.left_seeded, s),
                                _pick_left(g.left, g.left_seeded, t))
    else:
      seeded = f.right_seeded or g.right_seeded
      key = (kind, i, j) + ((s, t) if seeded else ())
      if key not in grams:
        grams[key] = jnp.einsum('bnq,bmq->bnm', _seed(f.right, f.right_seeded, s),
                                _seed(g.right, g.right_seeded, t))
    return grams[key]

  pairs = list(itertools.product(range(len(factors)), repeat=2))
  return jnp.stack([
      sum(jnp.einsum('bnm,bnm->b', gram('left', i, j, s, t), gram('right', i, j, s, t))
          for i, j in pairs)
      for s, t in SEED_PAIRS])


def pair_stats(g_h, g_s):
  """``3xB`` seed-pair inner products of two ``Bx...`` per-example gradients."""
  g = [x.reshape(x.shape[0], -1) for x in (g_h, g_s)]
  return jnp.stack([jnp.einsum('bp,bp->b', g[s], g[t]) for s, t in SEED_PAIRS])


def _factor_grads(factor):
  """Materialised per-example gradients of one factor, ``(G_H, G_S)``, each ``Bx(P*Q)``.

  Both seeds go through one product (the seeded side concatenated along its width): wider
  matrix products, and the input patches are read once.
  """
  if factor.right_seeded:
    right = jnp.concatenate(factor.right, axis=-1)
  else:
    right = factor.right
  batch = right.shape[0]
  if isinstance(factor.left, OneHot):
    ids = factor.left.ids_BxN
    table = jnp.zeros((batch, factor.left.size, right.shape[-1]), right.dtype)
    both = table.at[jnp.arange(batch)[:, None], ids].add(right)
  elif isinstance(factor.left, Patches):
    # One example at a time: its im2col rows (N x KC, small) and one plain matrix product,
    # about 25 % faster on CPU than batched products per kernel offset, without the batch's
    # K-fold im2col copy.
    def one(args):
      x, r = args
      rows = dataclasses.replace(factor.left, x=x[None]).blocks()
      return jnp.concatenate(rows, axis=-1)[0].T @ r
    both = jax.lax.map(one, (factor.left.x, right))
  else:
    blocks = [jnp.concatenate(pair, axis=-1) for pair in factor.left] if (
        factor.left_seeded) else factor.left
    left = blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=-1)
    both = jnp.einsum('bnp,bnq->bpq', left, right)
  if factor.right_seeded:
    halves = jnp.split(both, 2, axis=-1)
  elif len(factor.left) == 1:
    halves = jnp.split(both, 2, axis=1)
  else:  # several seeded column blocks: rows are [block_i of seed 0, block_i of seed 1]...
    sizes = [pair[0].shape[-1] for pair in factor.left]
    parts = jnp.split(both, list(itertools.accumulate(2 * n for n in sizes))[:-1], axis=1)
    halves = [jnp.concatenate([jnp.split(p, 2, axis=1)[s] for p in parts], axis=1)
              for s in (0, 1)]
  return tuple(h.reshape(batch, -1) for h in halves)


def per_example_grads(factors, grads=()):
  """Per-example gradients ``(G_H, G_S)`` of one leaf, each ``Bx(size)``, float32 at least.

  Args:
    factors: :class:`Factor` uses of the weight.
    grads: further per-example gradients of the same weight, pairs of ``Bx...``.
  """
  parts = [_factor_grads(f) for f in factors]
  parts += [tuple(x.reshape(x.shape[0], -1).astype(jnp.result_type(jnp.float32, x.dtype))
                  for x in g) for g in grads]
  return tuple(sum(p[s] for p in parts[1:]) + parts[0][s] for s in (0, 1))


def factor_direction(factor, w_h, w_s):
  """``Σ_j leftᵀ right`` of one factor with its seeded side combined as ``w_h·H + w_s·S``.

  ``w_h``, ``w_s``: per-example weights ``(B,)``. Returns the flat ``P*Q`` weight gradient.
  """
  def combine(pair):
    wh, ws = (w.reshape((-1,) + (1,) * (pair[0].ndim - 1)) for w in (w_h, w_s))
    return wh * pair[0] + ws * pair[1]

  right = combine(factor.right) if factor.right_seeded else factor.right
  if isinstance(factor.left, OneHot):
    flat = right.reshape(-1, right.shape[-1])
    ids = factor.left.ids_BxN.reshape(-1)
    return jnp.zeros((factor.left.size, flat.shape[-1]), flat.dtype).at[ids].add(flat).ravel()
  if isinstance(factor.left, Patches) and len(factor.left.kernel_size) <= 3:
    return factor.left.weight_grad(right)
  if isinstance(factor.left, Patches):
    per_offset = jax.lax.map(lambda k: jnp.einsum('bnc,bnq->cq', factor.left.block(k), right),
                             jnp.arange(factor.left.num_offsets))
    return per_offset.ravel()
  left = [combine(block) for block in factor.left] if factor.left_seeded else factor.left
  left = left[0] if len(left) == 1 else jnp.concatenate(left, axis=-1)
  return jnp.einsum('bnp,bnq->pq', left, right).ravel()


# Per-example gradients kept for the direction may take at most this many bytes per leaf
# (B·P·Q·2 seeds·4); above it the ghost form, whose memory is the cotangents, is used.
MATERIALISE_MAX_BYTES = 1 << 29


def ghost_is_cheaper(factors, batch=1):
  """Multiply-adds per example: Gram matrices + one weight-gradient pass (ghost) against two
  per-example gradients, whose weighted sum is then the direction (materialise)."""
  ghost = materialise = 0
  pairs = lambda a, b: 1 if not (a or b) else len(SEED_PAIRS)
  for f in factors:
    left = 1 if isinstance(f.left, OneHot) else f.left_width
    materialise += 2 * f.rows * left * f.right_width
    ghost += f.rows * left * f.right_width  # the direction from combined cotangents
    for g in factors:
      one_hot = isinstance(f.left, OneHot) or isinstance(g.left, OneHot)
      ghost += f.rows * g.rows * (
          (1 if one_hot else f.left_width) * pairs(f.left_seeded, g.left_seeded)
          + f.right_width * pairs(f.right_seeded, g.right_seeded) + len(SEED_PAIRS))
  size = factors[0].left_width * factors[0].right_width
  materialise += (len(SEED_PAIRS) + 2) * size
  return ghost < materialise or 2 * 4 * batch * size > MATERIALISE_MAX_BYTES


def leaf_plan(factors=(), grads=()):
  """Per-example ``[‖g_H‖², ‖g_S‖², ⟨g_H, g_S⟩]`` (``3xB``) of one leaf, and its direction.

  Returns ``(stats, direction)``; ``direction(w_h, w_s)`` is the flat ``Σ_j w_h,j g_H,j +
  w_s,j g_S,j``, from the per-example gradients when they were materialised, else from the
  factors with combined cotangents.
  """
  factors = list(factors)
  batch = _batch_of(factors, grads)
  if factors and not grads and ghost_is_cheaper(factors, batch):
    return ghost_stats(factors), lambda w_h, w_s: sum(
        factor_direction(f, w_h, w_s) for f in factors)
  g_h, g_s = per_example_grads(factors, grads)
  return pair_stats(g_h, g_s), lambda w_h, w_s: w_h @ g_h + w_s @ g_s


def _batch_of(factors, grads):
  if grads:
    return grads[0][0].shape[0]
  f = factors[0]
  return _seed(f.right, f.right_seeded, 0).shape[0]
