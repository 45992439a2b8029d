"""Tests of the Llama-layout causal LM: shapes, masking, GQA, RoPE, KV cache and generation.

Shapes are shared across tests (mostly 2x8 tokens) so that few programs get compiled.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cure_jax.models import causal_lm
from cure_jax.models.causal_lm import CausalLM, LMConfig, generate, init_cache
from tests import tolerances

TINY = LMConfig(vocab_size=48, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64,
                max_len=24)


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, TINY.vocab_size)


@pytest.fixture(scope='module')
def tiny():
  model = CausalLM(TINY)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
  return model, params, jax.jit(model.apply)


@pytest.fixture(scope='module')
def tokens_2x8():
  return _tokens((2, 8))


@pytest.fixture(scope='module')
def logits_2x8(tiny, tokens_2x8):
  _, params, apply = tiny
  return apply({'params': params}, tokens_2x8)


def test_shapes_and_llama_parameter_names(tiny, logits_2x8):
  _, params, _ = tiny
  assert set(params) == {'embed_tokens', 'layers_0', 'layers_1', 'norm'}
  layer = params['layers_1']
  assert set(layer) == {'self_attn', 'mlp', 'input_layernorm', 'post_attention_layernorm'}
  attn = {k: v['kernel'].shape for k, v in layer['self_attn'].items()}
  assert attn == {'q_proj': (32, 32), 'k_proj': (32, 16), 'v_proj': (32, 16),
                  'o_proj': (32, 32)}
  mlp = {k: v['kernel'].shape for k, v in layer['mlp'].items()}
  assert mlp == {'gate_proj': (32, 64), 'up_proj': (32, 64), 'down_proj': (64, 32)}
  assert params['embed_tokens']['embedding'].shape == (48, 32)
  assert layer['input_layernorm']['scale'].shape == (32,)
  assert params['norm']['scale'].shape == (32,)
  assert logits_2x8.shape == (2, 8, 48) and logits_2x8.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits_2x8)).all()


@pytest.mark.parametrize('num_kv_heads', [1, 2, 4])
@pytest.mark.parametrize('tie', [True, False])
def test_parameter_shapes_for_head_layouts(num_kv_heads, tie):
  model = CausalLM(dataclasses.replace(TINY, num_kv_heads=num_kv_heads, tie_embeddings=tie))
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))['params']
  assert shapes['layers_0']['self_attn']['k_proj']['kernel'].shape == (32, 8 * num_kv_heads)
  assert ('lm_head' in shapes) == (not tie)
  if not tie:
    assert shapes['lm_head']['kernel'].shape == (32, 48)
  logits = jax.eval_shape(model.apply, {'params': shapes}, jnp.zeros((3, 5), jnp.int32))
  assert logits.shape == (3, 5, 48) and logits.dtype == jnp.float32


def test_tied_head_equals_untied_head_with_transposed_embedding(tiny, tokens_2x8, logits_2x8):
  _, params, _ = tiny
  untied = CausalLM(dataclasses.replace(TINY, tie_embeddings=False))
  untied_params = dict(params, lm_head={'kernel': params['embed_tokens']['embedding'].T})
  tolerances.assert_lm_logits_close(
      jax.jit(untied.apply)({'params': untied_params}, tokens_2x8), logits_2x8, TINY)


def test_future_tokens_do_not_change_earlier_logits(tiny, tokens_2x8, logits_2x8):
  _, params, apply = tiny
  changed = tokens_2x8.at[:, 5].set((tokens_2x8[:, 5] + 1) % TINY.vocab_size)
  after = apply({'params': params}, changed)
  # The same program on the same shapes: the first 5 positions' arithmetic is the same
  # (the masked future adds exact zeros), so their logits are bitwise equal.
  np.testing.assert_array_equal(after[:, :5], logits_2x8[:, :5])
  assert np.abs(np.asarray(after[:, 5:] - logits_2x8[:, 5:])).max() > 1e-4


def test_grouped_kv_heads_equal_multi_head_with_repeated_kv_weights(tiny, tokens_2x8,
                                                                     logits_2x8):
  """GQA with 2 kv heads == MHA whose 4 kv heads copy them (query head h uses kv head h//2)."""
  _, params, _ = tiny
  mha = CausalLM(dataclasses.replace(TINY, num_kv_heads=TINY.num_heads))
  head_dim, groups = TINY.head_dim, TINY.num_heads // TINY.num_kv_heads

  def repeat_heads(kernel_DxKH):
    kernel_DxKxH = kernel_DxKH.reshape(kernel_DxKH.shape[0], -1, head_dim)
    return jnp.repeat(kernel_DxKxH, groups, axis=1).reshape(kernel_DxKH.shape[0], -1)

  mha_params = dict(params)
  for i in range(TINY.num_layers):
    attn = dict(params[f'layers_{i}']['self_attn'])
    for name in ('k_proj', 'v_proj'):
      attn[name] = {'kernel': repeat_heads(attn[name]['kernel'])}
    mha_params[f'layers_{i}'] = dict(params[f'layers_{i}'], self_attn=attn)
  tolerances.assert_lm_logits_close(jax.jit(mha.apply)({'params': mha_params}, tokens_2x8),
                                    logits_2x8, TINY)


def test_rope_scores_depend_only_on_relative_position():
  q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))

  def score(m, n):
    rq = causal_lm.apply_rope(q, jnp.array([[m]]), 10000.0)
    rk = causal_lm.apply_rope(k, jnp.array([[n]]), 10000.0)
    return float(jnp.sum(rq * rk))

  # Rotation keeps norms, so a score's terms sum to at most |q| |k| in magnitude. Float32
  # rounds the 8-term sum, and each rotated component by its angle (position <= 13 rad times
  # a frequency <= 1: an angle error <= 13 u, hence of its cos and sin), cos, sin and the
  # rotation's product and sum: two scores within 2 (gamma(8) + 40 u) |q| |k| (5.7e-6 of
  # it); another relative position moves a score by O(|q| |k|).
  scale = float(np.linalg.norm(q) * np.linalg.norm(k))
  tol = 2 * (tolerances.gamma(8) + 40 * tolerances.UNIT_ROUNDOFF) * scale
  assert abs(score(5, 2) - score(13, 10)) <= tol
  # Position 0 rotates by exactly 0 (cos 1, sin 0): only the sum's order may differ.
  assert abs(score(0, 0) - float(jnp.sum(q * k))) <= tolerances.reordered_sum(8) * float(
      jnp.sum(jnp.abs(q * k)))
  assert abs(score(5, 2) - score(5, 4)) > 1e-4


