"""KLOM (cure_jax/metrics/klom.py) against computations written here, and its place in the
protocol's results.json and Table 3 on a tiny digits sweep."""
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from cure_jax.classification import evaluate, protocol, report
from cure_jax.data import sources, views
from cure_jax.data.digits import load_digits
from cure_jax.infra import entry
from cure_jax.metrics import klom
from tests import helpers


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


def _config():
  config = helpers.smoke_config()
  config.scenarios = '1'
  config.model_seeds = 1
  config.seeds = 2
  config.reproduce.methods = ('ghr',)
  return config


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('klom')
  rows = entry.run(_config(), str(workdir))
  return workdir, rows


def test_results_json_carries_klom_per_scenario_and_method(swept):
  workdir, rows = swept
  doc = json.loads((workdir / 'results.json').read_text())
  assert doc['rows'] == rows and not any('klom' in k for r in rows for k in r)
  section = doc['klom']
  assert section['definition']['bins'] == 20 and section['definition']['percentiles'] == [95, 99]
  groups = {(g['scenario'], g['method']): g for g in section['groups']}
  assert set(groups) == {('1', 'original'), ('1', 'ghr')}    # the retrain reference: none
  assert (groups['1', 'ghr']['n_models'], groups['1', 'ghr']['n_retrain']) == (2, 1)
  directory = workdir / evaluate.MARGINS_DIR
  retrain = [evaluate.load_margins(directory, r)[1] for r in rows if r['method'] == 'retrain']
  for (_, method), group in groups.items():
    mine = [evaluate.load_margins(directory, r)[1] for r in rows if r['method'] == method]
    for k in evaluate.KLOM_SETS:
      values = klom.klom(np.stack([m[k] for m in mine]), np.stack([m[k] for m in retrain]))
      assert group[k] == pytest.approx(klom.summary(values)), (method, k)
      assert group[k]['n'] == len(retrain[0][k]) > 0
  # Forget / retain: the training examples of class 1 / the others (digits: retain capped).
  train_y = np.asarray(load_digits().train.labels)
  ghr = groups['1', 'ghr']
  assert (ghr['forget']['n'], ghr['retain']['n']) == (
      np.sum(train_y == 1), min(np.sum(train_y != 1), evaluate.KLOM_MAX_EXAMPLES))


def test_table3_shows_the_klom_columns(swept):
  workdir, _ = swept
  doc = json.loads((workdir / 'results.json').read_text())
  text = (workdir / 'results.md').read_text()
  assert 'KL(unlearned ‖ retrain)' in text
  table1, table3 = text.split('### Scenario 1: Table 3 layout')
  assert 'KLOM' not in table1.split('### Table 1')[1].split('\n\n')[1]   # Table 1 as it was
  assert '| KLOM forget | KLOM retain | KLOM val |' in table3
  for g in doc['klom']['groups']:
    line = next(l for l in table3.splitlines() if l.startswith(f'| {g["method"]} '))
    assert line.rstrip(' |').endswith(' | '.join(f'{g[k]["p95"]:.3f}'
                                                 for k in evaluate.KLOM_SETS)), line
  retrain = next(l for l in table3.splitlines() if l.startswith('| retrain '))
  assert retrain.endswith('| – | – | – |')


def test_resumed_sweep_keeps_the_klom(swept, monkeypatch):
  """A rerun finds every unit in the log and the margins beside it: nothing is run again,
  the KLOM section is the same; a lost margins file is named, not guessed."""
  workdir, rows = swept
  before = json.loads((workdir / 'results.json').read_text())['klom']
  monkeypatch.setattr(protocol, 'run_unit', lambda *a: pytest.fail('a unit was run again'))
  entry.run(_config(), str(workdir))
  assert json.loads((workdir / 'results.json').read_text())['klom'] == before
  run = next(r for r in rows if r['method'] == 'ghr')
  lost = workdir / evaluate.MARGINS_DIR / (evaluate.margins_key(run) + '.json')
  os.rename(lost, str(lost) + '.away')
  try:
    groups = report.klom_section(rows, str(workdir))['groups']
  finally:
    os.rename(str(lost) + '.away', lost)
  ghr = next(g for g in groups if g['method'] == 'ghr')
  assert ghr['forget'] is None and ghr['note'] == 'margins of 1 of 2 models not recorded'
