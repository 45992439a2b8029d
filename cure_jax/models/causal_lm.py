"""A small Llama-layout causal language model in Flax linen, with KV-cached greedy decoding.

Parameter names follow Hugging Face Llama so that real checkpoints can be mapped in:
``embed_tokens``, ``layers_{i}/{self_attn/{q,k,v,o}_proj, mlp/{gate,up,down}_proj,
input_layernorm, post_attention_layernorm}``, ``norm`` and ``lm_head`` (absent when tied).
Dense kernels are stored ``in x out`` (the transpose of a torch ``Linear.weight``).

Every projection is a plain ``nn.Dense`` (no bias) and the embedding a plain ``nn.Embed``:
per-example-gradient code intercepts exactly these layer types, so no other layer touches
raw weights except RMSNorm's ``scale``.

Training / evaluation: ``model.apply({'params': p}, tokens_BxT) -> logits_BxTxV`` (float32).
Decoding: pass a cache (see :func:`init_cache`) or ``decode=True`` and get
``(logits_BxTxV, new_cache)``; cache slot ``s`` holds the keys/values of position ``s``.
With ``config.sliding_window`` a query sees only the last ``sliding_window`` keys, its own
included (Hugging Face Mistral), in both modes.

The architecture is an :class:`~cure_jax.models.lm_config.LMConfig`, importable from here too.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cure_jax.models.lm_config import LMConfig

# Finite stand-in for -inf: fully masked rows (padding queries) then give a uniform softmax
# instead of NaNs, which would poison gradients through jnp.where.
_MASK_VALUE = -1e9


def init_cache(config, batch_size, length=None, dtype=jnp.float32):
  """An empty KV cache: one ``{'k', 'v'}`` dict of ``BxSxKxH`` zeros per layer.

  ``S = length`` (default ``config.max_len``), ``K = num_kv_heads``, ``H = head_dim``.
  """
  length = config.max_len if length is None else length
  shape = (batch_size, length, config.num_kv_heads, config.head_dim)
  return [{'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)}
          for _ in range(config.num_layers)]


def attention_allowed(query_BxTx1, key_Bx1xS, window):
  """Which keys each query may attend to: causal, and within ``window`` when one is set.

  Hugging Face Mistral's convention (transformers' ``sliding_window_overlay``: ``kv_idx >
  q_idx - sliding_window``): query ``i`` sees keys ``j`` with ``i - window < j <= i``, i.e.
  ``window`` keys including its own. Indices are those HF masks by: sequence index without
  a cache (left padding counts, as HF's cache positions do), cache slot = position with one.
  """
  allowed_BxTxS = key_Bx1xS <= query_BxTx1
  if window is not None:
    allowed_BxTxS = allowed_BxTxS & (key_Bx1xS > query_BxTx1 - window)
  return allowed_BxTxS


def check_token_ids(tokens, vocab_size, tokenizer_size=None):
  """Raises if a (concrete) token id lies outside the model's ``[0, vocab_size)``: it would
  embed as NaN (``jnp.take`` fills) and silently poison every later position."""
  tokens = np.asarray(tokens)
  bad = tokens[(tokens < 0) | (tokens >= vocab_size)]
  if bad.size:
    tokenizer = '' if tokenizer_size is None else f', the tokenizer {tokenizer_size} tokens'
    raise ValueError(f'Token id {int(bad.flat[0])} is outside the model\'s vocabulary [0, '
                     f'{vocab_size}) (the model has vocab_size={vocab_size}{tokenizer}); encode '
                     'with the checkpoint\'s own tokenizer.')


def rotate_half(x):
  """HF Llama's RoPE helper: ``[x1, x2] -> [-x2, x1]`` over the last axis halves."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x_BxTxNxH, positions_BxT, base, divisors=None):
  """Rotary position embedding in the rotate-half convention (non-interleaved pairs).

  ``divisors`` (``H/2`` floats) divide the inverse frequencies (llama3 long-context scaling).
  """
  head_dim = x_BxTxNxH.shape[-1]
  inv_freq_F = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if divisors is not None:
    inv_freq_F = inv_freq_F / jnp.asarray(divisors, jnp.float32)
  angles_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_F
  angles_BxTxH = jnp.concatenate([angles_BxTxF, angles_BxTxF], axis=-1)[:, :, None, :]
  x = x_BxTxNxH.astype(jnp.float32)
  rotated = x * jnp.cos(angles_BxTxH) + rotate_half(x) * jnp.sin(angles_BxTxH)
  return rotated.astype(x_BxTxNxH.dtype)


class RMSNorm(nn.Module):
  """``x / rms(x) * scale`` computed in float32, as in Llama."""
  eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxD):
    scale_D = self.param('scale', nn.initializers.ones, (x_BxTxD.shape[-1],))
    x = x_BxTxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
    return (x * scale_D).astype(self.dtype)


