"""MIA-efficacy for class unlearning, as SalUn defines it (Fan et al., ICLR 2024).

Follows OPTML-Group/Unlearn-Saliency ``Classification/evaluation/SVC_MIA.py`` (the
``confidence`` attack) as ``main_forget.py`` calls it for ``SVC_MIA_forget_efficacy``:

- feature: the model's softmax probability of the true label, one number per example;
- an RBF SVC (``C=3, gamma='auto'``, scikit-learn) is fitted on *members* (the first
  ``|test|`` retain training examples, label 1) against *non-members* (the test set;
  here without the forget classes, label 0);
- efficacy = the fraction of forget training examples the SVC predicts as non-members
  (``1 − mean(predict(forget))``). Higher = the forget set looks unseen; the retrain
  model, which never saw it, scores high, the original model low.
"""
import numpy as np
from sklearn.svm import SVC


def true_label_probs(logits_NxK, labels_N):
  """Softmax probability of each example's true label (float64, stable)."""
  z = np.asarray(logits_NxK, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
  return np.exp(np.take_along_axis(log_p, np.asarray(labels_N)[:, None], axis=-1)[:, 0])


def _feature(values, what):
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError(f'mia_efficacy: {what} is empty; it needs at least one example.')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'mia_efficacy: {what} has non-finite probabilities.')
  return x[:, None]


def mia_efficacy(p_member, p_nonmember, p_forget):
  """Fraction of forget examples an RBF SVC (C=3, gamma='auto') calls non-members.

  Arguments are true-label softmax probabilities (:func:`true_label_probs`): of the
  member examples (``|test|`` retain training examples), of the non-member examples
  (test set without the forget classes) and of the forget training examples.
  """
  x_member = _feature(p_member, 'p_member')
  x_nonmember = _feature(p_nonmember, 'p_nonmember')
  x_forget = _feature(p_forget, 'p_forget')
  x = np.concatenate([x_member, x_nonmember])
  y = np.concatenate([np.ones(len(x_member)), np.zeros(len(x_nonmember))])
  clf = SVC(C=3, gamma='auto', kernel='rbf').fit(x, y)
  return float(1.0 - clf.predict(x_forget).mean())
