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
  """Gradient ascent: the negated NLL of the example's own targets (an LM batch with
  ``token_mean``: values whose mean is the micro-batch's token mean, Hugging Face's loss)."""
  return -nll(logits, b, b.token_mean)


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


def _token_nll(logits, b):
  """Per-position NLL of the targets in the frame of :func:`view`, with its weights."""
  logits, targets, weights = view(logits, b)
  return losses.cross_entropy(logits, targets), weights


def wga(logits, b, rng, hp):
  """WGA (open-unlearning's ``compute_wga_loss``): weighted gradient ascent,
  ``−γ · mean_t sg(p_t^β) · NLL_t`` with ``p_t = exp(−NLL_t)`` the token's probability held
  constant (``sg``), ``β = wga_beta``, ``γ = wga_gamma``. Tokens the model already finds
  unlikely get little weight, so the ascent does not run away on them.

  Theirs averages over all answer tokens of the micro-batch; here over each sequence's answer
  tokens (the step then averages sequences), as every loss of this frame does.
  """
  nll_t, weights = _token_nll(logits, b)
  w = jax.lax.stop_gradient(jnp.exp(-hp.wga_beta * nll_t))
  return -hp.wga_gamma * per_example(w * nll_t, weights)


def satimp(logits, b, rng, hp):
  """SatImp (open-unlearning's ``compute_satimp_loss``): ascent weighted by saturation and
  importance, ``−γ · mean_t sg(p_t^β₁ (1 − p_t)^β₂) · NLL_t`` with ``p_t = exp(−NLL_t)``,
  ``β₁ = satimp_beta1``, ``β₂ = satimp_beta2``, ``γ = satimp_gamma``. The weight vanishes
  on tokens already forgotten (``p → 0``) and on ones the model is certain of (``p → 1``).

  ``1 − p`` is ``−expm1(−NLL)`` (theirs ``1 − exp(−NLL)``, equal up to rounding), clipped at
  0 so a rounding-negative NLL cannot give NaN for a fractional ``β₂``. Theirs averages over
  the micro-batch's answer tokens; here per sequence, then over sequences.
  """
  nll_t, weights = _token_nll(logits, b)
  p = jnp.exp(-nll_t)
  not_p = jnp.maximum(-jnp.expm1(-nll_t), 0.0)
  w = jax.lax.stop_gradient(p ** hp.satimp_beta1 * not_p ** hp.satimp_beta2)
  return -hp.satimp_gamma * per_example(w * nll_t, weights)


def _after_first_answer_tokens(weights, n):
  """The answer mask without each sequence's first ``n`` answer tokens."""
  seen = jnp.cumsum((weights > 0).astype(jnp.float32), axis=-1)
  return jnp.where(seen > n, weights, 0.0)


def ceu(logits, b, rng, hp):
  """CE-U (open-unlearning's ``cross_entropy_unlearning_loss``): CE against the model's own
  distribution with the true token removed, ``−Σ_v sg(p̃_v) log q_v`` where
  ``p̃ = softmax(z with z_y = −∞)`` of the current logits held constant and ``q = softmax(z)``;
  its gradient ``q − p̃`` pushes the mass of ``y`` onto the other tokens in proportion.

  For an LM each sequence's first ``ceu_ignore_first`` answer tokens are left out (their
  ``ignore_first_n_answer_tokens``, the footnote of arXiv:2503.01224); a sequence left with
  none contributes 0. Theirs counts answer labels before the shift, so a label at position 0
  would count there and never here (it is a prompt token in practice). A classifier's label
  is its only "token" and is kept. Theirs averages over the micro-batch's remaining answer
  tokens; here per sequence, then over sequences.
  """
  logits, targets, weights = view(logits, b)
  own = jax.nn.one_hot(targets, logits.shape[-1], dtype=bool)
  z = jax.lax.stop_gradient(logits)
  target = jnp.where(own, 0.0, jax.nn.softmax(losses.mask_logits(z, own), axis=-1))
  ce = losses.soft_cross_entropy(logits, target)
  if weights is not None:
    weights = _after_first_answer_tokens(weights, hp.ceu_ignore_first)
  return per_example(ce, weights)