def _dense(features, name, dtype):
  return nn.Dense(features, use_bias=False, dtype=dtype,
                  kernel_init=nn.initializers.normal(0.02), name=name)


class _LMModule(nn.Module):
  """Base of :class:`CausalLM` and its blocks: built from the model's :class:`LMConfig`."""
  config: LMConfig

  @property
  def compute_dtype(self):
    """The dtype activations are computed in; parameters stay float32."""
    return jnp.dtype(self.config.dtype)


class Attention(_LMModule):
  """Causal grouped-query self-attention with RoPE and an optional KV cache."""

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, key_mask_BxS, cache):
    cfg, dtype = self.config, self.compute_dtype
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    batch, length, _ = x_BxTxD.shape
    q_BxTxNxH = _dense(n * h, 'q_proj', dtype)(x_BxTxD).reshape(batch, length, n, h)
    k_BxTxKxH = _dense(k * h, 'k_proj', dtype)(x_BxTxD).reshape(batch, length, k, h)
    v_BxTxKxH = _dense(k * h, 'v_proj', dtype)(x_BxTxD).reshape(batch, length, k, h)
    q_BxTxNxH = apply_rope(q_BxTxNxH, positions_BxT, cfg.rope_base, cfg.rope_divisors)
    k_BxTxKxH = apply_rope(k_BxTxKxH, positions_BxT, cfg.rope_base, cfg.rope_divisors)

    if cache is None:
      keys_BxSxKxH, values_BxSxKxH, new_cache = k_BxTxKxH, v_BxTxKxH, None
      # Causality by index order, so left padding with shifted positions stays causal.
      index_T = jnp.arange(length)
      allowed_BxTxS = attention_allowed(index_T[None, :, None], index_T[None, None, :],
                                        cfg.sliding_window)
    else:
      # Slot s holds position s: write this chunk at its positions, attend to slots <= own
      # position. Slots not yet written (or stale) always lie beyond the query position.
      write = jax.vmap(lambda c, u, p: c.at[p].set(u.astype(c.dtype)))
      keys_BxSxKxH = write(cache['k'], k_BxTxKxH, positions_BxT)
      values_BxSxKxH = write(cache['v'], v_BxTxKxH, positions_BxT)
      new_cache = {'k': keys_BxSxKxH, 'v': values_BxSxKxH}
      slots_S = jnp.arange(keys_BxSxKxH.shape[1])
      allowed_BxTxS = attention_allowed(positions_BxT[:, :, None], slots_S[None, None, :],
                                        cfg.sliding_window)
    if key_mask_BxS is not None:
      allowed_BxTxS = allowed_BxTxS & key_mask_BxS[:, None, :].astype(bool)

    # Query head n*... uses kv head n // (N/K), as HF's repeat_kv: group queries per kv head.
    q_BxTxKxGxH = q_BxTxNxH.reshape(batch, length, k, n // k, h)
    logits_BxKxGxTxS = jnp.einsum('btkgh,bskh->bkgts', q_BxTxKxGxH,
                                  keys_BxSxKxH.astype(dtype)).astype(jnp.float32) / jnp.sqrt(h)
    logits_BxKxGxTxS = jnp.where(allowed_BxTxS[:, None, None], logits_BxKxGxTxS, _MASK_VALUE)
    probs_BxKxGxTxS = jax.nn.softmax(logits_BxKxGxTxS, axis=-1).astype(dtype)
    out_BxTxKxGxH = jnp.einsum('bkgts,bskh->btkgh', probs_BxKxGxTxS,
                               values_BxSxKxH.astype(dtype))
    out_BxTxD = _dense(cfg.d_model, 'o_proj', dtype)(out_BxTxKxGxH.reshape(batch, length, n * h))
    return out_BxTxD, new_cache


class MLP(_LMModule):
  """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg, dtype = self.config, self.compute_dtype
    gate_BxTxF = _dense(cfg.d_ff, 'gate_proj', dtype)(x_BxTxD)
    up_BxTxF = _dense(cfg.d_ff, 'up_proj', dtype)(x_BxTxD)
    return _dense(cfg.d_model, 'down_proj', dtype)(nn.silu(gate_BxTxF) * up_BxTxF)


class DecoderLayer(_LMModule):
  """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, key_mask_BxS, cache):
    cfg, dtype = self.config, self.compute_dtype
    y_BxTxD = RMSNorm(cfg.norm_eps, dtype, name='input_layernorm')(x_BxTxD)
    y_BxTxD, new_cache = Attention(cfg, name='self_attn')(y_BxTxD, positions_BxT, key_mask_BxS,
                                                          cache)
    x_BxTxD = x_BxTxD + y_BxTxD
    y_BxTxD = RMSNorm(cfg.norm_eps, dtype, name='post_attention_layernorm')(x_BxTxD)
    return x_BxTxD + MLP(cfg, name='mlp')(y_BxTxD), new_cache


