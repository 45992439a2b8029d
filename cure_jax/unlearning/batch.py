"""What a method's direction reads: a :class:`Batch` per data stream and the step's inputs.

A batch is the same for every model. ``inputs`` is what ``apply`` takes (images, token ids);
``label`` is one class per example (a classifier) or the token ids themselves (a causal
LM, whose targets are the next tokens); ``weights`` is None for a classifier and the answer
mask ``BxL`` for an LM. :func:`view` gives every loss the same per-position frame, so one
method definition serves both. ``token_mean`` (an LM's, static) makes the NLL terms
(gradient ascent, the retain term) Hugging Face's loss, the token mean over the micro-batch,
instead of the mean of per-sequence means; a classifier never sets it.
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from cure_jax.unlearning import losses


@dataclasses.dataclass(frozen=True)
class Batch:
  """A forget or retain batch; ``teacher_logits`` come from the frozen original model."""
  inputs: jax.Array
  label: jax.Array
  teacher_logits: Optional[jax.Array] = None
  # bool, broadcastable to the logits view: [B, K] for a classifier, [B, T, V] for an LM.
  forget_mask: Optional[jax.Array] = None
  # A fixed per-example target: AGE's target labels [B], RMU's steering vector [B, D].
  target: Optional[jax.Array] = None
  weights: Optional[jax.Array] = None       # an LM's answer mask [B, L]; None: a classifier
  token_mean: bool = False                  # an LM's NLL as a token mean (see above)
  # The frozen original's activations at the represented layer [B, L, D] (RMU's retain term).
  teacher_hidden: Optional[jax.Array] = None


jax.tree_util.register_dataclass(
    Batch, data_fields=['inputs', 'label', 'teacher_logits', 'forget_mask', 'target',
                        'weights', 'teacher_hidden'], meta_fields=['token_mean'])


@dataclasses.dataclass(frozen=True)
class StepInputs:
  apply: Callable       # (params, inputs) -> logits, deterministic (BatchNorm frozen)
  params: Any
  forget: Batch
  retain: Optional[Batch]
  rng: jax.Array
  hp: Any               # the method's hyperparameters (attribute access)
  mesh: Any = None      # the device mesh the step runs on, if any
  step: Any = 0         # int32 scalar: 0-based index of this unlearning step
  aux: Any = None       # what the method's ``prepare`` returned for this run, if any
  phase: Any = 0        # int32 scalar: the step's phase in the method's schedule (0: none)
  # The forget questions with a preferred answer (DPO / IdkDPO's winners), teacher logits in.
  alternate: Optional[Batch] = None
  # (params, inputs) -> one layer's activations [B, L, D] (RMU), supplied by the task.
  represent: Optional[Callable] = None


def view(logits, batch):
  """``(logits, targets, weights)`` per position: a classifier's as they are (weights
  None); an LM's shifted one token (logit t predicts token t+1) with the answer mask."""
  if batch.weights is None:
    return logits, batch.label, None
  return losses.next_token_view(logits, batch.label, batch.weights)


def teacher_view(batch):
  """The teacher's logits in the frame of :func:`view` (held constant)."""
  t = jax.lax.stop_gradient(batch.teacher_logits)
  return t if batch.weights is None else t[:, :-1]


def per_example(values, weights):
  """Per-position values reduced to one per sequence (answer-token mean); a classifier's
  (weights None) stay as they are."""
  return values if weights is None else losses.sequence_mean(values, weights)


def per_example_sum(values, weights):
  """Like :func:`per_example`, summed over the answer tokens (NPO's sequence log-probs)."""
  return values if weights is None else losses.sequence_sum(values, weights)


def token_mean_per_example(values, weights):
  """``[B]`` values whose mean is the token mean over the whole batch,
  ``B · Σ_t v·w / Σ_{b,t} w``: Hugging Face's loss of one micro-batch (a batch without answer
  tokens gives 0 where theirs would be NaN)."""
  return values.shape[0] * losses.sequence_sum(values, weights) / jnp.maximum(
      jnp.sum(weights), 1.0)


def nll(logits, batch, token_mean=False):
  """Per-example NLL of the batch's own targets (CE of a classifier, answer NLL of an LM);
  ``token_mean`` (an LM's): values whose batch mean is the micro-batch's token mean."""
  logits, targets, weights = view(logits, batch)
  values = losses.cross_entropy(logits, targets)
  if token_mean and weights is not None:
    return token_mean_per_example(values, weights)
  return per_example(values, weights)


def retain_loss(inputs, params):
  """Mean NLL of the retain batch: the descent term every ``*_descent`` method adds (as the
  token mean when the batch asks for it, as open-unlearning's ``outputs.loss``)."""
  retain = inputs.retain
  return jnp.mean(nll(inputs.apply(params, retain.inputs), retain, retain.token_mean))
