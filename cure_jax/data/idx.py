"""The MNIST family (Fashion-MNIST, MNIST, Kuzushiji-MNIST) from their four IDX files.

Every member ships the same four files, gzipped or plain: ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (what
tfds, torchvision and Keras download). IDX: two zero bytes, a type code, the number of
dimensions, one big-endian uint32 per dimension, then the values row-major. As for CIFAR, the
official training set trains and the official test set is halved (seeded) into validation
and test. Fashion-MNIST's files are found without a ``data_dir`` where Debian's package
``dataset-fashion-mnist`` installs them.
"""
import dataclasses
import gzip
import os
import struct
import zlib

import numpy as np

from cure_jax.data.sources import ArraySource, DatasetSplits, loaded, split_in_half
from cure_jax.infra import content_digest

# IDX type codes -> numpy dtypes (big-endian, as the format stores them).
_TYPES = {0x08: np.dtype('u1'), 0x09: np.dtype('i1'), 0x0B: np.dtype('>i2'),
          0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}
FILES = {'train_images': 'train-images-idx3-ubyte', 'train_labels': 'train-labels-idx1-ubyte',
         'test_images': 't10k-images-idx3-ubyte', 'test_labels': 't10k-labels-idx1-ubyte'}


@dataclasses.dataclass(frozen=True)
class Member:
  title: str
  class_names: tuple
  default_dir: str = ''       # where a system package puts the files ('' = none)
  how_to_get: str = ''


MEMBERS = {
    'fashion_mnist': Member(
        'Fashion-MNIST', ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                          'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
        '/usr/share/datasets/fashion-mnist',
        'on Debian/Ubuntu: apt-get install dataset-fashion-mnist; or download the four files '
        'from https://github.com/zalandoresearch/fashion-mnist (data/fashion)'),
    'mnist': Member('MNIST', tuple(str(i) for i in range(10)),
                    how_to_get='download the four files from http://yann.lecun.com/exdb/mnist/ '
                               '(or a mirror)'),
    'kmnist': Member('Kuzushiji-MNIST', ('o', 'ki', 'su', 'tsu', 'na', 'ha', 'ma', 'ya', 're',
                                         'wo'),
                     how_to_get='download the four files from '
                                'https://github.com/rois-codh/kmnist'),
}


def _raw(path):
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] != b'\x1f\x8b':
    return raw
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as err:
    raise ValueError(f'{path}: not a readable gzip file ({err}: truncated or corrupt); '
                     'download it again') from err


def read_idx(path):
  """The array in IDX file ``path`` (gzipped or plain); one clear error for a bad file."""
  raw = _raw(path)
  if len(raw) < 4 or raw[:2] != b'\x00\x00' or raw[2] not in _TYPES or raw[3] == 0:
    raise ValueError(f'{path}: not an IDX file (bad magic number {raw[:4].hex() or "-"}); '
                     'download it again')
  dtype, ndim = _TYPES[raw[2]], raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f'{path}: truncated IDX header; download it again')
  shape = struct.unpack(f'>{ndim}I', raw[4:header])
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) != expected:
    what = 'truncated' if len(raw) < expected else 'longer than its header says'
    raise ValueError(f'{path}: {what} ({len(raw)} bytes, {expected} expected for shape '
                     f'{shape}); download it again')
  return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder('='))


def find_files(name, data_dir):
  """``{role: path}`` of the four files (``.gz`` or plain) in ``data_dir`` (default: where a
  system package installs them); one line saying how to get them when absent."""
  member = MEMBERS[name]
  folder = data_dir or member.default_dir
  found, missing = {}, []
  for role, base in FILES.items():
    paths = [os.path.join(folder, base + ext) for ext in ('.gz', '')] if folder else []
    path = next((p for p in paths if os.path.isfile(p)), None)
    if path is None:
      missing.append(base + '[.gz]')
    found[role] = path
  if missing:
    where = folder or '(config.data.data_dir is unset)'
    raise FileNotFoundError(f'No {member.title} files {missing} in {where}: '
                            f'{member.how_to_get}; then set config.data.data_dir to their '
                            'folder.')
  return found


def _images_and_labels(files, split, num_classes):
  images, labels = read_idx(files[f'{split}_images']), read_idx(files[f'{split}_labels'])
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(f'{files[f"{split}_images"]}: expected uint8 images N x H x W, got '
                     f'{images.dtype} {images.shape}')
  if labels.ndim != 1 or len(labels) != len(images):
    raise ValueError(f'{files[f"{split}_labels"]}: {labels.shape} labels for {len(images)} '
                     f'images in {files[f"{split}_images"]}; the files do not belong together')
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(f'{files[f"{split}_labels"]}: label {int(labels[bad][0])} outside '
                     f'[0, {num_classes})')
  return images[..., None], labels.astype(np.int32)


def load_mnist_family(name, data_dir=None, split_seed=0):
  """``name`` ('fashion_mnist', 'mnist', 'kmnist'): the official training set; the official
  test set halved (seeded by ``split_seed``) into validation and test."""
  if name not in MEMBERS:
    raise ValueError(f'unknown MNIST-family dataset {name!r}; use one of {sorted(MEMBERS)}')
  member = MEMBERS[name]
  files = find_files(name, data_dir)
  num_classes = len(member.class_names)
  train = ArraySource(*_images_and_labels(files, 'train', num_classes))
  test = ArraySource(*_images_and_labels(files, 'test', num_classes))
  if train.images.shape[1:] != test.images.shape[1:]:
    raise ValueError(f'{files["test_images"]}: images of {test.images.shape[1:]} but the '
                     f'training images are {train.images.shape[1:]}')
  val, test = split_in_half(test, split_seed)
  pixels = train.images.astype(np.float32) / 255.0   # normalisation from the training set
  return loaded(DatasetSplits(
      name=name, train=train, val=val, test=test, num_classes=num_classes,
      image_shape=train.images.shape[1:], mean=(float(pixels.mean()),),
      std=(float(pixels.std()),), class_names=member.class_names,
      digest=content_digest.files_digest(list(files.values()))), os.path.dirname(
          files['train_images']))
