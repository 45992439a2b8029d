"""CIFAR loaders on fabricated archives in the official formats, and on mocked TFDS data."""
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest

from cure_jax.data import cifar


class _Python2Pickler(pickle._Pickler):
  """Writes pickles the way the official (Python 2 cPickle, protocol 2) CIFAR files are.

  Python 2 strings are byte strings (BINSTRING opcodes) and numpy lived in `numpy.core`.
  """
  dispatch = dict(pickle._Pickler.dispatch)

  def save_py2_string(self, obj):
    raw = obj.encode('latin1') if isinstance(obj, str) else obj
    if len(raw) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(raw)) + raw)
    self.memoize(obj)

  dispatch[bytes] = save_py2_string
  dispatch[str] = save_py2_string

  def save_global(self, obj, name=None):
    module = obj.__module__.replace('numpy._core', 'numpy.core')
    self.write(pickle.GLOBAL + f'{module}\n{name or obj.__qualname__}\n'.encode())
    self.memoize(obj)


def _py2_pickle(obj):
  buffer = io.BytesIO()
  _Python2Pickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue()


def _random_batch(rng, n, num_classes):
  return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, num_classes, n)


def _to_rows(images_NxHxWxC):
  """The files' layout: each row is the red plane, then green, then blue, each row-major."""
  return images_NxHxWxC.transpose(0, 3, 1, 2).reshape(len(images_NxHxWxC), -1)


def _write_tar(path, folder, files):
  with tarfile.open(path, 'w:gz') as tar:
    for name, raw in files.items():
      info = tarfile.TarInfo(f'{folder}/{name}')
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))


def _cifar10_python_files(rng, sizes=(3, 2, 4, 1, 2), test_size=6):
  files, train_images, train_labels = {}, [], []
  for i, n in enumerate(sizes, start=1):
    images, labels = _random_batch(rng, n, 10)
    files[f'data_batch_{i}'] = _py2_pickle({
        b'batch_label': f'training batch {i} of 5'.encode(), b'labels': labels.tolist(),
        b'data': _to_rows(images), b'filenames': [f'img_{i}_{j}.png'.encode() for j in range(n)]})
    train_images.append(images)
    train_labels.append(labels)
  test_images, test_labels = _random_batch(rng, test_size, 10)
  files['test_batch'] = _py2_pickle({
      b'batch_label': b'testing batch 1 of 1', b'labels': test_labels.tolist(),
      b'data': _to_rows(test_images), b'filenames': [b'x.png'] * test_size})
  files['batches.meta'] = _py2_pickle({
      b'num_cases_per_batch': 10000, b'num_vis': 3072,
      b'label_names': [f'class{k}'.encode() for k in range(10)]})
  train = (np.concatenate(train_images), np.concatenate(train_labels))
  return files, train, (test_images, test_labels)


def _cifar100_binary_files(rng, train_size=7, test_size=5):
  def records(images, fine):
    coarse = fine // 5
    return np.concatenate([coarse[:, None], fine[:, None], _to_rows(images)], 1).astype(
        np.uint8).tobytes()
  train, test = _random_batch(rng, train_size, 100), _random_batch(rng, test_size, 100)
  files = {'train.bin': records(*train), 'test.bin': records(*test),
           'fine_label_names.txt': '\n'.join(f'fine{k}' for k in range(100)).encode() + b'\n',
           'coarse_label_names.txt': '\n'.join(f'coarse{k}' for k in range(20)).encode()}
  return files, train, test


def _check_splits(splits, train, test, num_classes, split_seed):
  assert splits.num_classes == num_classes and tuple(splits.image_shape) == (32, 32, 3)
  assert len(splits.train) == len(train[0])
  for i in range(len(train[0])):
    record = splits.train[i]
    np.testing.assert_array_equal(record['image'], train[0][i])
    assert record['label'] == train[1][i]
  np.testing.assert_array_equal(splits.train.labels, train[1])
  # val and test are disjoint halves covering the official test split.
  val_idx, test_idx = splits.val.indices, splits.test.indices
  assert not set(val_idx) & set(test_idx)
  assert sorted([*val_idx, *test_idx]) == list(range(len(test[0])))
  assert len(val_idx) == len(test[0]) // 2
  for half in (splits.val, splits.test):
    for j in range(len(half)):
      k = half.indices[j]
      np.testing.assert_array_equal(half[j]['image'], test[0][k])
      assert half[j]['label'] == test[1][k] == half.labels[j]
  again = cifar.split_in_half(splits.val.base, split_seed)
  np.testing.assert_array_equal(again[0].indices, val_idx)


