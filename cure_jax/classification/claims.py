"""The paper's claims, tested from result rows (results.json's ``rows``) with paired runs.

Runs of two methods with the same ``(scenario, model_seed, seed)`` start from the same original
model and are compared with the same retrain model, so they pair. Every comparison is a paired
difference ``d_i = v(run_a,i) − v(run_b,i)`` over the pairs where both runs have status 'ok'
(and the value exists), oriented so that the claim says ``d > 0``; its mean ``d̄`` and the 95 %
Student-t interval ``d̄ ± t_{0.975, n−1} · s / √n`` (``s``: the sample standard deviation of
the ``d_i``, ddof 1), per scenario and pooled over scenarios (all pairs together).

Verdict: 'holds' when the interval lies above 0, 'does not hold' when it lies below 0,
otherwise (or with fewer than 2 pairs) 'inconclusive'. Claims 1 and 3 also apply the table
rule (``tables.best_methods``: mean forget acc ≤ threshold, no diverged run): 'holds' needs
the claimed method to meet it in every scenario; the claimed method missing it where its rival
meets it is 'does not hold'; the claimed method alone meeting it (in every scenario) is 'holds'.
A claim whose methods are not in the rows is 'not evaluated (method X not in the rows)'.

1. GROGU (``grogu``) against the best other forget-data-only method (the table rule), on
   retain acc.
2. GHR preserves the relevant retain classes better, GSR the general ones: relevant classes
   (``relevant_classes``) are the retrain model's top classes for the forget-class test images,
   general ones the other retain classes; ``v`` = the run's mean ``per_class_acc`` over them;
   ghr − gsr on relevant, gsr − ghr on general.
3. The best CURE ``_descent`` method against the best non-CURE method with retain data (the
   table rule, setting 'retain'), on retain acc.
4. GROGU is closer to the retrain model's prediction pattern: ``v`` = the total-variation
   distance ``TV(p, q) = ½ Σ_k |p_k − q_k|`` between the run's normalised
   ``forget_pred_counts`` and its retrain model's; ghr − grogu and gsr − grogu.
"""
import numpy as np
from scipy import stats

from cure_jax.classification import tables

CURE = ('ghr', 'gsr', 'grogu', 'grogu_t1')
CURE_DESCENT = tuple(f'{m}_descent' for m in CURE)
LEVEL = 0.95
RELEVANT_COVER = 0.8   # the relevant classes cover at least this share of the forget images
RELEVANT_MAX = 3       # ... with at most this many classes
HOLDS, FAILS, INCONCLUSIVE = 'holds', 'does not hold', 'inconclusive'
NOT_EVALUATED = 'not evaluated'
HOW = (f'Runs pair by (scenario, model_seed, seed): they share the original model and the '
       f'retrain model. Only pairs where both runs have status ok enter. Per comparison a − b: '
       f'the mean paired difference d̄ and the {LEVEL:.0%} Student-t interval '
       f'd̄ ± t(0.975, n−1)·s/√n '
       f'(s: sample std of the differences); pooled = all pairs of all scenarios together. '
       f'Verdict: holds when the interval lies above 0 (claims 1 and 3: and the claimed method '
       f'meets the forget threshold, mean forget acc ≤ threshold with no diverged run, as the '
       f'table rule requires; if it alone meets it, it holds; if it misses it where the rival '
       f'meets it, it does not hold), does not hold when it lies below 0, otherwise '
       f'inconclusive. Claim 2: the relevant classes of a retrain model are its most predicted '
       f'retain classes for the forget-class test images, sorted by count, the fewest covering '
       f'≥ {RELEVANT_COVER:.0%} of those images, at most {RELEVANT_MAX} (never a class it does '
       f'not predict); general = the other retain classes; per run the mean per-class test '
       f'accuracy over each set. Claim 4: TV = ½ Σ_k |p_k − q_k| between the run\'s and its '
       f'retrain model\'s normalised prediction counts of the forget-class test images. The '
       f'rivals of claims 1 and 3 are chosen on the same runs (no correction for that choice), '
       f'and pooled pairs are treated as independent although runs share model seeds.')


def paired_interval(diffs, level=LEVEL):
  """``(n, mean, lo, hi)`` of paired differences: ``d̄ ± t_{(1+level)/2, n−1} · s/√n``.

  ``s`` is the sample standard deviation (ddof 1); with n < 2 the bounds are nan.
  """
  d = np.asarray(diffs, float)
  if d.size == 0:
    return 0, float('nan'), float('nan'), float('nan')
  mean = float(d.mean())
  if d.size < 2:
    return 1, mean, float('nan'), float('nan')
  half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
  return int(d.size), mean, mean - half, mean + half


