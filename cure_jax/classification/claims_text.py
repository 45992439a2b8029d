"""The paper's claims as markdown (claims.md): a summary, one section per claim and how each
number is computed (:mod:`cure_jax.classification.claims`)."""
import math

import numpy as np

from cure_jax.classification import claims as claims_lib
from cure_jax.classification import verdicts


def how(spec):
  """How the claims are computed, in words (the end of claims.md)."""
  return (
      'Runs pair by (scenario, model_seed, seed): they share the original model and the '
      'retrain model. Only pairs where both runs have status ok enter. Per comparison a − b '
      '(claimed > 0): the mean paired difference d̄, its 95 % Student-t interval '
      'd̄ ± t(0.975, n−1)·s/√n (s: sample std of the differences) and three one-sided t-tests: '
      f'a > b, a < b, and equivalence within ±margin (two one-sided tests; margin {spec.margin} '
      f'for accuracies, {spec.margin_tv} for claim 4\'s distance). Pooled = all pairs of all '
      'scenarios together (treated as independent although runs share model seeds). The rivals '
      'are fixed in the config (config.claims), not chosen on these runs. A claim holds when '
      'every comparison is a > b (its p-value: the largest), is equivalent when every '
      'comparison is, and does not hold when any comparison is a < b (Bonferroni over them). '
      'Claims 1 and 3 first apply the table rule\'s forget threshold (mean forget acc ≤ '
      'threshold, no diverged run): a rival that misses it while the claimed method meets it '
      'loses that comparison, the claimed method missing it where the rival meets it loses it, '
      'both missing it leaves it undecided. Holm\'s correction at '
      f'α = {spec.alpha} runs across the claims for the pooled verdicts and across every claim × '
      'scenario for the per-scenario ones; the verdict is equivalent (a difference shown to lie '
      'inside the margin is practically none, on either side of 0), holds or does not hold, in '
      'that order, when its Holm-adjusted p-value is ≤ α, otherwise inconclusive, with the '
      'pairs at which the observed mean difference would be decided at the family\'s strictest '
      'level α/m: with the observed spread s and with its upper 95 % bound. Claim 2: the '
      'relevant classes of a retrain model are its most predicted retain classes for the '
      f'forget-class test images, sorted by count, the fewest covering ≥ '
      f'{claims_lib.RELEVANT_COVER:.0%} of those images, at most {claims_lib.RELEVANT_MAX} '
      '(never a class it does not predict); general = the other retain classes; per run the '
      'mean per-class test accuracy over each set. Claim 4: TV = ½ Σ_k |p_k − q_k| between '
      'the run\'s and its retrain model\'s normalised prediction counts of the forget-class test '
      'images.')


def _fmt(x, digits=3):
  return '–' if x is None or not np.isfinite(x) else f'{x:.{digits}f}'


def _p(x):
  if x is None or not np.isfinite(x):
    return '–'
  return '< 0.0001' if x < 1e-4 else f'{x:.4f}'


def _part_table(part):
  rule = any('forget_a' in e for e in part['entries'])
  head = ['Scenario', 'a', 'b'] + (['a forget', 'b forget'] if rule else [])
  head += ['mean a', 'mean b', 'a − b', '95 % CI', 'p (a > b)', 'p (a < b)',
           f'p (within ±{part["margin"]})', 'Pairs (excluded)'] + (['Forget rule'] if rule else [])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for e in part['entries']:
    cells = [str(e['scenario']), e['a'], e['b']]
    if rule:
      cells += [_fmt(e.get('forget_a')), _fmt(e.get('forget_b'))]
    p = e['p']
    cells += [_fmt(e['mean_a']), _fmt(e['mean_b']), _fmt(e['diff'], 4),
              f'[{_fmt(e["lo"], 4)}, {_fmt(e["hi"], 4)}]', _p(p[verdicts.SUPERIOR]),
              _p(p[verdicts.INFERIOR]), _p(p[verdicts.EQUIVALENT]),
              f'{e["n_pairs"]} ({e["n_excluded"]})'] + ([e['rule'] or '–'] if rule else [])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def needed_text(needed, scenarios=1):
  """'n pairs (n_upper at the spread's upper bound)' and, pooled, the runs per scenario."""
  if not needed:
    return 'no number of pairs decides it at the observed mean'
  kind, n, n_up = needed
  what = {'superior': 'holds', 'inferior': 'does not hold', 'equivalent': 'equivalent'}[kind]
  if n > verdicts.MAX_PAIRS:
    return f'{what} only beyond {verdicts.MAX_PAIRS:,} pairs at the observed mean'
  if n_up > verdicts.MAX_PAIRS:
    return (f'{what} at {n} pairs (beyond {verdicts.MAX_PAIRS:,} at the spread\'s upper '
            'bound)')
  per = (f'; ≈ {math.ceil(n / scenarios)} ({math.ceil(n_up / scenarios)}) runs per scenario'
         if scenarios > 1 else '')
  return f'{what} at {n} pairs ({n_up} at the spread\'s upper bound){per}'


