"""Sliding-window attention (Mistral) and padded vocabularies: the window against a float64
loop over each query's allowed keys, the KV-cache path against the full forward, HF import of
a windowed checkpoint, and generation / evaluation with ``vocab_size`` above the tokenizer's.
"""
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cure_jax.infra import fingerprint
from cure_jax.lm import evaluate
from cure_jax.weights import hf_import, pretrained
from cure_jax.models.causal_lm import CausalLM, LMConfig, generate, init_cache

from tests import tolerances
from tests.tiny_llama import numpy_forward, write_hf

WINDOW = 3
TINY = LMConfig(vocab_size=40, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=48,
                max_len=16, tie_embeddings=False, sliding_window=WINDOW)
ITEMS = [{'question': 'what is the capital', 'answer': 'paris', 'paraphrased_answer': 'paris',
          'perturbed_answer': ['the cat'], 'author': 'a'},
         {'question': 'a tiny model', 'answer': 'for tests', 'paraphrased_answer': 'tests',
          'perturbed_answer': ['the mat'], 'author': 'b'}]


def reference_logits(params, cfg, ids, window):
  """float64 forward of one sequence; attention loops over queries, each over its allowed
  keys only: the last ``window`` positions up to and including its own (None: all)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  n, k, h, t = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, len(ids)
  angles = np.arange(t)[:, None] / cfg.rope_base ** (np.arange(0, h, 2) / h)
  cos = np.cos(np.concatenate([angles, angles], -1))[:, None]
  sin = np.sin(np.concatenate([angles, angles], -1))[:, None]
  rope = lambda x: x * cos + np.concatenate([-x[..., h // 2:], x[..., :h // 2]], -1) * sin
  rms = lambda x, g: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.norm_eps) * g
  x = p['embed_tokens']['embedding'][np.asarray(ids)]
  for i in range(cfg.num_layers):
    layer, attn = p[f'layers_{i}'], p[f'layers_{i}']['self_attn']
    y = rms(x, layer['input_layernorm']['scale'])
    q = rope((y @ attn['q_proj']['kernel']).reshape(t, n, h))
    keys = rope((y @ attn['k_proj']['kernel']).reshape(t, k, h))
    values = (y @ attn['v_proj']['kernel']).reshape(t, k, h)
    out = np.zeros((t, n, h))
    for query in range(t):
      allowed = np.arange(0 if window is None else max(0, query - window + 1), query + 1)
      for head in range(n):
        group = head // (n // k)
        s = keys[allowed, group] @ q[query, head] / np.sqrt(h)
        prob = np.exp(s - s.max())
        out[query, head] = prob / prob.sum() @ values[allowed, group]
    x = x + out.reshape(t, n * h) @ attn['o_proj']['kernel']
    y, mlp = rms(x, layer['post_attention_layernorm']['scale']), layer['mlp']
    gate = y @ mlp['gate_proj']['kernel']
    x = x + (gate / (1 + np.exp(-gate)) * (y @ mlp['up_proj']['kernel'])) @ mlp['down_proj'][
        'kernel']
  x = rms(x, p['norm']['scale'])
  return x @ (p['lm_head']['kernel'] if 'lm_head' in p else p['embed_tokens']['embedding'].T)


@pytest.fixture(scope='module')
def tiny():
  model = CausalLM(TINY)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
  tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 10), 0, TINY.vocab_size))
  return model, params, tokens


@functools.partial(jax.jit, static_argnums=0)
def _jit_apply(model, params, tokens, positions, cache):
  return model.apply({'params': params}, tokens, positions, cache=cache)


def _apply(model, params, tokens, positions_BxT=None, cache=None):
  with jax.default_matmul_precision('highest'):  # full float32 on GPU/TPU too
    return _jit_apply(model, params, jnp.asarray(tokens), positions_BxT, cache)


def test_window_matches_loop_over_allowed_keys(tiny):
  model, params, tokens = tiny
  got = np.asarray(_apply(model, params, tokens))
  for row in range(2):
    ref = reference_logits(params, TINY, tokens[row], WINDOW)
    tolerances.assert_lm_logits_close(got[row], ref, TINY)
  # The window bites: beyond it the full-attention reference differs, within it it agrees.
  full = reference_logits(params, TINY, tokens[0], None)
  tolerances.assert_lm_logits_close(got[0, :WINDOW], full[:WINDOW], TINY)
  assert np.abs(got[0, WINDOW:] - full[WINDOW:]).max() > 1e-2


def test_window_at_least_the_length_is_full_attention(tiny):
  _, params, tokens = tiny
  full = np.asarray(_apply(CausalLM(dataclasses.replace(TINY, sliding_window=None)), params,
                           tokens))
  for window in (10, 16):
    wide = CausalLM(dataclasses.replace(TINY, sliding_window=window))
    tolerances.assert_lm_logits_close(_apply(wide, params, tokens), full, TINY)


def test_cached_decoding_with_window_equals_full_forward(tiny):
  model, params, tokens = tiny
  full = np.asarray(_apply(model, params, tokens))
  cache = init_cache(TINY, 2, 12)
  pieces, start = [], 0
  for size in (4, 1, 2, 1, 2):  # a prefill, then single tokens and chunks
    positions = np.broadcast_to(np.arange(start, start + size), (2, size))
    logits, cache = _apply(model, params, tokens[:, start:start + size],
                           positions_BxT=positions, cache=cache)
    pieces.append(np.asarray(logits))
    start += size
  tolerances.assert_lm_logits_close(np.concatenate(pieces, 1), full, TINY)


def test_generate_with_window_equals_greedy_full_forwards(tiny):
  model, params, tokens = tiny
  lengths, num_new = np.array([3, 5]), 6
  expected = np.zeros((2, num_new), np.int32)
  buffer = np.zeros((2, 11), np.int32)  # right padding: later columns cannot change earlier
  buffer[:, :5] = tokens[:, :5]
  for step in range(num_new):  # longer than the window: old keys drop out
    logits = np.asarray(_apply(model, params, buffer))
    for row, n in enumerate(lengths):
      expected[row, step] = buffer[row, n + step] = np.argmax(logits[row, n + step - 1])
  padded = np.where(np.arange(5)[None] < lengths[:, None], tokens[:, :5], 999)  # pads ignored
  left = np.stack([np.roll(row, 5 - n) for row, n in zip(padded, lengths)])
  with jax.default_matmul_precision('highest'):
    got = generate(model, params, padded, lengths, num_new, eos_id=-1)
    got_left = generate(model, params, left, lengths, num_new, eos_id=-1, padding_side='left')
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(got_left, expected)


def test_config_window_validation_and_serialisation():
  base = dataclasses.replace(TINY, sliding_window=None)
  for bad in (0, -2, True, 2.5, '4'):
    with pytest.raises(ValueError, match='sliding_window'):
      dataclasses.replace(TINY, sliding_window=bad)
  assert dataclasses.replace(TINY, sliding_window=np.int64(5)).sliding_window == 5
  # No window: to_dict (the fingerprinted architecture, the import cache's meta) as before.
  old_keys = ['vocab_size', 'num_layers', 'd_model', 'num_heads', 'num_kv_heads', 'd_ff',
              'max_len', 'rope_base', 'norm_eps', 'tie_embeddings', 'dtype',
              'explicit_head_dim', 'rope_divisors']
  assert list(base.to_dict()) == old_keys
  assert TINY.to_dict()['sliding_window'] == WINDOW
  assert fingerprint.digest(base.to_dict()) != fingerprint.digest(TINY.to_dict())
  for cfg in (base, TINY):
    assert LMConfig(**cfg.to_dict()) == cfg
  assert base != TINY and hash(base) != hash(TINY)
  assert dataclasses.replace(base, sliding_window=4).sliding_window == 4
  assert dataclasses.replace(TINY, max_len=8).sliding_window == WINDOW


def _edit_config(directory, **fields):
  path = os.path.join(directory, 'config.json')
  with open(path) as f:
    cfg = json.load(f)
  cfg.update(fields)
  with open(path, 'w') as f:
    json.dump(cfg, f)
  return cfg


def test_hf_mistral_window_beyond_max_len(tmp_path):
  directory = tmp_path / 'm'
  cfg, w, _ = write_hf(directory, 'mistral_head_dim_sharded')
  cfg = _edit_config(directory, sliding_window=4)
  lm = pretrained.load(directory)
  assert lm.config.sliding_window == 4 and lm.config.max_len == cfg['max_position_embeddings']
  assert pretrained.load(directory, max_len=32).config.max_len == 32  # > window: accepted
  ids = np.random.default_rng(5).integers(0, cfg['vocab_size'], 12)
  got = np.asarray(_apply(lm.model, lm.params, ids[None]))[0]
  tolerances.assert_lm_logits_close(got, reference_logits(lm.params, lm.config, ids, 4),
                                    lm.config)
  full = numpy_forward(w, cfg, ids)  # HF-named weights, full attention
  tolerances.assert_lm_logits_close(got[:4], full[:4], lm.config)
  assert np.abs(got[4:] - full[4:]).max() > 1e-2


@pytest.mark.parametrize('fields, window', [
    (dict(model_type='mistral', sliding_window=8), 8),
    (dict(model_type='mistral', sliding_window=None), None),
    (dict(model_type='mistral', sliding_window=8, use_sliding_window=False), None),
    (dict(model_type='llama', sliding_window=8), None),  # transformers' Llama ignores it
])
def test_read_config_window(tmp_path, fields, window):
  write_hf(tmp_path, 'tied_mha')
  _edit_config(tmp_path, **fields)
  cfg = hf_import.read_config(tmp_path, max_len=48)
  assert cfg.sliding_window == window and cfg.max_len == 48
  _edit_config(tmp_path, model_type='mistral', sliding_window=0, use_sliding_window=True)
  with pytest.raises(ValueError, match=r'config\.json: LMConfig\.sliding_window=0'):
    hf_import.read_config(tmp_path)


def _pad_vocab(directory, vocab_size):
  """The checkpoint with ``vocab_size`` rows; two extra lm_head rows ``+-big`` make an extra
  id the argmax at every position (``max(x.u, -x.u)`` is large for any ``x``)."""
  weights = load_file(os.path.join(directory, 'model.safetensors'))
  rng = np.random.default_rng(7)
  for key in ('model.embed_tokens.weight', 'lm_head.weight'):
    w = weights[key]
    extra = rng.normal(0, 0.5, (max(0, vocab_size - len(w)), w.shape[1])).astype(np.float32)
    if key == 'lm_head.weight' and len(extra):
      extra[:2] = [1e3 * extra[0], -1e3 * extra[0]]
    weights[key] = np.concatenate([w, extra])[:vocab_size]
  save_file(weights, os.path.join(directory, 'model.safetensors'))
  _edit_config(directory, vocab_size=vocab_size)


def test_padded_vocabulary_generates_and_evaluates(tmp_path):
  _, _, tok = write_hf(tmp_path, 'untied_gqa')
  size = tok.get_vocab_size()
  _pad_vocab(tmp_path, size + 8)
  lm = pretrained.load(tmp_path)
  assert lm.config.vocab_size == size + 8 and lm.tokenizer.vocab_size == size
  prompt = np.array([lm.tokenizer.encode('the cat sat')])
  unmasked = np.asarray(generate(lm.model, lm.params, prompt, [prompt.shape[1]], 4, eos_id=-1))
  assert (unmasked >= size).all()  # what used to reach decode
  with pytest.raises(ValueError, match=f'outside \\[0, {size}\\).*padded vocabulary'):
    lm.tokenizer.decode(unmasked[0])
  masked = np.asarray(generate(lm.model, lm.params, prompt, [prompt.shape[1]], 4, eos_id=-1,
                               vocab_limit=size))
  assert (masked < size).all()
  logits = np.asarray(_apply(lm.model, lm.params, prompt))
  assert masked[0, 0] == np.argmax(logits[0, -1, :size])
  evaluator = evaluate.Evaluator(lm.model, lm.tokenizer, {'forget': ITEMS}, 'Q: {question} A:',
                                 batch_size=2, max_new_tokens=4)
  answers = evaluator.generate(lm.params)['forget']  # crashed in decode before
  assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_tokenizer_larger_than_model_is_refused(tmp_path):
  _, _, tok = write_hf(tmp_path, 'untied_gqa')
  size = tok.get_vocab_size()
  _pad_vocab(tmp_path, size - 4)
  with pytest.raises(ValueError, match=f'{size} tokens but config.json vocab_size={size - 4}'):
    pretrained.load(tmp_path)
  model = CausalLM(dataclasses.replace(TINY, vocab_size=size - 4, max_len=64))
  with pytest.raises(ValueError, match=f'tokenizer has {size} tokens but the model vocab_size'):
    evaluate.Evaluator(model, hf_import.read_tokenizer(tmp_path)[0], {'forget': ITEMS},
                       '{question}')


def test_token_id_beyond_model_vocabulary_is_refused(tiny):
  model, params, tokens = tiny
  bad = tokens.copy()
  bad[1, 4] = TINY.vocab_size
  message = r"Token id 40 is outside the model's vocabulary \[0, 40\) \(the model has vocab_size=40"
  with pytest.raises(ValueError, match=message):
    model.apply({'params': params}, bad)
  with pytest.raises(ValueError, match=message + r', the tokenizer 30 tokens\)'):
    generate(model, params, bad[:, :6], [3, 6], 2, eos_id=0, vocab_limit=30)
  with pytest.raises(ValueError, match='Token id -1 is outside'):
    model.apply({'params': params}, np.full((1, 3), -1))
