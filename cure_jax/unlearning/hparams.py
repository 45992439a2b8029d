"""Every hyperparameter a registry method reads: its default, what is allowed, how a
compiled step takes it.

``momentum`` and ``grogu_impl`` are compiled in (:data:`STATIC`); every other value is a
float32 scalar the compiled step takes as an argument (:data:`DYNAMIC`), so another
learning rate or temperature reuses the program. A task's config section ``unlearn``
starts from :data:`DEFAULTS` (docs/methods.md describes each).
"""
import ml_collections
import numpy as np
from absl import logging

from cure_jax.infra import rules

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
    # SCRUB (meghdadk/SCRUB large_scale_unlearning.ipynb): each epoch a max pass over the
    # forget set (-T^2*KL_T, the first scrub_max_epochs epochs) then a min pass over the
    # retain subset (gamma*CE + alpha*T^2*KL_T); SGD weight decay on both.
    'scrub_alpha': 0.001,
    'scrub_gamma': 0.99,
    'scrub_temperature': 4.0,
    'scrub_max_epochs': 2.0,
    'scrub_weight_decay': 5e-4,
    'npo_beta': 0.1,             # NPO
    'simnpo_beta': 4.5,          # SimNPO
    'simnpo_delta': 0.0,
    'simnpo_gamma': 0.125,
    # open-unlearning's WGA, SatImp and CEU trainer configs. Their gamma
    # weighs the forget loss (here inside it); their alpha is our retain_weight (1.0 in both).
    'wga_beta': 1.0,
    'wga_gamma': 1.0,
    'satimp_beta1': 5.0,
    'satimp_beta2': 1.0,
    'satimp_gamma': 0.1,
    'ceu_ignore_first': 1.0,     # answer tokens each sequence leaves out of CE-U
    # open-unlearning's DPO and RMU trainer configs (DPO.yaml beta; RMU.yaml steering_coeff).
    'dpo_beta': 0.1,
    'rmu_steering': 2.0,
}
STATIC = ('momentum', 'grogu_impl')
DYNAMIC = tuple(k for k in DEFAULTS if k not in STATIC)
IMPLEMENTATIONS = ('fast', 'vmap')


# A count kept as a float (the compiled step takes it as float32), e.g. 2.0 epochs.
_WHOLE = rules.Rule(lambda v: rules.nonnegative(v) and float(v).is_integer(),
                    'use a whole number >= 0')

# What each value may be (:mod:`cure_jax.infra.rules`, the vocabulary of every config check).
RULES = {
    'lr': rules.positive, 'momentum': rules.fraction_closed_open,
    'temperature': rules.positive, 'w_h': rules.nonnegative, 'w_s': rules.nonnegative,
    'eps': rules.nonnegative, 'undial_strength': rules.nonnegative,
    'retain_weight': rules.nonnegative, 'lur_alpha': rules.nonnegative,
    'lur_w_r': rules.nonnegative, 'lur_w_f': rules.nonnegative,
    'salun_fraction': rules.fraction_open_closed, 'salun_weight_decay': rules.nonnegative,
    'scrub_alpha': rules.nonnegative, 'scrub_gamma': rules.nonnegative,
    'scrub_temperature': rules.positive, 'scrub_max_epochs': _WHOLE,
    'scrub_weight_decay': rules.nonnegative,
    'npo_beta': rules.positive, 'simnpo_beta': rules.positive, 'simnpo_delta': rules.finite,
    'simnpo_gamma': rules.nonnegative,
    'wga_beta': rules.nonnegative, 'wga_gamma': rules.nonnegative,
    'satimp_beta1': rules.nonnegative, 'satimp_beta2': rules.nonnegative,
    'satimp_gamma': rules.nonnegative, 'ceu_ignore_first': _WHOLE,
    'dpo_beta': rules.positive, 'rmu_steering': rules.nonnegative,
}


def problem(key, value):
  """What is wrong with ``value`` for hyperparameter ``key`` (None: it is allowed)."""
  if key == 'grogu_impl':
    return None if value in IMPLEMENTATIONS else f'choose one of {list(IMPLEMENTATIONS)}'
  if key == 'momentum' and value is None:
    return None
  return None if RULES[key](value) else RULES[key].allowed


def check_config(cfg, prefix):
  """The method hyperparameters present in ``cfg`` (a config section or a dict) by the rules
  above, each bad one a :class:`~cure_jax.infra.rules.ConfigError` naming ``prefix.key``."""
  for key in DEFAULTS:
    if key in cfg:
      allowed = problem(key, cfg[key])
      if allowed:
        rules.fail(f'{prefix}.{key}', cfg[key], allowed)


def resolve(method, base, settings, field, applies=None):
  """The one resolver of a run's effective hyperparameters (the command line's plan, both
  tasks and the public step): ``base`` (every value; the defaults above or a config's
  ``unlearn`` section), updated by the run's own ``settings`` (each a known key, checked by
  the rules above and named ``field(key)`` in the error), then the values registry
  ``method``'s name fixes. ``applies(key)``: False keeps ``base``'s value for that setting
  (a value typed on the command line wins over a config file's per-run one; logged)."""
  hp = dict(base)
  hp.pop('overrides', None)
  for key, value in settings.items():
    if key not in hp:
      raise rules.ConfigError(f'{field(key)}: unknown hyperparameter; choose from '
                              f'{sorted(hp)} (docs/methods.md describes each).')
    allowed = problem(key, value) if key in DEFAULTS else None
    if allowed:
      rules.fail(field(key), value, allowed)
    if applies is not None and not applies(key):
      logging.warning("%s=%s not applied: the command line's unlearn.%s=%s wins over a config "
                      "file's per-run setting", field(key), value, key, hp[key])
      continue
    hp[key] = value
  hp.update(dict(method.defaults))
  return ml_collections.FrozenConfigDict(hp)


class HParams:
  """Attribute view of the static values and the traced numeric ones."""

  def __init__(self, static, dynamic):
    self.__dict__.update(static)
    self.__dict__.update(dynamic)


def split(hp):
  """(static values the program is compiled for, traced float32 values)."""
  return ({k: hp[k] for k in STATIC},
          {k: np.float32(hp[k]) for k in DYNAMIC if k in hp})