class CausalLM(_LMModule):
  """Llama-style decoder-only LM returning float32 next-token logits."""

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT=None, *, attention_mask_BxT=None, cache=None,
               decode=False, hidden_layer=None):
    """Next-token logits for every position.

    Args:
      tokens_BxT: int token ids. Right padding needs no mask (attention is causal and
        padded positions come last); left padding needs ``attention_mask_BxT``.
      positions_BxT: RoPE positions; default ``arange(T)``, or ``cumsum(mask) - 1`` when an
        attention mask is given (so a left-padded row sees the same positions as unpadded).
      attention_mask_BxT: 1 for real tokens, 0 for padding; without a cache, padded keys are
        never attended to. With a cache it masks the cache slots (length ``S``) instead.
      cache: KV cache from :func:`init_cache` or a previous call; slot ``s`` stores position
        ``s``, so positions must be distinct within a row and ``< S``.
      decode: return ``(logits, cache)``; a fresh cache of ``config.max_len`` slots is created
        when ``cache`` is None. Implied by passing a cache.
      hidden_layer: return decoder layer ``hidden_layer``'s output ``BxTxD`` (the residual
        stream after it, Hugging Face's ``model.layers[i]`` output) instead of logits; the
        layers above it are not run (RMU steers it).

    Returns:
      ``logits_BxTxV`` (float32), or ``(logits_BxTxV, new_cache)`` in cache mode.
    """
    cfg, dtype = self.config, self.compute_dtype
    batch, length = tokens_BxT.shape
    if not isinstance(tokens_BxT, jax.core.Tracer):  # under jit the data path checks
      check_token_ids(tokens_BxT, cfg.vocab_size)
    if decode and cache is None:
      cache = init_cache(cfg, batch)
    if cache is not None and len(cache) != cfg.num_layers:
      raise ValueError(f'cache has {len(cache)} layers but the model has {cfg.num_layers}; '
                       'build it with init_cache(config, batch_size).')
    if positions_BxT is None:
      if attention_mask_BxT is None or cache is not None:
        positions_BxT = jnp.broadcast_to(jnp.arange(length), (batch, length))
      else:
        positions_BxT = jnp.maximum(jnp.cumsum(attention_mask_BxT, axis=-1) - 1, 0)

    embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype,
                     embedding_init=nn.initializers.normal(0.02), name='embed_tokens')
    x_BxTxD = embed(tokens_BxT)
    new_cache = []
    for i in range(cfg.num_layers):
      x_BxTxD, layer_cache = DecoderLayer(cfg, name=f'layers_{i}')(
          x_BxTxD, positions_BxT, attention_mask_BxT, None if cache is None else cache[i])
      new_cache.append(layer_cache)
      if i == hidden_layer:
        return x_BxTxD
    x_BxTxD = RMSNorm(cfg.norm_eps, dtype, name='norm')(x_BxTxD)
    if cfg.tie_embeddings:
      logits_BxTxV = embed.attend(x_BxTxD)
    else:
      logits_BxTxV = _dense(cfg.vocab_size, 'lm_head', dtype)(x_BxTxD)
    logits_BxTxV = logits_BxTxV.astype(jnp.float32)
    return logits_BxTxV if cache is None else (logits_BxTxV, new_cache)


