"""Start-up checks shared by every task: every bad value is one line before any data loads.

:func:`validate` checks what every config has and calls the task's own field check
(``<task>/validate.py``, next to its defaults); it raises :class:`ConfigError` (a
``ValueError``) naming the field, the bad value and what is allowed
(:mod:`cure_jax.infra.rules`). The parsers here are shared by the tasks and the run plan.
"""
import os
import re

import ml_collections

from cure_jax.infra import rules
from cure_jax.infra.rules import ConfigError


def check_batch(field, value, num_devices):
  rules.check(field, value, rules.positive_int)
  if num_devices and value % num_devices:
    rules.fail(field, value, f'use a multiple of {num_devices}, the number of devices')


def parse_classes(value, num_classes, field='config.forget_classes', shown=None):
  """``'1'`` / ``'1,3'`` / an int / a sequence -> sorted tuple of distinct class indices.

  ``shown``: the value the error messages quote (a whole scenario list), default ``value``.
  """
  full = value if shown is None else shown
  if rules.is_number(value) or isinstance(value, str):
    items = [s.strip() for s in str(value).split(',')]
  else:
    items = [str(v).strip() for v in value]
  items = [s for s in items if s]
  if not items:
    rules.fail(field, full, 'give at least one class index, e.g. "1" or "1,3"')
  bad = [s for s in items if not re.fullmatch(r'[+-]?\d+', s)]
  if bad:
    rules.fail(field, full, f'{bad[0]!r} is not a class index; give comma-separated integers '
                        f'in 0..{num_classes - 1}, e.g. "1,3"')
  classes = [int(s) for s in items]
  negative = [c for c in classes if c < 0]
  if negative:
    rules.fail(field, full,
               f'class indices are >= 0 (got {negative}); allowed 0..{num_classes - 1}')
  out_of_range = [c for c in classes if c >= num_classes]
  if out_of_range:
    raise ConfigError(f'{field}={full!r}: Forget class(es) {out_of_range} out of range: '
                      f'allowed 0..{num_classes - 1}.')
  duplicates = sorted({c for c in classes if classes.count(c) > 1})
  if duplicates:
    rules.fail(field, full, f'class(es) {duplicates} given twice; list each class once')
  if len(classes) == num_classes:
    rules.fail(field, full, f'that forgets all {num_classes} classes and leaves nothing to '
                        'retain; forget fewer classes')
  return tuple(sorted(classes))


def parse_scenarios(value, num_classes, field='config.scenarios'):
  """``'1;3;8'`` / ``'1,3;8'`` -> tuple of forget-class tuples (one per scenario)."""
  parts = [p for p in str(value).split(';') if p.strip()]
  scenarios = [parse_classes(p, num_classes, field, shown=value) for p in parts]
  if not scenarios:
    rules.fail(field, value, 'give forget classes per scenario separated by ";", e.g. "1;3;8"')
  if len(set(scenarios)) < len(scenarios):
    rules.fail(field, value, 'a scenario is listed twice; list each once')
  return tuple(scenarios)


def parse_model_seeds(value, first_seed, field='config.model_seeds'):
  """A count K (seeds ``first_seed .. first_seed+K-1``) or a comma list of distinct seeds."""
  if isinstance(value, int) and not isinstance(value, bool):
    rules.check(field, value, rules.positive_int)
    return tuple(first_seed + k for k in range(value))
  items = [s.strip() for s in value.split(',')] if isinstance(value, str) else list(value)
  try:
    seeds = [int(s) for s in items if str(s) != '']
  except (TypeError, ValueError):
    rules.fail(field, value, 'give a count or comma-separated whole numbers >= 0, e.g. "0,1,2"')
  if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
    rules.fail(field, value, 'give distinct whole numbers >= 0, e.g. "0,1,2"')
  return tuple(seeds)


def check_workdir(workdir, field='--workdir'):
  """The workdir exists as (or can be made into) a directory this process can write."""
  if not workdir or not isinstance(workdir, str):
    rules.fail(field, workdir, 'give a directory for checkpoints and results')
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    rules.fail(field, workdir, 'it is a file; give a directory (new or existing)')
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f'.write-test-{os.getpid()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    rules.fail(field, workdir, f'it cannot be written ({e.strerror or e}); give a writable '
                          'directory')


def device_count(config):
  """Devices the batches must divide over; None (unchecked here) before multi-host init."""
  if config.get('distributed', False):
    return None
  import jax
  return jax.device_count()


def check_task(config, tasks):
  """``config`` is a ConfigDict whose ``task`` is one of ``tasks``."""
  if not isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    raise ConfigError(f'config must be an ml_collections.ConfigDict, got {type(config)}')
  if 'task' not in config:
    raise ConfigError('config.task is missing: start from a configs/*.py file (they set '
                      "'classification' or 'lm').")
  rules.choice('config.task', config.task, tuple(tasks))


def validate(config, workdir, task, task_fields, num_devices=None):
  """Raises :class:`ConfigError` for the first bad field of a ``task`` config (or the
  workdir): ``task_fields(config, num_devices)`` checks the task's own fields."""
  check_task(config, (task,))
  if num_devices is None:
    num_devices = device_count(config)
  task_fields(config, num_devices)
  if config.model_cache:
    check_workdir(config.model_cache, 'config.model_cache')
  if workdir is not None:
    check_workdir(workdir)