def test_rope_matches_rotate_half_formula():
  """HF Llama: ``x * cos + rotate_half(x) * sin``, angles repeated over both halves."""
  x = np.asarray(jax.random.normal(jax.random.key(1), (1, 1, 1, 4)))
  pos, base = 3.0, 100.0
  inv_freq = 1.0 / base ** (np.arange(0, 4, 2) / 4)
  angle = np.concatenate([pos * inv_freq, pos * inv_freq])
  rotated = np.concatenate([-x[..., 2:], x[..., :2]], axis=-1)
  expected = x * np.cos(angle) + rotated * np.sin(angle)
  # Float32 against the float64 formula: the frequency (a power and a division), the angle
  # (3 x that: its error times 3), cos and sin (an absolute error of the angle's), the two
  # products and the sum: within gamma(20) of |x| + |rotate_half(x)| per element (1.2e-6).
  got = np.asarray(causal_lm.apply_rope(jnp.asarray(x), jnp.array([[3]]), base), np.float64)
  assert np.all(np.abs(got - expected) <= tolerances.gamma(20) * (np.abs(x) + np.abs(rotated)))


def test_left_padding_with_mask_matches_unpadded(tiny, tokens_2x8, logits_2x8):
  """Causality: logits of the first 5 tokens do not depend on the 3 after them."""
  _, params, apply = tiny
  pad = 3
  padded = jnp.concatenate([jnp.full((2, pad), 7, jnp.int32), tokens_2x8[:, :8 - pad]], axis=1)
  mask = (jnp.arange(8) >= pad).astype(jnp.int32)[None].repeat(2, axis=0)
  padded_logits = apply({'params': params}, padded, attention_mask_BxT=mask)
  tolerances.assert_lm_logits_close(padded_logits[:, pad:], logits_2x8[:, :8 - pad], TINY)


