"""Start-up checks of a whole config: every bad value is one line before any data loads.

``validate(config, workdir)`` raises :class:`ConfigError` (a ``ValueError``) naming the
field, the bad value and what is allowed. It reads keys with ``get`` so configs that lack
an optional key (older or newer than this module) still validate.
"""
import os
import re

import ml_collections

NUM_CLASSES = {'digits': 10, 'cifar10': 10, 'cifar100': 100, 'imagenet': 1000}
CLASSIFICATION_MODES = ('train_original', 'train_retrain', 'unlearn', 'reproduce', 'tune')
LM_MODES = ('train_original', 'train_retrain', 'unlearn', 'reproduce')
AUGMENTS = ('none', 'crop', 'cifar', 'flip')
DTYPES = ('float32', 'bfloat16', 'float16')


class ConfigError(ValueError):
  """A bad config value or command-line flag (experiments.main prints it as one line)."""


def _fail(field, value, allowed):
  raise ConfigError(f'{field}={value!r} is not allowed: {allowed}.')


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


# Rules: (test, description of what is allowed).
def positive(value):
  return _is_number(value) and value > 0


def nonnegative(value):
  return _is_number(value) and value >= 0


def positive_int(value):
  return isinstance(value, int) and not isinstance(value, bool) and value > 0


def nonnegative_int(value):
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


RULES = {
    positive: 'use a number > 0',
    nonnegative: 'use a number >= 0',
    positive_int: 'use a whole number >= 1',
    nonnegative_int: 'use a whole number >= 0',
}


def fraction_open_closed(value):
  return _is_number(value) and 0 < value <= 1


def fraction_closed_open(value):
  return _is_number(value) and 0 <= value < 1


def fraction_closed(value):
  return _is_number(value) and 0 <= value <= 1


RULES[fraction_open_closed] = 'use a fraction in (0, 1]'
RULES[fraction_closed] = 'use a fraction in [0, 1]'
RULES[fraction_closed_open] = 'use a fraction in [0, 1)'


def _check(field, value, rule):
  if not rule(value):
    _fail(field, value, RULES[rule])


def _choice(field, value, allowed):
  if value not in allowed:
    _fail(field, value, f'choose one of {list(allowed)}')


def _checks(cfg, prefix, rules):
  """Applies ``rules`` ({key: rule}) to the keys of ``cfg`` that exist."""
  for key, rule in rules.items():
    if key in cfg:
      _check(f'{prefix}.{key}', cfg[key], rule)


def check_batch(field, value, num_devices):
  _check(field, value, positive_int)
  if num_devices and value % num_devices:
    _fail(field, value, f'use a multiple of {num_devices}, the number of devices')


def parse_classes(value, num_classes, field='config.forget_classes', shown=None):
  """``'1'`` / ``'1,3'`` / an int / a sequence -> sorted tuple of distinct class indices.

  ``shown``: the value the error messages quote (a whole scenario list), default ``value``.
  """
  full = value if shown is None else shown
  if _is_number(value) or isinstance(value, str):
    items = [s.strip() for s in str(value).split(',')]
  else:
    items = [str(v).strip() for v in value]
  items = [s for s in items if s]
  if not items:
    _fail(field, full, 'give at least one class index, e.g. "1" or "1,3"')
  bad = [s for s in items if not re.fullmatch(r'[+-]?\d+', s)]
  if bad:
    _fail(field, full, f'{bad[0]!r} is not a class index; give comma-separated integers '
                        f'in 0..{num_classes - 1}, e.g. "1,3"')
  classes = [int(s) for s in items]
  negative = [c for c in classes if c < 0]
  if negative:
    _fail(field, full, f'class indices are >= 0 (got {negative}); allowed 0..{num_classes - 1}')
  out_of_range = [c for c in classes if c >= num_classes]
  if out_of_range:
    raise ConfigError(f'{field}={full!r}: Forget class(es) {out_of_range} out of range: '
                      f'allowed 0..{num_classes - 1}.')
  duplicates = sorted({c for c in classes if classes.count(c) > 1})
  if duplicates:
    _fail(field, full, f'class(es) {duplicates} given twice; list each class once')
  if len(classes) == num_classes:
    _fail(field, full, f'that forgets all {num_classes} classes and leaves nothing to '
                        'retain; forget fewer classes')
  return tuple(sorted(classes))


