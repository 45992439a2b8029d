"""RMU, representation misdirection (Li et al. 2024, WMDP; open-unlearning's RMU trainer).

On forget data one layer's activations (the output of the chosen decoder layer, the
residual stream after it) are pulled towards a fixed random direction ``c · u``; on retain
data (the ``_descent`` entry) they are held at the frozen original's. Both terms are
open-unlearning's ``compute_activation_loss``: per sequence the squared difference averaged
over the hidden dimension and summed over the answer tokens, divided by the number of answer
tokens, then averaged over the batch:

  ``L = mean_b [Σ_t m_bt · mean_d (h_btd − c·u_d)²] / Σ_t m_bt
        + retain_weight · mean_b [Σ_t m_bt · mean_d (h_btd − h^ref_btd)²] / Σ_t m_bt``

with ``m_bt = 1`` where token ``t`` is an answer token (their ``labels != -100``, unshifted),
``c = rmu_steering`` and ``u`` a unit vector drawn once per run uniformly from ``[0, 1)^D``
and normalised (their ``torch.rand`` then ``/ norm``). It reaches the step as the forget
batch's ``target`` (one row per example); the represented layer's activations come from
``inputs.represent`` and the original's on retain data from ``retain.teacher_hidden``.
Which parameters train is the optimizer's business (the LM loop masks all others).
"""
import jax
import jax.numpy as jnp


def control_unit(rng, dim):
  """RMU's random direction ``u``: uniform on ``[0, 1)^dim``, normalised to length 1."""
  v = jax.random.uniform(rng, (dim,), jnp.float32)
  return v / jnp.linalg.norm(v)


def token_positions(weights_BxL):
  """The answer tokens themselves from an LM's answer mask, whose column ``t`` marks the
  prediction of token ``t + 1`` (:func:`cure_jax.data.tofu.encode_qa`): shifted right one."""
  return jnp.pad(weights_BxL[:, :-1], ((0, 0), (1, 0)))


def activation_loss(h_BxLxD, target_BxLxD, mask_BxL):
  """open-unlearning's ``compute_activation_loss`` (a sequence without answer tokens: 0)."""
  per_token = jnp.mean(jnp.square(h_BxLxD - target_BxLxD), axis=-1)
  total = jnp.sum(per_token * mask_BxL, axis=1)
  return jnp.mean(total / jnp.maximum(jnp.sum(mask_BxL, axis=1), 1.0))


def rmu_direction(with_retain):
  """∇ of RMU's loss; ``inputs.represent`` must be given (the LM loop builds it)."""
  def direction(inputs):
    if inputs.represent is None:
      raise ValueError("RMU reads a layer's activations (StepInputs.represent); the LM loop "
                       'supplies them.')
    hp, forget, retain = inputs.hp, inputs.forget, inputs.retain

    def total(params):
      h = inputs.represent(params, forget.inputs)
      steer = hp.rmu_steering * forget.target[:, None, :].astype(h.dtype)
      loss = activation_loss(h, jnp.broadcast_to(steer, h.shape),
                             token_positions(forget.weights))
      if with_retain:
        h_r = inputs.represent(params, retain.inputs)
        loss = loss + hp.retain_weight * activation_loss(
            h_r, jax.lax.stop_gradient(retain.teacher_hidden), token_positions(retain.weights))
      return loss
    return jax.value_and_grad(total)(inputs.params)
  return direction
