"""KLOM (cure_jax/metrics/klom.py) against computations written here; its place in the
protocol's results.json and Table 3 is checked on test_protocol.py's sweep."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from cure_jax.classification import evaluate
from cure_jax.data import sources, views
from cure_jax.metrics import klom


def test_margin_is_true_logit_minus_logsumexp_of_the_others():
  logits = np.array([[2.0, 0.0, -1.0], [0.5, 3.0, 1.0]])
  got = klom.margins(logits, [0, 2])
  want = [2.0 - math.log(math.exp(0.0) + math.exp(-1.0)),
          1.0 - math.log(math.exp(0.5) + math.exp(3.0))]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  # Models stacked in front share the labels.
  np.testing.assert_allclose(klom.margins(np.stack([logits, logits]), [0, 2]), [want, want])


def test_klom_of_a_hand_made_example():
  """One example, 4 unlearned models [0, 0, 1, 4], 4 retrain models [0, 2, 3, 4]: 20 bins of
  width 0.2 over [0, 4]; the maximum 4 falls in the last bin."""
  eps = klom.EPS
  # p: bins 0 (1/2), 5 (1/4), 19 (1/4); q: bins 0, 10, 15, 19 (1/4 each).
  # q' = q with eps in bin 5 (where p > 0 and q = 0), renormalised by 1 + eps.
  q = lambda x: x / (1 + eps)
  want = (0.5 * math.log(0.5 / q(0.25)) + 0.25 * math.log(0.25 / q(eps))
          + 0.25 * math.log(0.25 / q(0.25)))
  got = klom.klom([[0.0], [0.0], [1.0], [4.0]], [[0.0], [2.0], [3.0], [4.0]])
  assert got.shape == (1,) and got[0] == pytest.approx(want, rel=1e-12)


def _reference_klom(u, r, bins=20, eps=1e-5, clip=(-100, 100)):
  """Per example with scalar numpy/scipy: shared bins from the pooled clipped range,
  np.histogram counts (last bin closed), eps where p > 0, scipy's KL (normalises qk)."""
  out = []
  for j in range(u.shape[1]):
    a, b = np.clip(u[:, j], *clip), np.clip(r[:, j], *clip)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    p = np.histogram(a, edges)[0] / len(a)
    q = np.histogram(b, edges)[0] / len(b)
    out.append(stats.entropy(p, np.where(p > 0, np.maximum(q, eps), q)))
  return np.array(out)


def test_klom_equals_a_per_example_scipy_computation():
  rng = np.random.default_rng(0)
  u = rng.normal(1.0, 2.0, size=(5, 40))
  r = rng.normal(0.0, 1.0, size=(3, 40))   # fewer retrain models than runs
  u[0, :3] = [150.0, -250.0, 7.0]          # clipped to ±100
  r[:, 3] = 2.5                            # one side constant
  np.testing.assert_allclose(klom.klom(u, r), _reference_klom(u, r), rtol=1e-10, atol=1e-12)


def test_identical_distributions_give_zero():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 30))
  np.testing.assert_allclose(klom.klom(x, x), 0.0, atol=1e-12)
  np.testing.assert_allclose(klom.klom(x, x[::-1]), 0.0, atol=1e-12)   # model order is moot
  assert klom.klom(np.full((2, 1), 3.0), np.full((4, 1), 3.0))[0] == pytest.approx(0.0)
  assert klom.klom([[150.0]], [[100.0]])[0] == pytest.approx(0.0)     # both clip to 100
  assert klom.klom(x[:3], x[3:]).min() >= 0.0


def test_klom_refuses_mismatched_margins():
  with pytest.raises(ValueError, match='same examples'):
    klom.klom(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match='at least one model'):
    klom.klom(np.zeros((0, 3)), np.zeros((2, 3)))


def test_summary_is_their_percentiles_mean_and_std():
  v = np.arange(101.0)
  assert klom.summary(v) == {'p95': 95.0, 'p99': 99.0, 'mean': 50.0,
                             'std': pytest.approx(np.std(v)), 'n': 101}
  assert klom.summary([]) is None


def test_klom_examples_are_training_forget_and_retain_and_validation_subsamples():
  """Georgiev et al.'s sets: the forget and retain *training* examples and validation ones,
  each a fixed seeded subsample of at most KLOM_MAX_EXAMPLES per scenario."""
  labels = np.arange(6000) % 10
  train = sources.ArraySource(np.arange(6000).reshape(6000, 1, 1, 1).astype(np.uint8), labels)
  forget, retain = views.forget_retain(train, (1, 3))
  val = sources.ArraySource(np.zeros((3000, 2, 2, 1), np.uint8), np.arange(3000) % 10)
  sets = evaluate.klom_sets(forget, retain, val, '1,3')
  fx, fy = sets.arrays['forget']
  assert len(fy) == 1200 and set(fy.tolist()) == {1, 3}   # 1,200 forget examples: all kept
  np.testing.assert_array_equal(fx[:, 0, 0, 0], (np.flatnonzero(np.isin(labels, (1, 3)))
                                                 % 256).astype(np.uint8))
  rx, ry = sets.arrays['retain']
  assert len(ry) == len(sets.arrays['val'][1]) == evaluate.KLOM_MAX_EXAMPLES
  assert not np.isin(ry, (1, 3)).any()
  again = evaluate.klom_sets(forget, retain, val, '1,3')
  assert again.digest == sets.digest
  np.testing.assert_array_equal(again.arrays['retain'][0], rx)
  assert evaluate.klom_sets(forget, retain, val, '3,1').digest != sets.digest


def test_margins_files_round_trip_under_the_rows_json(tmp_path):
  row = {'scenario': '1', 'method': 'ghr', 'model_seed': 0, 'seed': 1, 'status': 'ok',
         'hparams': {'lr': 0.01, 'betas': [0.9, 0.99]},
         'model_fingerprint': {'original': 'original-a', 'retrain': 'retrain-b'}}
  margins = {'forget': np.array([1.5, -2.25]), 'retain': np.zeros(0), 'val': np.array([3e9])}
  evaluate.save_margins(str(tmp_path), row, margins, 'abc')
  digest, back = evaluate.load_margins(str(tmp_path), json.loads(json.dumps(row)))
  assert digest == 'abc' and set(back) == set(margins)
  for k, v in margins.items():
    assert back[k].dtype == np.float32 and np.array_equal(back[k], v.astype(np.float32))
  assert evaluate.load_margins(str(tmp_path), {**row, 'seed': 2}) is None
