import numpy as np
import pytest
from scipy import optimize
from scipy.special import softmax

from cure_jax.metrics import mia


def _svm_reference(x, y, c=3.0, gamma=1.0):
  """RBF soft-margin SVM by its dual, solved with SLSQP: an independent decision function."""
  sign = np.where(y > 0, 1.0, -1.0)
  kernel = lambda a, b: np.exp(-gamma * (a[:, None] - b[None, :])**2)
  q = (sign[:, None] * sign[None, :]) * kernel(x, x)
  res = optimize.minimize(lambda a: 0.5 * a @ q @ a - a.sum(), np.zeros(len(x)),
                          jac=lambda a: q @ a - 1.0, bounds=[(0, c)] * len(x),
                          constraints=[{'type': 'eq', 'fun': lambda a: a @ sign,
                                        'jac': lambda a: sign}],
                          method='SLSQP', options={'maxiter': 1000, 'ftol': 1e-12})
  alpha = res.x
  free = (alpha > 1e-5) & (alpha < c - 1e-5)
  bias = np.mean(sign[free] - (alpha * sign) @ kernel(x, x[free]))
  return lambda t: (alpha * sign) @ kernel(x, t) + bias


def test_efficacy_matches_an_independent_rbf_svm():
  rng = np.random.default_rng(0)
  member = np.clip(1 - rng.exponential(0.05, 25), 0, 1)      # training examples: confident
  nonmember = np.clip(1 - rng.exponential(0.35, 25), 0, 1)   # test examples: less so
  forget = np.linspace(0, 1, 41)
  decision = _svm_reference(np.concatenate([member, nonmember]),
                            np.concatenate([np.ones(25), np.zeros(25)]))(forget)
  clear = np.abs(decision) > 0.05            # away from the boundary, where solvers agree
  assert clear.sum() > 30
  expected = np.mean(decision[clear] < 0)
  assert 0 < expected < 1
  assert mia.mia_efficacy(member, nonmember, forget[clear]) == pytest.approx(expected)


def test_efficacy_extremes_original_and_retrain_like():
  rng = np.random.default_rng(1)
  member = 1 - rng.exponential(0.02, 50)
  nonmember = rng.uniform(0.0, 0.9, 50)
  assert mia.mia_efficacy(member, nonmember, 1 - rng.exponential(0.01, 30)) == 0.0
  assert mia.mia_efficacy(member, nonmember, rng.uniform(0, 0.05, 30)) == 1.0


def test_true_label_probs_and_errors():
  logits = np.random.default_rng(2).normal(size=(6, 4)) * 30
  labels = np.array([0, 1, 2, 3, 3, 1])
  np.testing.assert_allclose(mia.true_label_probs(logits, labels),
                             softmax(logits, -1)[np.arange(6), labels], rtol=1e-12)
  with pytest.raises(ValueError, match='p_forget is empty'):
    mia.mia_efficacy([0.9], [0.1], [])
  with pytest.raises(ValueError, match='p_member has non-finite'):
    mia.mia_efficacy([np.nan], [0.1], [0.5])