def parse_scenarios(value, num_classes, field='config.scenarios'):
  """``'1;3;8'`` / ``'1,3;8'`` -> tuple of forget-class tuples (one per scenario)."""
  parts = [p for p in str(value).split(';') if p.strip()]
  scenarios = [parse_classes(p, num_classes, field, shown=value) for p in parts]
  if not scenarios:
    _fail(field, value, 'give forget classes per scenario separated by ";", e.g. "1;3;8"')
  if len(set(scenarios)) < len(scenarios):
    _fail(field, value, 'a scenario is listed twice; list each once')
  return tuple(scenarios)


def _check_seed_list(field, value):
  if isinstance(value, int) and not isinstance(value, bool):
    _check(field, value, positive_int)
    return
  items = [s.strip() for s in value.split(',')] if isinstance(value, str) else list(value)
  try:
    seeds = [int(s) for s in items if str(s) != '']
  except (TypeError, ValueError):
    _fail(field, value, 'give a count or comma-separated whole numbers >= 0, e.g. "0,1,2"')
  if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
    _fail(field, value, 'give distinct whole numbers >= 0, e.g. "0,1,2"')


def check_workdir(workdir, field='--workdir'):
  """The workdir exists as (or can be made into) a directory this process can write."""
  if not workdir or not isinstance(workdir, str):
    _fail(field, workdir, 'give a directory for checkpoints and results')
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    _fail(field, workdir, 'it is a file; give a directory (new or existing)')
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f'.write-test-{os.getpid()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    _fail(field, workdir, f'it cannot be written ({e.strerror or e}); give a writable '
                          'directory')


_UNLEARN_RULES = {
    'lr': positive, 'epochs': positive, 'temperature': positive, 'eps': nonnegative,
    'w_h': nonnegative, 'w_s': nonnegative, 'undial_strength': nonnegative,
    'retain_weight': nonnegative, 'retain_fraction': fraction_open_closed,
    'lur_alpha': nonnegative, 'lur_w_r': nonnegative, 'lur_w_f': nonnegative,
    'momentum': fraction_closed_open, 'log_every': positive_int,
    'salun_fraction': fraction_open_closed, 'salun_weight_decay': nonnegative,
    'scrub_alpha': nonnegative, 'scrub_gamma': nonnegative, 'scrub_temperature': positive,
    'scrub_max_steps': nonnegative,
}
_TRAIN_RULES = {
    'epochs': positive_int, 'lr': positive, 'momentum': fraction_closed_open,
    'weight_decay': nonnegative, 'warmup_fraction': fraction_closed_open,
    'log_every': positive_int, 'checkpoint_every': positive_int,
}


def _check_unlearn_values(cfg, prefix, num_devices):
  _checks(cfg, prefix, _UNLEARN_RULES)
  if 'batch_size' in cfg:
    check_batch(f'{prefix}.batch_size', cfg['batch_size'], num_devices)
  if 'grogu_impl' in cfg:
    _choice(f'{prefix}.grogu_impl', cfg['grogu_impl'], ('fast', 'vmap'))


def _known_method(field, name, registry):
  if name not in registry:
    raise ConfigError(f'{field}: Unknown unlearning method {name!r}; choose one of '
                      f'{sorted(registry)}.')


