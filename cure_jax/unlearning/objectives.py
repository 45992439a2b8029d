"""Per-example forget losses on logits: ``(logits, batch, rng, hp) -> [B]``.

Each works in the frame of :func:`cure_jax.unlearning.batch.view`, so a classifier's
logits and a causal LM's answer tokens go through the same code (an LM's per-token values
are averaged over each sequence's answer tokens). The formulas are in docs/methods.md.
"""
import jax
import jax.numpy as jnp

from cure_jax.unlearning import losses
from cure_jax.unlearning.batch import nll, per_example, per_example_sum, teacher_view, view


def gradasc(logits, b, rng, hp):
  """Gradient ascent: the negated NLL of the example's own targets."""
  return -nll(logits, b)


def randlabel(logits, b, rng, hp):
  """CE towards labels drawn uniformly outside the forget classes (a classifier's)."""
  labels = losses.random_non_forget_labels(rng, b.forget_mask[0], b.label.shape)
  return losses.cross_entropy(logits, labels)


def age(logits, b, rng, hp):
  """CE towards AGE's fixed target class (:func:`age_targets`)."""
  return losses.cross_entropy(logits, b.target)


def _guided(loss):
  """A CURE-style loss ``(logits, teacher, forget_mask, hp)`` on the batch's view."""
  def per_example_loss(logits, b, rng, hp):
    logits, _, weights = view(logits, b)
    return per_example(loss(logits, teacher_view(b), b.forget_mask, hp), weights)
  return per_example_loss


ghr = _guided(lambda s, t, m, hp: losses.ghr(s, t, m))
gsr = _guided(lambda s, t, m, hp: losses.gsr(s, t, m, hp.temperature))
undial = _guided(lambda s, t, m, hp: losses.undial(s, t, m, hp.undial_strength))


def delete(logits, b, rng, hp):
  """DELETE: KL to the teacher with the example's own target masked, T = 1."""
  logits, targets, weights = view(logits, b)
  return per_example(losses.delete(logits, teacher_view(b), targets), weights)


def npo(logits, b, rng, hp):
  """NPO: ``−(2/β) log σ(−β (log π_θ(y) − log π_ref(y)))``, log-probs summed over the
  answer (the teacher is the reference model)."""
  logits, targets, weights = view(logits, b)
  log_ratio = (per_example_sum(losses.cross_entropy(teacher_view(b), targets), weights)
               - per_example_sum(losses.cross_entropy(logits, targets), weights))
  return -(2.0 / hp.npo_beta) * jax.nn.log_sigmoid(-hp.npo_beta * log_ratio)


def simnpo(logits, b, rng, hp):
  """SimNPO: ``γ · −(2/β) log σ(β (NLL/|y| − δ))``, reference-free and length-normalised."""
  margin = nll(logits, b) - hp.simnpo_delta
  return hp.simnpo_gamma * -(2.0 / hp.simnpo_beta) * jax.nn.log_sigmoid(hp.simnpo_beta * margin)


def age_targets(teacher_logits_NxK, labels_N, valid_N, mask_K):
  """AGE: per forget class, the class the original model predicts most often for its
  examples once the forget logits are excluded (identity for the other classes)."""
  k = mask_K.shape[0]
  preds = jnp.argmax(losses.mask_logits(teacher_logits_NxK, mask_K), axis=-1)
  onehot = lambda v: jax.nn.one_hot(v, k, dtype=jnp.float32)
  counts_KxK = jnp.einsum('n,nk,nj->kj', valid_N.astype(jnp.float32), onehot(labels_N),
                          onehot(preds))
  return jnp.where(mask_K, jnp.argmax(counts_KxK, axis=1), jnp.arange(k))
