"""The MNIST family (Fashion-MNIST, MNIST, Kuzushiji-MNIST) from their four IDX files.

Every member ships the same four files, gzipped or plain: ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (what
tfds, torchvision and Keras download). IDX: two zero bytes, a type code, the number of
dimensions, one big-endian uint32 per dimension, then the values row-major. As for CIFAR, the
official training set trains and the official test set is halved (seeded) into validation
and test. Fashion-MNIST's files are found without a ``data_dir`` where Debian's package
``dataset-fashion-mnist`` installs them. A folder holding a file both gzipped and plain is
refused (which one is meant?). The content digest covers the IDX bytes the arrays are read
from, after gunzip: the same data gzipped or plain, in any folder, reuses the same models.
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


def read_idx(path, raw=None):
  """The array in IDX file ``path`` (gzipped or plain; ``raw``: its bytes, already read and
  gunzipped); one clear error for a bad file."""
  raw = _raw(path) if raw is None else raw
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
    present = [p for p in paths if os.path.isfile(p)]
    if len(present) == 2:   # which one is meant? (an edited plain copy would be ignored)
      raise ValueError(f'{folder} holds both {base}.gz and {base}: keep one of them (cure-jax '
                       'reads either, gzipped or plain, and will not guess which you mean).')
    if not present:
      missing.append(base + '[.gz]')
    found[role] = present[0] if present else None
  if missing:
    where = folder or '(config.data.data_dir is unset)'
    raise FileNotFoundError(f'No {member.title} files {missing} in {where}: '
                            f'{member.how_to_get}; then set config.data.data_dir to their '
                            'folder.')
  return found


# The content digests of the four files as Debian's dataset-fashion-mnist ships them, under
# the key their models had before the digest covered the decompressed IDX bytes (it covered
# the .gz files' own bytes): those models, and the published rows that name them, keep it.
_KEPT_DIGESTS = {'9c2d85828a3d8638': 'f5cc4ec4f0bd2be3'}


def read_files(files):
  """``{role: array}`` of the four files and the digest of exactly the IDX bytes read (after
  gunzip, so the same data gzipped or plain, in any folder, has one digest)."""
  raw = {FILES[role]: _raw(path) for role, path in files.items()}
  digest = content_digest.bytes_digest(raw)
  arrays = {role: read_idx(path, raw[FILES[role]]) for role, path in files.items()}
  return arrays, _KEPT_DIGESTS.get(digest, digest)


def _images_and_labels(arrays, files, split, num_classes):
  images, labels = arrays[f'{split}_images'], arrays[f'{split}_labels']
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
  arrays, digest = read_files(files)
  train = ArraySource(*_images_and_labels(arrays, files, 'train', num_classes))
  test = ArraySource(*_images_and_labels(arrays, files, 'test', num_classes))
  if train.images.shape[1:] != test.images.shape[1:]:
    raise ValueError(f'{files["test_images"]}: images of {test.images.shape[1:]} but the '
                     f'training images are {train.images.shape[1:]}')
  val, test = split_in_half(test, split_seed)
  pixels = train.images.astype(np.float32) / 255.0   # normalisation from the training set
  return loaded(DatasetSplits(
      name=name, train=train, val=val, test=test, num_classes=num_classes,
      image_shape=train.images.shape[1:], mean=(float(pixels.mean()),),
      std=(float(pixels.std()),), class_names=member.class_names,
      digest=digest), os.path.dirname(
          files['train_images']))
