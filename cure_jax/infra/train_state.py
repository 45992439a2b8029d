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
  placed on ``mesh`` by :func:`cure_jax.infra.sharding.place` (``mode``: 'replicated' or
  'fsdp'). Device arrays are copied first: the training and unlearning steps donate their
  state and must never consume the caller's arrays. Host (numpy) arrays need no copy: they
  go to the devices slice by slice. The optimizer state is then created from the placed
  parameters, so its moments are born with their parameters' shardings."""
  variables = jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x,
                           variables)
  state = create(sharding.place(variables, mesh, mode), tx)
  return sharding.place(state, mesh, mode)  # the scalars (step, optimizer counts)
