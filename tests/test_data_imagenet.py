"""ImageNet parquet loader on tiny shards fabricated in the Hugging Face schema."""
import io
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cure_jax.data import imagenet

_IMAGE_TYPE = pa.struct([('bytes', pa.binary()), ('path', pa.string())])


def _encode(pixels_HxWxC, fmt):
  buffer = io.BytesIO()
  Image.fromarray(pixels_HxWxC).save(buffer, format=fmt, **({'quality': 95} if fmt == 'JPEG'
                                                             else {}))
  return buffer.getvalue()


def _write_shard(path, images, labels, fmt='PNG', row_group_size=3, names=None):
  column = pa.array([{'bytes': _encode(x, fmt), 'path': f'{i}.{fmt.lower()}'}
                     for i, x in enumerate(images)], _IMAGE_TYPE)
  table = pa.table({'image': column, 'label': pa.array(labels, pa.int64())})
  if names is not None:
    features = {'image': {'_type': 'Image'}, 'label': {'names': names, '_type': 'ClassLabel'}}
    table = table.replace_schema_metadata(
        {b'huggingface': json.dumps({'info': {'features': features}}).encode()})
  pq.write_table(table, path, row_group_size=row_group_size)


def _random_images(rng, n, size=128):
  return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def hf_dir(tmp_path):
  """Two train shards (7 + 4 rows, row groups of 3) and one validation shard of 6 rows."""
  rng = np.random.default_rng(0)
  (tmp_path / 'data').mkdir()
  images = _random_images(rng, 11)
  labels = rng.integers(0, 1000, 11)
  names = [f'class {k}' for k in range(1000)]
  _write_shard(tmp_path / 'data' / 'train-00000-of-00002.parquet', images[:7], labels[:7],
               names=names)
  _write_shard(tmp_path / 'data' / 'train-00001-of-00002.parquet', images[7:], labels[7:],
               names=names)
  val_images, val_labels = _random_images(rng, 6), rng.integers(0, 1000, 6)
  _write_shard(tmp_path / 'data' / 'validation-00000-of-00001.parquet', val_images, val_labels)
  _write_shard(tmp_path / 'data' / 'test-00000-of-00001.parquet', val_images, [-1] * 6)
  return tmp_path, (images, labels), (val_images, val_labels)


def _resized(pixels_HxWxC, size):
  return np.asarray(Image.fromarray(pixels_HxWxC).resize((size, size),
                                                         Image.Resampling.BILINEAR))


@pytest.mark.parametrize('image_size', [128, 32])
def test_records_match_the_encoded_images(hf_dir, image_size):
  data_dir, (images, labels), (val_images, val_labels) = hf_dir
  splits = imagenet.load_imagenet(str(data_dir), split_seed=4, image_size=image_size)
  assert splits.num_classes == 1000 and tuple(splits.image_shape) == (image_size, image_size, 3)
  assert splits.mean == imagenet.MEAN and splits.class_names[:2] == ('class 0', 'class 1')
  np.testing.assert_array_equal(splits.train.labels, labels)
  assert splits.train.labels.dtype == np.int32
  for i in range(len(images)):   # crosses row-group and file boundaries
    record = splits.train[i]
    assert record['image'].dtype == np.uint8 and record['label'] == labels[i]
    # PNG is lossless: 128 px comes back exactly; smaller sizes equal PIL's bilinear resize.
    np.testing.assert_array_equal(record['image'], _resized(images[i], image_size))
  val_idx, test_idx = splits.val.indices, splits.test.indices
  assert sorted([*val_idx, *test_idx]) == list(range(6)) and len(val_idx) == 3
  for half in (splits.val, splits.test):
    for j in range(len(half)):
      k = half.indices[j]
      assert half[j]['label'] == val_labels[k] == half.labels[j]
      np.testing.assert_array_equal(half[j]['image'], _resized(val_images[k], image_size))


def test_default_size_is_224(hf_dir):
  splits = imagenet.load_imagenet(str(hf_dir[0]))
  assert splits.train[0]['image'].shape == (224, 224, 3)
  assert tuple(splits.image_shape) == (224, 224, 3)


