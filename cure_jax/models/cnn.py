"""A small convolutional classifier for 28×28 grey images (Fashion-MNIST and its family).

Two conv–BatchNorm–ReLU–max-pool stages and a hidden dense layer: with the default widths
(8, 16) and 64 hidden units it costs about 0.33 M multiply-adds per 28×28 image and has about
52 k parameters, small enough to train the paper's many original and retrain models on a
2-core CPU. Every parameter lives in ``nn.Conv``, ``nn.Dense`` or ``nn.BatchNorm`` leaves, so
GROGU's fast path (:mod:`cure_jax.unlearning.grogu.fast`) covers every layer. The pooling
and the first convolution use :mod:`cure_jax.models.layers` (the same functions, loops that
XLA's CPU backend runs faster).

``model.apply(variables, x_BxHxWxC, train=...) -> logits_BxK``, BatchNorm as in
:mod:`cure_jax.models.resnet` (batch statistics when training, running averages otherwise).
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cure_jax.models import layers


class SmallCNN(nn.Module):
  widths: Sequence[int]
  hidden: int
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding='SAME', use_bias=False,
                             dtype=self.dtype, conv_general_dilated=layers.conv_general_dilated)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    x = x_BxHxWxC.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = nn.relu(norm(name=f'bn{i + 1}')(conv(width, name=f'conv{i + 1}')(x)))
      x = layers.max_pool_2x2(x)
    x_BxD = x.reshape(x.shape[0], -1)
    x_BxD = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name='hidden')(x_BxD))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x_BxD).astype(jnp.float32)


ARCHITECTURES = {
    # Fashion-MNIST's protocol model (configs/fashion_mnist.py).
    'cnn_small': dict(widths=(8, 16), hidden=64),
}
