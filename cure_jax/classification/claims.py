"""The paper's claims, tested from result rows (results.json's ``rows``) with paired runs,
against rivals fixed before any result.

Runs of two methods with the same ``(scenario, model_seed, seed)`` start from the same original
model and are compared with the same retrain model, so they pair. Every comparison (a *part*)
is a paired difference ``d_i = v(run_a,i) − v(run_b,i)`` over the pairs where both runs have
status 'ok' (and the value exists), oriented so that the claim says ``d > 0``; its mean
``d̄``, the 95 % Student-t interval ``d̄ ± t_{0.975, n−1} · s / √n`` and the one-sided and
equivalence p-values of :mod:`cure_jax.classification.verdicts`, per scenario and pooled over
scenarios (all pairs together).

What each claim compares is fixed in the config (``config.claims``, :class:`Spec`), never
chosen on the rows: claim 1 names GROGU's rivals, claim 3 the CURE method with retain data and
its rivals. A claim holds when every part does (:func:`verdicts.combine`); Holm's correction
runs across the claims (pooled: the claims; per scenario: every claim × scenario), at
``alpha``; 'equivalent' means every part lies within ``±margin`` (accuracies: ``margin``,
claim 4's distance: ``margin_tv``); 'inconclusive' comes with the pairs that would decide it.

Claims 1 and 3 also apply the table rule's forget threshold (mean forget acc ≤ threshold, no
diverged run) before the retain accuracies: a rival that misses it while the claimed method
meets it loses that part; the claimed method missing it where the rival meets it loses the
part the other way; if both miss it, the part cannot decide.

1. GROGU (``grogu``) against each of ``grogu_rivals`` (forget data only), on retain acc.
2. GHR preserves the relevant retain classes better, GSR the general ones: relevant classes
   (``relevant_classes``) are the retrain model's top classes for the forget-class test images,
   general ones the other retain classes; ``v`` = the run's mean ``per_class_acc`` over them;
   ghr − gsr on relevant, gsr − ghr on general.
3. ``cure_with_retain`` (a CURE ``_descent`` method) against each of ``retain_rivals``, on
   retain acc.
4. GROGU is closer to the retrain model's prediction pattern: ``v`` = the total-variation
   distance ``TV(p, q) = ½ Σ_k |p_k − q_k|`` between the run's normalised
   ``forget_pred_counts`` and its retrain model's; ghr − grogu and gsr − grogu.
"""
import dataclasses

import numpy as np
from scipy import stats

from cure_jax.classification import tables, verdicts

CURE = ('ghr', 'gsr', 'grogu', 'grogu_t1')
CURE_DESCENT = tuple(f'{m}_descent' for m in CURE)
# The defaults of config.claims: every other method of the setting in the paper's sweep.
GROGU_RIVALS = ('gradasc', 'randlabel', 'finetune', 'age', 'undial', 'salun', 'delete', 'ghr',
                'gsr', 'grogu_t1')
RETAIN_RIVALS = ('gradasc_descent', 'gradrest_descent', 'age_descent', 'undial_descent',
                 'salun_descent', 'scrub', 'lur', 'lur_randlabel')
LEVEL = 0.95
RELEVANT_COVER = 0.8   # the relevant classes cover at least this share of the forget images
RELEVANT_MAX = 3       # ... with at most this many classes
HOLDS, FAILS, EQUIVALENT, INCONCLUSIVE = 'holds', 'does not hold', 'equivalent', 'inconclusive'
NOT_EVALUATED = 'not evaluated'


@dataclasses.dataclass(frozen=True)
class Spec:
  """What the claims compare and decide with (``config.claims``), fixed before the results."""
  grogu_rivals: tuple = GROGU_RIVALS
  cure_with_retain: str = 'grogu_descent'
  retain_rivals: tuple = RETAIN_RIVALS
  margin: float = 0.005       # accuracies (a fraction): ±0.5 points
  margin_tv: float = 0.02     # claim 4's total-variation distance
  alpha: float = verdicts.ALPHA

  @classmethod
  def from_config(cls, claims_config):
    c = claims_config
    return cls(tuple(c.grogu_rivals), c.cure_with_retain, tuple(c.retain_rivals),
               float(c.margin), float(c.margin_tv), float(c.alpha))


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


def _forget_rule(rows, scenario, method, threshold):
  """``(meets, mean forget acc)`` of ``method`` in ``scenario``: whether it meets the table
  rule's forget threshold (mean forget acc ≤ threshold, no diverged run)."""
  sub = [r for r in rows if r['scenario'] == scenario and r['method'] == method]
  stat = tables.summarize(sub, 'forget_acc').get((scenario, method))
  mean = stat[0] if stat else float('nan')
  diverged = any(r.get('status') == 'diverged' for r in sub)
  return bool(stat) and not diverged and mean <= threshold + 1e-12, mean


