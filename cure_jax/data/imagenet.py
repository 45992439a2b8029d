"""ImageNet-1k from the parquet shards of ``benjamin-paine/imagenet-1k-128x128``.

The Hugging Face dataset stores each split as ``data/{split}-XXXXX-of-YYYYY.parquet`` with
columns ``image`` (struct of encoded ``bytes`` and ``path``) and ``label`` (int64). Its test
split is unlabelled (-1), so, as in the paper, the validation split serves as held-out set.
Only labels are read up front; an image is decoded when its record is asked for.
"""
import collections
import glob
import io
import json
import operator
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cure_jax.data.sources import DatasetSplits, loaded, split_in_half
from cure_jax.infra import content_digest

NUM_CLASSES = 1000
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_DOWNLOAD = ('huggingface-cli download benjamin-paine/imagenet-1k-128x128 --repo-type dataset '
             '--local-dir {}')


def find_parquet_files(data_dir: str, split: str) -> list[str]:
  """Sorted ``{split}-*.parquet`` shards in ``data_dir/data`` or ``data_dir``."""
  for folder in (os.path.join(data_dir, 'data'), data_dir):
    files = sorted(glob.glob(os.path.join(glob.escape(folder), f'{split}-*.parquet')))
    if files:
      return files
  raise FileNotFoundError(
      f'No {split}-*.parquet files in {data_dir}/data or {data_dir}. Get them with: '
      + _DOWNLOAD.format(data_dir))


def _open_parquet(path):
  try:
    parquet = pq.ParquetFile(path)
  except (pa.ArrowException, OSError) as err:
    raise ValueError(f'{path} is not a readable parquet file ({err}); delete it and download '
                     'it again with: ' + _DOWNLOAD.format('DIR')) from err
  names = parquet.schema_arrow.names
  if 'image' not in names or 'label' not in names:
    raise ValueError(f'{path} has columns {names}; expected "image" (struct of bytes, path) '
                     'and "label" as in benjamin-paine/imagenet-1k-128x128')
  return parquet


def _class_names(parquet):
  """Label names that `datasets` stores in the schema metadata, or () if absent."""
  raw = (parquet.schema_arrow.metadata or {}).get(b'huggingface')
  try:
    return tuple(json.loads(raw)['info']['features']['label']['names'])
  except (TypeError, KeyError, ValueError):
    return ()


