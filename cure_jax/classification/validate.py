"""Start-up checks of a classification config (its defaults: ``defaults.py``)."""
from cure_jax.data import LOADERS
from cure_jax.infra.rules import (ConfigError, check, checks, choice, fail, fraction_closed,
                                  fraction_closed_open, fraction_open_closed, nonnegative,
                                  nonnegative_int, positive, positive_int)
from cure_jax.infra.validation import check_batch, parse_classes
from cure_jax.infra import validation
from cure_jax.models import ARCHITECTURES, DTYPES
from cure_jax.unlearning import hparams, methods, plan

MODES = ('train_original', 'train_retrain', 'unlearn', 'reproduce', 'tune')
NUM_CLASSES = {'digits': 10, 'cifar10': 10, 'cifar100': 100, 'imagenet': 1000,
               'fashion_mnist': 10, 'mnist': 10, 'kmnist': 10}
AUGMENTS = ('none', 'crop', 'cifar', 'flip')
_UNLEARN_RULES = {'epochs': positive, 'retain_fraction': fraction_open_closed,
                  'log_every': positive_int}
_TRAIN_RULES = {
    'epochs': positive_int, 'lr': positive, 'momentum': fraction_closed_open,
    'weight_decay': nonnegative, 'warmup_fraction': fraction_closed_open,
    'log_every': positive_int, 'checkpoint_every': positive_int,
}


def _check_unlearn_values(cfg, prefix, num_devices):
  checks(cfg, prefix, _UNLEARN_RULES)
  hparams.check_config(cfg, prefix)
  if 'batch_size' in cfg:
    check_batch(f'{prefix}.batch_size', cfg['batch_size'], num_devices)


def _check_data_and_model(config):
  if config.data.name not in LOADERS:
    raise ConfigError(f'config.data.name={config.data.name!r}: Unknown dataset '
                      f'{config.data.name!r}; choose one of {sorted(LOADERS)}.')
  if config.model.name not in ARCHITECTURES:
    raise ConfigError(f'config.model.name={config.model.name!r}: Unknown model '
                      f'{config.model.name!r}; choose one of {sorted(ARCHITECTURES)}.')
  choice('config.model.dtype', config.model.dtype, DTYPES)
  choice('config.data.augment', config.data.augment, AUGMENTS)
  checks(config.data, 'config.data', {'pad': nonnegative_int, 'image_size': positive_int,
                                       'split_seed': nonnegative_int})


def _check_methods(config, num_devices):
  _check_unlearn_values(config.unlearn, 'config.unlearn', num_devices)
  methods.get(config.unlearn.method, 'config.unlearn.method')
  names = list(config.reproduce.methods)
  if not names and config.mode in ('reproduce', 'tune'):
    fail('config.reproduce.methods', config.reproduce.methods, 'list at least one method')
  for name in names:
    methods.get(name, f'config.reproduce.methods (entry {name!r})')
  allowed = sorted(k for k in config.unlearn.keys() if k != 'overrides')
  for name, overrides in config.unlearn.overrides.items():
    methods.get(name, f'config.unlearn.overrides.{name}')
    for key in overrides.keys():
      if key not in allowed:
        raise ConfigError(f'config.unlearn.overrides.{name}.{key}: unknown hyperparameter '
                          f'{key!r}; choose from {allowed}.')
    _check_unlearn_values(overrides, f'config.unlearn.overrides.{name}', num_devices)


def validate_config(config, workdir=None, num_devices=None):
  """The whole config of a classification job, as the command line checks it (one
  :class:`~cure_jax.infra.rules.ConfigError` line for the first bad value)."""
  validation.validate(config, workdir, 'classification', validate, num_devices)