def validate_classification(config, num_devices):
  from cure_jax import methods
  from cure_jax.data import LOADERS
  from cure_jax.models import ARCHITECTURES
  _choice('config.mode', config.mode, CLASSIFICATION_MODES)
  if config.data.name not in LOADERS:
    raise ConfigError(f'config.data.name={config.data.name!r}: Unknown dataset '
                      f'{config.data.name!r}; choose one of {sorted(LOADERS)}.')
  if config.model.name not in ARCHITECTURES:
    raise ConfigError(f'config.model.name={config.model.name!r}: Unknown model '
                      f'{config.model.name!r}; choose one of {sorted(ARCHITECTURES)}.')
  _choice('config.model.dtype', config.model.get('dtype', 'float32'), DTYPES)
  _choice('config.data.augment', config.data.get('augment', 'none'), AUGMENTS)
  _checks(config.data, 'config.data', {'pad': nonnegative_int, 'image_size': positive_int,
                                       'split_seed': nonnegative_int})
  num_classes = NUM_CLASSES.get(config.data.name)
  if num_classes:
    parse_classes(config.forget_classes, num_classes)
    if getattr(config, 'scenarios', None):
      parse_scenarios(config.scenarios, num_classes)
  _check('config.seeds', config.seeds, positive_int)
  if getattr(config, 'model_seeds', None) not in (None, ''):
    _check_seed_list('config.model_seeds', config.model_seeds)
  _choice('config.seed_parallel', config.get('seed_parallel'), (True, False, None))

  _checks(config.train, 'config.train', _TRAIN_RULES)
  check_batch('config.train.batch_size', config.train.batch_size, num_devices)
  check_batch('config.train.eval_batch_size', config.train.eval_batch_size, num_devices)

  _check_unlearn_values(config.unlearn, 'config.unlearn', num_devices)
  _known_method('config.unlearn.method', config.unlearn.method, methods.REGISTRY)
  names = list(config.reproduce.methods)
  if not names and config.mode in ('reproduce', 'tune'):
    _fail('config.reproduce.methods', config.reproduce.methods, 'list at least one method')
  for name in names:
    _known_method(f'config.reproduce.methods (entry {name!r})', name, methods.REGISTRY)
  allowed = sorted(k for k in config.unlearn.keys() if k != 'overrides')
  for name, overrides in config.unlearn.get('overrides', {}).items():
    _known_method(f'config.unlearn.overrides.{name}', name, methods.REGISTRY)
    for key in overrides.keys():
      if key not in allowed:
        raise ConfigError(f'config.unlearn.overrides.{name}.{key}: unknown hyperparameter '
                          f'{key!r}; choose from {allowed}.')
    _check_unlearn_values(overrides, f'config.unlearn.overrides.{name}', num_devices)
  _check('config.reproduce.forget_threshold', config.reproduce.forget_threshold, nonnegative)
  if config.mode == 'tune':
    for key in ('lrs', 'epochs', 'temperatures'):
      values = config.tune[key]
      if not values or not all(positive(v) for v in values):
        _fail(f'config.tune.{key}', values, 'give a non-empty list of numbers > 0')
    _check('config.tune.seeds', config.tune.seeds, positive_int)
    _check('config.tune.min_retain_acc', config.tune.min_retain_acc, fraction_closed)


