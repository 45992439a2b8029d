"""TOFU metrics (open-unlearning's definitions) pinned on hand-computed examples."""
import math

import numpy as np
import pytest
from scipy import stats

from cure_jax.metrics import tofu


def test_qa_probability_is_exp_of_mean_answer_nll():
  # Item 0 scores tokens 1,2 (NLL 1 and 3: mean 2); item 1 scores token 0 only.
  nll = np.array([[9.0, 1.0, 3.0], [0.5, 7.0, 7.0]])
  mask = np.array([[0, 1, 1], [1, 0, 0]], np.float32)
  np.testing.assert_allclose(tofu.qa_probability(nll, mask), [math.exp(-2.0), math.exp(-0.5)])


def test_empty_answer_mask_is_rejected():
  with pytest.raises(ValueError, match='no answer tokens'):
    tofu.qa_probability(np.ones((2, 3)), np.array([[1, 0, 0], [0, 0, 0]]))


@pytest.mark.parametrize('preds, expected', [
    # Answer y = [5, 6, 7] (|y| = 3) then EOS 8, whose prediction is never scored.
    ([5, 6, 7, 8], 1.0),        # all correct: k*=0
    ([5, 6, 7, 0], 1.0),        # a wrong EOS prediction is dropped (labels[:-1])
    ([0, 6, 7, 8], 2 / 3),      # first wrong: k*=1
    ([5, 0, 7, 8], 1 / 3),      # k*=2
    ([5, 6, 0, 8], 1 / 3),      # last wrong: no suffix matches, k*=|y|-1: the floor 1/|y|
    ([0, 0, 0, 0], 1 / 3),      # nothing right: still the floor, never 0
    ([0, 6, 0, 8], 1 / 3),      # only the last mismatch matters
])
def test_extraction_strength(preds, expected):
  # Positions 0 and 5 are not answer tokens; their (wrong) predictions must be ignored.
  labels = np.array([[1, 5, 6, 7, 8, 2]])
  full_preds = np.array([[9] + preds + [9]])
  mask = np.array([[0, 1, 1, 1, 1, 0]])
  np.testing.assert_allclose(tofu.extraction_strength(full_preds, labels, mask), [expected])


def test_extraction_strength_rows_of_different_lengths_and_without_eos_drop():
  labels = np.array([[5, 6, 2, 0], [5, 6, 7, 8]])
  preds = np.array([[5, 0, 9, 9], [1, 6, 7, 8]])
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
  # Row 0: y=[5,6], second wrong -> floor 1/2. Row 1: y=[5,6,7], k*=1 -> 2/3.
  np.testing.assert_allclose(tofu.extraction_strength(preds, labels, mask), [0.5, 2 / 3])
  # Scoring the EOS too: row 0 y=[5,6,2], pred [5,0,9]: floor 1/3; row 1 y=[5,6,7,8]: 3/4.
  np.testing.assert_allclose(tofu.extraction_strength(preds, labels, mask, drop_eos=False),
                             [1 / 3, 0.75])
  # An answer that is only its EOS keeps it: one correct token gives 1.
  np.testing.assert_allclose(tofu.extraction_strength([[4]], [[4]], [[1]]), [1.0])


def test_rouge_l_recall_with_stemming():
  # LCS of "the author wrote novels" vs "author writes novel" with stemming
  # (writes/wrote differ, novels->novel): tokens author, novel match: 2 of 3 reference tokens.
  recall = tofu.rouge_l_recall(['the author wrote novels', 'x'], ['author writes novel', 'y z'])
  np.testing.assert_allclose(recall, [2 / 3, 0.0])
  exact = tofu.rouge_l_recall(['He was born in Paris.'], ['He was born in Paris'])
  np.testing.assert_allclose(exact, [1.0])


def test_rouge_rejects_length_mismatch():
  with pytest.raises(ValueError, match='2 predictions but 1'):
    tofu.rouge_l_recall(['a', 'b'], ['a'])


def test_truth_ratio_uses_geometric_mean_of_wrong_answers():
  correct = np.array([1.0, 2.0])
  wrong = np.array([[2.0, 4.0], [1.0, 1.0]])  # geometric means exp(-3), exp(-1)
  ratios = tofu.truth_ratio(correct, wrong)
  np.testing.assert_allclose(ratios, [math.exp(-3) / math.exp(-1), math.exp(-1) / math.exp(-2)],
                             rtol=1e-8)
  # Forget: mean(min(TR, 1/TR)) = mean(e^-2, e^-1); utility: mean(max(0, 1-TR)) = (1-e^-2 + 0)/2.
  assert tofu.forget_truth_ratio_score(ratios) == pytest.approx((math.exp(-2) + math.exp(-1)) / 2)
  assert tofu.utility_truth_ratio_score(ratios) == pytest.approx((1 - math.exp(-2)) / 2)


def test_normalised_probability():
  p = tofu.normalised_probability([math.log(2)], [[math.log(4), math.log(4)]])  # .5/(.5+.25+.25)
  np.testing.assert_allclose(p, [0.5])


@pytest.mark.parametrize('values, expected', [
    ([0.5, 0.5, 0.5], 0.5), ([1.0, 0.25], 0.4), ([0.3, 0.0, 0.9], 0.0)])
def test_harmonic_mean(values, expected):
  assert tofu.harmonic_mean(values) == pytest.approx(expected)


def test_forget_quality_is_ks_pvalue():
  a, b = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.15, 0.25, 0.9, 0.95])
  assert tofu.forget_quality(a, b) == pytest.approx(stats.ks_2samp(a, b).pvalue)
  assert tofu.forget_quality(a, a) == pytest.approx(1.0)
  # Disjoint samples of size 4: exact two-sided p-value 2/C(8,4) = 1/35.
  assert tofu.forget_quality(a, a + 10) == pytest.approx(2 / 70)
  with pytest.raises(ValueError, match='non-empty'):
    tofu.forget_quality([], a)
