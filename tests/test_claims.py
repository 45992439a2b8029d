"""The paper's claims from result rows (claims.py, verdicts.py): hand-made rows with known
verdicts, and the statistics against scipy and hand computations."""
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from cure_jax.classification import claims, claims_text, forest, verdicts

NC = 10
FORGET = (3,)
NOISE = (0.004, -0.003, 0.001, -0.002)          # per run index: mean 0
RETRAIN_COUNTS = {0: [0, 0, 10, 0, 0, 1, 0, 1, 3, 12],   # relevant classes [2, 9]
                  1: [0, 0, 0, 0, 0, 0, 0, 0, 20, 0]}    # relevant classes [8]
DOCS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'docs', 'results.json')


def row(method, setting, scenario, model_seed, seed, retain=0.9, forget=0.0, per_class=None,
        counts=None, status='ok'):
  return {'scenario': scenario, 'model_seed': model_seed, 'seed': seed, 'method': method,
          'setting': setting, 'status': status, 'retain_acc': retain, 'forget_acc': forget,
          'overall_acc': retain, 'per_class_acc': list(per_class or [retain] * NC),
          'per_class_change': [0.0] * NC, 'forget_pred_counts': list(counts or [0] * NC),
          'forget_classes': list(FORGET), 'hparams': {}}


def study(methods, scenarios=('1', '2'), k=2, runs=4):
  """References for every (scenario, model seed) and ``runs`` runs of each method:
  ``methods = {name: (setting, f(scenario, i) -> row kwargs)}``; run i uses model seed i mod k."""
  rows = []
  for s in scenarios:
    for m in range(k):
      rows.append(row('original', 'reference', s, m, None, forget=1.0))
      rows.append(row('retrain', 'reference', s, m, None, counts=RETRAIN_COUNTS[m % 2]))
  for s in scenarios:
    for i in range(runs):
      for name, (setting, f) in methods.items():
        rows.append(row(name, setting, s, i % k, i, **f(s, i)))
  return rows


def const(**kw):
  return lambda s, i: kw


def noisy(retain, scale=1.0, **kw):
  return lambda s, i: dict(retain=retain + scale * NOISE[i], **kw)


def by_number(result, number):
  return next(c for c in result if c['number'] == number)


def entries(claim, part=0):
  return {e['scenario']: e for e in claim['parts'][part]['entries']}


def t_interval(diffs):
  """Independent Student-t interval: mean ± t(0.975, n−1) · sqrt(Σ(d − d̄)² / (n−1)) / √n."""
  n = len(diffs)
  mean = sum(diffs) / n
  sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
  half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
  return mean, mean - half, mean + half


def part(claim, rival):
  """The entries of the comparison against ``rival`` by scenario."""
  p = next(p for p in claim['parts'] if p['entries'][0]['b'] == rival
           or p['entries'][0]['a'] == rival)
  return {e['scenario']: e for e in p['entries']}


def claim1(grogu, gsr, threshold=0.05, spec=claims.Spec()):
  rows = study({'gsr': ('forget', gsr), 'grogu': ('forget', grogu),
                'randlabel': ('forget', const(retain=0.99, forget=0.2)),   # misses threshold
                'delete': ('forget', const(retain=0.80, forget=0.0))})
  return by_number(claims.claims(rows, threshold, spec), 1)


def test_paired_interval_matches_hand_computation():
  diffs = [0.03, 0.01, 0.025, 0.005, 0.02]
  n, mean, lo, hi = claims.paired_interval(diffs)
  assert n == 5
  assert np.allclose((mean, lo, hi), t_interval(diffs))
  assert claims.paired_interval([0.1])[0] == 1 and math.isnan(claims.paired_interval([0.1])[2])
  assert claims.paired_interval([])[0] == 0


