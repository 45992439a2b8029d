"""Imported weights are checked: NaN/Inf in safetensors or GGUF data is one clear error, a
corrupt or old import-cache entry is rebuilt from its source, and ``weights_digest`` names a
checkpoint by its bytes."""
import json
import logging
import os
import shutil

import gguf
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cure_jax.infra import content_digest
from cure_jax.weights import import_checks, llama_layout, pretrained

from tests.tiny_llama import write_gguf, write_hf


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('CURE_JAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(content_digest, '_MEMORY', {})


def _params(lm):
  return {'/'.join(k): np.asarray(v) for k, v in llama_layout.flatten(lm.params)}


def _assert_same_params(a, b):
  a, b = _params(a), _params(b)
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _gguf(tmp_path, name='tiny.gguf'):
  cfg, w, tok = write_hf(tmp_path / 'hf', 'tied_mha')
  path = str(tmp_path / name)
  write_gguf(path, cfg, w, tok)
  return path


def _flip_byte(path, offset, xor=0x01):
  with open(path, 'r+b') as f:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ xor]))


# --- non-finite weights -----------------------------------------------------------------------

@pytest.mark.parametrize('bf16,bad', [(False, np.nan), (True, np.inf)])
def test_nan_or_inf_in_safetensors_names_the_tensor_and_file(tmp_path, bf16, bad):
  write_hf(tmp_path / 'm', 'untied_gqa', bf16=bf16)
  weights = str(tmp_path / 'm' / 'model.safetensors')
  tensors = load_file(weights)
  key = 'model.layers.1.mlp.up_proj.weight'
  tensors[key][3, 5] = bad
  save_file(tensors, weights)
  pattern = (r"m/model\.safetensors: tensor 'model\.layers\.1\.mlp\.up_proj\.weight': 1 of "
             r'1536 values are NaN/Inf .*re-download or re-convert the checkpoint\.$')
  with pytest.raises(import_checks.NonFiniteWeightsError, match=pattern) as info:
    pretrained.load(tmp_path / 'm')
  assert isinstance(info.value, ValueError) and '\n' not in str(info.value)


def test_ff_bytes_in_gguf_tensor_data_are_an_error_and_leave_no_cache_entry(tmp_path):
  path = _gguf(tmp_path, 'bad.gguf')
  tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == 'blk.0.attn_v.weight')
  with open(path, 'r+b') as f:
    f.seek(int(tensor.data_offset) + 8)
    f.write(b'\xff' * 8)   # two float32 NaNs
  pattern = (r"bad\.gguf: tensor 'blk\.0\.attn_v\.weight': 2 of 1024 values are NaN/Inf.*"
             r're-download or re-convert the checkpoint\.$')
  with pytest.raises(import_checks.NonFiniteWeightsError, match=pattern):
    pretrained.load(path)
  with pytest.raises(import_checks.NonFiniteWeightsError, match=pattern):
    pretrained.load(path, cache=True)
  cache = tmp_path / 'cache'
  assert not cache.exists() or not os.listdir(cache)


def test_check_finite_dtypes():
  import_checks.check_finite(np.arange(5), 'x', 'fix')   # integers cannot be NaN
  import_checks.check_finite(np.ones(3, ml_dtypes.bfloat16), 'x', 'fix')
  with pytest.raises(ValueError, match=r'^w: 1 of 2 values .*; fix it$'):
    import_checks.check_finite(np.array([1.0, 1e300]), 'w', 'fix it')   # Inf as float32
  big = np.zeros(import_checks._CHUNK_VALUES + 7, np.float16)
  big[-1] = np.inf   # in the last, partial chunk
  with pytest.raises(ValueError, match='1 of'):
    import_checks.check_finite(big, 'w', 'fix')


# --- the import cache verifies its entries ---------------------------------------------------

def _entry(tmp_path):
  (entry,) = [e for e in os.listdir(tmp_path / 'cache') if not e.startswith(('.', 'file_'))]
  return tmp_path / 'cache' / entry


@pytest.mark.parametrize('damage', ['flipped_weight_byte', 'old_entry_without_digest',
                                    'flipped_tokenizer_byte', 'garbage_meta', 'edited_meta'])
