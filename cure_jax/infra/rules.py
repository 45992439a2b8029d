"""The one vocabulary of what a setting may be, shared by the config checks of every task and
by the unlearning core's hyperparameters (the public Python API checks with the same rules).

A :class:`Rule` is a test and the allowed range in words; :func:`check` turns a failed test
into a :class:`ConfigError` naming the field, the bad value and what is allowed. Numbers must
be finite: an ``inf`` learning rate is as wrong as a negative one.
"""
import math

import numpy as np


class ConfigError(ValueError):
  """A bad config value or command-line flag (experiments.main prints it as one line)."""


class Rule:
  """``rule(value) -> bool``; ``rule.allowed``: the allowed range in words."""

  def __init__(self, test, allowed):
    self.test, self.allowed = test, allowed

  def __call__(self, value):
    return bool(self.test(value))


def is_number(value):
  return (isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(value))


def is_int(value):
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


finite = Rule(is_number, 'use a finite number')
positive = Rule(lambda v: is_number(v) and v > 0, 'use a number > 0')
nonnegative = Rule(lambda v: is_number(v) and v >= 0, 'use a number >= 0')
positive_int = Rule(lambda v: is_int(v) and v > 0, 'use a whole number >= 1')
nonnegative_int = Rule(lambda v: is_int(v) and v >= 0, 'use a whole number >= 0')
fraction_open_closed = Rule(lambda v: is_number(v) and 0 < v <= 1, 'use a fraction in (0, 1]')
fraction_closed_open = Rule(lambda v: is_number(v) and 0 <= v < 1, 'use a fraction in [0, 1)')
fraction_closed = Rule(lambda v: is_number(v) and 0 <= v <= 1, 'use a fraction in [0, 1]')


def fail(field, value, allowed):
  raise ConfigError(f'{field}={value!r} is not allowed: {allowed}.')


def check(field, value, rule):
  if not rule(value):
    fail(field, value, rule.allowed)


def choice(field, value, allowed):
  if value not in allowed:
    fail(field, value, f'choose one of {list(allowed)}')


def checks(cfg, prefix, rules):
  """Applies ``rules`` ({key: rule}) to the keys of ``cfg`` that exist."""
  for key, rule in rules.items():
    if key in cfg:
      check(f'{prefix}.{key}', cfg[key], rule)
