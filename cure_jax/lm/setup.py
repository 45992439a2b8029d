"""The model side of an LM run: the byte-level LM or a pretrained checkpoint, its tokenizer,
its prompt template, and where parameters live (replicated or FSDP-sharded).

Everything here reads ``config.model`` / ``config.data`` (checked at start-up by
:mod:`cure_jax.lm.validate`).
"""
import dataclasses
from typing import Any, NamedTuple, Optional

from cure_jax.infra import sharding
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.text.tokenizer import ByteTokenizer




class LoadedModel(NamedTuple):
  """The model, its starting parameters (None: random init), tokenizer and prompt template
  (a ``str.format`` string with ``{question}``)."""
  model: Any
  params: Optional[Any]
  tokenizer: Any
  template: str
  checkpoint: Optional[Any] = None   # what pretrained.load returned (None: the byte LM)


def make_model(config, tokenizer):
  """The byte-level :class:`CausalLM` of ``config.model`` (trained from scratch)."""
  fields = {f.name for f in dataclasses.fields(LMConfig)} - {'vocab_size'}
  return CausalLM(LMConfig(vocab_size=tokenizer.vocab_size,
                           **{k: v for k, v in config.model.items() if k in fields}))


def _pretrained():
  from cure_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained


def _template(config, loaded):
  if config.data.template != 'chat':
    return config.data.template
  # The checkpoint's jinja template (its date line fixed), or the forced format.
  return loaded.template_string(system=config.data.chat_system or None,
                                 date_string=config.data.chat_date or None)


def load_model(config):
  """:class:`LoadedModel` for ``config``: the byte LM, or the pretrained checkpoint (or, with
  none, the named fine-tuned original's architecture and tokenizer, no start parameters)."""
  source = config.model.pretrained or config.model.original or config.model.retrain
  if not source:
    tokenizer = ByteTokenizer()
    return LoadedModel(make_model(config, tokenizer), None, tokenizer, config.data.template)
  loaded = _pretrained().load(source, **_load_kwargs(config))
  params = loaded.params if config.model.pretrained else None
  return LoadedModel(loaded.model, params, loaded.tokenizer, _template(config, loaded), loaded)


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
  mesh = sharding.make_mesh() if config.model.sharding != 'replicated' else None
  return {'max_len': config.model.max_len, 'dtype': config.model.dtype, 'mesh': mesh,
          'sharding_mode': config.model.sharding,
          'chat_template': config.data.chat_template or None}