def test_corrupt_or_old_cache_entry_is_rebuilt_from_the_source(tmp_path, caplog, damage):
  path = _gguf(tmp_path)
  source = pretrained.load(path)
  pretrained.load(path, cache=True)
  entry = _entry(tmp_path)
  weights, meta_path = entry / 'params.safetensors', entry / 'meta.json'
  meta = json.loads(meta_path.read_text())
  # A byte in the last tensor's data: still a finite float32, so only the digest sees it.
  _flip_byte(weights, os.path.getsize(weights) - 2)
  if damage == 'old_entry_without_digest':   # as cure-jax wrote entries before digests
    meta.pop('sha256')
    meta_path.write_text(json.dumps(meta))
  elif damage == 'flipped_tokenizer_byte':
    _flip_byte(weights, os.path.getsize(weights) - 2)   # undone: the weights are intact
    _flip_byte(entry / 'tokenizer.json', 40, xor=0x20)
  elif damage == 'garbage_meta':
    meta_path.write_bytes(b'{"config": \xff')
  elif damage == 'edited_meta':
    _flip_byte(weights, os.path.getsize(weights) - 2)
    meta['tokenizer']['eos_id'] = 0
    meta_path.write_text(json.dumps(meta))
  expected = {'flipped_weight_byte': 'params.safetensors does not match its recorded sha256',
              'old_entry_without_digest': 'has no recorded digests',
              'flipped_tokenizer_byte': 'tokenizer.json does not match its recorded sha256',
              'garbage_meta': 'has no readable meta.json',
              'edited_meta': 'meta.json does not match its recorded sha256'}[damage]
  with caplog.at_level(logging.WARNING):
    again = pretrained.load(path, cache=True)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and expected in warnings[0], warnings
  assert str(entry) in warnings[0] and 'rebuilding it from' in warnings[0]
  _assert_same_params(again, source)
  assert again.tokenizer.eos_id == source.tokenizer.eos_id
  assert pretrained._entry_problem(str(entry)) is None   # rebuilt in place
  assert not [e for e in os.listdir(tmp_path / 'cache') if e.startswith('.')]   # no leftovers
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    pretrained.load(path, cache=True)
  assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_intact_cache_entry_is_used_not_rebuilt(tmp_path, monkeypatch):
  path = _gguf(tmp_path)
  first = pretrained.load(path, cache=True)
  monkeypatch.setattr(pretrained.gguf_import, 'read',
                      lambda *a, **k: pytest.fail('rebuilt an intact entry'))
  _assert_same_params(pretrained.load(path, cache=True), first)


# --- weights_digest --------------------------------------------------------------------------

def test_weights_digest_of_an_hf_directory_follows_its_bytes_not_its_path(tmp_path):
  write_hf(tmp_path / 'a', 'untied_gqa', sharded=True)
  digest = pretrained.weights_digest(tmp_path / 'a')
  assert len(digest) == 16 and int(digest, 16) >= 0
  assert pretrained.weights_digest(str(tmp_path / 'a')) == digest   # stable
  shutil.copytree(tmp_path / 'a', tmp_path / 'b')
  assert pretrained.weights_digest(tmp_path / 'b') == digest        # same bytes elsewhere
  shard = tmp_path / 'b' / 'model-00002-of-00002.safetensors'
  _flip_byte(shard, os.path.getsize(shard) - 1)
  os.utime(shard, ns=(1, 1))   # a new mtime, as any write gives
  assert pretrained.weights_digest(tmp_path / 'b') != digest
  assert pretrained.weights_digest(tmp_path / 'a') == digest
  write_hf(tmp_path / 'c', 'untied_gqa', sharded=True)
  config = json.loads((tmp_path / 'c' / 'config.json').read_text())
  (tmp_path / 'c' / 'config.json').write_text(json.dumps(dict(config, rope_theta=5e5)))
  assert pretrained.weights_digest(tmp_path / 'c') != digest        # the config counts too


def test_weights_digest_of_a_gguf_and_a_name_is_hashed_once(tmp_path, monkeypatch):
  path = _gguf(tmp_path)
  digest = pretrained.weights_digest(path)
  renamed = str(tmp_path / 'elsewhere.gguf')
  shutil.copyfile(path, renamed)
  assert pretrained.weights_digest(renamed) == digest
  monkeypatch.setitem(pretrained.NAMES, 'tiny', ('tiny-dist', 'tiny.gguf', 'pip install tiny'))
  monkeypatch.setattr(pretrained, 'named_file', lambda name: path)
  assert pretrained.weights_digest('tiny') == digest
  # A new process: the digest comes from the per-machine cache, the file is not read again.
  with monkeypatch.context() as m:
    m.setattr(content_digest, '_MEMORY', {})
    m.setattr(content_digest, 'sha256_file', lambda p: pytest.fail('hashed again'))
    assert pretrained.weights_digest(path) == digest
  _flip_byte(renamed, os.path.getsize(renamed) - 1)
  os.utime(renamed, ns=(1, 1))
  assert pretrained.weights_digest(renamed) != digest
  with pytest.raises(FileNotFoundError, match='neither a model directory'):
    pretrained.weights_digest(tmp_path / 'absent')
