"""``results.json`` / ``results.md`` for LLM unlearning in the layout of the paper's Table 2.

Rows: ``{'method', 'variant', 'seed', 'forget_es', 'forget_prob', 'forget_rouge',
'model_utility', 'forget_quality', ...}``; the table shows mean ± std over seeds per
(method, variant), original and retrain first. ``results.json`` is strict JSON
``{'meta': ..., 'rows': [...]}``: an undefined metric is null (the row's ``note`` says why).
"""
import os

import numpy as np

from cure_jax.infra.files import to_json, write_atomic

METRICS = (('forget_es', 'Forget ES ↓'), ('forget_prob', 'Forget QA Prob ↓'),
           ('forget_rouge', 'Forget QA ROUGE ↓'), ('model_utility', 'Model Utility ↑'),
           ('forget_quality', 'Forget Quality ↑'))
# Shown when the rows have them (a holdout split): privleak (0 = like retrain) and the
# LOSS-attack AUC of forget vs holdout (0.5 = indistinguishable).
PRIVACY_METRICS = (('privleak', 'PrivLeak (%) →0'), ('mia_loss', 'MIA LOSS AUC →0.5'))
REFERENCES = ('original', 'retrain')


def _columns(rows):
  return METRICS + tuple(m for m in PRIVACY_METRICS
                         if any(r.get(m[0]) is not None for r in rows))


def summarize(rows):
  """``[(method, variant, n, {metric: (mean, std)})]``, references first, then run order."""
  groups = {}
  for row in rows:
    groups.setdefault((row['method'], row['variant']), []).append(row)
  keys = sorted(groups, key=lambda k: (k[0] not in REFERENCES,
                                       REFERENCES.index(k[0]) if k[0] in REFERENCES else 0))
  out = []
  for key in keys:
    group = groups[key]
    stats = {}
    for metric, _ in METRICS + PRIVACY_METRICS:
      values = [r[metric] for r in group if r.get(metric) is not None]
      if values:
        stats[metric] = (float(np.mean(values)), float(np.std(values)))
    out.append((key[0], key[1], len(group), stats))
  return out


def markdown_table(rows, title):
  columns = _columns(rows)
  sets = len({r['forget_set'] for r in rows if 'forget_set' in r})
  over, count = ((f'{sets} forget sets × unlearning seeds (the original model fine-tuned once, '
                  'a retrain model per set)', 'Runs') if sets > 1 else
                 ('unlearning seeds', 'Seeds'))
  lines = [f'## {title}', '',
           f'Mean ± std over {over} (TOFU metrics, open-unlearning definitions). ES, '
           'QA Prob and QA ROUGE on the forget split; model utility = harmonic mean of QA prob, '
           'ROUGE and truth ratio on retain, real-authors and world-facts; forget quality = '
           'KS-test p-value of forget truth ratios against the retrain model; privleak = '
           'min-k% (k=0.4) MIA AUC of forget vs holdout relative to the retrain model.', '',
           f'| Method | Variant | {count} | ' + ' | '.join(label for _, label in columns) + ' |',
           '|---|---|---|' + '---|' * len(columns)]
  for method, variant, n, stats in summarize(rows):
    cells = []
    for metric, _ in columns:
      if metric in stats:
        mean, std = stats[metric]
        digits = 1 if metric == 'privleak' else 3
        cells.append(f'{mean:.{digits}f} ± {std:.{digits}f}' if n > 1 else f'{mean:.{digits}f}')
      else:
        cells.append('–')
    lines.append(f'| {method} | {variant or "–"} | {n} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_report(rows, workdir, *, title, samples=None, meta=None):
  """Writes ``generations.json`` (if samples), ``results.md``, then ``results.json``
  (``{'meta': meta, 'rows': rows}``; rows must hold no NaN/inf: strict JSON).

  Each file is written whole to a temporary name and renamed; results.json goes last, so
  its presence means the report is complete. Returns the markdown table.
  """
  for row in rows:
    missing = [k for k in ('method', 'variant', 'seed') + tuple(m for m, _ in METRICS)
               if k not in row]
    if missing:
      raise ValueError(f'Result row {row.get("method")!r} lacks keys {missing}.')
  table = markdown_table(rows, title)
  if samples is not None:
    write_atomic(os.path.join(workdir, 'generations.json'), to_json(samples))
  write_atomic(os.path.join(workdir, 'results.md'), table)
  write_atomic(os.path.join(workdir, 'results.json'), to_json({'meta': meta or {}, 'rows': rows}))
  return table