def left_to_right_padding(tokens_BxP, lengths_B):
  """Moves each row's last ``lengths_B[b]`` tokens to the front (pad content is kept)."""
  width = tokens_BxP.shape[1]
  shift_B = width - lengths_B
  index_BxP = (jnp.arange(width)[None, :] + shift_B[:, None]) % width
  return jnp.take_along_axis(tokens_BxP, index_BxP, axis=1)


def _greedy(logits_BxV, vocab_limit):
  """Argmax over ids below ``vocab_limit`` (None: all): padded rows have no text."""
  if vocab_limit is not None:
    ids_V = jnp.arange(logits_BxV.shape[-1])
    logits_BxV = jnp.where(ids_V < vocab_limit, logits_BxV, -jnp.inf)
  return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)


# The padding side is a traced flag (not static) so both sides share one compilation.
@functools.partial(jax.jit,
                   static_argnames=('model', 'max_new_tokens', 'eos_id', 'vocab_limit'))
def _generate(model, params, prompt_tokens_BxP, prompt_lengths_B, max_new_tokens, eos_id,
              left_padded, vocab_limit):
  batch, width = prompt_tokens_BxP.shape
  lengths_B = prompt_lengths_B.astype(jnp.int32)
  tokens_BxP = prompt_tokens_BxP.astype(jnp.int32)
  tokens_BxP = jnp.where(left_padded, left_to_right_padding(tokens_BxP, lengths_B), tokens_BxP)
  # Pad entries become id 0: whatever they held (even an id beyond the vocabulary, which
  # would embed as NaN and reach real queries through 0 * NaN) cannot matter.
  tokens_BxP = jnp.where(jnp.arange(width)[None, :] < lengths_B[:, None], tokens_BxP, 0)
  rows_B = jnp.arange(batch)

  # Prefill writes every prompt slot, pads included: a pad slot p >= length is overwritten by
  # the generated token at position p before any query position reaches it.
  cache = init_cache(model.config, batch, width + max_new_tokens)
  logits_BxPxV, cache = model.apply({'params': params}, tokens_BxP, cache=cache)
  next_B = _greedy(logits_BxPxV[rows_B, lengths_B - 1], vocab_limit)
  out_BxN = jnp.full((batch, max_new_tokens), eos_id, jnp.int32)

  def cond(state):
    step, _, _, done_B, _ = state
    return (step < max_new_tokens) & ~jnp.all(done_B)

  def body(state):
    step, token_B, out_BxN, done_B, cache = state
    token_B = jnp.where(done_B, eos_id, token_B)
    out_BxN = out_BxN.at[:, step].set(token_B)
    done_B = done_B | (token_B == eos_id)
    positions_Bx1 = (lengths_B + step)[:, None]
    logits_Bx1xV, cache = model.apply({'params': params}, token_B[:, None], positions_Bx1,
                                      cache=cache)
    token_B = _greedy(logits_Bx1xV[:, 0], vocab_limit)
    return step + 1, token_B, out_BxN, done_B, cache

  state = (jnp.int32(0), next_B, out_BxN, jnp.zeros(batch, bool), cache)
  return jax.lax.while_loop(cond, body, state)[2]


