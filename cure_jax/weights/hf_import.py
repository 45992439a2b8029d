"""Reading a Hugging Face Llama/Mistral model directory into a :class:`Checkpoint`.

Files: ``config.json``; ``model.safetensors`` or ``model.safetensors.index.json`` (its
``weight_map`` names the shard of every tensor); ``tokenizer.json`` and, optionally,
``tokenizer_config.json`` (special tokens, chat template). Tensors are read with the
safetensors numpy API (bfloat16 arrives as ``ml_dtypes.bfloat16``) only when materialised.
HF Q/K rows are already in rotate-half layout: no permutation, only Linear ``(out, in)``
weights are transposed to Dense kernels.
"""
import json
import os

from cure_jax.weights import import_checks, llama_layout
from cure_jax.models.causal_lm import LMConfig
from cure_jax.text.tokenizer import HFTokenizer

MODEL_TYPES = ('llama', 'mistral')
_IGNORED_TENSORS = ('rotary_emb.inv_freq',)  # buffers some old checkpoints saved


def _read_json(path, required=True):
  if not os.path.isfile(path):
    if required:
      raise FileNotFoundError(f'{path} not found; a Hugging Face model directory needs it.')
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path}: not valid JSON ({e}).') from None


def _rope(config, path, head_dim, base):
  """llama3 divisors from ``rope_scaling`` (or newer ``rope_parameters``), None if unscaled."""
  scaling = config.get('rope_scaling') or config.get('rope_parameters') or {}
  kind = scaling.get('rope_type', scaling.get('type', 'default'))
  if kind in ('default', None):
    return None
  if kind != 'llama3':
    raise ValueError(f"{path}: rope_scaling.rope_type={kind!r} is not supported; only "
                     "'llama3' (or no scaling) is.")
  try:
    return llama_layout.llama3_rope_divisors(head_dim, base, scaling)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from None