def _rule(p, a_meets, b_meets):
  """``(p-values, reason)``: where the forget threshold settles a part, it does so whatever
  the retain accuracies say."""
  if a_meets and not b_meets:
    return {verdicts.SUPERIOR: 0.0, verdicts.INFERIOR: 1.0, verdicts.EQUIVALENT: 1.0}, (
        'only a meets the forget threshold')
  if b_meets and not a_meets:
    return {verdicts.SUPERIOR: 1.0, verdicts.INFERIOR: 0.0, verdicts.EQUIVALENT: 1.0}, (
        'a misses the forget threshold where b meets it')
  if not (a_meets or b_meets):
    return {k: 1.0 for k in verdicts.KINDS}, 'neither meets the forget threshold'
  return p, ''


def _entry(scenario, a, b, diffs, va, vb, excluded, margin, rule=None, forget=None):
  n, mean, lo, hi = paired_interval(diffs)
  p, reason = verdicts.p_values(diffs, margin), ''
  if rule is not None:
    p, reason = _rule(p, *rule)
  out = {'scenario': scenario, 'a': a, 'b': b, 'n_pairs': n, 'n_excluded': excluded,
         'mean_a': float(np.mean(va)) if va else float('nan'),
         'mean_b': float(np.mean(vb)) if vb else float('nan'),
         'diff': mean, 'lo': lo, 'hi': hi, 'diffs': list(diffs), 'p': p, 'rule': reason}
  if forget is not None:
    out['forget_a'], out['forget_b'] = forget
  return out


def _part(rows, label, a, b, value, margin, threshold=None):
  """One comparison a − b per scenario and pooled; with ``threshold`` the forget rule too."""
  entries, pooled, flags = [], ([], [], [], 0), []
  for s in _scenarios(rows):
    diffs, va, vb, excluded = paired_differences(rows, s, a, b, value)
    rule = forget = None
    if threshold is not None:
      (a_meets, a_forget), (b_meets, b_forget) = (_forget_rule(rows, s, m, threshold)
                                                  for m in (a, b))
      rule, forget = (a_meets, b_meets), (a_forget, b_forget)
      flags.append(rule)
    entries.append(_entry(s, a, b, diffs, va, vb, excluded, margin, rule, forget))
    pooled = (pooled[0] + diffs, pooled[1] + va, pooled[2] + vb, pooled[3] + excluded)
  rule = forget = None
  if threshold is not None:
    rule = tuple(all(f[i] for f in flags) for i in (0, 1))
    forget = tuple(float(np.nanmean([e[k] for e in entries])) for k in ('forget_a', 'forget_b'))
  entries.append(_entry('pooled', a, b, *pooled, margin, rule, forget))
  return {'label': label, 'margin': margin, 'entries': entries}


def _part_needed(entry, margin, alpha, k):
  """``{kind: (n, n_upper) or None}`` for one part (:func:`verdicts.needed`); a part the
  forget rule settled needs no pairs for what it settled and cannot reach the rest."""
  if entry['rule']:
    return {kind: (0, 0) if entry['p'][kind] == 0.0 else None for kind in verdicts.KINDS}
  out = verdicts.needed(entry['diffs'], margin, alpha)
  out[verdicts.INFERIOR] = verdicts.needed(entry['diffs'], margin, alpha / k)[verdicts.INFERIOR]
  return out


def _claim_needed(entries, margins, alpha):
  """``(kind, n, n_upper)``: the fewest pairs (pooled: over all scenarios) at which the claim
  would be decided, all parts superior or equivalent, or one inferior; None if none can."""
  per = [_part_needed(e, m, alpha, len(entries)) for e, m in zip(entries, margins)]
  best = None
  for kind in verdicts.KINDS:
    got = [p[kind] for p in per]
    if kind == verdicts.INFERIOR:
      got = [g for g in got if g is not None]
      cand = min(got) if got else None
    else:
      cand = None if None in got else (max(g[0] for g in got), max(g[1] for g in got))
    if cand is not None and (best is None or cand[0] < best[1]):
      best = (kind, *cand)
  return best


def _claim(number, title, parts, missing=None, rivals_missing=()):
  if missing:
    return {'number': number, 'title': title, 'parts': [], 'p': {},
            'verdict': f'{NOT_EVALUATED} ({missing})', 'verdicts': {}, 'rivals_missing': []}
  scenarios = [e['scenario'] for e in parts[0]['entries']]
  p = {s: verdicts.combine([e['p'] for part in parts for e in part['entries']
                            if e['scenario'] == s]) for s in scenarios}
  return {'number': number, 'title': title, 'parts': parts, 'p': p,
          'rivals_missing': list(rivals_missing)}


