"""CURE's objectives, the baselines' losses and the token view of a causal LM.

Every loss takes logits ``[..., K]`` and returns a per-example (or per-token) loss
``[...]``; reduction is the caller's job, so the same code serves a batch of images, a
single example inside ``jax.vmap`` and every answer token of a causal LM.

The token view: a causal LM's logit at position t predicts token t+1, and only answer
tokens count. :func:`next_token_view` lines logits, targets and the answer mask up;
:func:`sequence_mean` / :func:`sequence_sum` reduce a per-token loss to one value per
sequence; :func:`token_forget_mask` gives the forget "classes" at every answer token.

``forget_mask`` is a boolean array broadcastable to the logits: ``one_hot(u)`` for one
forget class, several ones for several classes, ``one_hot(next_token)`` per LM token.
Masking uses the finite constant :data:`MASK_VALUE` so that no ``inf - inf`` can turn
into NaN: ``softmax`` of a masked row gives those entries exactly zero weight.
"""
from typing import Optional, Union

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
Scalar = Union[float, Array]   # a Python number or a traced scalar (a step's hyperparameter)
MASK_VALUE = -1e9


def mask_logits(logits: Array, forget_mask: Array) -> Array:
  """Logits with the forget entries pushed to a large finite negative value."""
  return jnp.where(forget_mask, MASK_VALUE, logits)


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Per-example cross-entropy against integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def guided_hard_labels(teacher_logits: Array, forget_mask: Array) -> Array:
  """GHR's relabelling: the teacher's best class outside the forget mask."""
  return jnp.argmax(mask_logits(teacher_logits, forget_mask), axis=-1)


def ghr(logits: Array, teacher_logits: Array, forget_mask: Array) -> Array:
  """Guided Hard Relabeling: CE towards the teacher's best non-forget class."""
  labels = guided_hard_labels(jax.lax.stop_gradient(teacher_logits), forget_mask)
  return cross_entropy(logits, labels)


def gsr_target(teacher_logits: Array, forget_mask: Array, temperature: Scalar) -> Array:
  """``softmax((z - inf*mask)/T)``; exactly zero on every forget entry."""
  p = jax.nn.softmax(mask_logits(teacher_logits, forget_mask) / temperature, axis=-1)
  return jnp.where(forget_mask, 0.0, p)


def soft_cross_entropy(logits: Array, target: Array) -> Array:
  """``-sum p log q`` with the convention ``0 * log 0 = 0``."""
  log_q = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.where(target > 0, target * log_q, 0.0), axis=-1)


def gsr(logits: Array, teacher_logits: Array, forget_mask: Array,
        temperature: Scalar) -> Array:
  """Guided Soft Relabeling: ``T^2 * KL(p_T || q_T)`` with the forget class masked."""
  p = jax.lax.stop_gradient(gsr_target(teacher_logits, forget_mask, temperature))
  cross = soft_cross_entropy(logits / temperature, p)
  entropy = -jnp.sum(jax.scipy.special.xlogy(p, p), axis=-1)
  return temperature**2 * (cross - entropy)


def undial(logits: Array, teacher_logits: Array, forget_mask: Array,
           strength: Scalar) -> Array:
  """UNDIAL: CE against ``softmax(z - strength*mask)`` at T=1 (forget logit lowered)."""
  z = jax.lax.stop_gradient(teacher_logits)
  target = jax.nn.softmax(z - strength * forget_mask.astype(z.dtype), axis=-1)
  return soft_cross_entropy(logits, target)


def random_non_forget_labels(rng: Array, forget_mask: Array, shape: tuple) -> Array:
  """Uniform labels outside the forget mask (RandLabel), one per example of ``shape``."""
  allowed = jnp.broadcast_to(~forget_mask, shape + forget_mask.shape[-1:])
  return jax.random.categorical(rng, jnp.where(allowed, 0.0, MASK_VALUE), axis=-1)


def kl_to_target(logits: Array, target: Array) -> Array:
  """``KL(p ‖ softmax(logits))`` per example, ``0·log 0 = 0`` (p held constant)."""
  p = jax.lax.stop_gradient(target)
  return soft_cross_entropy(logits, p) + jnp.sum(jax.scipy.special.xlogy(p, p), axis=-1)


def distill_kl(logits: Array, teacher_logits: Array, temperature: Scalar) -> Array:
  """SCRUB's ``DistillKL``: ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))`` per example."""
  p = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits) / temperature, axis=-1)
  return temperature**2 * kl_to_target(logits / temperature, p)


def delete(logits: Array, teacher_logits: Array, labels: Array) -> Array:
  """DELETE (Zhou et al., CVPR 2025): ``KL(softmax(z with z_y masked) ‖ q)`` at T = 1.

  Only each example's own label ``y`` is masked, as the official code does
  (``pred_label[arange(B), y] = -1e10``); :data:`MASK_VALUE` gives the same softmax.
  """
  own = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  p = jax.nn.softmax(mask_logits(jax.lax.stop_gradient(teacher_logits), own), axis=-1)
  return kl_to_target(logits, jnp.where(own, 0.0, p))


# ---- the token view of a causal LM -------------------------------------------------------

def next_token_view(logits_BxLxV: Array, tokens_BxL: Array,
                    loss_mask_BxL: Array) -> tuple[Array, Array, Array]:
  """``(logits_BxTxV, targets_BxT, mask_BxT)`` with T = L-1: logit t predicts token t+1,
  and ``loss_mask[t]`` is 1 where token t+1 is an answer token."""
  return (logits_BxLxV[:, :-1], tokens_BxL[:, 1:],
          loss_mask_BxL[:, :-1].astype(jnp.float32))


def sequence_sum(values_BxT: Array, mask_BxT: Array) -> Array:
  return jnp.sum(values_BxT * mask_BxT, axis=-1)


def sequence_mean(values_BxT: Array, mask_BxT: Array) -> Array:
  """Mean over each sequence's answer tokens; a sequence without any contributes 0."""
  return sequence_sum(values_BxT, mask_BxT) / jnp.maximum(jnp.sum(mask_BxT, axis=-1), 1.0)


def token_forget_mask(targets_BxT: Array, vocab_size: int,
                      forget_ids: Optional[Array] = None) -> Array:
  """The forget classes at each position, ``BxTxV``: the one-hot of the true next token
  or, given ``forget_ids`` (token ids, e.g. a forget author's name), those ids everywhere."""
  if not forget_ids:
    return jax.nn.one_hot(targets_BxT, vocab_size, dtype=jnp.bool_)
  ids_V = jnp.zeros(vocab_size, jnp.bool_).at[jnp.asarray(forget_ids)].set(True)
  return jnp.broadcast_to(ids_V, targets_BxT.shape + (vocab_size,))


def answer_nll(logits_BxLxV: Array, tokens_BxL: Array, loss_mask_BxL: Array) -> Array:
  """Per-sequence mean NLL of the answer tokens (an LM's retain loss and GradAsc's base)."""
  logits, targets, mask = next_token_view(logits_BxLxV, tokens_BxL, loss_mask_BxL)
  return sequence_mean(cross_entropy(logits, targets), mask)
