"""Membership-inference privacy metrics (min-k%, LOSS, privleak) against independent
computations: sklearn's ROC AUC and hand-computed min-k scores."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cure_jax.metrics import privacy


def test_min_k_score_by_hand():
  # Item 0: 5 answer tokens, k=0.4 -> the 2 lowest log-probs (highest NLLs 3 and 2.5).
  # Item 1: 2 answer tokens -> max(1, int(0.8)) = 1 token: the highest NLL 4.
  nll = np.array([[0.5, 3.0, 1.0, 2.5, 0.1, 9.0], [4.0, 0.2, 7.0, 7.0, 7.0, 7.0]])
  mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
  np.testing.assert_allclose(privacy.min_k_scores(nll, mask), [2.75, 4.0])
  np.testing.assert_allclose(privacy.min_k_scores(nll, mask, k=1.0), [7.1 / 5, 4.2 / 2])
  np.testing.assert_allclose(privacy.loss_scores(nll, mask), [7.1 / 5, 4.2 / 2])


@pytest.mark.parametrize('seed, ties', [(0, False), (1, True), (2, True)])
def test_mia_auc_equals_sklearn(seed, ties):
  rng = np.random.default_rng(seed)
  forget, holdout = rng.normal(0, 1, 13), rng.normal(0.7, 1, 9)
  if ties:  # rounded scores tie across the two sets; both must count ties one half
    forget, holdout = np.round(forget, 0), np.round(holdout, 0)
  labels = np.r_[np.zeros(len(forget)), np.ones(len(holdout))]  # forget 0, holdout 1
  expected = roc_auc_score(labels, np.r_[forget, holdout])
  assert privacy.mia_auc(forget, holdout) == pytest.approx(expected, abs=1e-12)


def test_mia_auc_extremes_and_privleak():
  members, non_members = np.array([0.1, 0.2]), np.array([3.0, 4.0, 5.0])
  assert privacy.mia_auc(members, non_members) == 1.0  # forget looks fully "member"
  assert privacy.mia_auc(non_members, members) == 0.0
  # privleak = ((1-AUC) - (1-AUC_ret)) / (1-AUC_ret) * 100.
  assert privacy.privleak(0.5, 0.5) == pytest.approx(0.0)
  assert privacy.privleak(1.0, 0.5) == pytest.approx(-100.0)
  assert privacy.privleak(0.2, 0.6) == pytest.approx((0.8 - 0.4) / 0.4 * 100)


def test_privacy_errors():
  with pytest.raises(ValueError, match='holdout split is empty'):
    privacy.mia_auc([0.1], [])
  with pytest.raises(ValueError, match='no answer tokens'):
    privacy.min_k_scores(np.ones((2, 3)), np.array([[1, 0, 0], [0, 0, 0]]))
  with pytest.raises(ValueError, match='k=0'):
    privacy.min_k_scores(np.ones((1, 3)), np.ones((1, 3)), k=0)
