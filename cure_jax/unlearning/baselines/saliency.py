"""SalUn's weight saliency (Fan et al., ICLR 2024): which weights the forget loss leans on.

Follows OPTML-Group/Unlearn-Saliency ``Classification/generate_mask.py``: the gradient of
the forget set's cross-entropy w.r.t. every parameter, its absolute value, one global
ranking over all parameters together (not per layer), and a hard mask of the top
``⌊fraction · n⌋`` entries (fraction 0.5 = the median threshold). The sign of the loss
does not matter (|∇(−CE)| = |∇CE|).
"""
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from cure_jax.unlearning import losses

CHUNK = 256   # forget examples per forward/backward pass while summing the gradient


def forget_gradient(apply, params, images, labels, chunk=CHUNK):
  """``∇θ mean_i CE(f_θ(x_i), y_i)`` over the whole forget set, ``chunk`` examples at a time."""
  n = images.shape[0]
  chunk = min(chunk, n)
  pad = -n % chunk
  weights = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)]) / n
  pad_rows = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])
  split = lambda x: x.reshape(-1, chunk, *x.shape[1:])
  xs = (split(pad_rows(images)), split(pad_rows(labels)), split(weights))

  def one(total, xs):
    x, y, w = xs
    g = jax.grad(lambda p: jnp.sum(w * losses.cross_entropy(apply(p, x), y)))(params)
    return jax.tree.map(jnp.add, total, g), None
  total, _ = jax.lax.scan(one, jax.tree.map(jnp.zeros_like, params), xs)
  return total


def top_fraction_mask(scores, fraction):
  """Bool pytree: the ``⌊fraction · n⌋`` largest ``scores`` over all leaves together.

  Ties are broken by position (stable sort), so exactly that many entries are selected,
  as SalUn's rank-based mask does. ``fraction`` may be a traced scalar.
  """
  flat, unravel = ravel_pytree(scores)
  n = flat.shape[0]
  k = jnp.floor(jnp.asarray(fraction, jnp.float32) * n).astype(jnp.int32)
  order = jnp.argsort(-flat, stable=True)
  ranks = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return jax.tree.map(lambda m: m > 0.5, unravel((ranks < k).astype(flat.dtype)))


def saliency_mask(apply, params, images, labels, fraction):
  """SalUn's hard mask: True where the weight is trained, False where it stays frozen."""
  grads = forget_gradient(apply, params, images, labels)
  return top_fraction_mask(jax.tree.map(jnp.abs, grads), fraction)
