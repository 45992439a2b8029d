"""The small explicit train-state pytree shared by training and unlearning, and its step-0
value placed on a mesh."""
from typing import Any

import flax
import jax
import jax.numpy as jnp

from cure_jax.infra import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}


def init_variables(model, rng, image_shape):
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def create(variables, tx):
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'],
                    opt_state=tx.init(variables['params']))


def start(variables, tx, mesh, mode='replicated'):
  """The train state at step 0 from given ``variables`` (pretrained or fine-tuned parameters),
  placed on ``mesh`` slice by slice from the host (``mode``: the rule of
  :func:`cure_jax.infra.sharding.shardings`). The arrays are copied first: the training and
  unlearning steps donate their state and must never consume the caller's arrays."""
  variables = jax.tree.map(lambda x: jnp.array(x, copy=True), variables)
  state = create(variables, tx)
  return sharding.put(state, sharding.shardings(state, mesh, mode))