def relevant_classes(counts, forget_classes, cover=RELEVANT_COVER, max_classes=RELEVANT_MAX):
  """The retrain model's top retain classes for the forget images: retain classes by count
  (descending, ties by class index), the shortest prefix whose count reaches ``cover`` × the
  retain-class total, cut to ``max_classes``; zero counts never count. Empty if no count."""
  forget = set(forget_classes)
  order = sorted((k for k in range(len(counts)) if k not in forget and counts[k] > 0),
                 key=lambda k: (-counts[k], k))
  total = sum(counts[k] for k in order)
  chosen, covered = [], 0
  for k in order[:max_classes]:
    if covered >= cover * total - 1e-12:
      break
    chosen.append(k)
    covered += counts[k]
  return sorted(chosen)


def general_classes(counts, forget_classes):
  """The retain classes that are not relevant (``relevant_classes``)."""
  relevant = set(relevant_classes(counts, forget_classes)) | set(forget_classes)
  return [k for k in range(len(counts)) if k not in relevant]


def class_mean(run, classes):
  """Mean ``per_class_acc`` of ``run`` over ``classes`` (nan if none has a value)."""
  acc = np.array([np.nan if run['per_class_acc'][k] is None else run['per_class_acc'][k]
                  for k in classes], float)
  return float(np.nanmean(acc)) if np.isfinite(acc).any() else float('nan')


def tv_distance(counts, reference_counts):
  """``½ Σ_k |p_k − q_k|`` between the normalised counts (nan if either total is 0)."""
  p, q = np.asarray(counts, float), np.asarray(reference_counts, float)
  if p.sum() <= 0 or q.sum() <= 0:
    return float('nan')
  return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def _scenarios(rows):
  return list(dict.fromkeys(r['scenario'] for r in rows))


def _retrain(rows):
  """``{(scenario, model_seed): the retrain reference row}`` (status ok, first row)."""
  out = {}
  for r in rows:
    if r.get('setting') == 'reference' and r['method'] == 'retrain' and r.get('status') == 'ok':
      out.setdefault((r['scenario'], r['model_seed']), r)
  return out


def _value(value, run, retrain):
  try:
    v = value(run, retrain.get((run['scenario'], run['model_seed'])))
  except (KeyError, TypeError, IndexError):
    return float('nan')
  return float('nan') if v is None else float(v)


def paired_differences(rows, scenario, a, b, value):
  """``(diffs, values_a, values_b, n_excluded)`` in row order: ``value(run, retrain row)`` of
  ``a`` minus that of ``b`` over the (model_seed, seed) keys of ``scenario`` where both runs
  have status ok and both values are finite; n_excluded counts the other keys of either."""
  runs = {m: {} for m in (a, b)}
  for r in rows:
    if r['scenario'] == scenario and r['method'] in runs:
      runs[r['method']].setdefault((r['model_seed'], r['seed']), r)
  retrain = _retrain(rows)
  keys = list(dict.fromkeys([*runs[a], *runs[b]]))
  va, vb = [], []
  for key in keys:
    ra, rb = runs[a].get(key), runs[b].get(key)
    if ra and rb and ra.get('status') == 'ok' and rb.get('status') == 'ok':
      x, y = _value(value, ra, retrain), _value(value, rb, retrain)
      if np.isfinite(x) and np.isfinite(y):
        va.append(x)
        vb.append(y)
  diffs = [x - y for x, y in zip(va, vb)]
  return diffs, va, vb, len(keys) - len(diffs)


def verdict(lo, hi, flags=()):
  """``(verdict, reason)`` from the interval; ``flags``: per scenario (claimed method meets the
  forget threshold, rival meets it) for the table-rule claims (1 and 3)."""
  if any(not a and b for a, b in flags):
    return FAILS, 'the claimed method misses the forget threshold where its rival meets it'
  if flags and all(a and not b for a, b in flags):
    return HOLDS, 'only the claimed method meets the forget threshold'
  if np.isfinite(lo) and lo > 0:
    if all(a for a, _ in flags):
      return HOLDS, 'interval above 0'
    return INCONCLUSIVE, 'interval above 0, but the claimed method misses the forget threshold'
  if np.isfinite(hi) and hi < 0:
    return FAILS, 'interval below 0'
  return INCONCLUSIVE, ('interval contains 0' if np.isfinite(lo) else 'fewer than 2 pairs')


def _entry(scenario, a, b, diffs, va, vb, excluded, flags, forget=None):
  n, mean, lo, hi = paired_interval(diffs)
  v, reason = verdict(lo, hi, flags)
  out = {'scenario': scenario, 'a': a, 'b': b, 'n_pairs': n, 'n_excluded': excluded,
         'mean_a': float(np.mean(va)) if va else float('nan'),
         'mean_b': float(np.mean(vb)) if vb else float('nan'),
         'diff': mean, 'lo': lo, 'hi': hi, 'diffs': list(diffs), 'verdict': v, 'reason': reason}
  if forget is not None:
    out['forget_a'], out['forget_b'] = forget
  return out