def test_cached_prefill_and_decode_match_full_forward(tiny, tokens_2x8, logits_2x8):
  model, params, _ = tiny
  prefill = jax.jit(lambda p, t, c: model.apply({'params': p}, t, cache=c))
  step = jax.jit(lambda p, t, pos, c: model.apply({'params': p}, t, pos, cache=c))
  logits, cache = prefill(params, tokens_2x8[:, :5], init_cache(TINY, 2))
  tolerances.assert_lm_logits_close(logits, logits_2x8[:, :5], TINY)
  for t in range(5, 8):
    logits_t, cache = step(params, tokens_2x8[:, t:t + 1], jnp.full((2, 1), t), cache)
    tolerances.assert_lm_logits_close(logits_t[:, 0], logits_2x8[:, t], TINY)
  fresh = jax.eval_shape(lambda t: model.apply({'params': params}, t, decode=True),
                         tokens_2x8[:, :5])
  assert fresh[1][0]['k'].shape == (2, TINY.max_len, TINY.num_kv_heads, TINY.head_dim)


def _naive_greedy(apply, params, prompts, lengths, num_new, eos_id):
  """Re-runs the full forward on every row's growing sequence for each new token."""
  buffer = np.zeros((len(prompts), TINY.max_len), np.int32)
  for row, prompt in enumerate(prompts):
    buffer[row, :len(prompt)] = prompt
  out = np.full((len(prompts), num_new), eos_id, np.int32)
  done = np.zeros(len(prompts), bool)
  for step in range(num_new):
    logits = np.asarray(apply({'params': params}, jnp.asarray(buffer)))
    for row in np.flatnonzero(~done):
      token = int(np.argmax(logits[row, lengths[row] + step - 1]))
      out[row, step] = buffer[row, lengths[row] + step] = token
      done[row] = token == eos_id
  return out


def test_generate_with_cache_equals_naive_rerun(tiny):
  model, params, apply = tiny
  lengths = np.array([3, 7, 5])
  raw = np.asarray(_tokens((3, 7), seed=3))
  num_new = 6
  free = _naive_greedy(apply, params, [r[:n] for r, n in zip(raw, lengths)], lengths, num_new,
                       eos_id=-1)
  # An eos the model really emits (row 0's third token) exercises stopping at eos.
  eos_id = int(free[0, 2])
  expected = _naive_greedy(apply, params, [r[:n] for r, n in zip(raw, lengths)], lengths,
                           num_new, eos_id)
  assert (expected[0, 2:] == eos_id).all()
  right = np.full((3, 7), 11, np.int32)  # Whatever the padding holds must not matter.
  left = np.full((3, 7), 13, np.int32)
  for row, n in enumerate(lengths):
    right[row, :n] = raw[row, :n]
    left[row, 7 - n:] = raw[row, :n]
  got_right = generate(model, params, right, lengths, num_new, eos_id)
  got_left = generate(model, params, left, lengths, num_new, eos_id, padding_side='left')
  assert got_right.shape == (3, num_new) and got_right.dtype == jnp.int32
  np.testing.assert_array_equal(got_right, expected)
  np.testing.assert_array_equal(got_left, expected)


def test_generate_and_config_errors(tiny):
  model, params, _ = tiny
  prompts = np.zeros((2, 20), np.int32)
  with pytest.raises(ValueError, match='max_len'):
    generate(model, params, prompts, np.array([3, 3]), 8, eos_id=1)
  with pytest.raises(ValueError, match='prompt_lengths'):
    generate(model, params, prompts[:, :4], np.array([0, 3]), 2, eos_id=1)
  with pytest.raises(ValueError, match='padding_side'):
    generate(model, params, prompts[:, :4], np.array([2, 3]), 2, eos_id=1, padding_side='up')
  with pytest.raises(ValueError, match='num_kv_heads'):
    dataclasses.replace(TINY, num_kv_heads=3)
  with pytest.raises(ValueError, match='num_heads'):
    dataclasses.replace(TINY, d_model=30)
