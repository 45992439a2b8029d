"""DPO on the forget set (open-unlearning's DPO trainer): prefer another answer to the true one.

Each forget question comes twice: with its true answer (the loser, ``inputs.forget``) and
with a preferred answer (the winner, ``inputs.alternate``): a refusal for IdkDPO, one of the
item's perturbed answers for DPO here. With ``log r(y) = log π_θ(y|x) − log π_ref(y|x)``
(log-probabilities summed over the answer tokens, the frozen original as reference, as
open-unlearning's ``compute_dpo_loss`` on ``compute_batch_nll``'s token sums):

  ``L = −(2/β) · log σ(β · (log r(y_win) − log r(y_lose)))``,  ``β = dpo_beta``,

averaged over the batch; the ``_descent`` entries add ``retain_weight`` × the retain NLL
(their ``gamma · forget_loss + alpha · retain_loss`` with γ = 1, α = retain_weight). The
winner's teacher logits come in ``inputs.alternate.teacher_logits``, the loser's in
``inputs.forget.teacher_logits`` (the LM loop computes both inside the step).
"""
import jax
import jax.numpy as jnp

from cure_jax.unlearning import losses
from cure_jax.unlearning.batch import per_example_sum, retain_loss, teacher_view, view


def log_ratio(logits, b):
  """``[B]`` ``log π_θ(y) − log π_ref(y)`` of the batch's own answers, summed over tokens."""
  logits, targets, weights = view(logits, b)
  return (per_example_sum(losses.cross_entropy(teacher_view(b), targets), weights)
          - per_example_sum(losses.cross_entropy(logits, targets), weights))


def dpo_loss(win_logits, win, lose_logits, lose, beta):
  """``[B]`` DPO losses of winner and loser batches (same questions, row by row)."""
  margin = log_ratio(win_logits, win) - log_ratio(lose_logits, lose)
  return -(2.0 / beta) * jax.nn.log_sigmoid(beta * margin)


def dpo_direction(with_retain):
  """∇ of the mean DPO loss (+ ``retain_weight`` · retain NLL for the Descent variants)."""
  def direction(inputs):
    if inputs.alternate is None:
      raise ValueError('DPO needs the forget questions with a preferred answer '
                       '(StepInputs.alternate); the LM loop supplies them.')

    def total(params):
      win, lose = inputs.alternate, inputs.forget
      loss = jnp.mean(dpo_loss(inputs.apply(params, win.inputs), win,
                               inputs.apply(params, lose.inputs), lose, inputs.hp.dpo_beta))
      if with_retain:
        loss = loss + inputs.hp.retain_weight * retain_loss(inputs, params)
      return loss
    return jax.value_and_grad(total)(inputs.params)
  return direction
