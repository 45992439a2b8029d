"""pretrained.save: HF directories and GGUF files that pretrained.load reads back as the same
model (tiny checkpoints from tests/tiny_llama.py), and bad input refused with nothing left.

Measured logit error of a GGUF round trip against float32 (relative Frobenius norm, tiny
untied GQA model): F16 4e-4, BF16 3e-3, Q8_0 1.1e-2; the tolerances below are about 4x that.
"""
import dataclasses
import json
import os

import gguf
import jax
import numpy as np
import pytest
from safetensors import safe_open

from cure_jax.weights import pretrained
from cure_jax.models.causal_lm import CausalLM
from cure_jax.text.tokenizer import HFTokenizer

from tests.tiny_llama import CASES, write_gguf, write_hf

_apply = jax.jit(lambda model, params, ids: model.apply({'params': params}, ids),
                 static_argnums=0)
_IDS = np.random.default_rng(3).integers(0, 250, (2, 11))
_TEXT = 'the cat is on the mat, what a tiny capital!'


def _logits(lm, params=None):
  with jax.default_matmul_precision('highest'):
    return np.asarray(_apply(lm.model, lm.params if params is None else params, _IDS))


def _relative_error(lm, back):
  a, b = _logits(lm), _logits(back)
  return np.linalg.norm(a - b) / np.linalg.norm(a)


def _same_logits(got, want):
  """A float32 round trip: the same weights and config bit for bit, so the same program gives
  the same logits bit for bit (on any machine)."""
  np.testing.assert_array_equal(got, want)


def _same_tokenizer(lm, back):
  assert back.tokenizer.encode(_TEXT) == lm.tokenizer.encode(_TEXT)
  assert (back.tokenizer.bos_id, back.tokenizer.eos_id, back.tokenizer.pad_id) == (
      lm.tokenizer.bos_id, lm.tokenizer.eos_id, lm.tokenizer.pad_id)
  assert back.chat_template_source == lm.chat_template_source
  assert back.chat_template == lm.chat_template