def _decide(result, alpha):
  """Holm across the evaluated claims (pooled) and across every claim × scenario; sets each
  claim's ``p_adjusted``, ``verdicts``, ``verdict`` (pooled) and ``needed``."""
  done = [c for c in result if c['parts']]
  families = [[(c, 'pooled') for c in done],
              [(c, s) for c in done for s in c['p'] if s != 'pooled']]
  for family in families:
    adjusted = verdicts.adjust([c['p'][s] for c, s in family])
    for (c, s), adj in zip(family, adjusted):
      c.setdefault('p_adjusted', {})[s] = adj
      c.setdefault('verdicts', {})[s] = verdicts.decide(adj, alpha)
      if c['verdicts'][s] == INCONCLUSIVE:
        entries = [next(e for e in part['entries'] if e['scenario'] == s) for part in c['parts']]
        margins = [part['margin'] for part in c['parts']]
        c.setdefault('needed', {})[s] = _claim_needed(entries, margins, alpha / len(family))
  for c in done:
    c['verdicts'] = {s: c['verdicts'][s] for s in c['p']}   # scenarios first, then pooled
    c['verdict'] = c['verdicts']['pooled']
  return result


def _missing(methods, required):
  gone = [m for m in required if m not in methods]
  return f'method {", ".join(gone)} not in the rows' if gone else None


def _versus(rows, claimed, rivals, threshold, margin):
  """Parts claimed − rival on retain acc with the forget rule, for the rivals in the rows."""
  methods = {r['method'] for r in rows}
  present = [m for m in rivals if m in methods and m != claimed]
  parts = [_part(rows, f'retain acc: {claimed} − {m}', claimed, m,
                 lambda run, _: run['retain_acc'], margin, threshold) for m in present]
  return parts, [m for m in rivals if m not in methods]


def claims(rows, threshold, spec=Spec()):
  """The four claims (module docstring), each ``{'number', 'title', 'verdict' (pooled),
  'verdicts' {scenario or 'pooled': verdict}, 'p' and 'p_adjusted' {scenario: {kind: p}},
  'needed' {scenario: (kind, pairs, pairs at the spread's upper bound)} where inconclusive,
  'rivals_missing', 'parts': [{'label', 'margin', 'entries'}]}``."""
  methods = {r['method'] for r in rows} - {'original'}
  out = []
  miss = _missing(methods, ['grogu'])
  parts, gone = ([], ()) if miss else _versus(rows, 'grogu', spec.grogu_rivals, threshold,
                                               spec.margin)
  miss = miss or (None if parts else 'none of config.claims.grogu_rivals in the rows')
  out.append(_claim(1, 'GROGU is the best forget-data-only method', parts, miss, gone))

  miss = _missing(methods, ['ghr', 'gsr', 'retrain'])
  relevant = lambda run, ref: class_mean(run, relevant_classes(
      ref['forget_pred_counts'], run['forget_classes']))
  general = lambda run, ref: class_mean(run, general_classes(
      ref['forget_pred_counts'], run['forget_classes']))
  parts = [] if miss else [
      _part(rows, 'relevant classes: ghr − gsr', 'ghr', 'gsr', relevant, spec.margin),
      _part(rows, 'general classes: gsr − ghr', 'gsr', 'ghr', general, spec.margin)]
  out.append(_claim(2, 'GHR preserves the relevant retain classes better, GSR the general ones',
                    parts, miss))

  claimed = spec.cure_with_retain
  miss = _missing(methods, [claimed])
  parts, gone = ([], ()) if miss else _versus(rows, claimed, spec.retain_rivals, threshold,
                                               spec.margin)
  miss = miss or (None if parts else 'none of config.claims.retain_rivals in the rows')
  out.append(_claim(3, f'A CURE method ({claimed}) is best with retain data', parts, miss, gone))

  miss = _missing(methods, ['grogu', 'ghr', 'gsr', 'retrain'])
  tv = lambda run, ref: tv_distance(run['forget_pred_counts'], ref['forget_pred_counts'])
  parts = [] if miss else [_part(rows, f'TV to retrain: {m} − grogu', m, 'grogu', tv,
                                 spec.margin_tv) for m in ('ghr', 'gsr')]
  out.append(_claim(4, "GROGU is closer to the retrain model's prediction pattern", parts, miss))
  return _decide(out, spec.alpha)
