"""The small explicit train-state pytree shared by training and unlearning."""
from typing import Any

import flax
import jax
import jax.numpy as jnp


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