def _part(rows, label, pick, value, threshold_rule=False):
  """One comparison ``label`` per scenario and pooled. ``pick(scenario) -> (a, b)``;
  with ``threshold_rule`` also ``(a meets, b meets)`` and the mean forget accs of a and b."""
  entries, pooled, flags, forgets = [], ([], [], [], 0), [], []
  for s in _scenarios(rows):
    a, b, *rule = pick(s)
    if a is None or b is None:
      entries.append({'scenario': s, 'a': a, 'b': b, 'n_pairs': 0, 'verdict': NOT_EVALUATED,
                      'reason': f'no {"claimed" if a is None else "rival"} method in scenario {s}'})
      continue
    diffs, va, vb, excluded = paired_differences(rows, s, a, b, value)
    flag = [rule[0]] if threshold_rule else []
    forget = rule[1] if threshold_rule else None
    entries.append(_entry(s, a, b, diffs, va, vb, excluded, flag, forget))
    pooled = (pooled[0] + diffs, pooled[1] + va, pooled[2] + vb, pooled[3] + excluded)
    flags += flag
    forgets += [forget] if forget else []
  done = [e for e in entries if e['verdict'] != NOT_EVALUATED]
  names = [', '.join(dict.fromkeys(e[k] for e in done)) for k in ('a', 'b')]
  forget = tuple(float(np.mean(x)) for x in zip(*forgets)) if forgets else None
  if done:
    entries.append(_entry('pooled', *names, *pooled, flags, forget))
  else:
    entries.append({'scenario': 'pooled', 'a': None, 'b': None, 'n_pairs': 0,
                    'verdict': NOT_EVALUATED, 'reason': 'no scenario evaluated'})
  return {'label': label, 'entries': entries}


def _pick_best(rows, scenario, methods, threshold):
  """``(method, meets, mean forget acc)``: the table rule's best of ``methods`` in
  ``scenario``; if none is eligible, the lowest mean forget acc, then the highest retain acc."""
  sub = [r for r in rows if r['scenario'] == scenario and r['method'] in methods]
  forget, retain = tables.summarize(sub, 'forget_acc'), tables.summarize(sub, 'retain_acc')
  best = list(tables.best_methods(sub, threshold).values())
  if best:
    return best[0], True, forget[(scenario, best[0])][0]
  ranked = sorted((f[0], -retain.get(k, (0.0,))[0], k[1]) for k, f in forget.items())
  return (ranked[0][2], False, ranked[0][0]) if ranked else (None, False, float('nan'))


def _best_vs_best(rows, label, group_a, group_b, threshold):
  """A part for claims 1/3: the table rule's best of ``group_a`` − best of ``group_b``,
  retain acc."""
  def pick(s):
    a, a_ok, fa = _pick_best(rows, s, group_a, threshold)
    b, b_ok, fb = _pick_best(rows, s, group_b, threshold)
    return a, b, (a_ok, b_ok), (fa, fb)
  return _part(rows, label, pick, lambda run, _: run['retain_acc'], threshold_rule=True)


def _combine(verdicts):
  if not verdicts or NOT_EVALUATED in verdicts:
    return NOT_EVALUATED
  if FAILS in verdicts:
    return FAILS
  return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def _claim(number, title, parts, missing=None):
  """The claim's dict: verdict per scenario and pooled (all parts must hold)."""
  if missing:
    v = f'{NOT_EVALUATED} ({missing})'
    return {'number': number, 'title': title, 'parts': [], 'verdict': v, 'verdicts': {}}
  scenarios = [e['scenario'] for e in parts[0]['entries']]
  verdicts = {s: _combine([e['verdict'] for p in parts for e in p['entries']
                           if e['scenario'] == s]) for s in scenarios}
  return {'number': number, 'title': title, 'parts': parts, 'verdict': verdicts['pooled'],
          'verdicts': verdicts}


def _missing(methods, required):
  gone = [m for m in required if m not in methods]
  return f'method {", ".join(gone)} not in the rows' if gone else None