def _leaf(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _tensor_names(directory):
  index = os.path.join(directory, 'model.safetensors.index.json')
  if os.path.exists(index):
    with open(index) as f:
      return set(json.load(f)['weight_map'])
  with safe_open(os.path.join(directory, 'model.safetensors'), framework='np') as f:
    return set(f.keys())


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """(the tiny untied GQA checkpoint loaded from HF, the same from GGUF, its tokenizer)."""
  d = tmp_path_factory.mktemp('source')
  cfg, w, tok = write_hf(d / 'hf', 'untied_gqa')
  write_gguf(str(d / 'm.gguf'), cfg, w, tok)
  return pretrained.load(d / 'hf'), pretrained.load(str(d / 'm.gguf')), tok


@pytest.mark.parametrize('case', sorted(CASES))
def test_hf_round_trip_is_exact_and_in_the_importers_layout(tmp_path, case):
  cfg, _, tok = write_hf(tmp_path / 'src', case, sharded=case.endswith('sharded'))
  lm = pretrained.load(tmp_path / 'src')
  out = pretrained.save(lm, tmp_path / 'out')
  assert out == str(tmp_path / 'out')
  back = pretrained.load(out)
  assert back.config == lm.config
  _same_logits(_logits(back), _logits(lm))
  _same_tokenizer(lm, back)
  assert back.tokenizer.encode(_TEXT) == tok.encode(_TEXT).ids
  # The source's own tensor names and config.json values (rope_scaling rebuilt included).
  assert _tensor_names(out) == _tensor_names(tmp_path / 'src')
  with open(os.path.join(out, 'config.json')) as f:
    written = json.load(f)
  assert {k: written.get(k) for k in cfg} == cfg
  assert written['architectures'] == [{'llama': 'LlamaForCausalLM',
                                       'mistral': 'MistralForCausalLM'}[cfg['model_type']]]
  with open(os.path.join(out, 'generation_config.json')) as f:
    assert json.load(f)['eos_token_id'] == tok.token_to_id('</s>')


def test_sharded_bfloat16_save_writes_an_index_that_load_reads(tmp_path, source):
  lm = source[0]
  out = pretrained.save(lm, tmp_path / 'out', dtype='bfloat16', shard_size=20_000)
  with open(os.path.join(out, 'model.safetensors.index.json')) as f:
    index = json.load(f)
  files = sorted(set(index['weight_map'].values()))
  assert len(files) > 2 and files[0] == f'model-00001-of-{len(files):05d}.safetensors'
  total = 0
  for name in files:
    with safe_open(os.path.join(out, name), framework='np') as f:
      sizes = [f.get_tensor(k).nbytes for k in f.keys()]
      assert all(f.get_tensor(k).dtype.name == 'bfloat16' for k in f.keys())
    assert sum(sizes) <= 20_000 or len(sizes) == 1
    total += sum(sizes)
  assert index['metadata']['total_size'] == total
  with open(os.path.join(out, 'config.json')) as f:
    assert json.load(f)['torch_dtype'] == 'bfloat16'
  back = pretrained.load(out)
  assert back.config == lm.config
  assert _relative_error(lm, back) < 1.2e-2  # bfloat16 weights, as GGUF BF16 below
  _same_tokenizer(lm, back)
  # Every file readable by others, as a model directory on a shared server must be
  # (safetensors writes its files 0600).
  assert all(os.stat(os.path.join(out, n)).st_mode & 0o044 == 0o044 for n in os.listdir(out))


# GGUF tensor types: 2-D tensors in the requested type (Q8_0 rows of 48 fall back to F16, as
# llama.cpp does), norms F32.
@pytest.mark.parametrize('dtype,rtol,matrix_type', [
    ('float32', None, 'F32'), ('float16', 2e-3, 'F16'), ('bfloat16', 1.2e-2, 'BF16'),
    ('q8_0', 4e-2, 'Q8_0')])
def test_gguf_round_trip(tmp_path, source, dtype, rtol, matrix_type):
  _, lm, tok = source
  out = pretrained.save(lm, tmp_path / 'out.gguf', 'gguf', dtype=dtype)
  back = pretrained.load(out)
  assert back.config == lm.config
  if rtol is None:
    _same_logits(_logits(back), _logits(lm))
  else:
    assert 0 < _relative_error(lm, back) < rtol
  _same_tokenizer(lm, back)
  assert back.tokenizer.encode(_TEXT) == tok.encode(_TEXT).ids
  types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
  assert types['blk.0.attn_norm.weight'] == types['output_norm.weight'] == 'F32'
  assert types['blk.1.attn_k.weight'] == types['token_embd.weight'] == matrix_type
  assert types['blk.0.ffn_down.weight'] == ('F16' if dtype == 'q8_0' else matrix_type)


@pytest.mark.parametrize('case', ['llama3_rope_gqa', 'mistral_head_dim_sharded'])
def test_hf_to_gguf_to_hf(tmp_path, case):
  """llama3 RoPE via rope_freqs and back; an explicit head dim; a sliding window beyond
  max_len (full attention within it: GGUF's llama drops it, the logits stay the same)."""
  cfg, _, _ = write_hf(tmp_path / 'src', case)
  lm = pretrained.load(tmp_path / 'src')
  via_gguf = pretrained.load(pretrained.save(lm, tmp_path / 'm.gguf', 'gguf'))
  back = pretrained.load(pretrained.save(via_gguf, tmp_path / 'out'))
  for other in (via_gguf, back):
    _same_logits(_logits(other), _logits(lm))
    _same_tokenizer(lm, other)
  with open(tmp_path / 'out' / 'config.json') as f:
    assert json.load(f)['rope_scaling'] == cfg.get('rope_scaling')


@pytest.mark.parametrize('scaling', [
    dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=1.1,  # one smoothed frequency only
         original_max_position_embeddings=64),
    dict(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,  # fixed only up to scale
         original_max_position_embeddings=128)])
def test_rope_scaling_is_rebuilt_from_any_llama3_divisors(tmp_path, source, scaling):
  from cure_jax.weights import llama_layout  # pylint: disable=g-import-not-at-top
  lm = source[0]
  divisors = llama_layout.llama3_rope_divisors(8, lm.config.rope_base, scaling)
  lm = _changed(lm, rope_divisors=divisors)
  back = pretrained.load(pretrained.save(lm, tmp_path / 'out'))
  # Written as float32 (rope_freqs, config.json values): one rounding of float64 divisors.
  np.testing.assert_allclose(back.config.rope_divisors, divisors, rtol=2 * 2.0 ** -24)
  _same_logits(_logits(back), _logits(lm))


