"""results.json, results.md (the paper's table layouts) and the per-scenario plots.

Files are written atomically (:mod:`cure_jax.infra.files`). results.json is strict JSON:
an undefined metric is null, and its row says why (``status`` / ``note``).
"""
import os

import numpy as np

from cure_jax.classification import tables
from cure_jax.infra.files import to_json, write_atomic


def _with_nan(rows):
  """Rows for the plots: None inside per-class lists becomes NaN."""
  out = []
  for r in rows:
    r = dict(r)
    for key in ('per_class_change', 'per_class_acc', 'forget_pred_counts'):
      if isinstance(r.get(key), list):
        r[key] = [np.nan if v is None else v for v in r[key]]
    out.append(r)
  return out


def write_plots(rows, workdir, class_names):
  """Per scenario: the per-class change heatmap(s) and the prediction counts."""
  from cure_jax.classification import plots
  paths = []
  ok = _with_nan([r for r in rows if r.get('status') == 'ok'])
  for scenario in dict.fromkeys(r['scenario'] for r in ok):
    sub = [r for r in ok if r['scenario'] == scenario]
    label = scenario.replace(',', '-')
    paths += plots.write_scenario_plots(sub, class_names, sub[0]['forget_classes'], workdir,
                                        label)
  return paths


def write_report(rows, workdir, *, threshold, title, class_names, plots=True, meta=None):
  """Writes results.md, results.json (``{'meta', 'rows'}``) and the plots; returns the
  markdown."""
  text = tables.markdown_report(rows, threshold, title, class_names)
  if plots:
    write_plots(rows, workdir, class_names)
  write_atomic(os.path.join(workdir, 'results.md'), text)
  # results.json last: its presence means the whole report is complete.
  write_atomic(os.path.join(workdir, 'results.json'),
               to_json({'meta': meta or {}, 'rows': rows}))
  return text
