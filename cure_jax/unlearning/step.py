"""The one step builder: a method's direction, then one optimizer step.

The public :func:`cure_jax.make_unlearning_step`, the compiled classification runs and the
LM loop all build their update here, so a step taken by one is the computation the others
take.
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax

from cure_jax.unlearning.batch import StepInputs


def default_optimizer(momentum):
  """SGD with unit step (the update is multiplied by the traced ``lr``)."""
  return optax.sgd(1.0, momentum=momentum or None)


def _accumulated(direction, micro_batches):
  """The mean of ``direction`` over ``micro_batches`` slices of the batches' leading axis,
  scanned so that one micro-batch's activations are alive at a time."""
  if micro_batches == 1:
    return direction

  def accumulated(inputs):
    def one(micro):
      forget, retain, alternate = micro
      return direction(dataclasses.replace(inputs, forget=forget, retain=retain,
                                           alternate=alternate))

    def body(total, micro):
      return jax.tree.map(jnp.add, total, one(micro)), None
    streams = (inputs.forget, inputs.retain, inputs.alternate)
    first = jax.tree.map(lambda x: x[0], streams)
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(one, first))
    total, _ = jax.lax.scan(body, zeros, streams)
    return jax.tree.map(lambda x: x / micro_batches, total)
  return accumulated


def build_update(method, static, optimizer=None, micro_batches=1, complete=None):
  """``(tx, update)`` for a registry :class:`~cure_jax.unlearning.methods.Method`.

  ``update(inputs, opt_state) -> (params, opt_state, loss)`` takes the method's direction at
  ``inputs`` (a :class:`~cure_jax.unlearning.batch.StepInputs`: the model, its parameters,
  the batches, the step's key, hyperparameters, index and phase) and one optimizer step.
  Without
  ``optimizer`` it is ``SGD(momentum)`` scaled by the traced ``hp.lr``; a given optimizer's
  updates are applied as they are (its own learning rate and schedule). With
  ``micro_batches > 1`` the batches carry a leading micro-batch axis and the direction (and
  loss) is the mean over the micro-batches. ``complete(inputs) -> inputs`` fills in what
  a task computes per (micro-)batch inside the step, such as an LM's teacher logits.
  """
  tx = default_optimizer(static['momentum']) if optimizer is None else optimizer
  direction = method.direction
  if complete is not None:
    direction = lambda inputs: method.direction(complete(inputs))
  direction = _accumulated(direction, micro_batches)

  def update(inputs: StepInputs, opt_state):
    value, d = direction(inputs)
    updates, opt_state = tx.update(d, opt_state, inputs.params)
    if optimizer is None:
      updates = jax.tree.map(lambda u: inputs.hp.lr * u, updates)
    return optax.apply_updates(inputs.params, updates), opt_state, value
  return tx, update
