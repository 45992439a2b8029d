"""The paper's tables from result rows (markdown).

- Table 1 layout: one row per method, retain / forget test accuracy per scenario (mean ± std
  over all runs); per scenario and setting the best method is bold (the threshold rule).
- Table 3 layout, per scenario: overall / retain / forget accuracy, MIA-efficacy and run
  time, methods grouped by setting (forget data only, with retain data); given results.json's
  ``klom`` section, also the 95th percentile of KLOM over the forget, retain and validation
  examples (one value per method and scenario: KLOM compares all its runs with all retrain
  models).
- Per scenario: the relative per-class change against the retrain model (percent, retain
  classes only) and the prediction counts of forget-class test images next to the retrain
  model's.
"""
import numpy as np

SETTINGS = (('forget', 'Forget data only'), ('retain', 'With retain data'))
FINETUNE_NOTE = ('Finetune sees no forget data (it trains on retain data only); like the '
                 'paper, it is listed with the forget-data-only methods.')
MAX_CLASS_COLUMNS = 20   # wider per-class tables are left to the plots
KLOM_COLUMNS = (('forget', 'KLOM forget'), ('retain', 'KLOM retain'), ('val', 'KLOM val'))
KLOM_NOTE = ("Table 3's KLOM columns (Georgiev et al. 2024): per example, KL(unlearned ‖ "
             "retrain) between the binned distributions of its margin over a method's runs "
             'and over the retrain models; the columns give its 95th percentile over the '
             'forget-class and retain-class test examples and the validation examples '
             '(original: the original models against the retrain models; p99, mean and std '
             'in results.json). Lower is closer to retraining.')


def _ok(rows):
  return [r for r in rows if r.get('status') == 'ok']


def summarize(rows, key):
  """``{(scenario, method): (mean, std, n)}`` of metric ``key`` over the ok runs."""
  out = {}
  for r in _ok(rows):
    if r.get(key) is None:
      continue
    out.setdefault((r['scenario'], r['method']), []).append(r[key])
  return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in out.items()}


def best_methods(rows, threshold):
  """``{(scenario, setting): method}``: forget acc mean ≤ threshold, then max retain acc."""
  retain, forget = summarize(rows, 'retain_acc'), summarize(rows, 'forget_acc')
  settings = {r['method']: r['setting'] for r in rows}
  diverged = {(r['scenario'], r['method']) for r in rows if r.get('status') == 'diverged'}
  best = {}
  for (scenario, method), (f_mean, _, _) in forget.items():
    setting = settings[method]
    if setting == 'reference' or (scenario, method) in diverged or f_mean > threshold + 1e-12:
      continue
    cand = (retain[(scenario, method)][0], method)
    key = (scenario, setting)
    if key not in best or cand[0] > best[key][0]:
      best[key] = cand
  return {k: m for k, (_, m) in best.items()}


def _cell(stat, digits=3):
  if stat is None:
    return '–'
  mean, std, n = stat
  return f'{mean:.{digits}f} ± {std:.{digits}f}' if n > 1 else f'{mean:.{digits}f}'


def _order(rows):
  names = list(dict.fromkeys(r['method'] for r in rows))
  settings = {r['method']: r['setting'] for r in rows}
  groups = [('reference', None)] + list(SETTINGS)
  return [(label, [m for m in names if settings[m] == s]) for s, label in groups]


def _diverged_note(rows, scenario, method):
  n = sum(1 for r in rows if r['scenario'] == scenario and r['method'] == method
          and r.get('status') == 'diverged')
  return f' ({n} diverged)' if n else ''


def _method_lines(rows, num_columns, method_line):
  """Markdown rows for the methods of ``rows`` in display order: reference, then by setting.

  The reference methods come first, unlabelled; every other non-empty group opens with a row
  of its label in italics and ``num_columns`` empty cells. ``method_line(m)`` gives the row
  of method ``m``.
  """
  lines = []
  for label, members in _order(rows):
    if not members:
      continue
    if label:
      lines.append(f'| *{label}* |' + ' |' * num_columns)
    lines += [method_line(m) for m in members]
  return lines


