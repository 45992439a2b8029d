"""Per-example LLM unlearning objectives (TOFU protocol, SPEC §4) and their registry.

A batch of encoded QA pairs holds ``tokens`` (BxL) and ``loss_mask`` (BxL, 1.0 where the
NEXT token is an answer token). The model sees ``tokens`` and its logits at position t
predict ``tokens[t+1]``; :func:`next_token_view` lines logits, targets and mask up.

The forget classes at an answer token (``config.unlearn.forget_mask``): ``'answer_token'``
masks the ground-truth next token (``mask = one_hot(target)``); ``'author_names'`` (the
paper's "names of the forget authors as forget classes") masks the same fixed set of token
ids, those of the forget authors' names, at every answer position (``hp['forget_ids']``).
A per-example loss is the mean over that sequence's answer tokens.
Every forget loss here returns one value per example, shape (B,): the batch mean is the
objective, and GROGU projects the per-example gradients.
"""
import jax
import jax.numpy as jnp

from cure_jax import losses


def next_token_view(logits_BxLxV, batch):
  """``(logits_BxTxV, targets_BxT, mask_BxT)`` with T = L-1 (logit t predicts token t+1)."""
  tokens_BxL = batch['tokens']
  mask_BxT = batch['loss_mask'][:, :-1].astype(jnp.float32)
  return logits_BxLxV[:, :-1], tokens_BxL[:, 1:], mask_BxT


def sequence_sum(values_BxT, mask_BxT):
  return jnp.sum(values_BxT * mask_BxT, axis=-1)


def sequence_mean(values_BxT, mask_BxT):
  """Mean over each example's answer tokens; an example without any contributes 0."""
  return sequence_sum(values_BxT, mask_BxT) / jnp.maximum(jnp.sum(mask_BxT, axis=-1), 1.0)


def token_nll(logits_BxTxV, targets_BxT):
  return losses.cross_entropy(logits_BxTxV, targets_BxT)


def token_forget_mask(targets_BxT, vocab_size, forget_ids=None):
  """The per-token forget classes ``BxTxV``: one-hot of the ground-truth next token, or,
  given ``forget_ids`` (a tuple of token ids), those ids at every position."""
  if not forget_ids:
    return jax.nn.one_hot(targets_BxT, vocab_size, dtype=jnp.bool_)
  ids_V = jnp.zeros(vocab_size, jnp.bool_).at[jnp.asarray(forget_ids)].set(True)
  return jnp.broadcast_to(ids_V, targets_BxT.shape + (vocab_size,))


def answer_nll(logits_BxLxV, batch):
  """Per-example mean answer-token NLL (the retain term and GradAsc's base)."""
  logits, targets, mask = next_token_view(logits_BxLxV, batch)
  return sequence_mean(token_nll(logits, targets), mask)


# Forget losses: (logits_BxLxV, ref_logits_BxLxV, batch, hp) -> per-example loss (B,).
# ``ref_logits`` are the frozen original model's (teacher for CURE/UNDIAL, π_ref for NPO).

def gradasc_loss(logits, ref_logits, batch, hp):
  """Gradient ascent: minimise the negated answer NLL."""
  del ref_logits, hp
  return -answer_nll(logits, batch)


def npo_loss(logits, ref_logits, batch, hp):
  """NPO: ``−(2/β) log σ(−β (Σ log π_θ − Σ log π_ref))`` over answer tokens."""
  logits, targets, mask = next_token_view(logits, batch)
  ref_logits = jax.lax.stop_gradient(ref_logits[:, :-1])
  log_ratio = (sequence_sum(token_nll(ref_logits, targets), mask)
               - sequence_sum(token_nll(logits, targets), mask))
  beta = hp['npo_beta']
  return -(2.0 / beta) * jax.nn.log_sigmoid(-beta * log_ratio)


def simnpo_loss(logits, ref_logits, batch, hp):
  """SimNPO: ``γ · −(2/β) log σ(β (NLL_sum/|y| − δ))`` (reference-free, length-normalised)."""
  del ref_logits
  beta = hp['simnpo_beta']
  margin = answer_nll(logits, batch) - hp['simnpo_delta']
  return hp['simnpo_gamma'] * -(2.0 / beta) * jax.nn.log_sigmoid(beta * margin)


def _per_token(loss_fn):
  """Lifts a CURE loss ``(logits, teacher, forget_mask) -> [...]`` to a per-example mean."""

  def loss(logits, ref_logits, batch, hp):
    logits, targets, mask = next_token_view(logits, batch)
    teacher = jax.lax.stop_gradient(ref_logits[:, :-1])
    forget_mask = token_forget_mask(targets, logits.shape[-1], hp.get('forget_ids'))
    return sequence_mean(loss_fn(logits, teacher, forget_mask, hp), mask)

  return loss


undial_loss = _per_token(lambda s, t, m, hp: losses.undial(s, t, m, hp['undial_beta']))
ghr_loss = _per_token(lambda s, t, m, hp: losses.ghr(s, t, m))
gsr_loss = _per_token(lambda s, t, m, hp: losses.gsr(s, t, m, hp['temperature']))
