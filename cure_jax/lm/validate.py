"""Start-up checks of an LM config (its defaults: ``config.py``): every bad value is one
line before a model loads or a step is compiled."""
import os
import re

from cure_jax.infra import sharding, validation
from cure_jax.infra.rules import (ConfigError, check, checks, choice, fail,
                                  fraction_closed_open, nonnegative, nonnegative_int, positive,
                                  positive_int)
from cure_jax.lm import ou_files, unlearn
from cure_jax.weights import chat
from cure_jax.models import DTYPES
from cure_jax.unlearning import hparams, methods, plan

MODES = ('train_original', 'train_retrain', 'unlearn', 'reproduce')
SHARDINGS = sharding.MODES
FORGET_MASKS = ('answer_token', 'author_names')
FINETUNE_SCHEDULES = ('cosine', 'linear')
UNLEARN_SCHEDULES = ('constant', 'linear')
LOSS_MEANS = ('sequence', 'token')
UNDIAL_POSITIONS = ('answer', 'all')
BOOLS = (True, False)
_MODEL_RULES = {'num_layers': positive_int, 'd_model': positive_int, 'num_heads': positive_int,
                'num_kv_heads': positive_int, 'd_ff': positive_int, 'max_len': positive_int,
                'rope_base': positive, 'norm_eps': positive}


def _check_model(config):
  m = config.model
  checks(m, 'config.model', _MODEL_RULES)
  if m.d_model % m.num_heads:
    fail('config.model.d_model', m.d_model, f'use a multiple of config.model.num_heads='
                                              f'{m.num_heads}')
  if m.num_heads % m.num_kv_heads:
    fail('config.model.num_kv_heads', m.num_kv_heads,
          f'use a divisor of config.model.num_heads={m.num_heads}')
  choice('config.model.dtype', m.dtype, DTYPES)
  choice('config.model.sharding', m.sharding, SHARDINGS)


def _check_data(config):
  d = config.data
  pretrained = config.model.pretrained or config.model.original or config.model.retrain
  if d.template == 'chat' and not pretrained:
    raise ConfigError("config.data.template='chat' needs a checkpoint's chat format: set "
                      'config.model.pretrained, or give a str.format template with {question}.')
  if d.template != 'chat' and '{question}' not in d.template:
    raise ConfigError(f'config.data.template={d.template!r} has no {{question}} field; '
                      "write one, or use 'chat'.")
  choice('config.data.source', d.source, ('authors', 'tofu'))
  if d.source == 'tofu' and not d.data_dir:
    fail('config.data.data_dir', d.data_dir,
          "config.data.source='tofu' needs a local copy of locuslab/TOFU")
  checks(d, 'config.data', {'num_authors': positive_int, 'qa_per_author': positive_int,
                             'forget_pct': positive, 'forget_sets': positive_int})
  if d.forget_sets > 1 and d.source != 'authors':
    fail('config.data.forget_sets', d.forget_sets,
         f"TOFU's files fix one forget split per forget_pct; use 1 with source={d.source!r}")
  if d.chat_template and d.chat_template not in chat.TEMPLATE_NAMES:
    fail('config.data.chat_template', d.chat_template,
          f"use one of {list(chat.TEMPLATE_NAMES)} or '' (the checkpoint's own)")
  if pretrained and d.train_utility_sets:
    raise ConfigError('config.data.train_utility_sets=True puts the utility sets (real authors, '
                      'world facts) into the fine-tuning data of a pretrained model, whose '
                      'utility must come from its own knowledge (TOFU); set it False.')
  if d.source != 'authors' and config.unlearn.forget_mask == 'author_names':
    raise ConfigError("config.unlearn.forget_mask='author_names' needs the authors' names, "
                      f'which config.data.source={d.source!r} does not give (TOFU\'s files do '
                      "not name authors); use 'answer_token'.")


