"""CURE's per-example objectives and the classification baselines' losses.

Every function takes logits ``[..., K]`` and returns a per-example (or per-token) loss
``[...]``; reduction is the caller's job, so the same code serves a batch of images, a
single example inside ``jax.vmap`` and every answer token of a causal LM.

``forget_mask`` is a boolean array broadcastable to the logits: ``one_hot(u)`` for one
forget class, several ones for several classes, ``one_hot(next_token)`` per LM token.
Masking uses the finite constant :data:`MASK_VALUE` so that no ``inf - inf`` can turn
into NaN (SPEC §2).
"""
import jax
import jax.numpy as jnp
import optax

MASK_VALUE = -1e9


def mask_logits(logits, forget_mask):
  """Logits with the forget entries pushed to a large finite negative value."""
  return jnp.where(forget_mask, MASK_VALUE, logits)


def cross_entropy(logits, labels):
  """Per-example cross-entropy against integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def guided_hard_labels(teacher_logits, forget_mask):
  """GHR's relabelling: the teacher's best class outside the forget mask."""
  return jnp.argmax(mask_logits(teacher_logits, forget_mask), axis=-1)


def ghr(logits, teacher_logits, forget_mask):
  """Guided Hard Relabeling: CE towards the teacher's best non-forget class."""
  labels = guided_hard_labels(jax.lax.stop_gradient(teacher_logits), forget_mask)
  return cross_entropy(logits, labels)


def gsr_target(teacher_logits, forget_mask, temperature):
  """``softmax((z - inf*mask)/T)``; exactly zero on every forget entry."""
  p = jax.nn.softmax(mask_logits(teacher_logits, forget_mask) / temperature, axis=-1)
  return jnp.where(forget_mask, 0.0, p)


def soft_cross_entropy(logits, target):
  """``-sum p log q`` with the convention ``0 * log 0 = 0``."""
  log_q = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.where(target > 0, target * log_q, 0.0), axis=-1)


def gsr(logits, teacher_logits, forget_mask, temperature):
  """Guided Soft Relabeling: ``T^2 * KL(p_T || q_T)`` with the forget class masked."""
  p = jax.lax.stop_gradient(gsr_target(teacher_logits, forget_mask, temperature))
  cross = soft_cross_entropy(logits / temperature, p)
  entropy = -jnp.sum(jax.scipy.special.xlogy(p, p), axis=-1)
  return temperature**2 * (cross - entropy)


def undial(logits, teacher_logits, forget_mask, strength):
  """UNDIAL: CE against ``softmax(z - strength*mask)`` at T=1 (forget logit lowered)."""
  z = jax.lax.stop_gradient(teacher_logits)
  target = jax.nn.softmax(z - strength * forget_mask.astype(z.dtype), axis=-1)
  return soft_cross_entropy(logits, target)


def random_non_forget_labels(rng, forget_mask, shape):
  """Uniform labels outside the forget mask (RandLabel), one per example of ``shape``."""
  allowed = jnp.broadcast_to(~forget_mask, shape + forget_mask.shape[-1:])
  return jax.random.categorical(rng, jnp.where(allowed, 0.0, MASK_VALUE), axis=-1)


def kl_to_target(logits, target):
  """``KL(p ‖ softmax(logits))`` per example, ``0·log 0 = 0`` (p held constant)."""
  p = jax.lax.stop_gradient(target)
  return soft_cross_entropy(logits, p) + jnp.sum(jax.scipy.special.xlogy(p, p), axis=-1)


def distill_kl(logits, teacher_logits, temperature):
  """SCRUB's ``DistillKL``: ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))`` per example."""
  p = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits) / temperature, axis=-1)
  return temperature**2 * kl_to_target(logits / temperature, p)


def delete(logits, teacher_logits, labels):
  """DELETE (Zhou et al., CVPR 2025): ``KL(softmax(z with z_y masked) ‖ q)`` at T = 1.

  Only each example's own label ``y`` is masked, as the official code does
  (``pred_label[arange(B), y] = -1e10``); :data:`MASK_VALUE` gives the same softmax.
  """
  own = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  p = jax.nn.softmax(mask_logits(jax.lax.stop_gradient(teacher_logits), own), axis=-1)
  return kl_to_target(logits, jnp.where(own, 0.0, p))