def table1(rows, threshold):
  scenarios = list(dict.fromkeys(r['scenario'] for r in rows))
  retain, forget = summarize(rows, 'retain_acc'), summarize(rows, 'forget_acc')
  best = best_methods(rows, threshold)
  runs = {m: max((s[2] for (sc, mm), s in retain.items() if mm == m), default=0)
          for m in dict.fromkeys(r['method'] for r in rows)}
  head = '| Method | Runs | ' + ' | '.join(f'{s}: retain | {s}: forget' for s in scenarios)

  def method_line(m):
    cells = []
    for s in scenarios:
      bold = best.get((s, rows_setting(rows, m))) == m
      fmt = (lambda c: f'**{c}**') if bold else (lambda c: c)
      cells += [fmt(_cell(retain.get((s, m)))), fmt(_cell(forget.get((s, m))))
                + _diverged_note(rows, s, m)]
    return f'| {m} | {runs[m]} | ' + ' | '.join(cells) + ' |'

  lines = [head + ' |', '|---|---|' + '---|---|' * len(scenarios)]
  lines += _method_lines(rows, 1 + 2 * len(scenarios), method_line)
  return '\n'.join(lines) + '\n'


def rows_setting(rows, method):
  return next(r['setting'] for r in rows if r['method'] == method)


def _klom_cells(klom, scenario, method):
  """The 95th percentiles of ``klom`` (results.json's section) for one table line."""
  group = next((g for g in klom['groups'] if (g['scenario'], g['method']) == (scenario, method)),
               {})
  return [f'{group[k]["p95"]:.3f}' if group.get(k) else '–' for k, _ in KLOM_COLUMNS]


def table3(rows, scenario, threshold, klom=None):
  """Table 3 of ``scenario``; with ``klom`` (results.json's section) its KLOM columns."""
  sub = [r for r in rows if r['scenario'] == scenario]
  stats = {k: summarize(sub, k) for k in ('overall_acc', 'retain_acc', 'forget_acc',
                                          'mia_efficacy', 'time_s', 'time_ratio')}
  best = best_methods(sub, threshold)
  cols = ('Overall', 'Retain', 'Forget', 'MIA-efficacy', 'Time (s)', 'Time / retrain')
  if klom is not None:
    cols += tuple(label for _, label in KLOM_COLUMNS)

  def method_line(m):
    name = f'**{m}**' if best.get((scenario, rows_setting(sub, m))) == m else m
    if m == 'finetune':
      name += ' ¹'
    key = (scenario, m)
    cells = [_cell(stats[k].get(key)) for k in ('overall_acc', 'retain_acc', 'forget_acc',
                                                 'mia_efficacy')]
    cells += [_cell(stats['time_s'].get(key), 2), _cell(stats['time_ratio'].get(key), 4)]
    if klom is not None:
      cells += _klom_cells(klom, scenario, m)
    return f'| {name}{_diverged_note(sub, scenario, m)} | ' + ' | '.join(cells) + ' |'

  lines = ['| Method | ' + ' | '.join(cols) + ' |', '|---|' + '---|' * len(cols)]
  lines += _method_lines(sub, len(cols), method_line)
  text = '\n'.join(lines) + '\n'
  if any(r['method'] == 'finetune' for r in sub):
    text += f'\n¹ {FINETUNE_NOTE}\n'
  return text


def _class_means(sub, key):
  out = {}
  for m in dict.fromkeys(r['method'] for r in sub):
    values = [r[key] for r in sub if r['method'] == m and r.get(key) is not None]
    if values:
      arr = np.array([[np.nan if v is None else v for v in row] for row in values], float)
      out[m] = np.nanmean(arr, axis=0) if np.isfinite(arr).any() else arr[0]
  return out


