"""CIFAR-10/100 from the official archives, or from prepared TFDS files, without TensorFlow.

Official archives (https://www.cs.toronto.edu/~kriz/cifar.html) come in a "python" flavour
(pickled dicts) and a "binary" flavour (fixed-size records). Both are read from ``data_dir``,
extracted or still as ``.tar.gz``. Pickles are opened with an unpickler that only builds
what these files contain (dicts, lists, bytes, ints and numpy arrays), so a tampered file
cannot run code.
"""
import copy
import dataclasses
import io
import os
import pickle
import tarfile
import zlib

import numpy as np
from numpy._core import multiarray as np_multiarray

from cure_jax.data.sources import (ArraySource, DatasetSplits, LabeledSource, loaded,
                                   split_in_half)
from cure_jax.infra import content_digest

_PIXELS = 32 * 32 * 3


@dataclasses.dataclass(frozen=True)
class _CifarLayout:
  """File names and keys of one CIFAR variant's official archives."""
  num_classes: int
  python_folder: str
  python_tarball: str
  binary_folder: str
  binary_tarball: str
  train_files: tuple[str, ...]   # python flavour; the binary files add '.bin'
  test_file: str
  meta_file: str
  label_key: str                 # CIFAR-100 has coarse and fine labels: we use fine ones
  names_key: str
  binary_names_file: str
  label_bytes: int               # leading label bytes of each binary record
  mean: tuple[float, float, float]
  std: tuple[float, float, float]


