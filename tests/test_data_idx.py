"""The MNIST-family IDX reader on files the test writes in the real format (gzip and plain):
splits, checks of magic numbers, counts and shapes, the default folder, the content digest."""
import dataclasses
import gzip
import os
import shutil
import struct

import ml_collections
import numpy as np
import pytest

from cure_jax.data import idx, load_dataset


def _idx_bytes(array, code=0x08):
  array = np.asarray(array)
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.astype(idx._TYPES[code]).tobytes()


def _write(folder, name, data, gz):
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, name + ('.gz' if gz else ''))
  with open(path, 'wb') as f:
    f.write(gzip.compress(data) if gz else data)
  return path


def write_family(folder, n_train=12, n_test=8, gz=True, seed=0, size=6):
  """Four IDX files in ``folder``; returns (train, test) as (images, labels)."""
  rng = np.random.default_rng(seed)
  splits = {}
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = np.arange(n) % 10
    _write(folder, idx.FILES[f'{split}_images'], _idx_bytes(images), gz)
    _write(folder, idx.FILES[f'{split}_labels'], _idx_bytes(labels), gz)
    splits[split] = (images, labels)
  return splits['train'], splits['test']


@pytest.mark.parametrize('gz', [True, False])
def test_splits_follow_the_files(tmp_path, gz):
  train, test = write_family(str(tmp_path), gz=gz)
  data = idx.load_mnist_family('fashion_mnist', str(tmp_path), split_seed=3)
  assert (data.num_classes, tuple(data.image_shape)) == (10, (6, 6, 1))
  np.testing.assert_array_equal(data.train.images[..., 0], train[0])
  np.testing.assert_array_equal(data.train.labels, train[1])
  val, held = data.val.indices, data.test.indices
  assert len(val) == len(held) == 4 and sorted([*val, *held]) == list(range(8))
  for half in (data.val, data.test):
    for j in range(len(half)):
      np.testing.assert_array_equal(half[j]['image'][..., 0], test[0][half.indices[j]])
      assert half[j]['label'] == test[1][half.indices[j]]
  # A float32 mean of a few hundred pixels (numpy's pairwise sum), stored as float32: a few
  # roundings (< 1e-6); 1e-5 is far above them and far below a wrong scale or split.
  assert data.mean[0] == pytest.approx(train[0].mean() / 255.0, rel=1e-5)
  assert data.class_names[6] == 'Shirt'
  again = idx.load_mnist_family('fashion_mnist', str(tmp_path), split_seed=3)
  np.testing.assert_array_equal(again.val.indices, val)       # seeded halves
  other = idx.load_mnist_family('fashion_mnist', str(tmp_path), split_seed=4)
  assert list(other.val.indices) != list(val)


def test_read_idx_of_other_types_and_dimensions(tmp_path):
  values = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5
  path = _write(str(tmp_path), 'x', _idx_bytes(values, 0x0D), gz=False)
  out = idx.read_idx(path)
  assert out.dtype == np.float32 and out.dtype.isnative
  np.testing.assert_array_equal(out, values)
  path = _write(str(tmp_path), 'y', _idx_bytes(np.array([-3, 70000]), 0x0C), gz=True)
  np.testing.assert_array_equal(idx.read_idx(path), [-3, 70000])


@pytest.mark.parametrize('damage, fragment', [
    (lambda raw: b'\x01' + raw[1:], 'not an IDX file'),
    (lambda raw: raw[:2] + b'\x07' + raw[3:], 'not an IDX file'),
    (lambda raw: raw[:-5], 'truncated'),
    (lambda raw: raw + b'\x00', 'longer than its header says'),
    (lambda raw: raw[:6], 'truncated IDX header'),
])
def test_bad_files_are_named(tmp_path, damage, fragment):
  write_family(str(tmp_path), gz=False)
  path = tmp_path / idx.FILES['train_images']
  path.write_bytes(damage(path.read_bytes()))
  with pytest.raises(ValueError, match=fragment) as err:
    idx.load_mnist_family('mnist', str(tmp_path))
  assert str(path) in str(err.value) and 'download it again' in str(err.value)