def _place(root, folder, files, extracted, tar_name):
  """The files as the extracted ``folder`` or inside the tarball ``tar_name``."""
  if extracted:
    (root / folder).mkdir()
    for name, raw in files.items():
      (root / folder / name).write_bytes(raw)
  else:
    _write_tar(root / tar_name, folder, files)


# (dataset, fabricate, rng seed, folder, tarball, split seed, first class names, mean, std);
# cifar100 reads the binary format's fine labels.
FORMATS = [
    ('cifar10', lambda rng: _cifar10_python_files(rng), 0, 'cifar-10-batches-py',
     'cifar-10-python.tar.gz', 3, ('class0', 'class1'), (0.4914, 0.4822, 0.4465),
     (0.2470, 0.2435, 0.2616)),
    ('cifar100', lambda rng: _cifar100_binary_files(rng), 1, 'cifar-100-binary',
     'cifar-100-binary.tar.gz', 0, ('fine0', 'fine1'), None, (0.2673, 0.2564, 0.2762)),
]


@pytest.mark.parametrize('extracted', [False, True])
@pytest.mark.parametrize('name,fabricate,rng_seed,folder,tar_name,split_seed,first,mean,std',
                         FORMATS)
def test_cifar_formats_round_trip(tmp_path, extracted, name, fabricate, rng_seed, folder,
                                  tar_name, split_seed, first, mean, std):
  files, train, test = fabricate(np.random.default_rng(rng_seed))
  _place(tmp_path, folder, files, extracted, tar_name)
  splits = cifar.load_cifar(name, str(tmp_path), split_seed=split_seed)
  num_classes = 10 if name == 'cifar10' else 100
  _check_splits(splits, train, test, num_classes, split_seed=split_seed)
  assert splits.class_names[:2] == first and len(splits.class_names) == num_classes
  assert mean is None or splits.mean == mean
  assert splits.std == std


def test_python_and_binary_flavours_agree(tmp_path):
  rng = np.random.default_rng(2)
  files, train, test = _cifar10_python_files(rng, sizes=(2, 2, 2, 2, 2), test_size=4)
  (tmp_path / 'py').mkdir()
  _write_tar(tmp_path / 'py' / 'cifar-10-python.tar.gz', 'cifar-10-batches-py', files)
  binary = {f'data_batch_{i}.bin': np.concatenate(
      [train[1][2 * i - 2:2 * i, None], _to_rows(train[0][2 * i - 2:2 * i])], 1).astype(
          np.uint8).tobytes() for i in range(1, 6)}
  binary['test_batch.bin'] = np.concatenate([test[1][:, None], _to_rows(test[0])], 1).astype(
      np.uint8).tobytes()
  binary['batches.meta.txt'] = ''.join(f'class{k}\n' for k in range(10)).encode()
  (tmp_path / 'bin').mkdir()
  _write_tar(tmp_path / 'bin' / 'cifar-10-binary.tar.gz', 'cifar-10-batches-bin', binary)
  from_py = cifar.load_cifar('cifar10', str(tmp_path / 'py'))
  from_bin = cifar.load_cifar('cifar10', str(tmp_path / 'bin'))
  np.testing.assert_array_equal(from_py.train.images, from_bin.train.images)
  np.testing.assert_array_equal(from_py.test.labels, from_bin.test.labels)
  assert from_py.class_names == from_bin.class_names


def test_restricted_unpickler_refuses_code(tmp_path):
  marker = tmp_path / 'pwned'
  evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
  with pytest.raises(ValueError, match='os.system'):
    cifar.safe_unpickle(evil, 'evil')
  files, _, _ = _cifar10_python_files(np.random.default_rng(0))
  files['data_batch_2'] = evil
  _write_tar(tmp_path / 'cifar-10-python.tar.gz', 'cifar-10-batches-py', files)
  with pytest.raises(ValueError, match='data_batch_2.*os.system'):
    cifar.load_cifar('cifar10', str(tmp_path))
  assert not marker.exists()
  # The allowed globals still build arrays: a plain Python 3 pickle loads too.
  data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
  loaded = cifar.safe_unpickle(pickle.dumps({'data': data, 'labels': [1, 2]}, protocol=2))
  np.testing.assert_array_equal(loaded['data'], data)


