"""Reading a llama.cpp GGUF file (architecture ``llama``) into a :class:`Checkpoint`.

Tensors are dequantised to float32 with ``gguf.quants.dequantize``. llama.cpp's converter
permutes the rows of Q and K for interleaved-pair RoPE; :class:`CausalLM` uses HF's
rotate-half RoPE, so the permutation is undone (per KV head for K). A ``rope_freqs`` tensor
(llama3 scaling) holds per-frequency divisors of the inverse frequencies. The tokenizer is
rebuilt from ``tokenizer.ggml.*`` with the ``tokenizers`` package.
"""
import numpy as np

from cure_jax.weights import import_checks, llama_layout
from cure_jax.models.causal_lm import LMConfig
from cure_jax.text.tokenizer import HFTokenizer

_LINEAR_NAMES = {'attn_q': ('self_attn', 'q_proj'), 'attn_k': ('self_attn', 'k_proj'),
                 'attn_v': ('self_attn', 'v_proj'), 'attn_output': ('self_attn', 'o_proj'),
                 'ffn_gate': ('mlp', 'gate_proj'), 'ffn_up': ('mlp', 'up_proj'),
                 'ffn_down': ('mlp', 'down_proj')}
_NORM_NAMES = {'attn_norm': 'input_layernorm', 'ffn_norm': 'post_attention_layernorm'}
_TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 2, 3, 4


def gguf_name(path):
  """The GGUF tensor name of a CausalLM parameter path."""
  if path[0] == 'embed_tokens':
    return 'token_embd.weight'
  if path[0] == 'norm':
    return 'output_norm.weight'
  if path[0] == 'lm_head':
    return 'output.weight'
  layer = path[0].split('_')[1]
  if len(path) == 3:
    name = {v: k for k, v in _NORM_NAMES.items()}[path[1]]
  else:
    name = {v: k for k, v in _LINEAR_NAMES.items()}[(path[1], path[2])]
  return f'blk.{layer}.{name}.weight'


def unpermute_rows(w_RxI, num_heads):
  """Inverse of llama.cpp's ``permute``: interleaved-pair rows back to rotate-half rows."""
  rows = w_RxI.shape[0]
  return (w_RxI.reshape(num_heads, rows // num_heads // 2, 2, *w_RxI.shape[1:])
          .swapaxes(1, 2).reshape(w_RxI.shape))


def permute_rows(w_RxI, num_heads):
  """llama.cpp's ``permute`` (HF -> GGUF); the inverse of :func:`unpermute_rows`."""
  rows = w_RxI.shape[0]
  return (w_RxI.reshape(num_heads, 2, rows // num_heads // 2, *w_RxI.shape[1:])
          .swapaxes(1, 2).reshape(w_RxI.shape))


def _open(path):
  import gguf  # pylint: disable=g-import-not-at-top
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # the reader raises ValueError, IndexError, struct errors...
    raise ValueError(f'{path}: not a readable GGUF file ({type(e).__name__}: {e}); the file '
                     'is truncated or corrupt, download it again.') from None


def _field(reader, path, key, default=None, required=False):
  field = reader.get_field(key)
  if field is None:
    if required:
      raise ValueError(f'{path}: GGUF metadata lacks {key!r}.')
    return default
  return field.contents()


def _spm_merges(tokens, scores):
  """BPE merges of a SentencePiece-BPE vocabulary (as transformers' SentencePieceExtractor):
  every split of a piece into two vocabulary pieces, ranked by the merged piece's score."""
  vocab = {t: i for i, t in enumerate(tokens)}
  merges = []
  for piece, score in zip(tokens, scores):
    local = [(piece[:i], piece[i:], score) for i in range(1, len(piece))
             if piece[:i] in vocab and piece[i:] in vocab]
    merges += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
  merges.sort(key=lambda m: -m[2])  # stable: equal scores keep the order above
  return [(a, b) for a, b, _ in merges]


def _bpe_model(reader, path, kind, tokens):
  """The ``tokenizers`` model, normaliser, pre-tokenizer and decoder of the GGUF vocabulary."""
  # pylint: disable-next=g-import-not-at-top,g-multiple-import
  from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
  vocab = {t: i for i, t in enumerate(tokens)}
  if kind == 'llama':  # SentencePiece BPE with byte fallback (Llama-2, Mistral)
    scores = _field(reader, path, 'tokenizer.ggml.scores', required=True)
    unk = _field(reader, path, 'tokenizer.ggml.unknown_token_id', 0)
    model = models.BPE(vocab=vocab, merges=_spm_merges(tokens, scores), unk_token=tokens[unk],
                       fuse_unk=True, byte_fallback=True)
    normalizer = normalizers.Sequence([normalizers.Prepend('▁'),
                                       normalizers.Replace(' ', '▁')])
    decoder = decoders.Sequence([decoders.Replace('▁', ' '), decoders.ByteFallback(),
                                 decoders.Fuse(), decoders.Strip(' ', 1, 0)])
    return model, normalizer, None, decoder
  merges = _field(reader, path, 'tokenizer.ggml.merges', required=True)
  pre = _field(reader, path, 'tokenizer.ggml.pre', 'default')
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre == 'smollm':  # llama.cpp: digits one by one, then the GPT-2 regex
    pre_tok = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                       byte_level])
  elif pre in ('llama-bpe', 'llama3'):
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
               r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    pre_tok = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  elif pre in ('default', 'gpt-2', 'gpt2'):
    pre_tok = byte_level
  else:
    raise ValueError(f"{path}: tokenizer.ggml.pre={pre!r} is not supported; use one of "
                     "'smollm', 'llama-bpe', 'gpt-2', 'default'.")
  model = models.BPE(vocab=vocab, merges=[tuple(m.split(' ', 1)) for m in merges],
                     fuse_unk=False)
  return model, None, pre_tok, decoders.ByteLevel()