def _check_finetune(config, num_devices):
  f = config.finetune
  checks(f, 'config.finetune', {'lr': positive, 'epochs': positive_int,
                                 'warmup_fraction': fraction_closed_open,
                                 'weight_decay': nonnegative, 'grad_clip': positive,
                                 'log_every': positive_int, 'checkpoint_every': positive_int,
                                 'grad_accum': positive_int})
  check('config.finetune.batch_size', f.batch_size, positive_int)
  choice('config.finetune.lr_schedule', f.lr_schedule, FINETUNE_SCHEDULES)
  choice('config.finetune.drop_last', f.drop_last, BOOLS)
  choice('config.finetune.decay_norms', f.decay_norms, BOOLS)
  check('config.finetune.adam_b2', f.adam_b2, fraction_closed_open)
  if f.batch_size % f.grad_accum or (num_devices and (f.batch_size // f.grad_accum)
                                     % num_devices):
    fail('config.finetune.batch_size', f.batch_size,
          f'use a multiple of grad_accum × devices ({f.grad_accum} × {num_devices})')


_UNLEARN_CHOICES = {'optimizer': ('adamw', 'sgd'), 'forget_mask': FORGET_MASKS,
                    'lr_schedule': UNLEARN_SCHEDULES, 'drop_last': BOOLS,
                    'loss_mean': LOSS_MEANS, 'undial_positions': UNDIAL_POSITIONS,
                    'decay_norms': BOOLS}


def check_unlearn_values(u, prefix, num_devices):
  """The values of an unlearning section (``config.unlearn``, or the ``hp`` that
  :func:`cure_jax.lm.unlearn.unlearn` takes: the same checks, the same messages)."""
  checks(u, prefix, {'epochs': positive_int, 'batch_size': positive_int,
                     'warmup_fraction': fraction_closed_open, 'weight_decay': nonnegative,
                     'log_every': positive_int, 'grad_accum': positive_int,
                     'grad_clip': nonnegative, 'rmu_layer': nonnegative_int})
  hparams.check_config(u, prefix)
  for key, allowed in _UNLEARN_CHOICES.items():
    if key in u:
      choice(f'{prefix}.{key}', u[key], allowed)
  if u.get('rmu_params'):
    try:
      re.compile(u.rmu_params)
    except re.error as e:
      fail(f'{prefix}.rmu_params', u.rmu_params, f'write a Python regular expression ({e})')
  if u.get('idk_path') and not os.path.isfile(u.idk_path):
    fail(f'{prefix}.idk_path', u.idk_path,
         "give a text file of refusals, one per line, or '' for cure-jax's own")
  if 'batch_size' in u and not u.get('drop_last', True) and (
      u.batch_size % u.get('grad_accum', 1) or (
          num_devices and (u.batch_size // u.get('grad_accum', 1)) % num_devices)):
    fail(f'{prefix}.batch_size', u.batch_size,
         f'with drop_last=False use a multiple of grad_accum × devices '
         f'({u.get("grad_accum", 1)} × {num_devices})')


def _check_unlearn(config, num_devices):
  u = config.unlearn
  check_unlearn_values(u, 'config.unlearn', num_devices)
  entries = [('config.unlearn.method', u.method, {})]
  for spec in config.reproduce.runs:
    field = f'config.reproduce.runs entry {spec!r}'
    try:
      name, settings = plan.parse_spec(spec, field)
    except ConfigError:
      raise   # names the field already
    except ValueError as e:
      raise ConfigError(f'{field}: {e}') from None
    entries.append((field, name, settings))
  for field, name, settings in entries:
    methods.get(name, field)
    try:
      unlearn.get_method(name)
    except ValueError as e:
      raise ConfigError(f'{field}: {e}') from None
    for key, value in settings.items():
      allowed = hparams.problem(key, value)
      if allowed:
        fail(f'{field}: {key}', value, allowed)


def _check_export(config):
  from cure_jax.weights import export, gguf_export  # pylint: disable=g-import-not-at-top
  e = config.export
  choice('config.export.format', e.format, ('',) + export.FORMATS)
  choice('config.export.overwrite', e.overwrite, BOOLS)
  if not e.format:
    return
  choice('config.export.dtype', e.dtype,
         export.HF_DTYPES if e.format == 'hf' else gguf_export.DTYPES)
  if not (config.model.pretrained or config.model.original or config.model.retrain):
    raise ConfigError(f'config.export.format={e.format!r} needs a pretrained checkpoint '
                      '(config.model.pretrained): the byte-level LM has no tokenizer files '
                      "to export; use '' for it.")


def validate_config(config, workdir=None, num_devices=None):
  """The whole config of an LM job, as the command line checks it (one
  :class:`~cure_jax.infra.rules.ConfigError` line for the first bad value)."""
  validation.validate(config, workdir, 'lm', validate, num_devices)


def validate(config, num_devices):
  """The LM fields of ``config`` (:func:`validate_config` adds the common ones)."""
  choice('config.mode', config.mode, MODES)
  check('config.seeds', config.seeds, positive_int)
  _check_model(config)
  _check_data(config)
  _check_finetune(config, num_devices)
  _check_unlearn(config, num_devices)
  _check_export(config)
  checks(config.eval, 'config.eval', {'batch_size': positive_int,
                                       'retain_items': nonnegative_int,
                                       'utility_items': nonnegative_int,
                                       'num_samples': nonnegative_int})
  _check_retain_logs(config)


def _check_retain_logs(config):
  """A retain model's logs must be readable before any model trains; whether privleak
  needs their min-k% AUC is known once the splits load (cure_jax.lm.experiment checks it then)."""
  if config.eval.retain_logs:
    try:
      ou_files.read_retain_logs(config.eval.retain_logs, need_mia=False)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    if config.data.forget_sets > 1:
      fail('config.data.forget_sets', config.data.forget_sets,
           'a retain model\'s logs belong to one forget set; use 1 with config.eval.retain_logs')
