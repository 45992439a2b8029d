"""Model zoo: ``get_model(name, num_classes)`` returns a Flax module producing logits."""
import jax.numpy as jnp

from cure_jax.models.dtypes import DTYPES
from cure_jax.models.resnet import ARCHITECTURES, ResNet

__all__ = ['ARCHITECTURES', 'DTYPES', 'ResNet', 'get_model']


def get_model(name, num_classes, dtype='float32'):
  """Builds the classifier ``name`` (one of :data:`ARCHITECTURES`)."""
  if name not in ARCHITECTURES:
    raise ValueError(f'Unknown model {name!r}; choose one of {sorted(ARCHITECTURES)} '
                     '(config.model.name).')
  return ResNet(num_classes=num_classes, dtype=jnp.dtype(dtype), **ARCHITECTURES[name])
