"""The run plan of a sweep: its scenarios, its model seeds and its runs, each with the
registry :class:`Method` and every effective hyperparameter (:func:`hparams.resolve`, the
resolver the public step uses too). It reads a config's ``unlearn``, ``reproduce``,
``scenarios`` and seed fields, and lives with the methods and their hyperparameters.

One precedence rule serves every task, lowest to highest:

1. ``config.unlearn.<key>`` (the config file's value, or the command line's);
2. a run's own setting from the config file: ``config.unlearn.overrides.<method>.<key>``
   (classification) or a ``config.reproduce.runs`` spec such as
   ``'grogu_descent:T=5,w=10'`` (LM);
3. ``config.unlearn.<key>`` *given on the command line*: a value the user typed wins over a
   file's per-run setting (the shadowed setting is logged);
4. a run's own setting given on the command line (``--config.unlearn.overrides.gsr.
   temperature=8``, or ``--config.reproduce.runs=...``);
5. the values a method's name fixes (``grogu_t1``: T = 1).

Runs that end up with the same method and hyperparameters are run once.
"""
import dataclasses
from typing import Any

from absl import logging

from cure_jax.infra import fingerprint, validation
from cure_jax.unlearning import hparams, methods

# Short names a run spec may use, and the ones its label shows ('T=5,w=10').
ALIASES = {'T': ('temperature',), 'w': ('w_h', 'w_s')}
SHORT_NAMES = {'npo_beta': 'beta', 'simnpo_beta': 'beta', 'simnpo_delta': 'delta',
               'simnpo_gamma': 'gamma', 'undial_strength': 'beta', 'temperature': 'T',
               'dpo_beta': 'beta', 'rmu_steering': 'c'}
# Names of the former LM-only registry that no longer exist.
RENAMED_METHODS = {'graddiff': 'gradasc_descent'}
# Numeric method hyperparameters a run spec may set (the learning rate is set per sweep).
SPEC_HPARAMS = tuple(k for k in hparams.DYNAMIC if k != 'lr')


@dataclasses.dataclass(frozen=True)
class Run:
  """One entry of a sweep: a registry method and its effective hyperparameters."""
  name: str
  method: Any          # the registry's Method
  hparams: Any         # FrozenConfigDict: every effective config.unlearn value

  @property
  def variant(self):
    """The method's own hyperparameters as a label, e.g. ``'T=5,w=10'``."""
    hp, parts = self.hparams, []
    for k in self.method.own_hparams:
      if k == 'w_s' and hp['w_h'] == hp['w_s']:
        continue
      name = 'w' if k == 'w_h' and hp['w_h'] == hp['w_s'] else SHORT_NAMES.get(k, k)
      parts.append(f'{name}={hp[k]:g}')
    return ','.join(parts)

  @property
  def record(self):
    """The effective hyperparameters as stored in each results row (plain JSON types)."""
    return hparams_record(self.hparams)


def hparams_record(hp):
  skip = ('method', 'log_every', 'overrides')
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(hp.items())
          if k not in skip}


def parse_spec(spec, field=None):
  """``'grogu_descent:T=5,w=10'`` -> ``('grogu_descent', {'temperature': 5.0, 'w_h': 10.0,
  'w_s': 10.0})``. ``field``: what an unknown method's message names (default: the spec)."""
  name, _, settings = spec.partition(':')
  name = name.strip()
  if name in RENAMED_METHODS:
    raise ValueError(f'method {name!r} is now {RENAMED_METHODS[name]!r} (one registry for '
                     'every model); use that name.')
  methods.get(name, field or f'run {spec!r}')
  overrides = {}
  for setting in filter(None, (s.strip() for s in settings.split(','))):
    key, sep, value = setting.partition('=')
    if not sep:
      raise ValueError(f'Bad setting {setting!r} in run {spec!r}; write key=value.')
    for k in ALIASES.get(key.strip(), (key.strip(),)):
      if k not in SPEC_HPARAMS:
        raise ValueError(f'Unknown hyper-parameter {key!r} in run {spec!r}; use T, w or one '
                         f'of {SPEC_HPARAMS}.')
      overrides[k] = float(value)
  return name, overrides


def effective_hparams(unlearn_cfg, name, method, settings, cli_keys, settings_typed):
  """Every effective ``config.unlearn`` value of registry ``method`` (named ``name``) with
  its own ``settings`` (``settings_typed(key)``: whether that setting was given on the
  command line)."""
  def applies(key):   # a value typed for every run wins over the file's per-run one
    return not (f'unlearn.{key}' in cli_keys and not settings_typed(key))
  return hparams.resolve(method, unlearn_cfg.to_dict(), settings,
                         lambda key: f'config.unlearn.overrides.{name}.{key}', applies)


def _entries(config, cli_keys, entries):
  """``[(method name, own settings, settings_typed)]`` of ``config.mode`` (or ``entries``)."""
  if config.task == 'lm':
    if entries is None:
      entries = ([config.unlearn.method] if config.mode == 'unlearn'
                 else list(config.reproduce.runs))
    typed = 'reproduce.runs' in cli_keys
    return [(name, settings, lambda key: typed)
            for name, settings in map(parse_spec, entries)]
  names = entries
  if names is None:
    names = ([config.unlearn.method] if config.mode == 'unlearn'
             else list(config.reproduce.methods))
  out = []
  for name in names:
    overrides = config.unlearn.overrides.get(name)
    settings = overrides.to_dict() if overrides is not None else {}
    out.append((name, settings,
                lambda key, name=name: f'unlearn.overrides.{name}.{key}' in cli_keys))
  return out


def runs(config, cli_keys=frozenset(), entries=None):
  """The runs of ``config.mode`` with their effective hyperparameters (precedence above).

  ``entries``: plan these instead (method names; for an LM, run specs). Each method name and
  hyperparameter is checked by the core's rules (one line naming it); the rest of the config
  is the entry point's to check (:func:`cure_jax.entry.validate`)."""
  hparams.check_config(config.unlearn, 'config.unlearn')
  out, seen = [], set()
  for name, settings, typed in _entries(config, frozenset(cli_keys), entries):
    method = methods.for_task(name, lm=config.get('task') == 'lm')
    run = Run(name, method,
              effective_hparams(config.unlearn, name, method, settings, cli_keys, typed))
    ident = (name, fingerprint.digest(run.record))
    if ident in seen:
      logging.warning('%s %s: the same effective settings as an earlier run; run once',
                      name, run.variant)
      continue
    seen.add(ident)
    out.append(run)
  return out


def scenarios(config, num_classes):
  """``[(label, forget_classes), ...]``: ``config.scenarios`` split on ';' (each a class or
  a comma list), else the single scenario ``config.forget_classes``."""
  text = str(config.scenarios or '').strip()
  labels = [p.strip() for p in text.split(';') if p.strip()] or [
      str(config.forget_classes).strip()]
  field = 'config.scenarios' if text else 'config.forget_classes'
  parsed = validation.parse_scenarios(';'.join(labels), num_classes, field)
  return list(zip(labels, parsed))


def tune_model_seeds(config):
  """Training seeds of the models tuning runs start from: ``config.tune.model_seeds`` (a
  count from ``config.tune.seed``, or a comma list), never a reported model's."""
  return validation.parse_model_seeds(config.tune.model_seeds, config.tune.seed,
                                      'config.tune.model_seeds')


def model_seeds(config):
  """Training seeds of the K original (and per scenario K retrain) models:
  ``config.model_seeds`` is a count K (seeds ``config.seed .. config.seed+K-1``) or an
  explicit comma list of seeds."""
  return validation.parse_model_seeds(config.model_seeds, config.seed)