# Byte-level BPE pre-tokenizers for which llama.cpp's vocabulary loader turns bos on.
_BPE_PRE_ADDING_BOS = frozenset({
    'llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2',
    'jina-v5-nano', 'tekken', 'chameleon'})


def adds_bos(kind, pre, explicit):
  """Whether a GGUF's tokenizer adds bos, by llama.cpp's rule, so a prompt starts as it does
  when llama.cpp runs the file.

  llama.cpp's vocabulary loader: an explicit ``tokenizer.ggml.add_bos_token`` (``explicit``,
  None when absent) decides; else SentencePiece vocabularies (``kind`` 'llama') add bos, and
  byte-level BPE ones ('gpt2') only for the pre-tokenizers in :data:`_BPE_PRE_ADDING_BOS`
  (Llama-3 and kin; not 'smollm', 'gpt-2' or 'default').
  """
  if explicit is not None:
    return bool(explicit)
  return kind == 'llama' or (kind == 'gpt2' and pre in _BPE_PRE_ADDING_BOS)


def _tokenizer(reader, path):
  from tokenizers import AddedToken, Tokenizer  # pylint: disable=g-import-not-at-top
  kind = _field(reader, path, 'tokenizer.ggml.model', required=True)
  if kind not in ('gpt2', 'llama'):
    raise ValueError(f"{path}: tokenizer.ggml.model={kind!r} is not supported; use 'gpt2' "
                     "(byte-level BPE: SmolLM2, Llama-3) or 'llama' (SentencePiece BPE: "
                     'Llama-2, Mistral), or load the HF directory instead.')
  tokens = _field(reader, path, 'tokenizer.ggml.tokens', required=True)
  types = _field(reader, path, 'tokenizer.ggml.token_type', [1] * len(tokens))
  model, normalizer, pre_tok, decoder = _bpe_model(reader, path, kind, tokens)
  tok = Tokenizer(model)
  if normalizer is not None:
    tok.normalizer = normalizer
  if pre_tok is not None:
    tok.pre_tokenizer = pre_tok
  tok.decoder = decoder
  tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                          for i, t in enumerate(types) if t in (_TOKEN_UNKNOWN, _TOKEN_CONTROL)])
  tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                  for i, t in enumerate(types) if t == _TOKEN_USER_DEFINED])
  eos = _field(reader, path, 'tokenizer.ggml.eos_token_id')
  if eos is None:
    raise ValueError(f'{path}: the tokenizer has no EOS token (tokenizer.ggml.eos_token_id '
                     'missing); generation and the answer layout need one.')
  bos = _field(reader, path, 'tokenizer.ggml.bos_token_id')
  add_bos = adds_bos(kind, _field(reader, path, 'tokenizer.ggml.pre', 'default'),
                     _field(reader, path, 'tokenizer.ggml.add_bos_token'))
  pad = _field(reader, path, 'tokenizer.ggml.padding_token_id')
  return HFTokenizer(tok, eos_id=eos, bos_id=bos if add_bos else None, pad_id=pad,
                     source=path)