def test_corrupt_binary_file_is_reported(tmp_path):
  files, _, _ = _cifar100_binary_files(np.random.default_rng(0))
  files['train.bin'] = files['train.bin'][:-5]
  (tmp_path / 'cifar-100-binary').mkdir()
  for name, raw in files.items():
    (tmp_path / 'cifar-100-binary' / name).write_bytes(raw)
  with pytest.raises(ValueError, match='train.bin.*truncated'):
    cifar.load_cifar('cifar100', str(tmp_path))


def test_tfds_path_with_mocked_data(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  from tensorflow_datasets.testing import mocking

  # tfds 4.9.10's mock stores `__getitems__` as an unbound partial on a MagicMock, so it is
  # called without `self`; real ArrayRecord sources are unaffected. Accept both spellings.
  def getitems(*args, generator, serialized=False):
    del serialized
    return [generator[k] for k in args[-1]]
  monkeypatch.setattr(mocking, '_getitems', getitems)
  with tfds.testing.mock_data(num_examples=12):
    splits = cifar.load_cifar('cifar10', data_dir=None, split_seed=1)
    assert len(splits.train) == 12 and len(splits.val) + len(splits.test) == 12
    for i in (0, 5, 11):
      record = splits.train[i]
      assert record['image'].shape == (32, 32, 3) and record['image'].dtype == np.uint8
      assert record['label'] == splits.train.labels[i] == int(splits.train.source[i]['label'])
    assert set(splits.val.indices).isdisjoint(splits.test.indices)
    assert len(splits.class_names) == 10


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_missing_data_says_how_to_prepare(tmp_path, name):
  with pytest.raises(FileNotFoundError) as err:
    cifar.load_cifar(name, str(tmp_path / 'nowhere'))
  message = str(err.value)
  assert str(tmp_path / 'nowhere') in message
  assert 'download_and_prepare' in message and 'python.tar.gz' in message


def test_unknown_name_is_rejected(tmp_path):
  with pytest.raises(ValueError, match='cifar1000'):
    cifar.load_cifar('cifar1000', str(tmp_path))


def _cifar10_tarball(tmp_path):
  files, train, test = _cifar10_python_files(np.random.default_rng(3))
  path = tmp_path / 'cifar-10-python.tar.gz'
  _write_tar(path, 'cifar-10-batches-py', files)
  return path, train, test


def _truncate(raw):
  return raw[:len(raw) // 2]


def _flip_middle(raw):
  middle = len(raw) // 2
  return raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 16]) + raw[middle + 16:]


def _garbage(raw):
  return b'<html>404 Not Found</html>' * 3


@pytest.mark.parametrize('damage', [_truncate, _flip_middle, _garbage])
def test_damaged_tarball_names_the_file_and_says_to_download_again(tmp_path, damage):
  path, _, _ = _cifar10_tarball(tmp_path)
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(ValueError) as err:
    cifar.load_cifar('cifar10', str(tmp_path))
  message = str(err.value)
  assert str(path) in message and 'download it again' in message
  assert '\n' not in message


def test_data_dir_may_be_the_official_tarball_itself(tmp_path):
  path, train, test = _cifar10_tarball(tmp_path)
  _check_splits(cifar.load_cifar('cifar10', str(path), split_seed=2), train, test, 10, 2)


@pytest.mark.parametrize('name', ['cifar10.tar.gz', 'cifar-100-python.tar.gz', 'notes.txt'])
def test_data_dir_that_is_another_file_says_to_give_the_folder(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(b'x')
  with pytest.raises(ValueError) as err:
    cifar.load_cifar('cifar10', str(path))
  message = str(err.value)
  assert f'config.data.data_dir={str(path)!r} is a file' in message
  assert 'cifar-10-python.tar.gz' in message and 'download' not in message