def per_class_change_table(rows, scenario, class_names):
  """Relative change vs the retrain model in percent, retain classes only."""
  sub = [r for r in _ok(rows) if r['scenario'] == scenario and r['method'] != 'retrain']
  if not sub:
    return ''
  forget = set(sub[0]['forget_classes'])
  classes = [k for k in range(len(class_names)) if k not in forget]
  if len(classes) > MAX_CLASS_COLUMNS:
    return ''
  means = _class_means(sub, 'per_class_change')
  lines = ['| Method | ' + ' | '.join(str(class_names[k]) for k in classes) + ' |',
           '|---|' + '---|' * len(classes)]
  for m, v in means.items():
    lines.append(f'| {m} | ' + ' | '.join(f'{100 * v[k]:+.1f}' for k in classes) + ' |')
  return '\n'.join(lines) + '\n'


def prediction_count_table(rows, scenario, class_names):
  """Mean predictions of the forget-class test images per class, retrain model first."""
  sub = [r for r in _ok(rows) if r['scenario'] == scenario]
  if not sub or len(class_names) > MAX_CLASS_COLUMNS:
    return ''
  means = _class_means(sub, 'forget_pred_counts')
  order = ['retrain'] + [m for m in means if m != 'retrain']
  lines = ['| Method | ' + ' | '.join(str(c) for c in class_names) + ' |',
           '|---|' + '---|' * len(class_names)]
  for m in order:
    if m in means:
      lines.append(f'| {m} | ' + ' | '.join(f'{x:.1f}' for x in means[m]) + ' |')
  return '\n'.join(lines) + '\n'


def markdown_report(rows, threshold, title, class_names, klom=None):
  """The whole results.md: Table 1, then per scenario Table 3 and the per-class tables.
  ``klom``: results.json's KLOM section (Table 3 then has KLOM columns)."""
  scenarios = list(dict.fromkeys(r['scenario'] for r in rows))
  parts = [f'## {title}', '',
           'Test split; mean ± std over all runs (run i starts from original model i mod K '
           'and is compared with retrain model i mod K). **Bold**: per scenario and setting, '
           f'the best method: mean forget acc ≤ {threshold}, then the highest mean retain acc.',
           '', '### Table 1: retain / forget accuracy per scenario', '',
           table1(rows, threshold)]
  if any(r['method'] == 'finetune' for r in rows):
    parts += [FINETUNE_NOTE, '']
  if klom is not None:
    parts += [KLOM_NOTE, '']
  for s in scenarios:
    parts += [f'### Scenario {s}: Table 3 layout', '', table3(rows, s, threshold, klom)]
    change = per_class_change_table(rows, s, class_names)
    if change:
      parts += [f'Per-class test accuracy change vs the retrain model (%, retain classes, '
                f'scenario {s}):', '', change]
    counts = prediction_count_table(rows, s, class_names)
    if counts:
      parts += [f'Where the forget-class test images go (mean counts, scenario {s}):', '',
                counts]
  return '\n'.join(parts)


def reproduction_check(published, rerun, keys=('retain_acc', 'forget_acc'), slack=0.01):
  """Per (scenario, method, metric): is the rerun's mean within the published
  ``mean ± (2·std + slack)``? Returns ``[(scenario, method, key, published mean, std,
  rerun mean, ok)]`` for every pair present in both."""
  out = []
  for key in keys:
    pub, new = summarize(published, key), summarize(rerun, key)
    for (scenario, method), (mean, std, _) in pub.items():
      if (scenario, method) in new:
        got = new[(scenario, method)][0]
        out.append((scenario, method, key, mean, std, got,
                    abs(got - mean) <= 2 * std + slack + 1e-12))
  return out


def identical_rows(published, rerun, keys=('retain_acc', 'forget_acc')):
  """``(identical, shared)``: how many runs (same scenario, method, setting, model seed and
  seed) the two row sets share, and in how many of them every metric of ``keys`` is equal."""
  def index(rows):
    return {(r['scenario'], r['method'], r['setting'], r.get('model_seed'), r.get('seed')): r
            for r in rows}
  pub, new = index(published), index(rerun)
  shared = pub.keys() & new.keys()
  same = sum(all(pub[k].get(m) == new[k].get(m) for m in keys) for k in shared)
  return same, len(shared)