def _config(reader, path, tensors, max_len, dtype):
  arch = _field(reader, path, 'general.architecture', required=True)
  if arch != 'llama':
    raise ValueError(f"{path}: general.architecture={arch!r} is not supported; only 'llama' "
                     '(Llama, SmolLM2, Mistral layouts) is.')

  def get(key, default=None):
    return _field(reader, path, f'llama.{key}', default, required=default is None)

  d_model, heads = int(get('embedding_length')), int(get('attention.head_count'))
  head_dim = int(get('attention.key_length', d_model // heads))
  if int(get('rope.dimension_count', head_dim)) != head_dim:
    raise ValueError(f'{path}: llama.rope.dimension_count differs from the head dim '
                     f'{head_dim}; partial rotary embeddings are not supported.')
  vocab = int(get('vocab_size', len(_field(reader, path, 'tokenizer.ggml.tokens', [None]))))
  divisors = None
  if 'rope_freqs.weight' in tensors:
    freqs = import_checks.check_finite(_dequantize(tensors['rope_freqs.weight']),
                                       f"{path}: tensor 'rope_freqs.weight'", import_checks.SOURCE_FIX)
    divisors = tuple(freqs.reshape(-1))
  return LMConfig(
      vocab_size=vocab, num_layers=int(get('block_count')), d_model=d_model, num_heads=heads,
      num_kv_heads=int(get('attention.head_count_kv', heads)),
      d_ff=int(get('feed_forward_length')),
      max_len=int(max_len or get('context_length', 4096)),
      rope_base=float(get('rope.freq_base', 10000.0)),
      norm_eps=float(get('attention.layer_norm_rms_epsilon', 1e-5)),
      tie_embeddings='output.weight' not in tensors, dtype=dtype,
      explicit_head_dim=None if head_dim * heads == d_model else head_dim,
      rope_divisors=divisors)


def _dequantize(tensor):
  import gguf  # pylint: disable=g-import-not-at-top
  return gguf.quants.dequantize(tensor.data, tensor.tensor_type)


def read(path, max_len=None, dtype='float32'):
  """A :class:`~cure_jax.weights.llama_layout.Checkpoint` of the GGUF file at ``path``."""
  reader = _open(path)
  tensors = {t.name: t for t in reader.tensors}
  cfg = _config(reader, path, tensors, max_len, dtype)
  tokenizer = _tokenizer(reader, path)
  lazy = {}
  for p, shape in llama_layout.hf_shapes(cfg).items():
    name = gguf_name(p)
    if name not in tensors:
      raise ValueError(f'{path}: tensor {name!r} is missing; the file is incomplete or not a '
                       'Llama-layout model.')
    heads = {'q_proj': cfg.num_heads, 'k_proj': cfg.num_kv_heads}.get(p[-2])

    def read_tensor(t=tensors[name], shape=shape, heads=heads, name=name):
      try:
        w = _dequantize(t)
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f'{path}: tensor {name!r} cannot be dequantised '
                         f'({type(e).__name__}: {e}); the file is truncated or corrupt.') from None
      # After dequantisation: 0xFF bytes (an F32/F16 NaN pattern, or a NaN block scale)
      # only show up as values.
      import_checks.check_finite(w, f'{path}: tensor {name!r}', import_checks.SOURCE_FIX)
      w = w.reshape(shape) if w.size == int(np.prod(shape)) else w
      return unpermute_rows(w, heads) if heads and w.shape == tuple(shape) else w
    lazy[p] = llama_layout.lazy_from_hf(p, shape, read_tensor, f'{path}: tensor {name!r}')
  chat_template = _field(reader, path, 'tokenizer.chat_template')
  return llama_layout.Checkpoint(cfg, lazy, tokenizer, chat_template, str(path))
