"""Saving a loaded LM as a Hugging Face model directory or a llama.cpp GGUF file: :func:`save`.

The inverse of the importers (:mod:`~cure_jax.weights.hf_import`, :mod:`~cure_jax.weights.gguf_import`):
what :func:`save` writes, :func:`cure_jax.weights.pretrained.load` reads back as the same model.
Before the result is moved into place it is read back with the importer and its architecture
and tokenizer compared with the saved LM's, so what a format cannot express (a RoPE scaling
that is no llama3 ``rope_scaling``, a tokenizer GGUF cannot describe) is refused instead of
written. Everything goes to a temporary sibling first and is renamed into place: a failure,
whatever it is, leaves nothing behind.
"""
import collections.abc
import json
import numbers
import os
import shutil
import tempfile

import numpy as np

from cure_jax.weights import gguf_export, gguf_import, hf_import, llama_layout

FORMATS = ('hf', 'gguf')
HF_DTYPES = ('float32', 'bfloat16', 'float16')
DEFAULT_SHARD_SIZE = 5 * 10**9  # bytes, as transformers' max_shard_size='5GB'


# pylint: disable-next=redefined-builtin
def save(lm, path, format='hf', *, params=None, dtype=None, shard_size=None):
  """Writes ``lm`` (what :func:`~cure_jax.weights.pretrained.load` returns) to ``path``.

  ``format='hf'``: the directory ``path`` (new, or empty) with ``config.json``
  (``LlamaForCausalLM``, or ``MistralForCausalLM`` with a sliding window; a llama3
  ``rope_scaling`` rebuilt from the RoPE divisors), ``model.safetensors`` (HF names and
  layouts; above ``shard_size`` bytes, default 5 GB, ``model-0000i-of-0000N.safetensors`` with
  ``model.safetensors.index.json``), ``tokenizer.json``, ``tokenizer_config.json`` (special
  tokens, the checkpoint's Jinja chat template) and ``generation_config.json``.

  ``format='gguf'``: the new file ``path`` (ending in ``.gguf``), llama.cpp's ``llama``
  layout with its tokenizer and chat template (see :mod:`~cure_jax.weights.gguf_export`).

  ``max_position_embeddings`` (GGUF: ``context_length``) is ``lm.config.max_len``: load without
  ``max_len`` to keep the checkpoint's own.

  Args:
    lm: a :class:`~cure_jax.weights.pretrained.Pretrained`.
    path: the directory ('hf') or ``.gguf`` file ('gguf') to create.
    format: 'hf' or 'gguf'.
    params: the ``'params'`` tree to save (e.g. after unlearning); default ``lm.params``.
    dtype: stored tensors: 'float32' (default), 'bfloat16', 'float16'; for 'gguf' also
      'q8_0' (2-D tensors; norms stay F32, and rows not a multiple of 32 F16, as llama.cpp).
    shard_size: 'hf' only: the most bytes per safetensors file.
  Returns:
    the absolute path written.
  Raises:
    ValueError: one line, nothing written: bad arguments, an existing non-empty target, an
      unwritable parent, params that do not fit the model or hold NaN/Inf, or a model the
      format cannot express exactly.
  """
  if format not in FORMATS:
    raise ValueError(f'format={format!r} is not supported; use one of {FORMATS}.')
  dtypes = HF_DTYPES if format == 'hf' else gguf_export.DTYPES
  dtype = 'float32' if dtype is None else dtype
  if dtype not in dtypes:
    raise ValueError(f'dtype={dtype!r} is not supported with format={format!r}; use one of '
                     f'{dtypes}.')
  if format == 'gguf' and shard_size is not None:
    raise ValueError("shard_size applies to format='hf' only; a GGUF is written as one file.")
  shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
  if isinstance(shard_size, bool) or not isinstance(shard_size, numbers.Integral) or shard_size < 1:
    raise ValueError(f'shard_size={shard_size!r} must be a positive number of bytes.')
  target = _check_target(path, format)
  flat = _param_reader(lm.config, lm.params if params is None else params)
  if format == 'hf':
    rope_scaling = _rope_scaling(lm.config)  # refused here, before anything is written

    def write(tmp):
      _write_hf(tmp, lm, flat, dtype, shard_size, rope_scaling)
      _verify(hf_import.read(tmp, dtype=lm.config.dtype), lm, format)
  else:
    def write(tmp):
      gguf_export.write(tmp, lm, flat, dtype, _narrow)
      _verify(gguf_import.read(tmp, dtype=lm.config.dtype), lm, format)
  _write_atomically(target, format == 'hf', write)
  return target


