"""The model side of an LM run: the byte-level LM or a pretrained checkpoint, its tokenizer,
its prompt template, and where parameters live (replicated or FSDP-sharded).

Everything here reads ``config.model`` / ``config.data``; :func:`check` validates the fields
before anything is loaded or trained, so a typo costs seconds, not a fine-tuning run.
"""
import dataclasses
from typing import Any, NamedTuple, Optional

from cure_jax.lm import chat
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.text.tokenizer import ByteTokenizer

SHARDINGS = ('replicated', 'fsdp')
DTYPES = ('float32', 'bfloat16')


class LoadedModel(NamedTuple):
  """The model, its starting parameters (None: random init), tokenizer and prompt template
  (a ``str.format`` string with ``{question}``)."""
  model: Any
  params: Optional[Any]
  tokenizer: Any
  template: str


def make_model(config, tokenizer):
  """The byte-level :class:`CausalLM` of ``config.model`` (trained from scratch)."""
  fields = {f.name for f in dataclasses.fields(LMConfig)} - {'vocab_size'}
  return CausalLM(LMConfig(vocab_size=tokenizer.vocab_size,
                           **{k: v for k, v in config.model.items() if k in fields}))


def check(config):
  """One clear error for a bad model / prompt / sharding field."""
  m = config.model
  if m.sharding not in SHARDINGS:
    raise ValueError(f'config.model.sharding={m.sharding!r}; use one of {SHARDINGS}.')
  if m.dtype not in DTYPES:
    raise ValueError(f'config.model.dtype={m.dtype!r}; use one of {DTYPES}.')
  pretrained = m.pretrained or m.original or m.retrain
  if config.data.template == 'chat' and not pretrained:
    raise ValueError("config.data.template='chat' needs a checkpoint's chat format: set "
                     'config.model.pretrained, or give a str.format template with {question}.')
  if config.data.template != 'chat' and '{question}' not in config.data.template:
    raise ValueError(f'config.data.template={config.data.template!r} has no {{question}} '
                     "field; write one, or use 'chat'.")
  name = config.data.chat_template
  if name and name not in chat.TEMPLATE_NAMES:
    raise ValueError(f'config.data.chat_template={name!r}; use one of {chat.TEMPLATE_NAMES} '
                     "or '' (the checkpoint's own).")
  if pretrained and config.data.train_utility_sets:
    raise ValueError('config.data.train_utility_sets=True puts the utility sets (real authors, '
                     'world facts) into the fine-tuning data of a pretrained model, whose '
                     'utility must come from its own knowledge (TOFU); set it False.')


def _pretrained():
  from cure_jax.lm import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained


def _template(config, loaded):
  if config.data.template != 'chat':
    return config.data.template
  return chat.template_string(loaded.chat_template)  # config.data.chat_template or detected


def load_model(config):
  """:class:`LoadedModel` for ``config``: the byte LM, or the pretrained checkpoint (or, with
  none, the named fine-tuned original's architecture and tokenizer, no start parameters)."""
  source = config.model.pretrained or config.model.original or config.model.retrain
  if not source:
    tokenizer = ByteTokenizer()
    return LoadedModel(make_model(config, tokenizer), None, tokenizer, config.data.template)
  loaded = _pretrained().load(source, **_load_kwargs(config))
  params = loaded.params if config.model.pretrained else None
  return LoadedModel(loaded.model, params, loaded.tokenizer, _template(config, loaded))


def load_params(config, source, model):
  """The parameters of the fine-tuned checkpoint ``source``; its architecture must be
  ``model``'s."""
  loaded = _pretrained().load(source, **_load_kwargs(config))
  ours, theirs = model.config, loaded.model.config
  if ours != theirs:
    diff = [f.name for f in dataclasses.fields(ours)
            if getattr(ours, f.name) != getattr(theirs, f.name)]
    raise ValueError(f'{source}: its architecture differs from the run model in {diff}; '
                     'config.model.original / .retrain must be fine-tuned from '
                     'config.model.pretrained.')
  return loaded.params


def _load_kwargs(config):
  """The run's context length, compute dtype, prompt format and parameter placement."""
  mesh = None
  if config.model.sharding != 'replicated':
    from cure_jax import parallel  # pylint: disable=g-import-not-at-top
    mesh = parallel.make_mesh()
  return {'max_len': config.model.max_len, 'dtype': config.model.dtype, 'mesh': mesh,
          'sharding_mode': config.model.sharding,
          'chat_template': config.data.chat_template or None}


def placement(config):
  """``(tree, mesh) -> tree on the mesh`` for parameters and optimizer state: None
  (replicated) or FSDP (:mod:`cure_jax.sharding`: each large array split on its largest
  divisible dimension over the mesh; the batch stays data-parallel)."""
  if config.model.sharding == 'replicated':
    return None
  from cure_jax import sharding  # pylint: disable=g-import-not-at-top

  def place(tree, mesh):
    return sharding.put(tree, sharding.shardings(tree, mesh, config.model.sharding))
  return place
