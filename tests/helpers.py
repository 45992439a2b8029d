"""Shared tiny set-ups for the classification tests and the committed-fixture check."""
import json
import os

import flax.linen as nn
import jax
import numpy as np

from cure_jax import models
from cure_jax.classification import train
from cure_jax.infra import sharding
from cure_jax.unlearning import plan
from cure_jax.data.digits import load_digits
from tests import tolerances

import configs.digits as digits_config


# *_descent twins that only add the retain term, whose code path other methods already run.
SAME_PATH_TWINS = ('randlabel_descent', 'delete_descent', 'npo_descent', 'simnpo_descent',
                   'wga_descent', 'satimp_descent', 'ceu_descent')


def step_methods():
  """The registry's methods a classifier or a user's step runs (the LM-only ones, which
  read preferred answers or a layer's activations, have their own tests), twins left out."""
  from cure_jax.unlearning import methods  # pylint: disable=g-import-not-at-top
  return sorted(n for n, m in methods.REGISTRY.items()
                if not m.lm_only and n not in SAME_PATH_TWINS)


def smoke_config(**train_overrides):
  config = digits_config.get_config('smoke')
  config.train.epochs = 1
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def trained(tmp_dir, kinds=('original', 'retrain'), forget_classes=(1,), devices=None):
  config = smoke_config()
  data = load_digits()
  model = models.get_model('resnet8', 10)
  mesh = sharding.make_mesh(devices)
  out = {kind: train.train_classifier(config, str(tmp_dir), kind, data, model, mesh,
                                      forget_classes) for kind in kinds}
  return config, data, model, mesh, out


def run_of(config, name, cli_keys=frozenset(), **hparams):
  """The planned run of method ``name`` under ``config``, with ``hparams`` replaced."""
  run = plan.runs(config, cli_keys, entries=[name])[0]
  if not hparams:
    return run
  hp = run.hparams.as_configdict()
  hp.update(hparams)
  return plan.Run(run.name, run.method, type(run.hparams)(hp))


class BNMLP(nn.Module):
  """A tiny classifier with the runner's model interface (``train`` flag, frozen BatchNorm
  statistics) for tests of the compiled runs against hand-written loops."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(16)(x.reshape(x.shape[0], -1))
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
    return nn.Dense(self.num_classes)(h)


def single_device():
  return jax.devices()[:1]


FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')


def summary(before, after):
  """What a fixture keeps of a parameter update: sums and the first and largest changes."""
  delta = np.asarray(after, np.float64) - np.asarray(before, np.float64)
  return [float(np.sum(after, dtype=np.float64)), float(np.sum(np.abs(delta))),
          float(delta[0]), float(delta[np.argmax(np.abs(delta))])]


def summary_tolerance(before, after, steps, terms):
  """How far each :func:`summary` component may move when the same update is computed with
  its reductions in another order (another CPU, another XLA setting): the update by the
  probabilistic reordering bound ``eps`` of ``steps`` steps of ``terms``-term reductions,
  relative to its own size (its sum of moves, or its largest move), plus one rounding of
  each stored float32 parameter (``u |after|``: a moved update may round the other way)."""
  eps = tolerances.reordered_run(steps, terms, probabilistic=True)
  moved = np.abs(np.asarray(after, np.float64) - np.asarray(before, np.float64))
  after = np.abs(np.asarray(after, np.float64))
  u = tolerances.UNIT_ROUNDOFF
  return np.array([eps * moved.sum() + u * after.sum(), eps * moved.sum() + u * after.sum(),
                   eps * moved.max() + 2 * u * after[0], eps * moved.max() + 2 * u * after.max()])


# Rows of a whole smoke run recorded on another CPU: every float may move by the first-order
# logit bound of the run (tests/tolerances.py) -- the classification smoke run trains 19
# steps and unlearns at most 21, its longest reduction 64 x 8 x 8 terms, through resnet8's 19
# modules (4.1e-2); the LM smoke run's is smaller (9 steps, GROGU's inner products over its
# 1.8e4 parameters, 8 modules: 8e-3). A counted metric (an accuracy over N examples) is held
# to the same relative bound, which admits ~0.04 N flipped near-ties.
FIXTURE_RTOL = 19 * tolerances.reordered_run(40, 64 * 8 * 8, probabilistic=True)
FIXTURE_ATOL = 1e-6   # a metric that is 0 on one CPU: a probability of a few ulps


def _same(got, want):
  """Exact for strings, ints, None and accuracies' structure; floats within the fixture
  tolerance (recursively through lists and dicts)."""
  if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
    return abs(got - want) <= FIXTURE_ATOL + FIXTURE_RTOL * abs(want)
  if isinstance(want, list) and isinstance(got, list):
    return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
  if isinstance(want, dict) and isinstance(got, dict):
    return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
  return got == want


def check_rows(key, rows):
  """Result rows of a smoke run against ``tests/fixtures/smoke_rows.json`` (recorded from the
  code before the one-house refactor; method names in today's spelling; the LM rows
  re-recorded when its smoke config started to unlearn: warm-up 0 now means none): every
  field equal, floats to the fixture tolerance. Effective hyperparameters, model
  fingerprints and timings are left out: the first gained keys, the others name or time a
  model rather than measure it."""
  with open(os.path.join(FIXTURES, 'smoke_rows.json')) as f:
    want = json.load(f)[key]
  drop = ('hparams', 'model_fingerprint', 'time_s', 'compile_s', 'time_ratio', 'seconds')
  got = [{k: v for k, v in r.items() if k not in drop} for r in json.loads(json.dumps(rows))]
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert _same(g, w), {k: (g.get(k), w.get(k)) for k in set(g) | set(w)
                         if not _same(g.get(k), w.get(k))}


def check_fixture(name, key, before, after, steps, terms):
  """The :func:`summary` of an update ``before -> after`` (``steps`` steps of ``terms``-term
  reductions) against ``tests/fixtures/<name>.json[key]``, committed from a run of the code
  before a refactor, within :func:`summary_tolerance`; ``CURE_JAX_WRITE_FIXTURES=1``
  records them instead (then commit the file and say why the numbers changed)."""
  values = summary(before, after)
  path = os.path.join(FIXTURES, f'{name}.json')
  if os.environ.get('CURE_JAX_WRITE_FIXTURES') == '1':
    stored = {}
    if os.path.exists(path):   # one test file per fixture: xdist keeps it on one worker
      with open(path) as f:
        stored = json.load(f)
    stored[key] = values
    with open(path, 'w') as f:
      json.dump(dict(sorted(stored.items())), f, indent=1)
      f.write('\n')
    return
  with open(path) as f:
    want = json.load(f)[key]
  tol = summary_tolerance(before, after, steps, terms)
  assert np.all(np.abs(np.subtract(values, want)) <= tol), (name, key, values, want, tol)