def test_p_values_are_scipys_one_sided_tests_and_tost():
  d = np.array([0.03, 0.01, 0.025, -0.005, 0.02, 0.004])
  p = verdicts.p_values(d, 0.02)
  assert p['superior'] == pytest.approx(stats.ttest_1samp(d, 0, alternative='greater').pvalue)
  assert p['inferior'] == pytest.approx(stats.ttest_1samp(d, 0, alternative='less').pvalue)
  tost = max(stats.ttest_1samp(d, -0.02, alternative='greater').pvalue,
             stats.ttest_1samp(d, 0.02, alternative='less').pvalue)
  assert p['equivalent'] == pytest.approx(tost)
  assert all(math.isnan(v) for v in verdicts.p_values([0.1], 0.02).values())
  assert verdicts.p_values([0.01] * 3, 0.02) == {'superior': 0.0, 'inferior': 1.0,
                                                 'equivalent': 0.0}


def test_holm_by_hand():
  assert np.allclose(verdicts.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
  assert np.allclose(verdicts.holm([0.5, 0.001]), [0.5, 0.002])
  got = verdicts.holm([0.02, float('nan'), 0.04])      # nan is no member of the family
  assert np.allclose([got[0], got[2]], [0.04, 0.04]) and math.isnan(got[1])


def test_pairs_needed_is_the_first_n_that_decides():
  d = [0.004, -0.001, 0.003, 0.0, 0.002]
  n_mean, n_sd = np.mean(d), np.std(d, ddof=1)
  need = verdicts.needed(d, 0.001, 0.05)
  n, n_up = need['superior']
  decides = lambda k, sd, effect: stats.t.ppf(0.95, k - 1) * sd / math.sqrt(k) < effect
  assert decides(n, n_sd, n_mean) and not decides(n - 1, n_sd, n_mean)
  assert n_up > n and need['inferior'] is None
  assert need['equivalent'] is None          # the mean lies outside the margin
  tiny = verdicts.needed([1e-9, -1e-3, 1e-3, 2e-9], 0.001, 0.05)['superior']
  assert tiny == (verdicts.MAX_PAIRS + 1, verdicts.MAX_PAIRS + 1)   # capped, not overflowed
  assert 'beyond 1,000,000 pairs' in claims_text.needed_text(('superior', *tiny))
  wide = verdicts.needed(d, 0.01, 0.05)['equivalent']
  assert decides(wide[0], n_sd, 0.01 - n_mean) and wide[0] >= len(d)


def test_claim1_holds_against_every_named_rival_with_hand_interval():
  c = claim1(noisy(0.92), noisy(0.90, 0.5))
  assert c['verdict'] == 'holds' and c['verdicts'] == {'1': 'holds', '2': 'holds',
                                                       'pooled': 'holds'}
  # Every named rival in the rows, in config order; none is chosen on the runs.
  assert [p['entries'][0]['b'] for p in c['parts']] == ['randlabel', 'delete', 'gsr']
  assert part(c, 'randlabel')['1']['rule'] == 'only a meets the forget threshold'
  e = part(c, 'gsr')
  expected = [0.92 + NOISE[i] - (0.90 + 0.5 * NOISE[i]) for i in range(4)]
  assert np.allclose(e['1']['diffs'], expected)
  assert np.allclose((e['1']['diff'], e['1']['lo'], e['1']['hi']), t_interval(expected))
  assert np.allclose((e['pooled']['diff'], e['pooled']['lo'], e['pooled']['hi']),
                     t_interval(expected * 2))
  assert e['pooled']['n_pairs'] == 8 and e['1']['n_pairs'] == 4
  assert e['1']['forget_a'] == 0.0 and e['1']['forget_b'] == 0.0
  # The claim's p-value is its weakest comparison's (only claim 1 is evaluated: no Holm).
  assert c['p']['pooled']['superior'] == max(
      p['entries'][-1]['p']['superior'] for p in c['parts'])
  assert c['p_adjusted']['pooled'] == c['p']['pooled']


@pytest.mark.parametrize('grogu, gsr, expected', [
    (noisy(0.88), noisy(0.90, 0.5), 'does not hold'),
    (noisy(0.90), const(retain=0.90), 'inconclusive'),
    # the claimed method misses the threshold where the rival meets it
    (noisy(0.95, forget=0.1), noisy(0.90, 0.5), 'does not hold'),
])
def test_claim1_other_verdicts(grogu, gsr, expected):
  c = claim1(grogu, gsr)
  assert c['verdict'] == expected
  assert all(v == expected for v in c['verdicts'].values())
  if expected == 'inconclusive':   # grogu = gsr on average: no number of pairs decides it
    assert c['needed']['pooled'] is None


def test_a_better_unnamed_method_is_no_rival_and_equivalence():
  only_delete = claims.Spec(grogu_rivals=('delete',))
  c = claim1(noisy(0.92), const(retain=0.99), spec=only_delete)   # gsr better, but unnamed
  assert [p['entries'][0]['b'] for p in c['parts']] == ['delete'] and c['verdict'] == 'holds'
  # 0.5 points apart at most, the mean 0.05 points below: equivalent, although below 0.
  rows = study({'grogu': ('forget', noisy(0.900, 0.1)), 'gsr': ('forget', const(retain=0.9005))})
  c = by_number(claims.claims(rows, 0.05, claims.Spec(grogu_rivals=('gsr', 'salun'))), 1)
  assert c['verdict'] == 'equivalent' and c['rivals_missing'] == ['salun']
  text = claims_text.claims_markdown(rows, 0.05, 'Eq', claims.Spec(grogu_rivals=('gsr', 'salun')))
  assert 'not in the rows: salun' in text


def test_holm_runs_across_the_claims():
  rows = _full_study()
  result = claims.claims(rows, 0.0)
  done = [c for c in result if c['parts']]
  for kind in verdicts.KINDS:
    assert np.allclose([c['p_adjusted']['pooled'][kind] for c in done],
                       verdicts.holm([c['p']['pooled'][kind] for c in done]))
  per = [(c, s) for c in done for s in c['p'] if s != 'pooled']
  assert np.allclose([c['p_adjusted'][s]['superior'] for c, s in per],
                     verdicts.holm([c['p'][s]['superior'] for c, s in per]))


def test_claim1_threshold_rule():
  rows = study({'grogu': ('forget', noisy(0.85)),
                'gsr': ('forget', const(retain=0.95, forget=0.2))})
  c = by_number(claims.claims(rows, 0.05), 1)    # only grogu meets the threshold
  assert c['verdict'] == 'holds' and part(c, 'gsr')['1']['rule']
  rows = study({'grogu': ('forget', noisy(0.95, forget=0.3)),
                'gsr': ('forget', const(retain=0.90, forget=0.2))})
  c = by_number(claims.claims(rows, 0.05), 1)    # neither meets it: no holds
  assert c['verdict'] == 'inconclusive' and 'neither' in part(c, 'gsr')['pooled']['rule']
  assert c['needed']['pooled'] is None


def test_relevant_and_general_classes():
  counts = RETRAIN_COUNTS[0]          # 12 + 10 = 22 ≥ 0.8 · 27 (retain classes)
  assert claims.relevant_classes(counts, [3]) == [2, 9]
  assert claims.general_classes(counts, [3]) == [0, 1, 4, 5, 6, 7, 8]
  assert claims.relevant_classes([0, 5, 5, 5, 5, 0, 0, 0, 0, 0], [0]) == [1, 2, 3]  # at most 3
  assert claims.relevant_classes([50, 3, 7, 0, 0, 0, 0, 0, 0, 0], [0]) == [1, 2]   # not forget
  assert claims.relevant_classes([0, 9, 1, 0, 0, 0, 0, 0, 0, 0], [0]) == [1]       # 90 %
  assert claims.relevant_classes([0] * NC, [0]) == []


def _per_class(relevant_acc, general_acc):
  def f(s, i):
    rel = claims.relevant_classes(RETRAIN_COUNTS[i % 2], FORGET)
    return {'per_class': [relevant_acc + NOISE[i] if k in rel else general_acc - NOISE[i]
                          for k in range(NC)]}
  return f


def test_claim2_uses_each_retrain_models_relevant_classes():
  rows = study({'ghr': ('forget', _per_class(0.95, 0.85)), 'gsr': ('forget', _per_class(0.9, 0.9))})
  c = by_number(claims.claims(rows, 0.0), 2)
  assert c['verdict'] == 'holds'
  rel, gen = entries(c, 0), entries(c, 1)
  assert rel['1']['a'] == 'ghr' and gen['1']['a'] == 'gsr'
  ghr = [r for r in rows if r['method'] == 'ghr' and r['scenario'] == '1']
  by_hand = [np.mean([r['per_class_acc'][k] for k in ([2, 9] if r['model_seed'] == 0 else [8])])
             for r in ghr]
  assert np.allclose(rel['1']['mean_a'], np.mean(by_hand))
  assert np.allclose(rel['1']['diffs'], [0.05] * 4) and np.allclose(gen['1']['diffs'], [0.05] * 4)
  swapped = study({'ghr': ('forget', _per_class(0.85, 0.85)),
                   'gsr': ('forget', _per_class(0.9, 0.9))})
  c = by_number(claims.claims(swapped, 0.0), 2)
  assert c['verdicts'] == {'1': 'does not hold', '2': 'does not hold',
                           'pooled': 'does not hold'}


def test_claim3_names_its_cure_method_and_rivals():
  rows = study({'ghr_descent': ('retain', noisy(0.99)),            # better, but not claimed
                'grogu_descent': ('retain', noisy(0.95)),
                'scrub': ('retain', noisy(0.93, 0.5)),
                'lur': ('retain', const(retain=0.99, forget=0.3))})   # misses the threshold
  c = by_number(claims.claims(rows, 0.05), 3)
  assert [p['entries'][0]['b'] for p in c['parts']] == ['scrub', 'lur']
  assert c['verdict'] == 'holds' and 'grogu_descent' in c['title']
  assert np.allclose(part(c, 'scrub')['2']['diffs'], [0.02 + 0.5 * x for x in NOISE])
  c = by_number(claims.claims(rows, 0.05, claims.Spec(cure_with_retain='ghr_descent')), 3)
  assert [p['entries'][0]['b'] for p in c['parts']] == ['scrub', 'lur']


def _counts(extra):
  def f(s, i):
    counts = list(RETRAIN_COUNTS[i % 2])
    counts[0] += extra * (i + 1)
    return {'counts': counts}
  return f


def test_claim4_tv_distance():
  assert claims.tv_distance([1, 1, 0], [0, 2, 0]) == pytest.approx(0.5)
  assert claims.tv_distance([3, 0], [0, 5]) == pytest.approx(1.0)
  rows = study({'grogu': ('forget', _counts(0)), 'ghr': ('forget', _counts(2)),
                'gsr': ('forget', _counts(1))})
  c = by_number(claims.claims(rows, 0.0), 4)
  assert c['verdict'] == 'holds'
  ghr = entries(c, 0)
  p = np.array(RETRAIN_COUNTS[0], float)
  q = p.copy()
  q[0] += 2
  by_hand = 0.5 * np.abs(q / q.sum() - p / p.sum()).sum()     # run 0: model seed 0
  assert ghr['1']['diffs'][0] == pytest.approx(by_hand) and ghr['1']['mean_b'] == 0.0
  rows = study({'grogu': ('forget', _counts(2)), 'ghr': ('forget', _counts(0)),
                'gsr': ('forget', _counts(0))})
  assert by_number(claims.claims(rows, 0.0), 4)['verdict'] == 'does not hold'


def test_unpaired_and_diverged_runs_are_excluded():
  rows = study({'ghr': ('forget', _per_class(0.95, 0.85)), 'gsr': ('forget', _per_class(0.9, 0.9))})
  for r in rows:
    if r['scenario'] == '1' and r['method'] == 'ghr' and r['seed'] == 1:
      r.update(status='diverged', per_class_acc=[float('nan')] * NC)
  rows = [r for r in rows if not (r['scenario'] == '1' and r['method'] == 'gsr'
                                  and r['seed'] == 2)]
  rows.append(row('gsr', 'forget', '1', 1, 7))        # no ghr partner
  e = entries(by_number(claims.claims(rows, 0.0), 2))
  assert e['1']['n_pairs'] == 2 and e['1']['n_excluded'] == 3
  assert e['2']['n_pairs'] == 4 and e['pooled']['n_pairs'] == 6
  assert np.allclose(e['1']['diffs'], [0.05, 0.05])


def test_missing_methods_are_not_evaluated():
  rows = study({'ghr': ('forget', noisy(0.9)), 'gsr': ('forget', noisy(0.9))})
  result = claims.claims(rows, 0.0)
  assert by_number(result, 1)['verdict'] == 'not evaluated (method grogu not in the rows)'
  assert by_number(result, 4)['verdict'] == 'not evaluated (method grogu not in the rows)'
  assert by_number(result, 3)['verdict'].startswith('not evaluated')
  assert by_number(result, 2)['verdict'] in ('holds', 'does not hold', 'equivalent',
                                             'inconclusive')
  text = claims_text.claims_markdown(rows, 0.0, 'Partial')
  assert 'not evaluated (method grogu not in the rows)' in text


def _full_study():
  return study({'gsr': ('forget', lambda s, i: dict(retain=0.90 + 0.5 * NOISE[i],
                                                    **_per_class(0.9, 0.9)(s, i),
                                                    **_counts(1)(s, i))),
                'ghr': ('forget', lambda s, i: dict(retain=0.90, **_per_class(0.95, 0.85)(s, i),
                                                    **_counts(0)(s, i))),
                'grogu': ('forget', lambda s, i: dict(retain=0.92 + NOISE[i], **_counts(2)(s, i))),
                'grogu_descent': ('retain', noisy(0.903, 3.0)),
                'scrub': ('retain', const(retain=0.90))})


def test_markdown_has_every_claim_and_verdict():
  rows = _full_study()
  result = claims.claims(rows, 0.0)
  assert [c['verdict'] for c in result] == ['holds', 'holds', 'inconclusive', 'does not hold']
  text = claims_text.claims_markdown(rows, 0.0, 'Claims: test')
  assert text.startswith('# Claims: test\n')
  sections = text.split('\n## ')
  for c in result:
    section = next(s for s in sections if s.startswith(f'Claim {c["number"]}: {c["title"]}'))
    assert f'Verdict: **{c["verdict"]}**' in section
    for p in c['parts']:
      assert p['label'] in section
      for e in p['entries']:
        assert f'| {e["scenario"]} | {e["a"]} | {e["b"]} |' in section
        assert f'{e["n_pairs"]} ({e["n_excluded"]})' in section
  assert 'Would be decided:' in next(s for s in sections if s.startswith('Claim 3'))
  assert '## How this is computed' in text and 'Relevant classes' in text and 'Holm' in text
  assert text == claims_text.claims_markdown(rows, 0.0, 'Claims: test')    # deterministic


def test_runs_on_the_published_digits_rows():
  with open(DOCS) as f:
    data = json.load(f)
  threshold = data['meta']['config']['reproduce']['forget_threshold']
  text = claims_text.claims_markdown(data['rows'], threshold, 'Claims: digits')
  for n in (1, 2, 3, 4):
    assert f'## Claim {n}:' in text
  for c in claims.claims(data['rows'], threshold):
    assert c['verdict'] in ('holds', 'does not hold', 'equivalent', 'inconclusive')


def test_forest_plot_draws_every_evaluated_claim(tmp_path):
  rows = _full_study()
  path = forest.plot_claims(claims.claims(rows, 0.0), str(tmp_path / 'f.png'), 'test')
  assert open(path, 'rb').read(4) == b'\x89PNG'
  lines = forest._lines(by_number(claims.claims(rows, 0.0), 4))  # pylint: disable=protected-access
  assert [l[0] for l in lines[:3]] == ['ghr − grogu', '    scenario 1', '    scenario 2']
  assert lines[0][4] and not lines[1][4]
  only = study({'ghr': ('forget', noisy(0.9))})
  assert forest.plot_claims(claims.claims(only, 0.0), str(tmp_path / 'g.png'), 't') is None
