"""GROGU: Guided Restricted Orthogonal Gradient Unlearning (docs/methods.md).

Per example j, ``g_j = Proj⊥_{g_S,j}(g_H,j) + Proj⊥_{g_H,j}(g_S,j)`` over the whole
parameter pytree; the update direction is ``mean_j g_j``. This package holds the reference
implementation with ``jax.vmap(jax.grad)`` (here); ``fast`` computes the same direction from
per-example inner products only, over the layer calls one forward records (``layer_calls``),
each leaf's inner products in its cheaper form (``ghost``), after ``checks`` found the model
within the fast path's assumptions; ``fast.choose_impl`` picks the implementation.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

Loss = Callable[[Any, Any], jax.Array]   # (params, one example) -> scalar loss


def accumulation_dtype(*dtypes):
  """float32 at least: bfloat16 and float16 leaves accumulate in float32, float64 ones stay
  float64 (an exactness check in float64 must not round to float32 on the way)."""
  return jnp.result_type(jnp.float32, *dtypes)


def tree_vdot(a, b):
  """Inner product of two pytrees, all leaves together, in :func:`accumulation_dtype`."""
  dtype = accumulation_dtype(*[x.dtype for x in jax.tree.leaves((a, b))])
  leaves = jax.tree.leaves(jax.tree.map(
      lambda x, y: jnp.vdot(x.astype(dtype), y.astype(dtype)), a, b))
  return sum(leaves, jnp.zeros((), dtype))


def project_out(a, b, eps):
  """``a − ⟨a,b⟩/(‖b‖²+ε)·b`` over whole pytrees (not leaf by leaf)."""
  coef = tree_vdot(a, b) / (tree_vdot(b, b) + eps)
  return jax.tree.map(lambda x, y: x - (coef * y).astype(x.dtype), a, b)


def grogu_coefficients(inner, sq_norm_h, sq_norm_s, eps):
  """Closed-form weights ``(a_j, b_j)`` with ``g_j = a_j g_H,j + b_j g_S,j``.

  Here ``inner = c_j = ⟨g_H,j, g_S,j⟩`` and the norms are of the already weighted
  gradients. Expanding the two projections, ``Proj⊥_{g_S}(g_H)`` contributes ``g_H`` and
  ``−c/(‖g_S‖²+ε)·g_S`` and ``Proj⊥_{g_H}(g_S)`` contributes ``g_S`` and
  ``−c/(‖g_H‖²+ε)·g_H``, so ``a_j = 1 − c_j/(‖g_H,j‖²+ε)`` and
  ``b_j = 1 − c_j/(‖g_S,j‖²+ε)``. (The paper's printed closed form swaps the two norms;
  the projection definition is the contract, and tests check against it.)
  """
  return 1.0 - inner / (sq_norm_h + eps), 1.0 - inner / (sq_norm_s + eps)


def grogu_direction(loss_h: Loss, loss_s: Loss, params: Any, batch: Any, *, eps: float,
                    w_h: float = 1.0, w_s: float = 1.0) -> Any:
  """Reference GROGU direction with per-example gradients (``jax.vmap(jax.grad)``).

  Args:
    loss_h, loss_s: ``(params, one_example) -> scalar`` (GHR and GSR of one example).
    params: the parameter pytree.
    batch: a pytree whose leaves have a leading batch axis.
    eps: stabiliser of the projections.
    w_h, w_s: objective weights applied to the two losses before projecting.
  Returns:
    The batch mean of the per-example restricted orthogonal sums (a pytree like params).
  """
  grad_h = jax.grad(lambda p, ex: w_h * loss_h(p, ex))
  grad_s = jax.grad(lambda p, ex: w_s * loss_s(p, ex))

  def one(example):
    g_h, g_s = grad_h(params, example), grad_s(params, example)
    return jax.tree.map(jnp.add, project_out(g_h, g_s, eps), project_out(g_s, g_h, eps))

  per_example = jax.vmap(one)(batch)
  return jax.tree.map(lambda g: jnp.mean(g, axis=0), per_example)