@pytest.mark.parametrize('mode', ['RGB', 'L'])
def test_constant_colour_jpeg_keeps_its_colour(tmp_path, mode):
  colour = (200, 30, 90)
  pixels = np.broadcast_to(np.array(colour, np.uint8), (128, 128, 3)).copy()
  if mode == 'L':   # some ImageNet JPEGs are greyscale: they must come back as RGB
    pixels = np.full((128, 128), 77, np.uint8)
    colour = (77, 77, 77)
  path = tmp_path / 'train-00000-of-00001.parquet'
  _write_shard(path, [pixels], [5], fmt='JPEG')
  source = imagenet.ParquetImageSource([path], image_size=32)
  image = source[0]['image']
  assert image.shape == (32, 32, 3)
  np.testing.assert_allclose(image.reshape(-1, 3).mean(0), colour, atol=3)
  assert np.abs(image.astype(int) - colour).max() <= 8


def test_random_access_agrees_with_sequential_and_reads_each_group_once(hf_dir, monkeypatch):
  data_dir = hf_dir[0]
  files = imagenet.find_parquet_files(str(data_dir), 'train')
  reads = []
  original = pq.ParquetFile.read_row_group

  def counting(self, i, *args, **kwargs):
    reads.append(i)
    return original(self, i, *args, **kwargs)
  monkeypatch.setattr(pq.ParquetFile, 'read_row_group', counting)
  source = imagenet.ParquetImageSource(files, image_size=16)
  sequential = [source[i]['image'] for i in range(len(source))]
  assert len(reads) == 5   # 7 rows -> groups of 3, 3, 1; 4 rows -> 3, 1
  order = np.random.default_rng(1).permutation(len(source))
  shuffled = imagenet.ParquetImageSource(files, image_size=16, cached_row_groups=1)
  for i in order:
    np.testing.assert_array_equal(shuffled[int(i)]['image'], sequential[i])
  np.testing.assert_array_equal(source[-1]['image'], sequential[-1])
  with pytest.raises(IndexError, match='11'):
    source[11]


def test_source_survives_pickling(hf_dir):
  source = imagenet.ParquetImageSource(imagenet.find_parquet_files(str(hf_dir[0]), 'train'), 16)
  first = source[8]['image']
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[8]['image'], first)
  np.testing.assert_array_equal(clone.labels, source.labels)


def test_missing_files_say_where_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match='huggingface-cli download benjamin-paine'):
    imagenet.load_imagenet(str(tmp_path / 'absent'))
  (tmp_path / 'data').mkdir()
  with pytest.raises(FileNotFoundError, match='train-.*huggingface-cli'):
    imagenet.load_imagenet(str(tmp_path))


def test_corrupt_and_wrong_files_are_reported(hf_dir):
  data_dir = hf_dir[0]
  shard = data_dir / 'data' / 'train-00001-of-00002.parquet'
  shard.write_bytes(b'not a parquet file at all')
  with pytest.raises(ValueError, match='train-00001-of-00002.parquet is not a readable'):
    imagenet.load_imagenet(str(data_dir), image_size=16)
  pq.write_table(pa.table({'pixels': [1], 'label': [0]}), shard)
  with pytest.raises(ValueError, match="columns \\['pixels', 'label'\\]"):
    imagenet.load_imagenet(str(data_dir), image_size=16)
  shard.unlink()
  validation = data_dir / 'data' / 'validation-00000-of-00001.parquet'
  validation.unlink()
  (data_dir / 'data' / 'test-00000-of-00001.parquet').rename(validation)
  with pytest.raises(ValueError, match='outside \\[0, 1000\\).*-1'):
    imagenet.load_imagenet(str(data_dir), image_size=16)


def test_undecodable_image_names_its_file(tmp_path):
  path = tmp_path / 'train-00000-of-00001.parquet'
  column = pa.array([{'bytes': b'garbage', 'path': 'x.jpg'}], _IMAGE_TYPE)
  pq.write_table(pa.table({'image': column, 'label': pa.array([3], pa.int64())}), path)
  source = imagenet.ParquetImageSource([path], image_size=16)
  with pytest.raises(ValueError, match='train-00000-of-00001.parquet \\(record 0\\)'):
    source[0]


def _truncated(raw):
  return raw[:len(raw) // 2]


def _flipped_footer(raw):
  # The footer length and the trailing "PAR1" magic end the file.
  return raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:])


@pytest.mark.parametrize('damage', [_truncated, _flipped_footer])
def test_damaged_shard_names_its_file(hf_dir, damage):
  data_dir = hf_dir[0]
  shard = data_dir / 'data' / 'validation-00000-of-00001.parquet'
  shard.write_bytes(damage(shard.read_bytes()))
  with pytest.raises(ValueError) as err:
    splits = imagenet.load_imagenet(str(data_dir), image_size=16)
    [splits.test[i] for i in range(len(splits.test))]  # corrupt pages surface on reading
  message = str(err.value)
  assert str(shard) in message and ('download' in message or 'corrupt' in message)
