"""Every hyperparameter a registry method reads: its default, what is allowed, how a
compiled step takes it.

``momentum`` and ``grogu_impl`` are compiled in (:data:`STATIC`); every other value is a
float32 scalar the compiled step takes as an argument (:data:`DYNAMIC`), so another
learning rate or temperature reuses the program. A task's config section ``unlearn``
starts from :data:`DEFAULTS` (docs/methods.md describes each).
"""
import math

import numpy as np

DEFAULTS = {
    'lr': 0.01,                  # SGD step of the default optimizer
    'momentum': 0.0,
    'temperature': 4.0,          # GSR / GROGU
    'w_h': 0.5,                  # GROGU objective weights
    'w_s': 0.5,
    'eps': 1e-12,                # GROGU projection stabiliser
    'grogu_impl': 'fast',        # fast | vmap
    'undial_strength': 10.0,     # UNDIAL's beta: how far the forget logit is lowered
    'retain_weight': 1.0,        # lambda of the *_descent variants and GradRest
    'lur_alpha': 0.01,           # LUR look-ahead step
    'lur_w_r': 1.0,
    'lur_w_f': 1.0,
    # SalUn: fraction of weights (largest |grad CE_forget|, one global ranking) that train;
    # weight decay of its SGD, applied to the trained weights only.
    'salun_fraction': 0.5,
    'salun_weight_decay': 5e-4,
    # SCRUB: min step = gamma*CE + alpha*T^2*KL_T on retain; max step = -T^2*KL_T on forget,
    # on even steps among the first 2*scrub_max_steps.
    'scrub_alpha': 0.001,
    'scrub_gamma': 0.99,
    'scrub_temperature': 4.0,
    'scrub_max_steps': 8.0,
    'npo_beta': 0.1,             # NPO
    'simnpo_beta': 4.5,          # SimNPO
    'simnpo_delta': 0.0,
    'simnpo_gamma': 0.125,
}
STATIC = ('momentum', 'grogu_impl')
DYNAMIC = tuple(k for k in DEFAULTS if k not in STATIC)
IMPLEMENTATIONS = ('fast', 'vmap')


def _number(v):
  return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)


# What each value may be: (test, the allowed range in words).
POSITIVE = (lambda v: _number(v) and v > 0, 'use a number > 0')
NONNEGATIVE = (lambda v: _number(v) and v >= 0, 'use a number >= 0')
FINITE = (_number, 'use a finite number')
FRACTION_OPEN_CLOSED = (lambda v: _number(v) and 0 < v <= 1, 'use a fraction in (0, 1]')
FRACTION_CLOSED_OPEN = (lambda v: _number(v) and 0 <= v < 1, 'use a fraction in [0, 1)')
RULES = {
    'lr': POSITIVE, 'momentum': FRACTION_CLOSED_OPEN, 'temperature': POSITIVE,
    'w_h': NONNEGATIVE, 'w_s': NONNEGATIVE, 'eps': NONNEGATIVE,
    'undial_strength': NONNEGATIVE, 'retain_weight': NONNEGATIVE, 'lur_alpha': NONNEGATIVE,
    'lur_w_r': NONNEGATIVE, 'lur_w_f': NONNEGATIVE, 'salun_fraction': FRACTION_OPEN_CLOSED,
    'salun_weight_decay': NONNEGATIVE, 'scrub_alpha': NONNEGATIVE, 'scrub_gamma': NONNEGATIVE,
    'scrub_temperature': POSITIVE, 'scrub_max_steps': NONNEGATIVE, 'npo_beta': POSITIVE,
    'simnpo_beta': POSITIVE, 'simnpo_delta': FINITE, 'simnpo_gamma': NONNEGATIVE,
}


def problem(key, value):
  """What is wrong with ``value`` for hyperparameter ``key`` (None: it is allowed)."""
  if key == 'grogu_impl':
    return None if value in IMPLEMENTATIONS else f'choose one of {list(IMPLEMENTATIONS)}'
  if key == 'momentum' and value is None:
    return None
  test, allowed = RULES[key]
  return None if test(value) else allowed


class HParams:
  """Attribute view of the static values and the traced numeric ones."""

  def __init__(self, static, dynamic):
    self.__dict__.update(static)
    self.__dict__.update(dynamic)


def split(hp):
  """(static values the program is compiled for, traced float32 values)."""
  return ({k: hp[k] for k in STATIC},
          {k: np.float32(hp[k]) for k in DYNAMIC if k in hp})