_LAYOUTS = {
    'cifar10': _CifarLayout(
        10, 'cifar-10-batches-py', 'cifar-10-python.tar.gz', 'cifar-10-batches-bin',
        'cifar-10-binary.tar.gz', tuple(f'data_batch_{i}' for i in range(1, 6)), 'test_batch',
        'batches.meta', 'labels', 'label_names', 'batches.meta.txt', 1,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': _CifarLayout(
        100, 'cifar-100-python', 'cifar-100-python.tar.gz', 'cifar-100-binary',
        'cifar-100-binary.tar.gz', ('train',), 'test', 'meta', 'fine_labels',
        'fine_label_names', 'fine_label_names.txt', 2,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _latin1_encode(text, encoding):
  # Python 3 protocol-2 pickles spell bytes as `_codecs.encode(str, 'latin1')`.
  if encoding not in ('latin1', 'latin-1'):
    raise ValueError(f'refusing _codecs.encode with encoding {encoding!r} in a CIFAR pickle')
  return text.encode(encoding)


_ALLOWED_GLOBALS = {
    # Files written before numpy 2 name `numpy.core`, later ones `numpy._core`.
    ('numpy.core.multiarray', '_reconstruct'): np_multiarray._reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): np_multiarray._reconstruct,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

  def __init__(self, file, source):
    super().__init__(file, encoding='bytes')   # the official files are Python 2 pickles
    self.source = source

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    raise ValueError(f'{self.source}: refusing to load {module}.{name}; a CIFAR pickle only '
                     'holds dicts, lists, bytes, ints and numpy arrays. Replace the file '
                     'with a fresh copy of the official archive.')


def safe_unpickle(raw: bytes, source: str = '<bytes>') -> dict:
  """Unpickles a CIFAR python-format file into a dict with ``str`` keys.

  Raises ValueError naming ``source`` for any global other than numpy array reconstruction
  or for a payload that is not a dict.
  """
  try:
    obj = _CifarUnpickler(io.BytesIO(raw), source).load()
  except (pickle.UnpicklingError, EOFError) as err:
    raise ValueError(f'{source} is not a valid CIFAR pickle ({err}); download it again') from err
  if not isinstance(obj, dict):
    raise ValueError(f'{source} holds a {type(obj).__name__}, expected a dict')
  return {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _chw_to_hwc(data_Nx3072, source):
  if data_Nx3072.dtype != np.uint8 or data_Nx3072.ndim != 2 or data_Nx3072.shape[1] != _PIXELS:
    raise ValueError(f'{source}: expected uint8 data of shape (N, {_PIXELS}), got '
                     f'{data_Nx3072.dtype} {data_Nx3072.shape}')
  return np.ascontiguousarray(data_Nx3072.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _parse_python_batch(raw, source, layout):
  batch = safe_unpickle(raw, source)
  if 'data' not in batch or layout.label_key not in batch:
    raise ValueError(f'{source}: keys {sorted(batch)} lack "data" or "{layout.label_key}"')
  images = _chw_to_hwc(np.asarray(batch['data']), source)
  labels = np.asarray(batch[layout.label_key], np.int32)
  if labels.shape != (len(images),):
    raise ValueError(f'{source}: {len(images)} images but labels of shape {labels.shape}')
  return images, labels


def _parse_binary_batch(raw, source, layout):
  record = layout.label_bytes + _PIXELS
  if len(raw) % record:
    raise ValueError(f'{source}: size {len(raw)} is not a multiple of the {record}-byte record; '
                     'the file is truncated or corrupt')
  records = np.frombuffer(raw, np.uint8).reshape(-1, record)
  labels = records[:, layout.label_bytes - 1].astype(np.int32)
  return _chw_to_hwc(records[:, layout.label_bytes:], source), labels


def _read_files(data_dir, folder, tarball, names):
  """Reads ``names`` from ``data_dir/folder`` or else ``data_dir/tarball``; None if neither."""
  folders = [os.path.join(data_dir, folder)]
  if os.path.basename(os.path.normpath(data_dir)) == folder:
    folders.append(data_dir)
  for path in folders:
    if os.path.isdir(path):
      missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
      if missing:
        raise FileNotFoundError(f'{path} lacks {missing}: extract {tarball} again')
      out = {}
      for name in names:
        with open(os.path.join(path, name), 'rb') as f:
          out[name] = f.read()
      return out
  tar_path = os.path.join(data_dir, tarball)
  if not os.path.isfile(tar_path):
    return None
  wanted, out = {f'{folder}/{n}': n for n in names}, {}
  try:
    with tarfile.open(tar_path, 'r:*') as tar:
      for member in tar:
        name = wanted.get(member.name.removeprefix('./'))
        if name is not None and member.isfile():
          out[name] = tar.extractfile(member).read()
      # gzip checks its CRC only at the end of the stream: read to it, so flipped bytes in
      # the archive are an error rather than silently changed images.
      while tar.fileobj.read(1 << 20):
        pass
  except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
    reason = str(err).splitlines()[0].rstrip(':') or type(err).__name__
    if 'successfully' in reason:  # tarfile's "none of gz/bz2/xz/tar worked" list
      reason = 'not a gzip, bzip2, xz or tar archive'
    raise ValueError(f'{tar_path} is not a readable tarball ({reason}: truncated or corrupt); '
                     'download it again') from err
  missing = [n for n in names if n not in out]
  if missing:
    raise ValueError(f'{tar_path} lacks {folder}/{missing}; download the official archive again')
  return out


def _load_official(layout, data_dir):
  """Arrays from an official archive in ``data_dir``: (train, test, class names) or None."""
  folder, binary = layout.python_folder, False
  files = _read_files(data_dir, folder, layout.python_tarball,
                      [*layout.train_files, layout.test_file, layout.meta_file])
  if files is None:
    folder, binary = layout.binary_folder, True
    files = _read_files(data_dir, folder, layout.binary_tarball,
                        [n + '.bin' for n in (*layout.train_files, layout.test_file)]
                        + [layout.binary_names_file])
    if files is None:
      return None
  if binary:
    text = files[layout.binary_names_file].decode('utf-8')
    class_names = tuple(line.strip() for line in text.splitlines() if line.strip())
  else:
    meta = safe_unpickle(files[layout.meta_file], f'{folder}/{layout.meta_file}')
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n)
                        for n in meta.get(layout.names_key, ()))

  def parse(name):
    if binary:
      return _parse_binary_batch(files[name + '.bin'], f'{folder}/{name}.bin', layout)
    return _parse_python_batch(files[name], f'{folder}/{name}', layout)

  batches = [parse(n) for n in layout.train_files]
  train = ArraySource(np.concatenate([b[0] for b in batches]),
                      np.concatenate([b[1] for b in batches]))
  return (train, ArraySource(*parse(layout.test_file)), class_names,
          content_digest.bytes_digest(files))


def _read_labels(source, chunk=4096):
  """All labels of a TFDS data source; images are left undecoded to keep this fast."""
  import tensorflow_datasets as tfds
  labels_only = copy.copy(source)   # shares the open files; only the decoders differ
  labels_only.decoders = {'image': tfds.decode.SkipDecoding()}
  labels = []
  for start in range(0, len(labels_only), chunk):
    keys = list(range(start, min(start + chunk, len(labels_only))))
    labels.extend(int(r['label']) for r in labels_only.__getitems__(keys))
  return np.asarray(labels, np.int32)


def _load_tfds(name, layout, data_dir):
  """(train, test, class names) from prepared TFDS ArrayRecord files."""
  try:
    import tensorflow_datasets as tfds
    sources = [tfds.data_source(name, split=split, data_dir=data_dir, download=False)
               for split in ('train', 'test')]
  except Exception as err:  # TFDS reports a missing dataset in several exception types
    raise FileNotFoundError(_how_to_prepare(name, layout, data_dir, err)) from err
  train, test = (LabeledSource(s, _read_labels(s)) for s in sources)
  info = sources[0].dataset_info
  folder = info.data_dir
  files = ([os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, n))] if os.path.isdir(folder) else [])
  # The prepared files; without a folder (TFDS's mocked data) the labels and the version.
  digest = (content_digest.files_digest(files) if files else content_digest.arrays_digest(
      train.labels, test.labels, np.frombuffer(info.full_name.encode(), np.uint8)))
  return train, test, tuple(info.features['label'].names), digest


