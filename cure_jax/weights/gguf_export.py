"""Writing a loaded LM as a llama.cpp GGUF file (architecture ``llama``): :func:`write`.

The inverse of :mod:`cure_jax.weights.gguf_import`: llama.cpp tensor names, Q/K rows permuted
back to interleaved pairs, llama3 RoPE divisors as ``rope_freqs``, and the tokenizer as
``tokenizer.ggml.*`` in the two kinds the importer rebuilds: byte-level BPE ('gpt2') and
SentencePiece BPE ('llama', whose merges the importer derives from the scores written here).
Tensors are converted and written one at a time, so the host never holds a second copy of
the model. :func:`cure_jax.weights.export.save` checks what it wrote by reading it back.
"""
import json
import re

import numpy as np

from cure_jax.weights import gguf_import, llama_layout

DTYPES = ('float32', 'float16', 'bfloat16', 'q8_0')
_TOKEN_NORMAL, _TOKEN_UNKNOWN, _TOKEN_CONTROL = 1, 2, 3
_TOKEN_USER_DEFINED, _TOKEN_UNUSED, _TOKEN_BYTE = 4, 5, 6
# Pre-tokenizer steps -> the tokenizer.ggml.pre that gguf_import rebuilds them from.
_PRE = {('ByteLevel',): 'gpt-2', ('Digits', 'ByteLevel'): 'smollm',
        ('Split', 'ByteLevel'): 'llama-bpe'}


def _qtypes(dtype):
  """(type of 2-D tensors, llama.cpp file type) for a :data:`DTYPES` name."""
  import gguf  # pylint: disable=g-import-not-at-top
  q, f = gguf.GGMLQuantizationType, gguf.LlamaFileType
  return {'float32': (q.F32, f.ALL_F32), 'float16': (q.F16, f.MOSTLY_F16),
          'bfloat16': (q.BF16, f.MOSTLY_BF16), 'q8_0': (q.Q8_0, f.MOSTLY_Q8_0)}[dtype]


def _tensor_plan(cfg, dtype):
  """``[(gguf name, parameter path or None, HF-oriented shape, ggml type)]`` in file order."""
  import gguf  # pylint: disable=g-import-not-at-top
  q = gguf.GGMLQuantizationType
  wanted, _ = _qtypes(dtype)
  plan = []
  for p, shape in llama_layout.hf_shapes(cfg).items():
    qtype = wanted if len(shape) == 2 else q.F32  # norms stay F32, as llama.cpp keeps them
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:  # as convert_hf_to_gguf: rows Q8_0 cannot split fall back to F16
      qtype = q.F16
    plan.append((gguf_import.gguf_name(p), p, tuple(shape), qtype))
  if cfg.rope_divisors is not None:
    plan.append(('rope_freqs.weight', None, (len(cfg.rope_divisors),), q.F32))
  return plan


def _tensor_data(cfg, flat, path, qtype, narrow):
  """The stored bytes of one parameter: HF orientation, llama.cpp Q/K rows, ``qtype``."""
  import gguf  # pylint: disable=g-import-not-at-top
  if path is None:
    return np.asarray(cfg.rope_divisors, np.float32)
  w = flat(path)
  w = w.T if llama_layout.is_kernel(path) else w
  heads = {'q_proj': cfg.num_heads, 'k_proj': cfg.num_kv_heads}.get(path[-2])
  if heads:
    w = gguf_import.permute_rows(w, heads)
  w = np.ascontiguousarray(w)
  if qtype == gguf.GGMLQuantizationType.F16:
    return narrow(w, np.float16, path)
  return gguf.quants.quantize(w, qtype)


def _add_config(writer, cfg, dtype):
  import gguf  # pylint: disable=g-import-not-at-top
  h = cfg.head_dim
  writer.add_context_length(cfg.max_len)
  writer.add_embedding_length(cfg.d_model)
  writer.add_block_count(cfg.num_layers)
  writer.add_feed_forward_length(cfg.d_ff)
  writer.add_head_count(cfg.num_heads)
  writer.add_head_count_kv(cfg.num_kv_heads)
  writer.add_key_length(h)
  writer.add_value_length(h)
  writer.add_rope_dimension_count(h)
  writer.add_rope_freq_base(cfg.rope_base)
  writer.add_layer_norm_rms_eps(cfg.norm_eps)
  writer.add_vocab_size(cfg.vocab_size)
  writer.add_file_type(_qtypes(dtype)[1])
  writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def merges_of(model):
  """A BPE model JSON's merges as pairs (tokenizers writes pairs, older versions 'a b')."""
  return [tuple(m) if isinstance(m, list) else tuple(m.split(' ', 1)) for m in model['merges']]


def _pre_steps(data):
  pre = data.get('pre_tokenizer') or {}
  steps = pre.get('pretokenizers', []) if pre.get('type') == 'Sequence' else [pre]
  return tuple(s.get('type') for s in steps if s)


