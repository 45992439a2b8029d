"""Models keyed by what they learnt from: content digests of data files, cached per machine,
in the fingerprint; the same bytes elsewhere reuse a model, new bytes train a new one."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import configs.digits as digits_config
from cure_jax.classification import train
from cure_jax.data import cifar, digits
from cure_jax.infra import content_digest, fingerprint
from tests import test_data_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('CURE_JAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(content_digest, '_MEMORY', {})


def test_file_digest_is_the_bytes_hash_and_is_hashed_once(tmp_path, monkeypatch):
  path = tmp_path / 'a.bin'
  path.write_bytes(b'x' * 5000)
  assert content_digest.file_digest(str(path)) == hashlib.sha256(b'x' * 5000).hexdigest()
  monkeypatch.setattr(content_digest, '_MEMORY', {})   # a new process: the file cache answers
  monkeypatch.setattr(content_digest, 'sha256_file', lambda p: pytest.fail('hashed again'))
  assert content_digest.file_digest(str(path)) == hashlib.sha256(b'x' * 5000).hexdigest()


def test_changed_bytes_change_the_digest_same_bytes_elsewhere_do_not(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  a.mkdir()
  (a / 'train.bin').write_bytes(b'1234')
  shutil.copytree(a, b)
  first = content_digest.files_digest([str(a / 'train.bin')])
  assert content_digest.files_digest([str(b / 'train.bin')]) == first
  (b / 'train.bin').write_bytes(b'1235')
  os.utime(b / 'train.bin', ns=(1, 1))   # a new mtime: the cached value is not used
  assert content_digest.files_digest([str(b / 'train.bin')]) != first


def test_corrupt_digest_cache_is_ignored(tmp_path):
  (tmp_path / 'cache').mkdir()
  (tmp_path / 'cache' / 'file_digests.json').write_text('{not json')
  path = tmp_path / 'f'
  path.write_bytes(b'abc')
  assert content_digest.file_digest(str(path)) == hashlib.sha256(b'abc').hexdigest()
  assert json.loads((tmp_path / 'cache' / 'file_digests.json').read_text())


def _cifar_dir(tmp_path, name, files):
  folder = tmp_path / name
  folder.mkdir()
  test_data_cifar._write_tar(folder / 'cifar-10-python.tar.gz', 'cifar-10-batches-py', files)
  return str(folder)


def test_cifar_model_directory_follows_the_bytes_not_the_folder(tmp_path):
  files, _, _ = test_data_cifar._cifar10_python_files(np.random.default_rng(0))
  config = digits_config.get_config('smoke')
  config.data.name = 'cifar10'

  def directory(data_dir):
    config.data.data_dir = data_dir
    data = cifar.load_cifar('cifar10', data_dir)
    return train.checkpoint_dir(str(tmp_path / 'work'), config, 'original', data=data)

  first = directory(_cifar_dir(tmp_path, 'a', files))
  assert directory(_cifar_dir(tmp_path, 'b', files)) == first   # a copy: the same model
  changed = dict(files, data_batch_1=files['data_batch_1'].replace(b'training batch 1',
                                                                    b'training batch 9'))
  assert directory(_cifar_dir(tmp_path, 'c', changed)) != first


def test_embedded_digits_keep_the_published_fingerprints(tmp_path):
  """The digits' digest is pinned: the README job's models keep the names its rows carry."""
  data = digits.load_digits()
  assert data.digest in fingerprint.PINNED_DATA
  with open(os.path.join(ROOT, 'docs', 'results.json')) as f:
    rows = json.load(f)['rows']
  published = next(r['model_fingerprint']['original'] for r in rows
                   if r['method'] == 'original' and r['model_seed'] == 0)
  directory = train.checkpoint_dir(str(tmp_path), digits_config.get_config(), 'original',
                                   seed=0, data=data)
  assert os.path.basename(directory) == published
  other = fingerprint.model_settings(digits_config.get_config(), 'original', 0, (), 'ff00')
  assert other['data_digest'] == 'ff00'
  with pytest.raises(ValueError, match='no content digest'):
    fingerprint.model_settings(digits_config.get_config(), 'original', 0, (), '')


def test_rerun_after_the_data_changed_names_the_older_model(tmp_path):
  config = digits_config.get_config('smoke')
  old = fingerprint.model_settings(config, 'original', 0, (), 'aaaa')
  new = fingerprint.model_settings(config, 'original', 0, (), 'bbbb')
  old_dir = tmp_path / fingerprint.model_fingerprint(old)
  old_dir.mkdir()
  (old_dir / 'model.json').write_text(json.dumps({'settings': old}))
  new_dir = tmp_path / fingerprint.model_fingerprint(new)
  assert fingerprint.same_settings_other_inputs(str(new_dir), new) == (
      old_dir.name, ['data_digest'])
  other_seed = fingerprint.model_settings(config, 'original', 1, (), 'bbbb')
  assert fingerprint.same_settings_other_inputs(str(new_dir), other_seed) is None


def test_embedded_smollm2_weights_keep_the_published_fingerprints():
  from cure_jax.lm import defaults as lm_config
  from cure_jax.weights import pretrained
  assert pretrained.weights_digest('smollm2-135m-instruct') in fingerprint.PINNED_WEIGHTS
  config = lm_config.get_config('smoke')
  pinned = fingerprint.lm_model_settings(config, 'original', {}, 't', [],
                                         next(iter(fingerprint.PINNED_WEIGHTS)))
  assert 'weights_digest' not in pinned
  assert fingerprint.lm_model_settings(config, 'original', {}, 't', [], 'ab')[
      'weights_digest'] == 'ab'