def read_config(directory, max_len=None, dtype='float32'):
  """The :class:`LMConfig` of ``directory/config.json``; unsupported fields raise, named."""
  path = os.path.join(directory, 'config.json')
  c = _read_json(path)
  model_type = c.get('model_type')
  if model_type not in MODEL_TYPES:
    raise ValueError(f'{path}: model_type={model_type!r} is not supported; supported: '
                     f'{MODEL_TYPES} (Llama-2, Llama-3.x, SmolLM2, Mistral).')
  checks = {'hidden_act': ('silu', c.get('hidden_act', 'silu')),
            'attention_bias': (False, bool(c.get('attention_bias', False))),
            'mlp_bias': (False, bool(c.get('mlp_bias', False)))}
  for field, (wanted, got) in checks.items():
    if got != wanted:
      raise ValueError(f'{path}: {field}={got!r} is not supported (only {wanted!r}).')
  missing = [k for k in ('vocab_size', 'hidden_size', 'num_hidden_layers',
                         'num_attention_heads', 'intermediate_size') if k not in c]
  if missing:
    raise ValueError(f'{path}: missing field(s) {missing}.')
  d_model, heads = int(c['hidden_size']), int(c['num_attention_heads'])
  head_dim = int(c.get('head_dim') or d_model // heads)
  base = float(c.get('rope_theta') or (c.get('rope_parameters') or {}).get('rope_theta')
               or 10000.0)
  length = int(c.get('max_position_embeddings', 4096))
  # As transformers: only Mistral attends within `sliding_window` (Llama ignores the key);
  # null, or Qwen2-style use_sliding_window=false, means full attention.
  window = c.get('sliding_window') if model_type == 'mistral' else None
  if window is not None and c.get('use_sliding_window', True) is False:
    window = None
  try:
    return LMConfig(
        vocab_size=int(c['vocab_size']), num_layers=int(c['num_hidden_layers']),
        d_model=d_model, num_heads=heads,
        num_kv_heads=int(c.get('num_key_value_heads') or heads),
        d_ff=int(c['intermediate_size']), max_len=int(max_len or length), rope_base=base,
        norm_eps=float(c.get('rms_norm_eps', 1e-6)),
        tie_embeddings=bool(c.get('tie_word_embeddings', False)), dtype=dtype,
        explicit_head_dim=None if head_dim * heads == d_model else head_dim,
        rope_divisors=_rope(c, path, head_dim, base), sliding_window=window)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from None


def _weight_files(directory):
  """``{tensor name: (file, shape)}`` from the index or the single safetensors file."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  index = os.path.join(directory, 'model.safetensors.index.json')
  single = os.path.join(directory, 'model.safetensors')
  if os.path.isfile(index):
    weight_map = (_read_json(index) or {}).get('weight_map')
    if not isinstance(weight_map, dict):
      raise ValueError(f'{index}: no "weight_map" object.')
    files = {k: os.path.join(directory, v) for k, v in weight_map.items()}
  elif os.path.isfile(single):
    files = None
  else:
    raise FileNotFoundError(f'{directory} has no weights: expected model.safetensors or '
                            'model.safetensors.index.json (PyTorch .bin files are not read).')
  names = {}
  for path in sorted(set(files.values()) if files else {single}):
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path} (listed in {index}) not found.')
    try:
      with safe_open(path, framework='np') as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError on bad files
      raise ValueError(f'{path}: not a readable safetensors file ({type(e).__name__}: {e}); '
                       'the file is truncated or corrupt, download it again.') from None
    for key, shape in shapes.items():
      if files is None or files.get(key) == path:
        names[key] = (path, shape)
  return names


def _hf_name(path, prefix):
  if path[0] == 'lm_head':
    return 'lm_head.weight'
  if path[0] in ('embed_tokens', 'norm'):
    return f'{prefix}{path[0]}.weight'
  layer = path[0].split('_')[1]
  return f'{prefix}layers.{layer}.{".".join(path[1:-1])}.weight'


def _reader(path, key):
  def read():
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    try:
      with safe_open(path, framework='np') as f:
        w = f.get_tensor(key)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{path}: tensor {key!r} is unreadable ({type(e).__name__}: {e}); the '
                       'file is truncated or corrupt.') from None
    # Checked here, in its stored dtype, the one time it is read: NaN would train silently.
    return import_checks.check_finite(w, f'{path}: tensor {key!r}', import_checks.SOURCE_FIX)
  return read


def checkpoint_files(directory):
  """Every file :func:`read` takes the model from (JSON files, weight shards), sorted."""
  directory = os.fspath(directory)
  weights = {file for file, _ in _weight_files(directory).values()}
  extra = ('config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json',
           'model.safetensors.index.json')
  present = {os.path.join(directory, n) for n in extra
             if os.path.isfile(os.path.join(directory, n))}
  return sorted(weights | present)


def read_tokenizer(directory):
  """The :class:`HFTokenizer` of ``tokenizer.json`` with ``tokenizer_config.json``'s tokens."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, 'tokenizer.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found; the tokenizer must be in tokenizers\' JSON '
                            'format (tokenizer.model alone is not read).')
  try:
    tok = Tokenizer.from_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path}: not a readable tokenizer ({e}).') from None
  config_path = os.path.join(directory, 'tokenizer_config.json')
  tc = _read_json(config_path, required=False) or {}
  gen = _read_json(os.path.join(directory, 'generation_config.json'), required=False) or {}

  def token_id(field):
    token = tc.get(field)
    if isinstance(token, dict):  # {"content": "<s>", ...} in older configs
      token = token.get('content')
    if token is None:
      return None
    i = tok.token_to_id(token)
    if i is None:
      raise ValueError(f'{config_path}: {field}={token!r} is not in {path}.')
    return i

  eos = token_id('eos_token')
  if eos is None:
    eos = gen.get('eos_token_id')
    eos = eos[0] if isinstance(eos, list) else eos
  if eos is None:
    raise ValueError(f'{directory}: the tokenizer has no EOS token; set "eos_token" in '
                     'tokenizer_config.json.')
  bos = token_id('bos_token')
  # bos_id is what the data code prepends: only if the checkpoint's own encoding adds it.
  probe = tok.encode('a', add_special_tokens=True).ids
  adds_bos = bos is not None and (tc.get('add_bos_token') or (probe and probe[0] == bos))
  return HFTokenizer(tok, eos_id=eos, bos_id=bos if adds_bos else None,
                     pad_id=token_id('pad_token'), source=directory), tc.get('chat_template')


def read(directory, max_len=None, dtype='float32'):
  """A :class:`~cure_jax.weights.llama_layout.Checkpoint` of a Hugging Face model directory."""
  directory = os.fspath(directory)
  cfg = read_config(directory, max_len, dtype)
  tokenizer, chat_template = read_tokenizer(directory)
  names = _weight_files(directory)
  prefix = 'model.' if 'model.embed_tokens.weight' in names else ''
  lazy, used = {}, set()
  for p, shape in llama_layout.hf_shapes(cfg).items():
    key = _hf_name(p, prefix)
    if key not in names:
      raise ValueError(f'{directory}: tensor {key!r} is missing from the weights '
                       f'(tie_word_embeddings={cfg.tie_embeddings} in config.json).')
    used.add(key)
    file, got = names[key]
    if got != shape:  # checked from the headers, before any tensor is read
      raise ValueError(f'{file}: tensor {key!r} has shape {got} but config.json implies '
                       f'{shape}.')
    lazy[p] = llama_layout.lazy_from_hf(p, shape, _reader(file, key), f'{file}: tensor {key!r}')
  extra = sorted(k for k in names if k not in used and not k.endswith(_IGNORED_TENSORS)
                 and not (cfg.tie_embeddings and k == 'lm_head.weight'))
  if extra:
    raise ValueError(f'{names[extra[0]][0]}: unexpected tensor {extra[0]!r} (and {len(extra) - 1} '
                     'more) outside the Llama layout; the architecture is not supported.')
  if tokenizer.vocab_size > cfg.vocab_size:
    raise ValueError(f'{directory}: tokenizer.json has {tokenizer.vocab_size} tokens but '
                     f'config.json vocab_size={cfg.vocab_size}.')
  return llama_layout.Checkpoint(cfg, lazy, tokenizer, chat_template, directory)
