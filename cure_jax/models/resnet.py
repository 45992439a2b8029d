"""Flax ResNets: the CIFAR ResNet-18 of the paper, ImageNet ResNet-50, a small ResNet-8.

Models are pure: ``model.apply(variables, x_BxHxWxC, train=...) -> logits_BxK``.
BatchNorm uses batch statistics when ``train=True`` and its running averages otherwise;
unlearning always runs with ``train=False`` so that examples never interact (every method
alike; GROGU's per-example gradients need it).
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


def _residual(x, y, conv, norm, strides):
  """``relu(y + shortcut(x))``; a 1×1 projection when the shape changes."""
  if x.shape != y.shape:
    x = norm()(conv(y.shape[-1], (1, 1), (strides, strides))(x))
  return nn.relu(y + x)


class _ResidualBlock(nn.Module):
  """Fields of every residual block, so that :class:`ResNet` builds any block type alike.

  ``filters`` is the block's width and ``strides`` its downsampling (the stride of its 3×3
  convolution and of a projection shortcut); ``conv`` and ``norm`` are ``nn.Conv`` and
  ``nn.BatchNorm`` with the network's dtype and BatchNorm mode already bound.
  """
  filters: int
  strides: int
  conv: Any
  norm: Any


class BasicBlock(_ResidualBlock):
  """Two 3×3 convolutions with an identity or 1×1 projection shortcut."""

  @nn.compact
  def __call__(self, x_BxHxWxC):
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x_BxHxWxC)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    return _residual(x_BxHxWxC, y, self.conv, self.norm, self.strides)


class BottleneckBlock(_ResidualBlock):
  """1×1 → 3×3 → 1×1 (×4) bottleneck of ResNet-50."""

  @nn.compact
  def __call__(self, x_BxHxWxC):
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x_BxHxWxC)))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    return _residual(x_BxHxWxC, y, self.conv, self.norm, self.strides)


class ResNet(nn.Module):
  """ResNet with a CIFAR stem (3×3, no max-pool) or an ImageNet stem (7×7/2 + max-pool)."""
  stage_sizes: Sequence[int]
  widths: Sequence[int]
  block: Any
  num_classes: int
  imagenet_stem: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, padding='SAME')
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    x = x_BxHxWxC.astype(self.dtype)
    if self.imagenet_stem:
      x = conv(self.widths[0], (7, 7), (2, 2), name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    else:
      x = conv(self.widths[0], (3, 3), name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
    for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(width, strides, conv, norm, name=f'stage{i + 1}_block{j + 1}')(x)
    x_BxC = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x_BxC).astype(jnp.float32)


ARCHITECTURES = {
    # The paper's CIFAR ResNet-18: 3×3 stem, no max-pool, widths 64-128-256-512.
    'resnet18_cifar': dict(stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                           block=BasicBlock),
    # Standard ImageNet ResNet-50 (224×224 inputs).
    'resnet50': dict(stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512),
                     block=BottleneckBlock, imagenet_stem=True),
    # Narrow, shallow member of the family for 8×8 digits and tests (~78 k parameters).
    'resnet8': dict(stage_sizes=(1, 1, 1), widths=(16, 32, 64), block=BasicBlock),
}