def validate(config, num_devices):
  """The classification fields of ``config`` (:func:`validate_config` adds the common ones)."""
  choice('config.mode', config.mode, MODES)
  _check_data_and_model(config)
  num_classes = NUM_CLASSES.get(config.data.name)
  if num_classes:
    parse_classes(config.forget_classes, num_classes)
    plan.scenarios(config, num_classes)
  check('config.seeds', config.seeds, positive_int)
  plan.model_seeds(config)
  choice('config.seed_parallel', config.seed_parallel, (True, False, None))
  _check_seed_devices(config, num_devices)
  checks(config.train, 'config.train', _TRAIN_RULES)
  check_batch('config.train.batch_size', config.train.batch_size, num_devices)
  check_batch('config.train.eval_batch_size', config.train.eval_batch_size, num_devices)
  _check_methods(config, num_devices)
  check('config.reproduce.forget_threshold', config.reproduce.forget_threshold, nonnegative)
  _check_claims(config.claims)
  if config.mode == 'tune':
    for key in ('lrs', 'epochs', 'temperatures'):
      values = config.tune[key]
      if not values or not all(positive(v) for v in values):
        fail(f'config.tune.{key}', values, 'give a non-empty list of numbers > 0')
    _check_search(config.tune)
    check('config.tune.seeds', config.tune.seeds, positive_int)
    check('config.tune.seed', config.tune.seed, nonnegative_int)
    shared = sorted(set(plan.tune_model_seeds(config)) & set(plan.model_seeds(config)))
    if shared:
      fail('config.tune.model_seeds', config.tune.model_seeds,
           f'model seed(s) {shared} are reported models (config.model_seeds from config.seed); '
           'tuning must start from models no reported run uses: move config.tune.seed')
    check('config.tune.min_retain_acc', config.tune.min_retain_acc, fraction_closed)


def _check_seed_devices(config, num_devices):
  """``config.seed_devices``: 0 or a divisor of the device count (the batch checks, over
  every device, cover each group's share); ``config.models_per_device`` >= 0."""
  groups = config.seed_devices
  divides = isinstance(groups, int) and (groups == 0 or (
      groups > 0 and (not num_devices or num_devices % groups == 0)))
  if not divides:
    fail('config.seed_devices', groups,
         f'use 0 (one group per device) or a divisor of the {num_devices} devices')
  per_device = config.models_per_device
  if not (isinstance(per_device, int) and per_device >= 0):
    fail('config.models_per_device', per_device, 'use an integer >= 0 (0: all at once)')


def _check_claims(cfg):
  """``config.claims``: known methods, margins > 0, 0 < alpha < 1."""
  for key in ('grogu_rivals', 'retain_rivals'):
    names = cfg[key]
    if isinstance(names, str) or not names:
      fail(f'config.claims.{key}', names, 'give a non-empty list of method names')
    for name in names:
      methods.get(name, f'config.claims.{key} (entry {name!r})')
  methods.get(cfg.cure_with_retain, 'config.claims.cure_with_retain')
  checks(cfg, 'config.claims', {'margin': positive, 'margin_tv': positive})
  if not (isinstance(cfg.alpha, (int, float)) and 0 < cfg.alpha < 1):
    fail('config.claims.alpha', cfg.alpha, 'use a level between 0 and 1 (e.g. 0.05)')


def _check_search(tune):
  """The search's budget, caps and ladders (``config.tune``)."""
  grid = len(tune.lrs) * len(tune.epochs)
  if not (isinstance(tune.trials, int) and (tune.trials == 0 or tune.trials >= grid)):
    fail('config.tune.trials', tune.trials,
         f'use 0 (the grid only) or at least the grid\'s {grid} trials (tune.lrs x tune.epochs)')
  checks(tune, 'config.tune', {'lr_min': positive, 'lr_max': positive, 'max_epochs': positive})
  if tune.lr_min > min(tune.lrs) or tune.lr_max < max(tune.lrs):
    fail('config.tune.lr_min', tune.lr_min,
         f'the caps [lr_min, lr_max] = [{tune.lr_min}, {tune.lr_max}] must contain tune.lrs')
  if max(tune.epochs) > tune.max_epochs:
    fail('config.tune.max_epochs', tune.max_epochs, 'it must be >= every value of tune.epochs')
  for key in ('epoch_ladder', 'temperature_ladder'):
    if not tune[key] or not all(positive(v) for v in tune[key]):
      fail(f'config.tune.{key}', tune[key], 'give a non-empty list of numbers > 0')
  for key in ('grogu_weights', 'grogu_weight_ladder'):
    values = tune[key]
    if not values or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
      fail(f'config.tune.{key}', values, 'give a non-empty list of weights in [0, 1]')
