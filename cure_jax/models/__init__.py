"""Model zoo: ``get_model(name, num_classes)`` returns a Flax module producing logits."""
import jax.numpy as jnp

from cure_jax.models import cnn, resnet
from cure_jax.models.cnn import SmallCNN
from cure_jax.models.dtypes import DTYPES
from cure_jax.models.resnet import ResNet

__all__ = ['ARCHITECTURES', 'DTYPES', 'ResNet', 'SmallCNN', 'get_model']

# name -> (module class, its fields)
_ZOO = {**{k: (ResNet, v) for k, v in resnet.ARCHITECTURES.items()},
        **{k: (SmallCNN, v) for k, v in cnn.ARCHITECTURES.items()}}
ARCHITECTURES = tuple(sorted(_ZOO))


def get_model(name, num_classes, dtype='float32'):
  """Builds the classifier ``name`` (one of :data:`ARCHITECTURES`)."""
  if name not in _ZOO:
    raise ValueError(f'Unknown model {name!r}; choose one of {list(ARCHITECTURES)} '
                     '(config.model.name).')
  cls, fields = _ZOO[name]
  return cls(num_classes=num_classes, dtype=jnp.dtype(dtype), **fields)
