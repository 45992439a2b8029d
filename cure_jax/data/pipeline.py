"""grain input pipelines: shuffled, augmented, normalised numpy batches.

The pipeline is a random-access ``grain.MapDataset`` up to the batching, so batch ``k`` of
a seeded stream is a pure function of ``(seed, k)``. Resuming after a crash therefore only
needs the step number (``start_step``), not an iterator state.

Without augmentation, a source held in memory (:class:`~cure_jax.data.sources.ArraySource`
and views of it) is batched by index: the same grain shuffle runs over the example indices
and each batch is one gather from the arrays, the same batches as example by example at a
fraction of the Python work (which would otherwise take a core from the training step).
"""
import grain
import numpy as np

from cure_jax.data.sources import ArraySource, SubsetSource

AUGMENTATIONS = ('none', 'crop', 'cifar', 'flip')


class Augment(grain.transforms.RandomMap):
  """Random crop after zero padding (``crop``), plus horizontal flip (``cifar``, ``flip``)."""

  def __init__(self, kind, pad):
    if kind not in AUGMENTATIONS:
      raise ValueError(f'Unknown augmentation {kind!r}; choose one of {AUGMENTATIONS} '
                       '(config.data.augment).')
    self.kind, self.pad = kind, pad

  def random_map(self, element, rng):
    image = element['image']
    if self.kind in ('crop', 'cifar') and self.pad:
      h, w = image.shape[:2]
      padded = np.pad(image, ((self.pad, self.pad), (self.pad, self.pad), (0, 0)))
      top, left = rng.integers(0, 2 * self.pad + 1, size=2)
      image = padded[top:top + h, left:left + w]
    if self.kind in ('cifar', 'flip') and rng.random() < 0.5:
      image = image[:, ::-1]
    return {'image': image, 'label': element['label']}


class Normalize(grain.transforms.Map):
  """uint8 → float32 ``(x/255 − mean)/std``, applied to whole batches."""

  def __init__(self, mean, std):
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)

  def map(self, batch):
    image = (batch['image'].astype(np.float32) / 255.0 - self.mean) / self.std
    return {'image': image, 'label': batch['label'].astype(np.int32)}


class Gather(grain.transforms.Map):
  """A batch of example indices → ``{'image', 'label'}`` gathered from in-memory arrays."""

  def __init__(self, images, labels, indices):
    self.images, self.labels, self.indices = images, labels, indices

  def map(self, batch):
    rows = self.indices[np.asarray(batch, np.int64)]
    return {'image': self.images[rows], 'label': self.labels[rows].astype(np.int32)}


def in_memory(source):
  """``(images, labels, indices)`` of an array-backed source (``source[i]`` is example
  ``indices[i]`` of the arrays), or None when its examples must be read one by one."""
  if isinstance(source, ArraySource):
    return source.images, source.labels, np.arange(len(source))
  if isinstance(source, SubsetSource):
    base = in_memory(source.base)
    if base is not None:
      return base[0], base[1], base[2][source.indices]
  return None


def _stack(examples):
  return {'image': np.stack([np.asarray(e['image']) for e in examples]),
          'label': np.asarray([e['label'] for e in examples], np.int32)}


def batch_dataset(source, batch_size, *, mean, std, seed=0, shuffle=True, augment='none',
                  pad=4, num_epochs=None, drop_remainder=True):
  """A ``grain.MapDataset`` of normalised batches ``{'image': BxHxWxC f32, 'label': B i32}``.

  ``num_epochs=None`` repeats forever (each epoch reshuffled); ``shuffle=False`` with
  ``num_epochs=1`` and ``drop_remainder=False`` is the evaluation order.
  """
  if len(source) == 0:
    raise ValueError('Cannot build batches from an empty source.')
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  arrays = in_memory(source) if augment == 'none' else None
  ds = grain.MapDataset.range(len(source)) if arrays else grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  if augment != 'none':
    ds = ds.random_map(Augment(augment, pad), seed=seed)
  if arrays:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=np.asarray)
    return ds.map(Gather(*arrays)).map(Normalize(mean, std))
  ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=_stack)
  return ds.map(Normalize(mean, std))


def batches(source, batch_size, *, start_step=0, num_threads=2, **kwargs):
  """Iterator over :func:`batch_dataset` starting at batch ``start_step``."""
  ds = batch_dataset(source, batch_size, **kwargs)
  if start_step:
    ds = ds.slice(slice(start_step, None))
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                   prefetch_buffer_size=4)))


def eval_batches(source, batch_size, *, mean, std):
  """All examples of ``source`` in order, last batch possibly short."""
  return batches(source, batch_size, mean=mean, std=std, shuffle=False, num_epochs=1,
                 drop_remainder=False)