def test_sentencepiece_gguf_round_trips(tmp_path, source):
  """A llama.cpp 'llama' vocabulary (as tests/test_pretrained.py's): scores rebuilt from the
  merges give the same pieces; byte pieces are typed BYTE for llama.cpp's byte fallback."""
  merged = {'ll': -1.0, 'he': -2.0, '\u2581he': -3.0, '\u2581hell': -4.0, '\u2581hello': -5.0,
            'or': -6.0, '\u2581w': -7.0, '\u2581wor': -8.0, 'ld': -9.0}
  pieces = (['<unk>', '<s>', '</s>'] + [f'<0x{b:02X}>' for b in range(256)]
            + list('\u2581helowrd') + list(merged))
  types = [2, 3, 3] + [6] * 256 + [1] * (8 + len(merged))
  cfg, w, tok = write_hf(tmp_path / 'm', 'tied_mha')
  write_gguf(str(tmp_path / 'spm.gguf'), cfg, w, tok,
             spm=(pieces, [0.0] * 259 + [-100.0] * 8 + list(merged.values()), types))
  lm = pretrained.load(str(tmp_path / 'spm.gguf'))
  text = 'hello world hi!'
  for out in (pretrained.save(lm, tmp_path / 'out.gguf', 'gguf'),
              pretrained.save(lm, tmp_path / 'out')):
    back = pretrained.load(out)
    assert back.tokenizer.encode(text) == lm.tokenizer.encode(text)
    assert (back.tokenizer.bos_id, back.tokenizer.eos_id) == (1, 2)
    _same_logits(_logits(back), _logits(lm))
  reader = gguf.GGUFReader(str(tmp_path / 'out.gguf'))
  assert reader.get_field('tokenizer.ggml.token_type').contents()[:len(types)] == types
  assert reader.get_field('tokenizer.ggml.add_bos_token').contents() is True


def test_padded_vocabulary_round_trips(tmp_path, source):
  lm = source[1]  # from GGUF: its float32 norm_eps survives both formats unchanged

  def pad(x):
    return np.concatenate([x, np.full((8, x.shape[1]), 0.25, np.float32)])
  cfg = dataclasses.replace(lm.config, vocab_size=lm.config.vocab_size + 8)
  params = dict(lm.params, embed_tokens={'embedding': pad(lm.params['embed_tokens']['embedding'])},
                lm_head={'kernel': pad(lm.params['lm_head']['kernel'].T).T})
  padded = dataclasses.replace(lm, config=cfg, model=CausalLM(cfg), params=params)
  for out in (pretrained.save(padded, tmp_path / 'out.gguf', 'gguf'),
              pretrained.save(padded, tmp_path / 'out')):
    back = pretrained.load(out)
    assert back.config == cfg
    _same_logits(_logits(back), _logits(padded))
    _same_tokenizer(lm, back)


@pytest.mark.parametrize('fmt,name', [('hf', 'out'), ('gguf', 'out.gguf')])
def test_saving_other_params_saves_those(tmp_path, source, fmt, name):
  lm = source[0]
  scaled = jax.tree.map(lambda x: x * 1.5, lm.params)
  back = pretrained.load(pretrained.save(lm, tmp_path / name, fmt, params=scaled))
  for path in (('layers_1', 'self_attn', 'k_proj', 'kernel'), ('norm', 'scale')):
    got, want, old = (np.asarray(_leaf(p, path)) for p in (back.params, scaled, lm.params))
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got, old)
  _same_logits(_logits(back), _logits(lm, scaled))


# --- bad input: one line, nothing written ----------------------------------------------------

def _changed(lm, **fields):
  cfg = dataclasses.replace(lm.config, **fields)
  return dataclasses.replace(lm, config=cfg, model=CausalLM(cfg))


def _other_tokenizer(lm, kind):
  from tokenizers import Tokenizer, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  if kind == 'word_level':
    inner = Tokenizer(models.WordLevel(lm.tokenizer.tokenizer.get_vocab(), unk_token='<s>'))
  else:  # byte-level, but a prefix space GGUF's 'gpt-2' pre-tokenizer does not add
    inner = Tokenizer.from_str(lm.tokenizer.tokenizer.to_str())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
  tok = HFTokenizer(inner, eos_id=lm.tokenizer.eos_id, bos_id=lm.tokenizer.bos_id)
  return dataclasses.replace(lm, tokenizer=tok)


