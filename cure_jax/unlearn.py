"""What an unlearning sweep is made of: scenarios, model seeds and effective hyperparameters.

Hyperparameter precedence (README "Hyperparameters"), lowest to highest:

1. ``config.unlearn.<key>`` (the config file's value, or the command line's);
2. ``config.unlearn.overrides.<method>.<key>`` from the config file;
3. ``config.unlearn.<key>`` *given on the command line* (``cli_keys``): a value the user
   typed always wins over a file's per-method override, and the shadowed override is logged;
4. ``config.unlearn.overrides.<method>.<key>`` given on the command line (the most specific);
5. the values a method's name fixes (``grogu_t1``: T = 1).
"""
import ml_collections
from absl import logging

from cure_jax import methods


def parse_forget_classes(value, num_classes):
  """``'1'`` / ``'1,3'`` / ints → sorted tuple, checked against ``[0, num_classes)``."""
  if isinstance(value, int):
    items = [value]
  elif isinstance(value, str):
    try:
      items = [int(v) for v in value.replace(' ', '').split(',') if v != '']
    except ValueError:
      raise ValueError(f'config.forget_classes={value!r}: give comma-separated class indices, '
                       'e.g. "1" or "1,3".') from None
  else:
    items = [int(v) for v in value]
  if not items:
    raise ValueError('config.forget_classes is empty; give at least one class, e.g. "1".')
  bad = [c for c in items if not 0 <= c < num_classes]
  if bad:
    raise ValueError(f'Forget class(es) {bad} out of range: allowed 0..{num_classes - 1} '
                     '(config.forget_classes).')
  return tuple(sorted(set(items)))


def scenario_labels(config):
  """The scenarios as written: ``config.scenarios`` split on ';', else ``forget_classes``."""
  text = str(config.get('scenarios', '') or '').strip()
  parts = [p.strip() for p in text.split(';') if p.strip()] if text else []
  return parts or [str(config.forget_classes).strip()]


def parse_scenarios(config, num_classes):
  """``[(label, forget_classes), ...]`` in config order."""
  out = []
  for label in scenario_labels(config):
    classes = parse_forget_classes(label, num_classes)
    if any(classes == c for _, c in out):
      raise ValueError(f'config.scenarios={config.scenarios!r}: scenario {label!r} is listed '
                       'twice; list each once.')
    out.append((label, classes))
  return out


def model_seeds(config):
  """Training seeds of the K original (and per scenario K retrain) models.

  ``config.model_seeds``: a count K (seeds ``config.seed .. config.seed+K-1``) or an explicit
  comma list of seeds."""
  value = config.get('model_seeds', 1)
  if isinstance(value, int) and not isinstance(value, bool):
    if value < 1:
      raise ValueError(f'config.model_seeds={value}: use a count >= 1 or a list like "0,1".')
    return tuple(config.seed + k for k in range(value))
  items = [s for s in str(value).replace(' ', '').split(',') if s] if isinstance(
      value, str) else list(value)
  try:
    seeds = tuple(int(s) for s in items)
  except ValueError:
    raise ValueError(f'config.model_seeds={value!r}: use a count >= 1 or a list like '
                     '"0,1".') from None
  if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
    raise ValueError(f'config.model_seeds={value!r}: give distinct seeds >= 0, e.g. "0,1".')
  return seeds


def method_hparams(unlearn_cfg, name, cli_keys=frozenset()):
  """The effective hyperparameters of method ``name`` (precedence: module docstring)."""
  method = methods.get(name)
  hp = ml_collections.ConfigDict(unlearn_cfg.to_dict())
  del hp['overrides']
  overrides = unlearn_cfg.overrides.get(name)
  if overrides is not None:
    for key, value in overrides.items():
      if key not in hp:
        raise ValueError(f'config.unlearn.overrides.{name}.{key}: unknown hyperparameter; '
                         f'choose from {sorted(hp.keys())}.')
      own_cli = f'unlearn.overrides.{name}.{key}' in cli_keys
      if f'unlearn.{key}' in cli_keys and not own_cli:
        logging.info('%s: --config.unlearn.%s=%s from the command line wins over the config '
                     "file's overrides.%s.%s=%s", name, key, hp[key], name, key, value)
        continue
      hp[key] = value
  for key, value in method.defaults:
    hp[key] = value
  return ml_collections.FrozenConfigDict(hp)


def hparams_record(hp):
  """The effective hyperparameters as stored in each results row (plain JSON types)."""
  skip = ('method', 'log_every')
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(hp.items())
          if k not in skip}