def validate_lm(config, num_devices):
  from cure_jax.lm import run as lm_run, unlearn as lm_unlearn
  _choice('config.mode', config.mode, LM_MODES)
  _check('config.seeds', config.seeds, positive_int)
  m = config.model
  _checks(m, 'config.model', {'num_layers': positive_int, 'd_model': positive_int,
                              'num_heads': positive_int, 'num_kv_heads': positive_int,
                              'd_ff': positive_int, 'max_len': positive_int,
                              'rope_base': positive, 'norm_eps': positive})
  if m.d_model % m.num_heads:
    _fail('config.model.d_model', m.d_model, f'use a multiple of config.model.num_heads='
                                              f'{m.num_heads}')
  if m.num_heads % m.num_kv_heads:
    _fail('config.model.num_kv_heads', m.num_kv_heads,
          f'use a divisor of config.model.num_heads={m.num_heads}')
  _choice('config.model.dtype', m.get('dtype', 'float32'), DTYPES)
  _choice('config.data.source', config.data.source, ('authors', 'tofu'))
  if config.data.source == 'tofu' and not config.data.data_dir:
    _fail('config.data.data_dir', config.data.data_dir,
          "config.data.source='tofu' needs a local copy of locuslab/TOFU")
  _checks(config.data, 'config.data', {'num_authors': positive_int,
                                       'qa_per_author': positive_int, 'forget_pct': positive})
  f = config.finetune
  _checks(f, 'config.finetune', {'lr': positive, 'epochs': positive_int,
                                 'warmup_fraction': fraction_closed_open,
                                 'weight_decay': nonnegative, 'grad_clip': positive,
                                 'log_every': positive_int, 'checkpoint_every': positive_int,
                                 'grad_accum': positive_int})
  per_device = f.batch_size // f.get('grad_accum', 1) if positive_int(f.batch_size) else 0
  _check('config.finetune.batch_size', f.batch_size, positive_int)
  if f.batch_size % f.get('grad_accum', 1) or (num_devices and per_device % num_devices):
    _fail('config.finetune.batch_size', f.batch_size,
          f'use a multiple of grad_accum × devices ({f.get("grad_accum", 1)} × {num_devices})')
  u = config.unlearn
  _checks(u, 'config.unlearn', {'lr': positive, 'epochs': positive_int,
                                'batch_size': positive_int, 'warmup_fraction':
                                fraction_closed_open, 'weight_decay': nonnegative,
                                'alpha': nonnegative, 'temperature': positive,
                                'w_h': nonnegative, 'w_s': nonnegative, 'eps': nonnegative,
                                'npo_beta': positive, 'simnpo_beta': positive,
                                'simnpo_gamma': nonnegative, 'undial_beta': nonnegative,
                                'log_every': positive_int, 'grad_accum': positive_int})
  _choice('config.unlearn.optimizer', u.get('optimizer', 'adamw'), ('adamw', 'sgd'))
  _choice('config.unlearn.grogu_impl', u.get('grogu_impl', 'fast'), ('fast', 'vmap'))
  _known_method('config.unlearn.method', u.method, lm_unlearn.METHODS)
  for spec in config.reproduce.runs:
    try:
      _, hp = lm_run.parse_run(spec)
    except ValueError as e:
      raise ConfigError(f'config.reproduce.runs entry {spec!r}: {e}') from None
    for key, value in hp.items():
      rule = positive if key in ('temperature', 'npo_beta', 'simnpo_beta') else nonnegative
      if not rule(value):
        _fail(f'config.reproduce.runs entry {spec!r}: {key}', value, RULES[rule])
  _checks(config.eval, 'config.eval', {'batch_size': positive_int,
                                       'retain_items': nonnegative_int,
                                       'utility_items': nonnegative_int,
                                       'num_samples': nonnegative_int})


def device_count(config):
  """Devices the batches must divide over; None (unchecked here) before multi-host init."""
  if config.get('distributed', False):
    return None
  import jax
  return jax.device_count()


def validate(config, workdir=None, num_devices=None):
  """Raises :class:`ConfigError` for the first bad field of ``config`` (or the workdir)."""
  if not isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    raise ConfigError(f'config must be an ml_collections.ConfigDict, got {type(config)}')
  task = config.get('task', 'classification')
  _choice('config.task', task, ('classification', 'lm'))
  if num_devices is None:
    num_devices = device_count(config)
  if task == 'lm':
    validate_lm(config, num_devices)
  else:
    validate_classification(config, num_devices)
  if config.get('model_cache'):
    check_workdir(config.model_cache, 'config.model_cache')
  if workdir is not None:
    check_workdir(workdir)
