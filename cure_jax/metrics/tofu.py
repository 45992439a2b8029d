"""TOFU metrics for LLM concept unlearning, as open-unlearning defines them (docs/methods.md).

Every function works on plain numpy arrays of per-token quantities that the caller
computed with its model (teacher-forced NLLs, argmax predictions) or on decoded strings,
so the definitions can be pinned by hand-computed examples without a model.

Conventions: ``nll_NxT`` is the per-token negative log-likelihood of the targets and
``mask_NxT`` is 1.0 on answer tokens (the tokens being scored) and 0.0 elsewhere. A
"length-normalised" quantity is a mean over the answer tokens of one item.
"""
import numpy as np
from rouge_score import rouge_scorer
from scipy import stats

_EPS = 1e-10  # open-unlearning's guard against division by an underflowed probability


def _check_mask(mask_NxT, what):
  mask_NxT = np.asarray(mask_NxT, np.float64)
  empty = np.flatnonzero(mask_NxT.sum(axis=-1) == 0)
  if empty.size:
    raise ValueError(f'{what}: items {empty.tolist()} have no answer tokens in the mask; '
                     'every scored item needs at least one answer token (check the encoding).')
  return mask_NxT


def mean_answer_nll(nll_NxT, mask_NxT):
  """Length-normalised NLL per item: ``Σ_t mask·NLL_t / Σ_t mask``."""
  mask_NxT = _check_mask(mask_NxT, 'mean_answer_nll')
  return (np.asarray(nll_NxT, np.float64) * mask_NxT).sum(-1) / mask_NxT.sum(-1)


def qa_probability(nll_NxT, mask_NxT):
  """TOFU's QA probability per item: ``exp(−mean answer-token NLL)``; report the mean."""
  return np.exp(-mean_answer_nll(nll_NxT, mask_NxT))


def extraction_strength(preds_NxT, labels_NxT, mask_NxT, drop_eos=True):
  """Teacher-forced extraction strength per item (Carlini et al., open-unlearning).

  The scored labels ``y`` are an item's answer positions with the final one (the EOS that
  every encoded answer ends with) dropped when ``drop_eos``, as open-unlearning scores
  ``labels[:-1]``. ``k*`` is the first k in ``[0, |y|)`` with ``preds[k:] == y[k:]``, and
  ``|y| − 1`` when no suffix matches (open-unlearning's loop ends there), so the floor is
  ``1/|y|``, not 0; ``ES = 1 − k*/|y|``. An item whose only answer position is the EOS
  keeps it (nothing else to score).
  """
  mask_NxT = _check_mask(mask_NxT, 'extraction_strength') > 0
  preds_NxT, labels_NxT = np.asarray(preds_NxT), np.asarray(labels_NxT)
  scores = []
  for pred, label, keep in zip(preds_NxT, labels_NxT, mask_NxT):
    pred, label = pred[keep], label[keep]
    if drop_eos and len(label) > 1:
      pred, label = pred[:-1], label[:-1]
    length = len(label)
    wrong = np.flatnonzero(pred != label)
    k = 0 if wrong.size == 0 else min(int(wrong[-1]) + 1, length - 1)
    scores.append(1.0 - k / length)
  return np.asarray(scores)


_ROUGE = None


def rouge_l_recall(predictions, references):
  """ROUGE-L recall (Porter stemming) of each prediction against its reference answer."""
  global _ROUGE
  if len(predictions) != len(references):
    raise ValueError(f'{len(predictions)} predictions but {len(references)} references.')
  if _ROUGE is None:
    _ROUGE = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True)
  return np.asarray([_ROUGE.score(ref, pred)['rougeL'].recall
                     for pred, ref in zip(predictions, references)])


def truth_ratio(correct_nll_N, wrong_nll_NxK):
  """``p_wrong / p_correct`` per item from length-normalised NLLs.

  ``p_correct = exp(−correct_nll)``; ``p_wrong`` is the geometric mean over the K
  perturbed answers of ``exp(−wrong_nll)``, i.e. ``exp(−mean_k wrong_nll_k)``.
  """
  correct_nll_N = np.asarray(correct_nll_N, np.float64)
  wrong_nll_NxK = np.asarray(wrong_nll_NxK, np.float64)
  if wrong_nll_NxK.ndim != 2 or wrong_nll_NxK.shape[0] != correct_nll_N.shape[0]:
    raise ValueError(f'wrong_nll must be NxK with N={correct_nll_N.shape[0]}, '
                     f'got shape {wrong_nll_NxK.shape}.')
  p_wrong = np.exp(-wrong_nll_NxK.mean(-1))
  return p_wrong / (np.exp(-correct_nll_N) + _EPS)


def forget_truth_ratio_score(ratios):
  """Forget-set aggregate ``mean(min(TR, 1/TR))`` (1 = cannot tell right from wrong)."""
  ratios = np.asarray(ratios, np.float64)
  return float(np.mean(np.minimum(ratios, 1.0 / (ratios + _EPS))))


def utility_truth_ratio_score(ratios):
  """Retain / real-authors / world-facts aggregate ``mean(max(0, 1 − TR))``."""
  return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(ratios, np.float64))))


def normalised_probability(correct_nll_N, wrong_nll_NxK):
  """``p_c / (p_c + Σ_k p_wrong,k)`` with length-normalised probabilities, per item."""
  p_correct = np.exp(-np.asarray(correct_nll_N, np.float64))
  p_wrong = np.exp(-np.asarray(wrong_nll_NxK, np.float64)).sum(-1)
  return p_correct / (p_correct + p_wrong + _EPS)


def harmonic_mean(values):
  """Harmonic mean; 0 as soon as one value is 0 (TOFU's model utility)."""
  values = np.asarray(list(values), np.float64)
  if values.size == 0:
    raise ValueError('harmonic_mean of no values; model utility needs its component scores.')
  if np.any(values < 0):
    raise ValueError(f'harmonic_mean needs non-negative values, got {values.tolist()}.')
  if np.any(values == 0):
    return 0.0
  return float(values.size / np.sum(1.0 / values))


def forget_quality(forget_ratios, retrain_forget_ratios):
  """KS-test p-value of the forget truth ratios against the retrain model's."""
  if len(forget_ratios) == 0 or len(retrain_forget_ratios) == 0:
    raise ValueError('forget_quality needs non-empty truth-ratio samples for both models.')
  return float(stats.ks_2samp(np.asarray(forget_ratios), np.asarray(retrain_forget_ratios)).pvalue)