def _bad(name, lm, place):
  """(lm, path, save kwargs, message regex) of one bad save into the directory ``place``."""
  params = lm.params
  cases = {
      'format': (lm, 'out', dict(format='onnx'), r"format='onnx' is not supported"),
      'dtype': (lm, 'out', dict(dtype='int8'), r"dtype='int8' is not supported with format='hf'"),
      'q8_0_hf': (lm, 'out', dict(dtype='q8_0'), r"dtype='q8_0' is not supported with "),
      'shard_size_gguf': (lm, 'o.gguf', dict(format='gguf', shard_size=10),
                          r"shard_size applies to format='hf' only"),
      'shard_size': (lm, 'out', dict(shard_size=0), r'shard_size=0 must be a positive'),
      'not_empty': (lm, 'full', {}, r'full already exists and is not an empty directory'),
      'gguf_exists': (lm, 'old.gguf', dict(format='gguf'), r'old\.gguf already exists'),
      'gguf_suffix': (lm, 'out.bin', dict(format='gguf'), r'out\.bin: .*ends in \.gguf'),
      'no_parent': (lm, 'missing/out', {}, r'missing \(where out would go\) is not an existing'),
      'params_missing': (lm, 'out', dict(params={k: v for k, v in params.items()
                                                 if k != 'lm_head'}),
                         r"params do not match the model: they lack parameter 'lm_head/kernel'"),
      'params_extra': (lm, 'out', dict(params=dict(params, extra={'w': np.zeros(2)})),
                       r"they have the extra parameter 'extra/w'"),
      'params_shape': (lm, 'out', dict(params=dict(params, norm={'scale': np.ones(31)})),
                       r"'norm/scale' has shape \(31,\), the model needs \(32,\)"),
      'params_type': (lm, 'out', dict(params=[1]), r"params must be the model's 'params' tree"),
      'params_nan': (lm, 'out', dict(params=dict(
          params, layers_1=jax.tree.map(lambda x: x * np.nan, params['layers_1']))),
                     r"'layers_1/.*' holds NaN or Inf; nothing was saved"),
      'float16_overflow': (lm, 'o.gguf', dict(format='gguf', dtype='float16', params=jax.tree.map(
          lambda x: x * 1e5, params)), r"beyond the range of float16"),
      'rope_not_llama3': (_changed(lm, rope_divisors=(1.0, 3.0, 2.0, 5.0)), 'out', {},
                          r'rope_divisors \(1\.0, 3\.0, 2\.0, 5\.0\) are not those of any llama3'),
      'sliding_window_gguf': (_changed(lm, sliding_window=4), 'o.gguf', dict(format='gguf'),
                              r"sliding_window=4 \(< max_len=64\) cannot be written to GGUF"),
      'tokenizer_kind': (_other_tokenizer(lm, 'word_level'), 'o.gguf', dict(format='gguf'),
                         r'a WordLevel tokenizer .* cannot be written to GGUF'),
      'tokenizer_read_back': (_other_tokenizer(lm, 'prefix_space'), 'o.gguf',
                              dict(format='gguf'), r"format='gguf' cannot hold this model "
                              r"exactly: read back, the tokenizer's pre-tokenizer differ"),
  }
  (place / 'full').mkdir()
  (place / 'full' / 'x').write_text('x')
  (place / 'old.gguf').write_bytes(b'GGUF')
  return cases[name]


@pytest.mark.parametrize('name', [
    'format', 'dtype', 'q8_0_hf', 'shard_size_gguf', 'shard_size', 'not_empty', 'gguf_exists',
    'gguf_suffix', 'no_parent', 'params_missing', 'params_extra', 'params_shape', 'params_type',
    'params_nan', 'float16_overflow', 'rope_not_llama3', 'sliding_window_gguf',
    'tokenizer_kind', 'tokenizer_read_back'])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, source, name):
  lm, path, kwargs, pattern = _bad(name, source[0], tmp_path)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(ValueError, match=pattern) as e:
    pretrained.save(lm, tmp_path / path, **kwargs)
  assert '\n' not in str(e.value)
  assert sorted(os.listdir(tmp_path)) == before  # no temporary sibling left either
  assert os.listdir(tmp_path / 'full') == ['x']


def test_unwritable_parent(tmp_path, source):
  # /proc refuses new entries even to root, whom file modes do not stop.
  with pytest.raises(ValueError, match=r'^/proc is not writable'):
    pretrained.save(source[0], '/proc/cure-jax-export-test')
  if os.geteuid() != 0:
    (tmp_path / 'ro').mkdir(mode=0o555)
    with pytest.raises(ValueError, match=r'ro is not writable'):
      pretrained.save(source[0], tmp_path / 'ro' / 'out.gguf', 'gguf')
    assert not os.listdir(tmp_path / 'ro')


def test_hf_keeps_a_tokenizer_gguf_cannot_hold(tmp_path, source):
  lm = _other_tokenizer(source[0], 'word_level')
  back = pretrained.load(pretrained.save(lm, tmp_path / 'out'))
  assert back.tokenizer.encode('the cat sat') == lm.tokenizer.encode('the cat sat')
  saved, loaded = (json.loads(t.tokenizer.tokenizer.to_str()) for t in (back, lm))
  # Only a post-processor is added, so that transformers prepends bos as cure_jax does.
  assert saved.pop('post_processor')['type'] == 'TemplateProcessing'
  assert loaded.pop('post_processor') is None
  assert saved == loaded and back.tokenizer.bos_id == 0


def test_an_existing_empty_directory_is_filled(tmp_path, source):
  (tmp_path / 'out').mkdir()
  back = pretrained.load(pretrained.save(source[0], tmp_path / 'out'))
  assert back.config == source[0].config
  assert sorted(os.listdir(tmp_path)) == ['out']