def _check_target(path, format):  # pylint: disable=redefined-builtin
  target = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(target)
  if format == 'gguf' and not target.endswith('.gguf'):
    raise ValueError(f"{target}: format='gguf' writes a file whose name ends in .gguf (as "
                     'pretrained.load expects).')
  empty_dir = format == 'hf' and os.path.isdir(target) and not os.path.islink(target) and (
      not os.listdir(target))
  if os.path.lexists(target) and not empty_dir:
    raise ValueError(f'{target} already exists' + (' and is not an empty directory' * (
        format == 'hf')) + '; save creates it and overwrites nothing.')
  if not os.path.isdir(parent):
    raise ValueError(f'{parent} (where {os.path.basename(target)} would go) is not an existing '
                     'directory; create it first.')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f'{parent} is not writable; choose another place to save to.')
  return target


def _param_reader(cfg, params):
  """Checks ``params`` against the model; returns ``read(path)``: one float32 numpy tensor."""
  if not isinstance(params, collections.abc.Mapping):
    raise ValueError(f"params must be the model's 'params' tree (a dict), got "
                     f'{type(params).__name__}.')
  flat = dict(llama_layout.flatten(params))
  wanted = {p: tuple(reversed(s)) if llama_layout.is_kernel(p) else tuple(s)
            for p, s in llama_layout.hf_shapes(cfg).items()}
  for problem, paths in (('lack', set(wanted) - set(flat)),
                         ('have the extra', set(flat) - set(wanted))):
    if paths:
      first = '/'.join(map(str, sorted(paths, key=str)[0]))
      raise ValueError(f'params do not match the model: they {problem} parameter {first!r} '
                       f'(and {len(paths) - 1} more).')
  for p, shape in wanted.items():
    if tuple(np.shape(flat[p])) != shape:
      raise ValueError(f"params do not match the model: {'/'.join(p)!r} has shape "
                       f'{tuple(np.shape(flat[p]))}, the model needs {shape}.')

  def read(p):
    w = np.asarray(flat[p], dtype=np.float32)  # a jax array is copied to the host here
    if not np.isfinite(w).all():  # the importers would refuse the file: refuse it now
      raise ValueError(f"params: {'/'.join(p)!r} holds NaN or Inf; nothing was saved.")
    return w
  return read


def _narrow(w, np_dtype, p):
  with np.errstate(over='ignore'):  # reported below, naming the tensor
    out = w.astype(np_dtype)
  if not np.isfinite(out).all():  # float16 tops out at 65504
    raise ValueError(f"params: {'/'.join(p)!r} has values beyond the range of "
                     f'{np.dtype(np_dtype).name}; save as float32 or bfloat16.')
  return out


def _write_atomically(target, is_directory, write):
  parent, name = os.path.split(target)
  try:
    if is_directory:
      tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{name}.tmp-')
    else:
      fd, tmp = tempfile.mkstemp(dir=parent, prefix=f'.{name}.tmp-', suffix='.gguf')
      os.close(fd)
  except OSError as e:
    raise ValueError(f'{parent} is not writable ({type(e).__name__}: {e.strerror}); choose '
                     'another place to save to.') from None
  try:
    os.chmod(tmp, 0o755 if is_directory else 0o644)  # mkdtemp/mkstemp's 0700/0600 hide it
    write(tmp)
    if is_directory:   # safetensors' save_file leaves its files 0600: readable by all, as HF's
      for file in os.listdir(tmp):
        os.chmod(os.path.join(tmp, file), 0o644)
    os.replace(tmp, target)  # a directory replaces only an empty one
  except BaseException:  # a refusal, a full disk, Ctrl-C: leave nothing behind
    if is_directory:
      shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.exists(tmp):
      os.remove(tmp)
    raise


