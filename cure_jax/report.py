"""results.json, results.md (the paper's table layouts) and the per-scenario plots.

Files are written atomically (temp file + rename) with the permissions the user's umask
gives new files, like the PNGs. results.json is strict JSON: an undefined metric is null,
and its row says why (``status`` / ``note``).
"""
import json
import os
import tempfile

import numpy as np

from cure_jax import tables


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_atomic(path, text):
  """Writes ``text`` to ``path`` only once it is complete (temp file + rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 is not what a user expects
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def to_json(obj):
  """Strict JSON (raises on NaN/inf: rows are made JSON-safe before they get here)."""
  return json.dumps(obj, indent=1, allow_nan=False)


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
  from cure_jax import plots
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
