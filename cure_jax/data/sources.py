"""Random-access, grain-compatible image sources that know their labels.

Every dataset loader returns :class:`DatasetSplits` whose splits are sources with
``len(src)``, ``src[i] -> {'image': uint8 HxWxC, 'label': int}`` and ``src.labels``
(int32 array). The labels let forget/retain views be built without decoding images.
"""
import dataclasses
from typing import Any, Sequence

import numpy as np


class ArraySource:
  """In-memory images ``uint8 NxHxWxC`` with integer labels."""

  def __init__(self, images, labels):
    images, labels = np.asarray(images), np.asarray(labels, np.int32)
    if images.ndim != 4 or images.dtype != np.uint8:
      raise ValueError(f'images must be uint8 NxHxWxC, got {images.dtype} {images.shape}')
    if len(images) != len(labels):
      raise ValueError(f'{len(images)} images but {len(labels)} labels')
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return {'image': self.images[i], 'label': self.labels[i]}


class LabeledSource:
  """Wraps any random-access source of ``{'image', 'label'}`` records with its labels."""

  def __init__(self, source, labels=None):
    self.source = source
    if labels is None:
      labels = [int(source[i]['label']) for i in range(len(source))]
    self.labels = np.asarray(labels, np.int32)

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    record = self.source[int(i)]
    return {'image': np.asarray(record['image'], np.uint8), 'label': self.labels[i]}


class SubsetSource:
  """The records of ``base`` at ``indices`` (a view: nothing is copied or decoded)."""

  def __init__(self, base, indices):
    self.base, self.indices = base, np.asarray(indices, np.int64)
    self.labels = np.asarray(base.labels)[self.indices]

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.base[int(self.indices[i])]


def split_in_half(source, seed):
  """Seeded half/half split of a held-out set into (validation, test)."""
  order = np.random.default_rng(seed).permutation(len(source))
  half = len(source) // 2
  return SubsetSource(source, np.sort(order[:half])), SubsetSource(source, np.sort(order[half:]))


@dataclasses.dataclass
class DatasetSplits:
  """A classification dataset: sources plus what the pipeline needs to normalise it."""
  name: str
  train: Any
  val: Any
  test: Any
  num_classes: int
  image_shape: Sequence[int]   # (H, W, C) of what the sources return
  mean: Sequence[float]        # per channel, on the 0–1 scale
  std: Sequence[float]
  class_names: Sequence[str] = ()
  # Content digest of what the splits were read from (:mod:`cure_jax.infra.content_digest`):
  # part of every trained model's fingerprint, so new data trains a new model.
  digest: str = ''



def loaded(splits, where=''):
  """Writes the 'loading' phase's console line; returns ``splits`` (loaders end with it)."""
  from cure_jax.infra import console
  console.phase('loaded %s%s: %d train / %d val / %d test examples, %d classes, %s images',
                splits.name, f' from {where}' if where else '', len(splits.train),
                len(splits.val), len(splits.test), splits.num_classes,
                'x'.join(map(str, splits.image_shape)))
  return splits