def _rope_scaling(cfg):
  """config.json's llama3 ``rope_scaling`` giving exactly ``cfg.rope_divisors`` (None: none).

  The divisors fix ``factor`` and the two wavelength thresholds ``original_max / low`` and
  ``original_max / high``, not the three numbers apart: Llama 3.x's low=1, high=4 is tried
  first, then low=1 with ``high`` fitted to the smoothed band. A candidate is kept only if it
  reproduces every divisor; none does: the model cannot be written to config.json.
  """
  if cfg.rope_divisors is None:
    return None
  d = np.asarray(cfg.rope_divisors, np.float64)
  if np.allclose(d, 1.0, rtol=1e-6, atol=0):
    return None
  for scaling in _llama3_candidates(d, cfg.head_dim, cfg.rope_base):
    with np.errstate(all='ignore'):
      got = llama_layout.llama3_rope_divisors(cfg.head_dim, cfg.rope_base, scaling)
    if np.allclose(got, d, rtol=1e-6, atol=0):
      return scaling
  shown = tuple(round(float(x), 4) for x in d)
  raise ValueError(f'rope_divisors {shown} are not those of any llama3 rope_scaling, which '
                   "config.json needs; save format='gguf' (its rope_freqs tensor holds them as "
                   'they are).')


def _llama3_candidates(d, head_dim, base):
  """llama3 ``rope_scaling`` dicts that may give the divisors ``d`` (checked by the caller)."""
  factor = float(f'{d.max():.6g}')
  if factor <= 1:
    return
  wavelen = 2 * np.pi * base ** (np.arange(0, head_dim, 2) / head_dim)
  kept, scaled = d <= 1 + 1e-6, d >= factor * (1 - 1e-6)
  medium = ~kept & ~scaled
  s = (1 / d - 1 / factor) / (1 - 1 / factor)  # where each lies in the smoothed band, 0..1
  pairs = [(1.0, 4.0)]
  shortest_scaled = wavelen[scaled].min()
  if medium.sum() >= 2:  # s = old/((high-low) wavelen) - low/(high-low): a line in 1/wavelen
    a, b = np.polyfit(1 / wavelen[medium], s[medium], 1)
    if b < 0:
      pairs.append((1.0, 1 - 1 / b))
  elif medium.sum() == 1:  # one equation, two unknowns: old midway in its allowed range
    w, s1 = wavelen[medium][0], s[medium][0]
    old = round(np.sqrt(w * shortest_scaled))
    if s1 > 0 and old > w:
      pairs.append((1.0, 1 + (old / w - 1) / s1))
  longest_kept = wavelen[kept].max() if kept.any() else 0.0
  if not medium.any() and longest_kept:  # any high with kept < old/high, old/low < scaled
    pairs.append((1.0, float(np.sqrt(shortest_scaled / longest_kept))))
  for low, high in pairs:
    if medium.any():
      old = np.median(wavelen[medium] * (low + s[medium] * (high - low)))
    else:
      old = np.sqrt(high * longest_kept * low * shortest_scaled) or shortest_scaled / 2
    for rounded in dict.fromkeys((float(f'{high:.6g}'), float(high))):  # the round one first
      yield {'rope_type': 'llama3', 'factor': factor, 'low_freq_factor': low,
             'high_freq_factor': rounded, 'original_max_position_embeddings': int(round(old))}


def _write_json(directory, name, data):
  with open(os.path.join(directory, name), 'w') as f:
    json.dump(data, f, indent=2)


