"""Learning-rate schedules: ``warmup_fraction=0`` means no warm-up (the full rate from the
first step), any other fraction a linear rise from 0 over at least one step."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cure_jax.classification import train
from cure_jax.lm import train as lm_train, unlearn
from tests import tolerances

# A float32 schedule value at lr 0.1: a handful of roundings (fraction, angle, cosine, sum,
# scaling) of values <= lr, the cosine's absolute error included: within 0.1 gamma(8)
# (4.8e-8), where a wrong end point (cosine to 0 instead of a tenth) moves it by 1e-2.
TOL = 0.1 * tolerances.gamma(8)


def _cfg(fraction, **extra):
  return ml_collections.ConfigDict(dict(lr=0.1, warmup_fraction=fraction, **extra))


@pytest.mark.parametrize('fraction, first', [(0.0, 0.1), (0.05, 0.0), (0.001, 0.0)])
def test_classifier_schedule(fraction, first):
  assert float(train.learning_rate(_cfg(fraction), 0, 100)) == pytest.approx(first, abs=TOL)
  # cos(float32 pi) may round to 1 ulp above -1 (then lr x 3e-8): not exactly 0.
  assert float(train.learning_rate(_cfg(fraction), 100, 100)) == pytest.approx(0.0, abs=TOL)


@pytest.mark.parametrize('fraction, first', [(0.0, 0.1), (0.05, 0.0), (0.001, 0.0)])
def test_lm_fine_tuning_schedule(fraction, first):
  schedule = lm_train.lr_schedule(_cfg(fraction), 100)
  assert float(schedule(0)) == pytest.approx(first, abs=TOL)
  assert float(schedule(100)) == pytest.approx(0.01, abs=TOL)   # cosine to a tenth of lr


@pytest.mark.parametrize('fraction, first', [(0.0, 0.1), (0.5, 0.0)])
def test_lm_unlearning_first_step(fraction, first):
  tx = unlearn.make_optimizer(_cfg(fraction, optimizer='sgd', momentum=0.0), 2)
  params = {'w': jnp.zeros(3)}
  updates, state = tx.update({'w': jnp.ones(3)}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -first * np.ones(3), rtol=0, atol=TOL)
  updates, _ = tx.update({'w': jnp.ones(3)}, state, params)   # then the full rate
  np.testing.assert_allclose(updates['w'], -0.1 * np.ones(3), rtol=0, atol=TOL)


def test_warmup_steps():
  assert lm_train.warmup_steps(0.0, 1000) == 0
  assert lm_train.warmup_steps(1e-6, 10) == 1   # any warm-up is at least one step
  assert lm_train.warmup_steps(0.1, 1000) == 100