class ParquetImageSource:
  """Random-access ``{'image': uint8 SxSx3, 'label': int}`` records over parquet shards.

  Records are numbered across ``files`` in order. Reading one decodes a row group's image
  column; the ``cached_row_groups`` most recently read ones are kept, so sequential (and
  batch-local) access reads each row group once. Safe to share between reader threads and
  picklable for reader processes (open files and caches are not pickled).
  """

  def __init__(self, files, image_size=224, cached_row_groups=2):
    if int(image_size) < 1:
      raise ValueError(f'image_size must be a positive int, got {image_size}')
    if not files:
      raise ValueError('ParquetImageSource needs at least one parquet file')
    self.files, self.image_size = tuple(str(f) for f in files), int(image_size)
    self.cached_row_groups = max(1, int(cached_row_groups))
    self._reset_caches()
    labels, group_sizes, self._groups = [], [], []
    for file_index, path in enumerate(self.files):
      parquet = self._parquet(file_index)
      for group in range(parquet.num_row_groups):
        self._groups.append((file_index, group))
        group_sizes.append(parquet.metadata.row_group(group).num_rows)
      labels.append(self._read(path, parquet.read, columns=['label'])
                    .column('label').to_numpy(zero_copy_only=False))
    self.labels = np.concatenate(labels).astype(np.int32)
    self._group_starts = np.cumsum([0] + group_sizes)
    self.class_names = _class_names(self._parquet(0))

  def _reset_caches(self):
    self._lock = threading.Lock()
    self._handles, self._cache = {}, collections.OrderedDict()

  def __getstate__(self):
    state = dict(self.__dict__)
    for key in ('_lock', '_handles', '_cache'):
      del state[key]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._reset_caches()

  def _parquet(self, file_index):
    if file_index not in self._handles:
      self._handles[file_index] = _open_parquet(self.files[file_index])
    return self._handles[file_index]

  @staticmethod
  def _read(path, read_fn, *args, **kwargs):
    try:
      return read_fn(*args, **kwargs)
    except (pa.ArrowException, OSError) as err:
      raise ValueError(f'{path} is corrupt ({err}); download it again') from err

  def _encoded_images(self, group_index):
    """The ``bytes`` field of a row group's image column, through the cache."""
    with self._lock:   # parquet handles and the cache are shared between threads
      if group_index in self._cache:
        self._cache.move_to_end(group_index)
        return self._cache[group_index]
      file_index, group = self._groups[group_index]
      table = self._read(self.files[file_index], self._parquet(file_index).read_row_group,
                         group, columns=['image'])
      images = table.column('image').combine_chunks().field('bytes')
      self._cache[group_index] = images
      if len(self._cache) > self.cached_row_groups:
        self._cache.popitem(last=False)
      return images

  def _decode(self, raw, where):
    if raw is None:
      raise ValueError(f'{where} has no image bytes')
    try:
      with Image.open(io.BytesIO(raw)) as image:
        image = image.convert('RGB')
    except (OSError, ValueError, Image.DecompressionBombError) as err:
      raise ValueError(f'{where}: cannot decode image ({err})') from err
    size = (self.image_size, self.image_size)
    if image.size != size:
      image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8)

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    i = operator.index(i)
    if not -len(self) <= i < len(self):
      raise IndexError(f'index {i} out of range for {len(self)} records')
    i %= len(self)
    group_index = int(np.searchsorted(self._group_starts, i, side='right')) - 1
    row = i - int(self._group_starts[group_index])
    raw = self._encoded_images(group_index)[row].as_py()
    where = f'{self.files[self._groups[group_index][0]]} (record {i})'
    return {'image': self._decode(raw, where), 'label': self.labels[i]}


def _check_labels(source, split):
  bad = (source.labels < 0) | (source.labels >= NUM_CLASSES)
  if bad.any():
    raise ValueError(
        f'{split} files {source.files[0]}... hold {int(bad.sum())} labels outside '
        f'[0, {NUM_CLASSES}), e.g. {int(source.labels[bad][0])}; the unlabelled test split '
        '(-1) cannot be used: keep train-*.parquet and validation-*.parquet')


def load_imagenet(data_dir: str, split_seed: int = 0, image_size: int = 224) -> DatasetSplits:
  """ImageNet-1k: train shards; validation shards halved (seeded) into val/test.

  Args:
    data_dir: local copy of ``benjamin-paine/imagenet-1k-128x128`` (with ``data/``).
    split_seed: seed of the validation/test halving of the validation split.
    image_size: side of the square images the sources return (128 px stored, bilinear).
  """
  if not data_dir or not os.path.isdir(data_dir):
    raise FileNotFoundError(f'ImageNet folder {data_dir!r} does not exist. Get it with: '
                            + _DOWNLOAD.format(data_dir or 'DIR'))
  files = {split: find_parquet_files(data_dir, split) for split in ('train', 'validation')}
  train = ParquetImageSource(files['train'], image_size)
  held_out = ParquetImageSource(files['validation'], image_size)
  _check_labels(train, 'train')
  _check_labels(held_out, 'validation')
  val, test = split_in_half(held_out, split_seed)
  return loaded(DatasetSplits(name='imagenet', train=train, val=val, test=test,
                              num_classes=NUM_CLASSES, image_shape=(image_size, image_size, 3),
                              mean=MEAN, std=STD,
                              class_names=train.class_names or held_out.class_names,
                              digest=content_digest.files_digest(
                                  files['train'] + files['validation'])), data_dir)