def _hf_config(cfg, dtype, tokenizer, rope_scaling):
  mistral = cfg.sliding_window is not None  # transformers' Llama ignores sliding_window
  c = {'architectures': ['MistralForCausalLM' if mistral else 'LlamaForCausalLM'],
       'model_type': 'mistral' if mistral else 'llama', 'vocab_size': cfg.vocab_size,
       'hidden_size': cfg.d_model, 'intermediate_size': cfg.d_ff,
       'num_hidden_layers': cfg.num_layers, 'num_attention_heads': cfg.num_heads,
       'num_key_value_heads': cfg.num_kv_heads, 'max_position_embeddings': cfg.max_len,
       'rope_theta': cfg.rope_base, 'rope_scaling': rope_scaling, 'rms_norm_eps': cfg.norm_eps,
       'tie_word_embeddings': cfg.tie_embeddings, 'hidden_act': 'silu',
       'attention_bias': False, 'mlp_bias': False, 'torch_dtype': dtype,
       'eos_token_id': tokenizer.eos_id}
  optional = {'bos_token_id': tokenizer.bos_id, 'head_dim': cfg.explicit_head_dim,
              'sliding_window': cfg.sliding_window}
  return dict(c, **{k: v for k, v in optional.items() if v is not None})


def _write_weights(directory, cfg, flat, dtype, shard_size):
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  np_dtype = {'float32': np.float32, 'float16': np.float16, 'bfloat16': ml_dtypes.bfloat16}[dtype]
  shapes = llama_layout.hf_shapes(cfg)
  nbytes = {p: int(np.prod(s)) * np.dtype(np_dtype).itemsize for p, s in shapes.items()}
  shards, size = [[]], 0
  for p in shapes:  # greedy, in layer order, as transformers shards
    if shards[-1] and size + nbytes[p] > shard_size:
      shards, size = shards + [[]], 0
    shards[-1].append(p)
    size += nbytes[p]
  n = len(shards)
  names = (['model.safetensors'] if n == 1 else
           [f'model-{i + 1:05d}-of-{n:05d}.safetensors' for i in range(n)])
  weight_map = {}
  for name, paths in zip(names, shards):  # one shard in memory at a time
    tensors = {}
    for p in paths:
      w = flat(p)
      # The importer's own name mapping, so the two cannot drift apart.
      key = hf_import._hf_name(p, 'model.')  # pylint: disable=protected-access
      tensors[key] = _narrow(np.ascontiguousarray(w.T if llama_layout.is_kernel(p) else w),
                             np_dtype, p)
    save_file(tensors, os.path.join(directory, name), metadata={'format': 'pt'})
    weight_map.update(dict.fromkeys(tensors, name))
  if n > 1:
    _write_json(directory, 'model.safetensors.index.json',
                {'metadata': {'total_size': sum(nbytes.values())}, 'weight_map': weight_map})


def _write_tokenizer(directory, lm):
  from tokenizers import Tokenizer, processors  # pylint: disable=g-import-not-at-top
  tok = lm.tokenizer
  inner = Tokenizer.from_str(tok.tokenizer.to_str())  # a copy: the loaded LM stays as it is
  config = {'tokenizer_class': 'PreTrainedTokenizerFast',
            'eos_token': inner.id_to_token(tok.eos_id), 'add_bos_token': tok.bos_id is not None,
            'add_eos_token': False, 'model_max_length': lm.config.max_len,
            'clean_up_tokenization_spaces': False}
  generation = {'eos_token_id': tok.eos_id}
  if tok.bos_id is not None:
    bos = config['bos_token'] = inner.id_to_token(tok.bos_id)
    generation['bos_token_id'] = tok.bos_id
    if inner.post_processor is None:  # transformers adds bos through the post-processor
      inner.post_processor = processors.TemplateProcessing(
          single=[bos, '$A'], pair=[bos, '$A', bos, '$B'], special_tokens=[(bos, tok.bos_id)])
  if tok.pad_id != tok.eos_id:  # the importer pads with eos when no pad token is named
    config['pad_token'] = inner.id_to_token(tok.pad_id)
    generation['pad_token_id'] = tok.pad_id
  template = lm.chat_template_source
  if isinstance(template, (str, list)) and template:
    config['chat_template'] = template
  inner.save(os.path.join(directory, 'tokenizer.json'))
  _write_json(directory, 'tokenizer_config.json', config)
  _write_json(directory, 'generation_config.json', generation)


