"""Model zoo: ``get_model(name, num_classes)`` returns a Flax module producing logits."""
import jax.numpy as jnp

from cure_jax.models.resnet import ARCHITECTURES, ResNet

# Compute dtypes of every model (parameters stay float32). float16 is not offered: without
# loss scaling its gradients underflow.
DTYPES = ('float32', 'bfloat16')


def get_model(name, num_classes, dtype='float32'):
  """Builds the classifier ``name`` (one of :data:`ARCHITECTURES`)."""
  if name not in ARCHITECTURES:
    raise ValueError(f'Unknown model {name!r}; choose one of {sorted(ARCHITECTURES)} '
                     '(config.model.name).')
  return ResNet(num_classes=num_classes, dtype=jnp.dtype(dtype), **ARCHITECTURES[name])