def _how_to_prepare(name, layout, data_dir, tfds_error):
  where = data_dir or '~/tensorflow_datasets (the TFDS default)'
  tfds_said = (str(tfds_error).splitlines() or [type(tfds_error).__name__])[0]
  return (
      f'No {name} data in {where}: found neither {layout.python_tarball}, '
      f'{layout.binary_tarball}, {layout.python_folder}/ nor {layout.binary_folder}/ there, '
      f'nor prepared TFDS ArrayRecord files (TFDS: {tfds_said}). Prepare one of:\n'
      f'  * download https://www.cs.toronto.edu/~kriz/{layout.python_tarball} into {where} '
      '(no need to extract it), or\n'
      f'  * pip install tensorflow && python -c "import tensorflow_datasets as tfds; '
      f"tfds.builder('{name}', data_dir={data_dir!r}, file_format='array_record')"
      '.download_and_prepare()"')


def load_cifar(name: str, data_dir: str | None, split_seed: int = 0) -> DatasetSplits:
  """CIFAR-10/100: official train split, official test split halved (seeded) into val/test.

  Args:
    name: 'cifar10' or 'cifar100'.
    data_dir: folder holding an official archive (tarball or extracted) or TFDS data;
      None searches only the TFDS default folder.
    split_seed: seed of the validation/test halving of the test split.
  """
  if name not in _LAYOUTS:
    raise ValueError(f'unknown CIFAR variant {name!r}; use one of {sorted(_LAYOUTS)}')
  layout = _LAYOUTS[name]
  if data_dir and os.path.isfile(data_dir):
    data_dir = _folder_of_tarball(layout, data_dir)
  found = _load_official(layout, data_dir) if data_dir and os.path.isdir(data_dir) else None
  if found is None:
    found = _load_tfds(name, layout, data_dir)
  train, test, class_names, digest = found
  val, test = split_in_half(test, split_seed)
  return loaded(DatasetSplits(name=name, train=train, val=val, test=test,
                              num_classes=layout.num_classes, image_shape=(32, 32, 3),
                              mean=layout.mean, std=layout.std, class_names=class_names,
                              digest=digest),
                data_dir)


def _folder_of_tarball(layout, path):
  """``data_dir`` given as the official tarball itself: its folder (it is found there)."""
  if os.path.basename(path) in (layout.python_tarball, layout.binary_tarball):
    return os.path.dirname(os.path.abspath(path))
  raise ValueError(
      f'config.data.data_dir={path!r} is a file, not a folder: give the folder that holds '
      f'{layout.python_tarball} or {layout.binary_tarball} (or their extracted '
      f'{layout.python_folder}/ or {layout.binary_folder}/), or that tarball under its '
      'official name.')