def generate(model, params, prompt_tokens_BxP, prompt_lengths_B, max_new_tokens, eos_id,
             padding_side='right', vocab_limit=None):
  """Greedy decoding with a KV cache: one prefill, then one token per loop step (jitted).

  Args:
    model: a :class:`CausalLM` (static: one compile per model, shapes and settings).
    params: its parameters (the ``'params'`` collection).
    prompt_tokens_BxP: int prompts. Each row's real tokens are its first
      ``prompt_lengths_B[b]`` entries (``padding_side='right'``) or its last ones ('left');
      the other entries are ignored, whatever they hold.
    prompt_lengths_B: int number of real prompt tokens per row, in ``[1, P]``.
    max_new_tokens: tokens generated per row (``P + max_new_tokens <= config.max_len``).
    eos_id: end-of-sequence id; a row stops at its first eos, later entries are ``eos_id``.
    padding_side: 'right' or 'left'.
    vocab_limit: only ids below it are generated: the tokenizer's size when the checkpoint
      pads its vocabulary (``config.vocab_size`` larger); None: every id.

  Returns:
    ``tokens_BxN`` int32, ``N = max_new_tokens``: the generated continuation only.
  """
  if padding_side not in ('right', 'left'):
    raise ValueError(f"padding_side={padding_side!r}; use 'right' or 'left'.")
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens={max_new_tokens} must be >= 1.')
  prompt_tokens_BxP = jnp.asarray(prompt_tokens_BxP)
  prompt_lengths_B = jnp.asarray(prompt_lengths_B)
  if prompt_tokens_BxP.ndim != 2 or prompt_lengths_B.shape != prompt_tokens_BxP.shape[:1]:
    raise ValueError(f'Expected prompts BxP and lengths B, got {prompt_tokens_BxP.shape} and '
                     f'{prompt_lengths_B.shape}.')
  width = prompt_tokens_BxP.shape[1]
  if width + max_new_tokens > model.config.max_len:
    raise ValueError(f'Prompt width {width} + max_new_tokens {max_new_tokens} exceeds '
                     f'config.max_len={model.config.max_len}; trim the prompt padding or '
                     'raise max_len.')
  if vocab_limit is not None and vocab_limit < 1:
    raise ValueError(f'vocab_limit={vocab_limit} must be >= 1 (the tokenizer\'s size).')
  if not isinstance(prompt_lengths_B, jax.core.Tracer):
    if int(prompt_lengths_B.min()) < 1 or int(prompt_lengths_B.max()) > width:
      raise ValueError(f'prompt_lengths must lie in [1, {width}], got '
                       f'[{int(prompt_lengths_B.min())}, {int(prompt_lengths_B.max())}].')
    if not isinstance(prompt_tokens_BxP, jax.core.Tracer):  # real tokens only: pads are ignored
      from_start_P = np.arange(width) if padding_side == 'right' else np.arange(width)[::-1]
      real_BxP = from_start_P[None, :] < np.asarray(prompt_lengths_B)[:, None]
      check_token_ids(np.asarray(prompt_tokens_BxP)[real_BxP], model.config.vocab_size,
                      vocab_limit)
  # A limit at or above the vocabulary excludes nothing: no separate compilation for it.
  limit = None if vocab_limit is None or vocab_limit >= model.config.vocab_size else vocab_limit
  return _generate(model, params, prompt_tokens_BxP, prompt_lengths_B, int(max_new_tokens),
                   int(eos_id), jnp.asarray(padding_side == 'left'),
                   None if limit is None else int(limit))