def _verdict_cell(c, s, scenarios):
  v = c['verdicts'][s]
  if v == claims_lib.INCONCLUSIVE:
    return f'{v}: {needed_text(c["needed"].get(s), scenarios)}'
  return v


def _adjusted(c):
  adj = c['p_adjusted']['pooled']
  return ' / '.join(_p(adj[k]) for k in verdicts.KINDS)


def _relevant_note(rows):
  """Per scenario: the relevant classes of each retrain model (claim 2)."""
  lines = []
  retrain = claims_lib._retrain(rows)  # pylint: disable=protected-access
  for s in dict.fromkeys(r['scenario'] for r in rows):
    refs = sorted(((m, r) for (sc, m), r in retrain.items() if sc == s), key=repr)
    sets = [f'{m}: {claims_lib.relevant_classes(r["forget_pred_counts"], r["forget_classes"])}'
            for m, r in refs if r.get('forget_pred_counts') is not None]
    if sets:
      lines.append(f'- scenario {s} (model seed: relevant classes): ' + '; '.join(sets))
  return '\n'.join(lines)


def claims_markdown(rows, threshold, title, spec=claims_lib.Spec(), forest=None, result=None):
  """The claims as a markdown document: a summary, one section per claim, how it is computed;
  ``forest``: the file name of their forest plot (:mod:`cure_jax.classification.forest`),
  linked under the summary; ``result``: ``claims.claims(rows, threshold, spec)`` when the
  caller has it already."""
  if result is None:
    result = claims_lib.claims(rows, threshold, spec)
  n_scen = len(dict.fromkeys(r['scenario'] for r in rows))
  parts = [f'# {title}', '', f'Forget threshold (claims 1 and 3): mean forget acc ≤ '
           f'{threshold}. Every comparison a − b is claimed > 0; Holm at α = {spec.alpha}.', '',
           '| Claim | Verdict (pooled) | Holm-adjusted p: holds / does not hold / equivalent '
           '| Per scenario |', '|---|---|---|---|']
  for c in result:
    if not c['parts']:
      parts.append(f'| {c["number"]}. {c["title"]} | {c["verdict"]} | – | – |')
      continue
    per = '; '.join(f'{s}: {v}' for s, v in c['verdicts'].items() if s != 'pooled')
    parts.append(f'| {c["number"]}. {c["title"]} | {_verdict_cell(c, "pooled", n_scen)} | '
                 f'{_adjusted(c)} | {per} |')
  if forest:
    parts += ['', f'Every comparison\'s paired difference and 95 % interval: [forest plot]'
              f'({forest}) (0 and the equivalence margin marked).']
  for c in result:
    parts += ['', f'## Claim {c["number"]}: {c["title"]}', '', f'Verdict: **{c["verdict"]}**'
              + (' (pooled over scenarios, Holm across the claims)' if c['parts'] else '')]
    if c['parts'] and c['verdict'] == claims_lib.INCONCLUSIVE:
      parts += ['', 'Would be decided: ' + needed_text(c['needed'].get('pooled'), n_scen) + '.']
    undecided = [f'{s}: {needed_text(n)}' for s, n in c.get('needed', {}).items()
                 if s != 'pooled']
    if undecided:
      parts += ['', 'Inconclusive scenarios would be decided (pairs in the scenario): '
                + '; '.join(undecided) + '.']
    if c.get('rivals_missing'):
      parts += ['', 'Rivals named in config.claims but not in the rows: '
                + ', '.join(c['rivals_missing']) + '.']
    for p in c['parts']:
      parts += ['', f'### {p["label"]}', '', _part_table(p)]
    if c['number'] == 2 and c['parts']:
      parts += ['', 'Relevant classes (the retrain model\'s top classes for the forget images):',
                '', _relevant_note(rows)]
  parts += ['', '## How this is computed', '', how(spec), '']
  return '\n'.join(parts)