def test_corrupt_gzip_and_mismatched_files(tmp_path):
  write_family(str(tmp_path))
  path = tmp_path / (idx.FILES['test_labels'] + '.gz')
  raw = path.read_bytes()
  path.write_bytes(raw[:len(raw) // 2])
  with pytest.raises(ValueError, match=f'{path}: not a readable gzip file'):
    idx.load_mnist_family('kmnist', str(tmp_path))
  _write(str(tmp_path), idx.FILES['test_labels'], _idx_bytes(np.zeros(5)), gz=True)
  with pytest.raises(ValueError, match='labels for 8 images .* do not belong together'):
    idx.load_mnist_family('kmnist', str(tmp_path))
  _write(str(tmp_path), idx.FILES['test_labels'], _idx_bytes(np.full(8, 10)), gz=True)
  with pytest.raises(ValueError, match=r'label 10 outside \[0, 10\)'):
    idx.load_mnist_family('kmnist', str(tmp_path))


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
    idx.load_mnist_family('fashion_mnist', str(tmp_path))
  # Unset data_dir: the folder Debian's package fills.
  write_family(str(tmp_path / 'system'))
  members = dict(idx.MEMBERS)
  members['fashion_mnist'] = dataclasses.replace(members['fashion_mnist'],
                                                 default_dir=str(tmp_path / 'system'))
  monkeypatch.setattr(idx, 'MEMBERS', members)
  cfg = ml_collections.ConfigDict({'name': 'fashion_mnist', 'data_dir': '', 'split_seed': 0})
  assert len(load_dataset(cfg).train) == 12
  with pytest.raises(FileNotFoundError, match=r'config.data.data_dir is unset'):
    idx.load_mnist_family('mnist', None)


def test_digest_follows_the_bytes_not_the_folder(tmp_path, monkeypatch):
  monkeypatch.setenv('CURE_JAX_CACHE', str(tmp_path / 'cache'))
  write_family(str(tmp_path / 'a'))
  shutil.copytree(tmp_path / 'a', tmp_path / 'b')
  first = idx.load_mnist_family('fashion_mnist', str(tmp_path / 'a')).digest
  assert idx.load_mnist_family('fashion_mnist', str(tmp_path / 'b')).digest == first
  write_family(str(tmp_path / 'b'), seed=1)
  assert idx.load_mnist_family('fashion_mnist', str(tmp_path / 'b')).digest != first


def test_a_classifier_trains_on_idx_files(tmp_path):
  from cure_jax import entry
  from tests import helpers
  write_family(str(tmp_path / 'data'), n_train=64, n_test=16, size=8)
  config = helpers.smoke_config(epochs=1)
  config.data.name, config.data.data_dir = 'fashion_mnist', str(tmp_path / 'data')
  config.mode = 'train_original'
  config.model_seeds = 1
  rows = entry.run(config, str(tmp_path / 'work'))
  assert [r['model_seed'] for r in rows] == [0] and 0.0 <= rows[0]['overall_acc'] <= 1.0
  [model] = (tmp_path / 'work' / 'models').glob('original-*')
  assert (model / 'model.json').exists()


def test_a_file_both_gzipped_and_plain_is_refused(tmp_path):
  """Which copy is meant cannot be known (editing the plain one would change nothing)."""
  write_family(str(tmp_path), gz=True)
  write_family(str(tmp_path), gz=False)
  with pytest.raises(ValueError, match='both train-images-idx3-ubyte.gz and '
                                       'train-images-idx3-ubyte: keep one'):
    idx.load_mnist_family('fashion_mnist', str(tmp_path))


def test_digest_covers_the_idx_bytes_read_gzipped_or_plain(tmp_path):
  write_family(str(tmp_path / 'gz'), gz=True)
  write_family(str(tmp_path / 'plain'), gz=False)
  gz = idx.load_mnist_family('fashion_mnist', str(tmp_path / 'gz')).digest
  assert idx.load_mnist_family('fashion_mnist', str(tmp_path / 'plain')).digest == gz
  # gzip's own header (time stamp, level) is not data: recompressed, the same digest.
  path = tmp_path / 'gz' / (idx.FILES['train_images'] + '.gz')
  path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1,
                                 mtime=12345))
  assert idx.load_mnist_family('fashion_mnist', str(tmp_path / 'gz')).digest == gz
  write_family(str(tmp_path / 'plain'), gz=False, seed=1)   # other data: another digest
  assert idx.load_mnist_family('fashion_mnist', str(tmp_path / 'plain')).digest != gz


@pytest.mark.skipif(not os.path.isdir(idx.MEMBERS['fashion_mnist'].default_dir),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debians_fashion_mnist_keeps_the_key_of_its_published_models():
  data = idx.load_mnist_family('fashion_mnist')
  assert data.digest == 'f5cc4ec4f0bd2be3'   # docs/results_fashion_mnist.json names it