def _write_hf(directory, lm, flat, dtype, shard_size, rope_scaling):
  _write_json(directory, 'config.json', _hf_config(lm.config, dtype, lm.tokenizer, rope_scaling))
  _write_weights(directory, lm.config, flat, dtype, shard_size)
  _write_tokenizer(directory, lm)


def _without(obj, keys):
  if isinstance(obj, dict):
    return {k: _without(v, keys) for k, v in obj.items() if k not in keys}
  if isinstance(obj, list):
    return [_without(v, keys) for v in obj]
  return obj


def _tokenizer_parts(tok, size):
  """What decides ``tok``'s ids and text, over its first ``size`` ids. Offsets-only flags are
  left out (trim_offsets; a byte-level decoder's flags), and the model vocabulary is compared
  without the added tokens, which are matched before the model sees the text."""
  data = json.loads(tok.tokenizer.to_str())
  added = [t for t in data['added_tokens'] if t['id'] < size]
  added_ids = {t['id'] for t in added}
  model = dict(data['model'])
  if isinstance(model.get('vocab'), dict):  # BPE / WordPiece / WordLevel; Unigram: a list
    model['vocab'] = {t: i for t, i in model['vocab'].items() if i < size and i not in added_ids}
  if 'merges' in model:
    model['merges'] = gguf_export.merges_of(model)
  return {'model': model, 'normalizer': data['normalizer'],
          'pre-tokenizer': _without(data['pre_tokenizer'], ('trim_offsets',)),
          'decoder': _without(data['decoder'], ('trim_offsets', 'add_prefix_space', 'use_regex')),
          'added tokens': added, 'special ids': (tok.eos_id, tok.bos_id, tok.pad_id)}


def _verify(checkpoint, lm, format):  # pylint: disable=redefined-builtin
  """Refuses (the caller removes the files) when the importer reads back another model."""
  want, got = lm.config, checkpoint.config
  ones = np.ones(want.head_dim // 2)
  # GGUF stores these as float32: equal to float32 precision is the same model.
  floats = {'rope_divisors': (got.rope_divisors or ones, want.rope_divisors or ones),
            'rope_base': (got.rope_base, want.rope_base), 'norm_eps': (got.norm_eps, want.norm_eps)}
  differs = [f for f, (a, b) in floats.items() if not np.allclose(a, b, rtol=1e-6, atol=0)]
  differs += [f for f in ('vocab_size', 'num_layers', 'd_model', 'num_heads', 'num_kv_heads',
                          'd_ff', 'max_len', 'tie_embeddings', 'head_dim')
              if getattr(got, f) != getattr(want, f)]
  window = [c.sliding_window for c in (want, got)]
  if format == 'gguf' and window[0] is not None and window[0] >= want.max_len:
    window[0] = None  # never reached within max_len: full attention is the same model
  differs += ['sliding_window'] if window[0] != window[1] else []
  differs = [f'config field {f}' for f in differs]
  size = lm.tokenizer.vocab_size
  parts = _tokenizer_parts(lm.tokenizer, size), _tokenizer_parts(checkpoint.tokenizer, size)
  differs += [f"the tokenizer's {k}" for k in parts[0] if parts[0][k] != parts[1][k]]
  if differs:
    raise ValueError(f'format={format!r} cannot hold this model exactly: read back, '
                     f'{" and ".join(differs)} differ(s); nothing was saved.')
