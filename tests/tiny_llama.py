"""A tiny Llama checkpoint written in the Hugging Face and GGUF layouts, an independent numpy
forward pass of its weights, and a plain byte-level BPE: references for tests/test_pretrained.py.
"""
import json
import os

import gguf
import ml_dtypes
import numpy as np
import regex
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = ['the cat sat on the mat', 'what is the capital of france', 'paris is the capital',
          'a tiny model for tests'] * 4

# name -> config.json fields on top of BASE (tiny Llama shapes)
BASE = dict(model_type='llama', hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, intermediate_size=48, rms_norm_eps=1e-5, rope_theta=10000.0,
            max_position_embeddings=64, tie_word_embeddings=True, hidden_act='silu')
CASES = {
    'tied_mha': dict(),
    'untied_gqa': dict(tie_word_embeddings=False, num_key_value_heads=2),
    'llama3_rope_gqa': dict(num_key_value_heads=1, rope_scaling=dict(
        rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)),
    'mistral_head_dim_sharded': dict(model_type='mistral', head_dim=16, num_key_value_heads=2,
                                     tie_word_embeddings=False, sliding_window=4096),
}


def _tokenizer():
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=300, special_tokens=['<s>', '</s>'],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  return tok


def _weights(cfg, vocab, seed):
  """Random HF-named float32 weights (torch orientation, Linear ``(out, in)``)."""
  rng = np.random.default_rng(seed)
  d, n = cfg['hidden_size'], cfg['num_attention_heads']
  k, h = cfg['num_key_value_heads'], cfg.get('head_dim', d // n)
  f = cfg['intermediate_size']
  w = {'model.embed_tokens.weight': rng.normal(0, 0.5, (vocab, d)),
       'model.norm.weight': 1 + 0.1 * rng.normal(size=d)}
  if not cfg['tie_word_embeddings']:
    w['lm_head.weight'] = rng.normal(0, 0.3, (vocab, d))
  for i in range(cfg['num_hidden_layers']):
    p = f'model.layers.{i}.'
    shapes = {'self_attn.q_proj': (n * h, d), 'self_attn.k_proj': (k * h, d),
              'self_attn.v_proj': (k * h, d), 'self_attn.o_proj': (d, n * h),
              'mlp.gate_proj': (f, d), 'mlp.up_proj': (f, d), 'mlp.down_proj': (d, f)}
    for name, shape in shapes.items():
      w[p + name + '.weight'] = rng.normal(0, 0.6 / np.sqrt(shape[1]), shape)
    w[p + 'input_layernorm.weight'] = 1 + 0.1 * rng.normal(size=d)
    w[p + 'post_attention_layernorm.weight'] = 1 + 0.1 * rng.normal(size=d)
  return {key: v.astype(np.float32) for key, v in w.items()}


def _inv_freq(cfg):
  """RoPE inverse frequencies, llama3 scaling written out as in HF's rope utils."""
  h = cfg.get('head_dim', cfg['hidden_size'] // cfg['num_attention_heads'])
  inv = 1.0 / cfg['rope_theta'] ** (np.arange(0, h, 2) / h)
  rs = cfg.get('rope_scaling')
  if not rs:
    return inv
  out = []
  for f in inv:
    wavelen = 2 * np.pi / f
    low_wl = rs['original_max_position_embeddings'] / rs['low_freq_factor']
    high_wl = rs['original_max_position_embeddings'] / rs['high_freq_factor']
    if wavelen < high_wl:
      out.append(f)
    elif wavelen > low_wl:
      out.append(f / rs['factor'])
    else:
      s = ((rs['original_max_position_embeddings'] / wavelen - rs['low_freq_factor'])
           / (rs['high_freq_factor'] - rs['low_freq_factor']))
      out.append((1 - s) * f / rs['factor'] + s * f)
  return np.array(out)


def numpy_forward(w, cfg, ids):
  """Independent float64 Llama forward pass of one sequence on HF-named weights."""
  w = {key: v.astype(np.float64) for key, v in w.items()}
  d, n = cfg['hidden_size'], cfg['num_attention_heads']
  k, h = cfg['num_key_value_heads'], cfg.get('head_dim', d // n)
  t = len(ids)
  angles = np.arange(t)[:, None] * _inv_freq(cfg)[None]
  cos = np.cos(np.concatenate([angles, angles], -1))[:, None]
  sin = np.sin(np.concatenate([angles, angles], -1))[:, None]

  def rope(x):
    return x * cos + np.concatenate([-x[..., h // 2:], x[..., :h // 2]], -1) * sin

  def rms(x, g):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg['rms_norm_eps']) * g

  x = w['model.embed_tokens.weight'][ids]
  causal = np.tril(np.ones((t, t), bool))
  for i in range(cfg['num_hidden_layers']):
    p = f'model.layers.{i}.'
    y = rms(x, w[p + 'input_layernorm.weight'])
    q = rope((y @ w[p + 'self_attn.q_proj.weight'].T).reshape(t, n, h))
    kk = rope((y @ w[p + 'self_attn.k_proj.weight'].T).reshape(t, k, h))
    v = (y @ w[p + 'self_attn.v_proj.weight'].T).reshape(t, k, h)
    kk, v = np.repeat(kk, n // k, axis=1), np.repeat(v, n // k, axis=1)  # HF repeat_kv
    s = np.einsum('tnh,snh->nts', q, kk) / np.sqrt(h)
    s = np.where(causal[None], s, -np.inf)
    prob = np.exp(s - s.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    o = np.einsum('nts,snh->tnh', prob, v).reshape(t, n * h)
    x = x + o @ w[p + 'self_attn.o_proj.weight'].T
    y = rms(x, w[p + 'post_attention_layernorm.weight'])
    g, u = y @ w[p + 'mlp.gate_proj.weight'].T, y @ w[p + 'mlp.up_proj.weight'].T
    x = x + (g / (1 + np.exp(-g)) * u) @ w[p + 'mlp.down_proj.weight'].T
  x = rms(x, w['model.norm.weight'])
  return x @ w.get('lm_head.weight', w['model.embed_tokens.weight']).T


def write_hf(directory, case, sharded=False, seed=0, bf16=False):
  """A tiny HF Llama directory; returns (config dict, HF-named weights, tokenizer).

  ``bf16`` stores bfloat16 tensors (as most published checkpoints); the returned weights are
  then the bfloat16 values as float32.
  """
  os.makedirs(directory, exist_ok=True)
  tok = _tokenizer()
  cfg = dict(BASE, **CASES[case])
  cfg['vocab_size'] = tok.get_vocab_size()
  w = _weights(cfg, cfg['vocab_size'], seed)
  stored = {key: v.astype(ml_dtypes.bfloat16) for key, v in w.items()} if bf16 else w
  w = {key: v.astype(np.float32) for key, v in stored.items()}
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(cfg, f)
  tok.save(os.path.join(directory, 'tokenizer.json'))
  with open(os.path.join(directory, 'tokenizer_config.json'), 'w') as f:
    json.dump({'bos_token': '<s>', 'eos_token': '</s>', 'add_bos_token': True,
               'chat_template': "{{ bos_token }}[INST] {{ messages[0]['content'] }} [/INST]"}, f)
  if sharded:
    keys = sorted(w)
    parts = {'model-00001-of-00002.safetensors': keys[::2],
             'model-00002-of-00002.safetensors': keys[1::2]}
    for name, part in parts.items():
      save_file({key: stored[key] for key in part}, os.path.join(directory, name))
    index = {'metadata': {}, 'weight_map': {key: n for n, ks in parts.items() for key in ks}}
    with open(os.path.join(directory, 'model.safetensors.index.json'), 'w') as f:
      json.dump(index, f)
  else:
    save_file(stored, os.path.join(directory, 'model.safetensors'))
  return cfg, w, tok


def llama_cpp_permute(w, heads):
  """llama.cpp convert_hf_to_gguf ``permute``: rotate-half rows -> interleaved pairs."""
  return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def write_gguf(path, cfg, w, tok, arch='llama', eos=True, spm=None):
  """The same weights as a llama.cpp GGUF (F32 tensors, gpt2 tokenizer metadata).

  ``spm``: ``(pieces, scores, types)`` of a SentencePiece vocabulary written instead of
  ``tok`` (llama.cpp's 'llama' tokenizer model; bos 1, eos 2).
  """
  n, k = cfg['num_attention_heads'], cfg['num_key_value_heads']
  h = cfg.get('head_dim', cfg['hidden_size'] // n)
  writer = gguf.GGUFWriter(path, arch)
  writer.add_block_count(cfg['num_hidden_layers'])
  writer.add_context_length(cfg['max_position_embeddings'])
  writer.add_embedding_length(cfg['hidden_size'])
  writer.add_feed_forward_length(cfg['intermediate_size'])
  writer.add_head_count(n)
  writer.add_head_count_kv(k)
  writer.add_key_length(h)
  writer.add_value_length(h)
  writer.add_rope_dimension_count(h)
  writer.add_rope_freq_base(cfg['rope_theta'])
  writer.add_layer_norm_rms_eps(cfg['rms_norm_eps'])
  writer.add_vocab_size(cfg['vocab_size'])
  if spm is None:
    model = json.loads(tok.to_str())['model']
    vocab = sorted(model['vocab'].items(), key=lambda kv: kv[1])
    writer.add_tokenizer_model('gpt2')
    writer.add_tokenizer_pre('gpt-2')
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_merges([' '.join(m) if isinstance(m, list) else m for m in model['merges']])
    writer.add_token_types([3 if t in ('<s>', '</s>') else 1 for t, _ in vocab])
    writer.add_bos_token_id(tok.token_to_id('<s>'))
    if eos:
      writer.add_eos_token_id(tok.token_to_id('</s>'))
    writer.add_add_bos_token(True)
  else:
    writer.add_tokenizer_model('llama')
    writer.add_token_list(spm[0])
    writer.add_token_scores(spm[1])
    writer.add_token_types(spm[2])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
  writer.add_chat_template('{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}')
  names = {'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k',
           'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
           'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
           'input_layernorm': 'attn_norm', 'post_attention_layernorm': 'ffn_norm'}
  writer.add_tensor('token_embd.weight', w['model.embed_tokens.weight'])
  writer.add_tensor('output_norm.weight', w['model.norm.weight'])
  if 'lm_head.weight' in w:
    writer.add_tensor('output.weight', w['lm_head.weight'])
  if cfg.get('rope_scaling'):
    base_inv = 1.0 / cfg['rope_theta'] ** (np.arange(0, h, 2) / h)
    writer.add_tensor('rope_freqs.weight', (base_inv / _inv_freq(cfg)).astype(np.float32))
  for i in range(cfg['num_hidden_layers']):
    for hf, g in names.items():
      x = w[f'model.layers.{i}.{hf}.weight']
      if g in ('attn_q', 'attn_k'):
        x = llama_cpp_permute(x, n if g == 'attn_q' else k)
      writer.add_tensor(f'blk.{i}.{g}.weight', np.ascontiguousarray(x))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def _gpt2_bytes_to_unicode():
  bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  cs, extra = bs[:], 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + extra)
      extra += 1
  return dict(zip(bs, map(chr, cs)))


def reference_bpe(text, tokens, merges):
  """Plain byte-level BPE (GPT-2 rules, llama.cpp's 'smollm' digit split) from GGUF metadata."""
  ranks = {tuple(m.split(' ')): r for r, m in enumerate(merges)}
  ids = {t: i for i, t in enumerate(tokens)}
  byte_map = _gpt2_bytes_to_unicode()
  pattern = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
  out = []
  for piece in regex.findall(r'\p{N}|[^\p{N}]+', text):
    for word in regex.findall(pattern, piece):
      parts = [byte_map[b] for b in word.encode('utf-8')]
      while len(parts) > 1:
        pairs = [(ranks.get((a, b), np.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == np.inf:
          break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
      out += [ids[p] for p in parts]
  return out