def _kind(data, where):
  """'gpt2' or 'llama' (the tokenizer.ggml.model) of a tokenizer's JSON; refuses others."""
  model, names = data.get('model') or {}, _pre_steps(data)
  normalizer = json.dumps(data.get('normalizer'))
  if model.get('type') == 'BPE' and 'ByteLevel' in names:
    if names not in _PRE:
      raise ValueError(f'{where}: its pre-tokenizer {"+".join(names)} has no GGUF '
                       f'tokenizer.ggml.pre that cure_jax reads (only {sorted(_PRE.values())}).')
    return 'gpt2'
  if model.get('type') == 'BPE' and model.get('byte_fallback') and 'Prepend' in normalizer:
    return 'llama'
  raise ValueError(f'{where}: a {model.get("type")} tokenizer without a byte-level or '
                   'SentencePiece layout cannot be written to GGUF; only byte-level BPE '
                   "('gpt2') and SentencePiece BPE ('llama') are supported.")


def _spm_scores(tokens, merges):
  """Scores from which gguf_import's merge derivation (and llama.cpp) rebuild ``merges``: a
  piece ranks by its first merge; pieces no merge produces (characters, bytes, controls) get
  0, as SentencePiece gives its control and byte pieces."""
  first = {}
  for rank, (a, b) in enumerate(merges):
    first.setdefault(a + b, rank)
  return [-1.0 - first[t] if t in first else 0.0 for t in tokens]


def _add_tokenizer(writer, tokenizer, vocab_size, where):
  """``tokenizer.ggml.*``; the vocabulary padded to the embedding rows, as llama.cpp needs."""
  inner = tokenizer.tokenizer
  data = json.loads(inner.to_str())
  kind = _kind(data, where)
  added = {int(i): t for i, t in inner.get_added_tokens_decoder().items()}
  unk = data['model'].get('unk_token')
  tokens, types = [], []
  for i in range(vocab_size):
    text = inner.id_to_token(i)
    if text is None:  # embedding rows beyond the tokenizer (convert_hf_to_gguf's names)
      tokens.append(f'[PAD{i}]')
      types.append(_TOKEN_UNUSED)
      continue
    tokens.append(text)
    if i in added:
      types.append(_TOKEN_UNKNOWN if text == unk and added[i].special else
                   _TOKEN_CONTROL if added[i].special else _TOKEN_USER_DEFINED)
    elif kind == 'llama' and re.fullmatch(r'<0x[0-9A-F]{2}>', text):
      types.append(_TOKEN_BYTE)
    else:
      types.append(_TOKEN_NORMAL)
  writer.add_tokenizer_model(kind)
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  merges = merges_of(data['model'])
  if kind == 'gpt2':
    writer.add_tokenizer_pre(_PRE[_pre_steps(data)])
    writer.add_token_merges([f'{a} {b}' for a, b in merges])
  else:
    writer.add_token_scores(_spm_scores(tokens, merges))
    if unk is not None and inner.token_to_id(unk) is not None:
      writer.add_unk_token_id(inner.token_to_id(unk))
  writer.add_eos_token_id(tokenizer.eos_id)
  if tokenizer.bos_id is not None:
    writer.add_bos_token_id(tokenizer.bos_id)
  writer.add_add_bos_token(tokenizer.bos_id is not None)
  if tokenizer.pad_id != tokenizer.eos_id:  # the importer pads with eos when none is set
    writer.add_pad_token_id(tokenizer.pad_id)


def write(path, lm, flat, dtype, narrow):
  """Writes ``lm`` with the float32 parameters ``flat(path)`` to the GGUF file ``path``.

  ``narrow(w, np_dtype, param_path)`` converts an array, refusing values it cannot hold.
  """
  import gguf  # pylint: disable=g-import-not-at-top
  cfg = lm.config
  if cfg.sliding_window is not None and cfg.sliding_window < cfg.max_len:
    raise ValueError(f'sliding_window={cfg.sliding_window} (< max_len={cfg.max_len}) cannot '
                     "be written to GGUF: llama.cpp's 'llama' architecture has no sliding-window "
                     "attention; save format='hf' instead.")
  writer = gguf.GGUFWriter(path, 'llama')
  try:
    _add_config(writer, cfg, dtype)
    _add_tokenizer(writer, lm.tokenizer, cfg.vocab_size, 'the tokenizer')
    source = lm.chat_template_source
    if isinstance(source, (str, list)) and source:
      writer.add_chat_template(source)
    plan = _tensor_plan(cfg, dtype)
    for name, _, shape, qtype in plan:  # the header first: then one tensor at a time
      nbytes = int(np.prod(gguf.quants.quant_shape_to_byte_shape(shape, qtype)))
      writer.add_tensor_info(name, gguf.quants.quant_shape_to_byte_shape(shape, qtype),
                             np.dtype(np.uint8), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, p, _, qtype in plan:
      writer.write_tensor_data(_tensor_data(cfg, flat, p, qtype, narrow).view(np.uint8))
  finally:
    writer.close()
