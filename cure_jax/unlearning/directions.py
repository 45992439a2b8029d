"""Update directions ``StepInputs -> (loss value, direction pytree)``.

The plain methods follow the gradient of a mean forget loss (plus ``retain_weight`` times
the retain NLL for the ``*_descent`` variants, in one objective); GROGU follows its
restricted orthogonal combination of the per-example GHR and GSR gradients; GradRest and
LUR combine forget and retain gradients their own way. docs/methods.md has the formulas.
"""
import functools

import jax
import jax.numpy as jnp

from cure_jax.infra import sharding
from cure_jax.unlearning import grogu, objectives
from cure_jax.unlearning.grogu import fast as grogu_fast
from cure_jax.unlearning.batch import retain_loss


def loss_direction(forget_loss, with_retain):
  """∇ of ``mean forget_loss`` (+ ``retain_weight`` · retain NLL for the Descent variants)."""
  def direction(inputs):
    def total(params):
      loss = 0.0
      if forget_loss is not None:
        logits = inputs.apply(params, inputs.forget.inputs)
        loss = jnp.mean(forget_loss(logits, inputs.forget, inputs.rng, inputs.hp))
      if with_retain:
        loss = loss + inputs.hp.retain_weight * retain_loss(inputs, params)
      return loss
    return jax.value_and_grad(total)(inputs.params)
  return direction


def _per_sequence(loss):
  """``[B]`` per-example losses: a per-position loss (``BxT``, from a per-token forget rule
  without an answer mask) is averaged over its positions, so GROGU's projections act on
  whole sequences."""
  return loss if loss.ndim == 1 else jnp.mean(loss.reshape(loss.shape[0], -1), axis=1)


def _grogu_vmap(inputs):
  forget = inputs.forget
  if inputs.mesh is not None and inputs.mesh.devices.size > 1:
    # XLA's SPMD partitioner gets vmapped per-example convolution gradients wrong on a
    # batch-sharded input (seen with jax 0.10.2 on CPU host devices: even their mean differs
    # from the batch gradient). The reference path therefore works on a replicated batch.
    forget = jax.lax.with_sharding_constraint(
        forget, sharding.replicated(sharding.traced_mesh(inputs.mesh)))

  def one_example_loss(loss_fn):
    def loss(params, ex):
      ex1 = jax.tree.map(lambda x: x[None], ex)
      return _per_sequence(loss_fn(inputs.apply(params, ex1.inputs), ex1, inputs.rng,
                                   inputs.hp))[0]
    return loss

  direction = grogu.grogu_direction(
      one_example_loss(objectives.ghr), one_example_loss(objectives.gsr), inputs.params,
      forget, eps=inputs.hp.eps, w_h=inputs.hp.w_h, w_s=inputs.hp.w_s)
  value = jnp.mean(inputs.hp.w_h * objectives.ghr(
      inputs.apply(inputs.params, inputs.forget.inputs), inputs.forget, inputs.rng, inputs.hp))
  return value, direction


def _grogu_fast(inputs):
  b, rng, hp = inputs.forget, inputs.rng, inputs.hp
  direction, aux = grogu_fast.grogu_direction_fast(
      inputs.apply, inputs.params, b.inputs,
      lambda logits: _per_sequence(objectives.ghr(logits, b, rng, hp)),
      lambda logits: _per_sequence(objectives.gsr(logits, b, rng, hp)),
      eps=hp.eps, w_h=hp.w_h, w_s=hp.w_s)
  # The reported loss comes from the forward the fast path already ran.
  return jnp.mean(hp.w_h * aux['loss_h']), direction


def grogu_direction(with_retain):
  """GROGU's mean restricted orthogonal sum on the forget batch (+ λ ∇ retain NLL)."""
  def direction(inputs):
    impl = grogu_fast.choose_impl(inputs.hp.grogu_impl, inputs.apply, inputs.params,
                                  inputs.forget.inputs)
    value, g = (_grogu_fast if impl == 'fast' else _grogu_vmap)(inputs)
    if with_retain:
      r_value, g_r = jax.value_and_grad(functools.partial(retain_loss, inputs))(inputs.params)
      g = jax.tree.map(lambda a, b: a + inputs.hp.retain_weight * b, g, g_r)
      value = value + inputs.hp.retain_weight * r_value
    return value, g
  return direction


def _conditional_projection(a, b):
  """``a − ⟨a,b⟩/‖b‖²·b`` only when the two conflict (⟨a,b⟩ < 0), else ``a``."""
  dot = grogu.tree_vdot(a, b)
  coef = jnp.where(dot < 0, dot / jnp.maximum(grogu.tree_vdot(b, b), 1e-30), 0.0)
  return jax.tree.map(lambda x, y: x - coef * y, a, b)


def gradrest_direction(inputs):
  """GradRest (Ko et al. 2024): batch-level restricted gradient ``P(g_u,g_r) + λ P(g_r,g_u)``
  with ``g_u`` gradient ascent's and ``g_r`` the retain NLL's."""
  def unlearn_loss(params):
    logits = inputs.apply(params, inputs.forget.inputs)
    return jnp.mean(objectives.gradasc(logits, inputs.forget, inputs.rng, inputs.hp))
  value_u, g_u = jax.value_and_grad(unlearn_loss)(inputs.params)
  value_r, g_r = jax.value_and_grad(functools.partial(retain_loss, inputs))(inputs.params)
  lam = inputs.hp.retain_weight
  g = jax.tree.map(lambda a, b: a + lam * b, _conditional_projection(g_u, g_r),
                   _conditional_projection(g_r, g_u))
  return value_u + lam * value_r, g


def lur_direction(forget_loss):
  """LUR (Patel & Qiu, ICCV 2025) as a MAML-style look-ahead.

  ``θ̃ = θ − α∇L_r(θ)`` stays differentiable and the objective is
  ``w_r·L_r(θ) + w_f·L_u(θ̃)``: to first order it adds ``−α·w_f·⟨∇L_r, ∇L_u⟩``, rewarding
  retain and unlearning gradients that agree. α, w_r, w_f are ``lur_alpha``, ``lur_w_r``,
  ``lur_w_f``. ``lur``: ``L_u`` = gradient ascent's loss; ``lur_randlabel``: RandLabel's
  (bounded). docs/methods.md records why the unbounded ``lur`` collapses on some models.
  """
  def direction(inputs):
    hp = inputs.hp

    def objective(params):
      l_r, g_r = jax.value_and_grad(functools.partial(retain_loss, inputs))(params)
      lookahead = jax.tree.map(lambda p, g: p - hp.lur_alpha * g, params, g_r)
      logits = inputs.apply(lookahead, inputs.forget.inputs)
      l_f = jnp.mean(forget_loss(logits, inputs.forget, inputs.rng, hp))
      return hp.lur_w_r * l_r + hp.lur_w_f * l_f
    return jax.value_and_grad(objective)(inputs.params)
  return direction