def claims(rows, threshold):
  """The four claims (module docstring), each ``{'number', 'title', 'verdict' (pooled),
  'verdicts' {scenario or 'pooled': verdict}, 'parts': [{'label', 'entries'}]}``."""
  settings = {r['method']: r.get('setting') for r in rows}
  methods = set(settings) - {'original'}
  forget_only = [m for m in settings if settings[m] == 'forget']
  cure_retain = [m for m in CURE_DESCENT if settings.get(m) == 'retain']
  other_retain = [m for m in settings if settings[m] == 'retain' and m not in CURE_DESCENT]
  out = []
  others = [m for m in forget_only if m != 'grogu']
  miss = _missing(methods, ['grogu']) or (None if others else 'no other forget-data-only method')
  parts = [] if miss else [_best_vs_best(rows, 'retain acc: grogu − best other', ['grogu'],
                                         others, threshold)]
  out.append(_claim(1, 'GROGU is the best forget-data-only method', parts, miss))

  miss = _missing(methods, ['ghr', 'gsr', 'retrain'])
  relevant = lambda run, ref: class_mean(run, relevant_classes(
      ref['forget_pred_counts'], run['forget_classes']))
  general = lambda run, ref: class_mean(run, general_classes(
      ref['forget_pred_counts'], run['forget_classes']))
  parts = [] if miss else [
      _part(rows, 'relevant classes: ghr − gsr', lambda s: ('ghr', 'gsr'), relevant),
      _part(rows, 'general classes: gsr − ghr', lambda s: ('gsr', 'ghr'), general)]
  out.append(_claim(2, 'GHR preserves the relevant retain classes better, GSR the general ones',
                    parts, miss))

  miss = (None if cure_retain else 'no CURE _descent method in the rows') or (
      None if other_retain else 'no non-CURE method with retain data in the rows')
  parts = [] if miss else [_best_vs_best(rows, 'retain acc: best CURE _descent − best non-CURE',
                                         cure_retain, other_retain, threshold)]
  out.append(_claim(3, 'A CURE method is best with retain data', parts, miss))

  miss = _missing(methods, ['grogu', 'ghr', 'gsr', 'retrain'])
  tv = lambda run, ref: tv_distance(run['forget_pred_counts'], ref['forget_pred_counts'])
  parts = [] if miss else [_part(rows, f'TV to retrain: {m} − grogu', lambda s, m=m: (m, 'grogu'),
                                 tv) for m in ('ghr', 'gsr')]
  out.append(_claim(4, "GROGU is closer to the retrain model's prediction pattern", parts, miss))
  return out


def _fmt(x, digits=3):
  return '–' if x is None or not np.isfinite(x) else f'{x:.{digits}f}'


def _part_table(part):
  rule = any('forget_a' in e for e in part['entries'])
  head = ['Scenario', 'a', 'b'] + (['a forget', 'b forget'] if rule else [])
  head += ['mean a', 'mean b', 'a − b', '95 % CI', 'Pairs (excluded)', 'Verdict']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for e in part['entries']:
    cells = [str(e['scenario']), str(e['a'] or '–'), str(e['b'] or '–')]
    if rule:
      cells += [_fmt(e.get('forget_a')), _fmt(e.get('forget_b'))]
    ci = f'[{_fmt(e.get("lo"), 4)}, {_fmt(e.get("hi"), 4)}]'
    cells += [_fmt(e.get('mean_a')), _fmt(e.get('mean_b')), _fmt(e.get('diff'), 4), ci,
              f'{e["n_pairs"]} ({e.get("n_excluded", 0)})', f'{e["verdict"]} ({e["reason"]})']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _relevant_note(rows):
  """Per scenario: the relevant classes of each retrain model (claim 2)."""
  lines = []
  for s in _scenarios(rows):
    refs = sorted(((m, r) for (sc, m), r in _retrain(rows).items() if sc == s), key=repr)
    sets = [f'{m}: {relevant_classes(r["forget_pred_counts"], r["forget_classes"])}'
            for m, r in refs if r.get('forget_pred_counts') is not None]
    if sets:
      lines.append(f'- scenario {s} (model seed: relevant classes): ' + '; '.join(sets))
  return '\n'.join(lines)


def claims_markdown(rows, threshold, title):
  """The claims as a markdown document: a summary, one section per claim, how it is computed."""
  result = claims(rows, threshold)
  parts = [f'# {title}', '', f'Forget threshold (claims 1 and 3): mean forget acc ≤ '
           f'{threshold}. Every comparison a − b is claimed > 0.', '',
           '| Claim | Verdict (pooled) | Per scenario |', '|---|---|---|']
  for c in result:
    per = '; '.join(f'{s}: {v}' for s, v in c['verdicts'].items() if s != 'pooled')
    parts.append(f'| {c["number"]}. {c["title"]} | {c["verdict"]} | {per or "–"} |')
  for c in result:
    parts += ['', f'## Claim {c["number"]}: {c["title"]}', '', f'Verdict: **{c["verdict"]}**'
              + (' (pooled over scenarios)' if c['parts'] else '')]
    for p in c['parts']:
      pooled = p['entries'][-1]
      parts += ['', f'### {p["label"]}: {pooled["verdict"]} (pooled, {pooled["n_pairs"]} '
                'pairs)', '', _part_table(p)]
    if c['number'] == 2 and c['parts']:
      parts += ['', 'Relevant classes (the retrain model\'s top classes for the forget images):',
                '', _relevant_note(rows)]
  parts += ['', '## How this is computed', '', HOW, '']
  return '\n'.join(parts)
