"""The paper's per-class figures, readable at 10, 100 and 1000 classes.

Pure functions: arrays in, one PNG out. Figure size is bounded (at most
``MAX_WIDTH_IN × MAX_HEIGHT_IN`` inches at ``DPI``) whatever the number of classes or
methods: with many classes only a selected set of columns is drawn and the title says
which and how many.

- :func:`plot_change_heatmap`: methods × retain classes, relative test-accuracy change
  against the retrain model in percent (forget classes are never shown).
- Fig. 1's two views for many classes: :func:`relevant_classes` (the classes the retrain
  model predicts most often for forget-class test images) and :func:`general_classes`
  (the ``n`` retain classes whose change varies most across methods).
- :func:`plot_prediction_counts`: where the forget-class test images go, per method,
  with the retrain model's counts as the first row.
- :func:`write_scenario_plots`: all of the above for one scenario from result rows
  (``method``, ``per_class_change`` as a fraction, ``forget_pred_counts``; rows of
  several seeds are averaged per method).
"""
import os
import textwrap

import numpy as np

DPI = 110
MAX_WIDTH_IN, MAX_HEIGHT_IN = 20.0, 14.0
GENERAL_CLASSES = 60    # Fig. 1 "general" view: retain classes with the highest variance
RELEVANT_CLASSES = 10   # Fig. 1 "relevant" view and the prediction-count columns
ANNOTATE_MAX_CELLS = 600


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _short(name, width=14):
  name = str(name)
  return name if len(name) <= width else name[:width - 1] + '…'


def _figsize(n_cols, n_rows, label_rows):
  width = 2.8 + 0.09 * max(len(str(m)) for m in label_rows) + 0.32 * n_cols
  height = 2.0 + 0.30 * n_rows
  return min(max(width, 5.0), MAX_WIDTH_IN), min(max(height, 2.5), MAX_HEIGHT_IN)


def _grid(ax, values, rows, col_labels, cmap, vmin, vmax, fmt):
  im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect='auto',
                 interpolation='nearest')
  n_rows, n_cols = values.shape
  fontsize = 9 if n_cols <= 30 else 7
  ax.set_xticks(range(n_cols), [_short(c) for c in col_labels], fontsize=fontsize,
                rotation=0 if n_cols <= 12 and max(len(str(c)) for c in col_labels) <= 4
                else 90)
  ax.set_yticks(range(n_rows), [_short(r, 24) for r in rows], fontsize=9 if n_rows <= 30 else 7)
  if values.size <= ANNOTATE_MAX_CELLS and n_cols <= 30:
    for i in range(n_rows):
      for j in range(n_cols):
        if np.isfinite(values[i, j]):
          shade = abs(values[i, j] - (vmin + vmax) / 2) > 0.35 * (vmax - vmin)
          ax.text(j, i, fmt(values[i, j]), ha='center', va='center', fontsize=7,
                  color='white' if shade else 'black')
  return im


def relevant_classes(retrain_counts_K, forget_classes, n=RELEVANT_CLASSES):
  """The ``n`` non-forget classes the retrain model predicts most often for forget-class
  test images, most frequent first (ties by class index)."""
  counts = np.asarray(retrain_counts_K, np.float64).copy()
  counts[list(forget_classes)] = -np.inf
  order = np.lexsort((np.arange(len(counts)), -counts))
  return [int(k) for k in order[:n] if np.isfinite(counts[k])]


def general_classes(change_MxK, forget_classes, n=GENERAL_CLASSES):
  """The ``n`` retain classes with the highest variance of the change across methods,
  in class order."""
  change = np.asarray(change_MxK, np.float64)
  seen = np.isfinite(change)
  count = np.maximum(seen.sum(axis=0), 1)
  x = np.where(seen, change, 0.0)
  mean = x.sum(axis=0) / count
  var = np.where(seen, (x - mean)**2, 0.0).sum(axis=0) / count
  var = np.where(seen.any(axis=0), var, -1.0)   # classes with no value come last
  var[list(forget_classes)] = -np.inf
  order = np.lexsort((np.arange(len(var)), -var))
  return sorted(int(k) for k in order[:n] if np.isfinite(var[k]))


def plot_change_heatmap(change_MxK, methods, class_names, forget_classes, path, *,
                        columns=None, title='', max_classes=GENERAL_CLASSES):
  """Heatmap of the relative accuracy change (a fraction per class; drawn in percent).

  ``columns``: the classes to draw, in that order; default all retain classes, or the
  ``max_classes`` most varying ones (:func:`general_classes`) when there are more.
  """
  change = 100.0 * np.asarray(change_MxK, np.float64)
  forget = set(int(c) for c in forget_classes)
  retain = [k for k in range(change.shape[1]) if k not in forget]
  if columns is None:
    columns = retain if len(retain) <= max_classes else general_classes(
        change, forget, max_classes)
  columns = [int(k) for k in columns if int(k) not in forget]
  values = change[:, columns]
  finite = np.abs(values[np.isfinite(values)])
  limit = float(np.percentile(finite, 98)) if finite.size else 1.0
  limit = max(limit, 1.0)
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=_figsize(len(columns), len(methods), methods))
  im = _grid(ax, values, methods, [class_names[k] for k in columns], 'RdBu', -limit, limit,
             lambda v: f'{v:.0f}' if abs(v) >= 9.5 else f'{v:.1f}')
  ax.set_xlabel(f'retain class ({len(columns)} of {len(retain)})')
  _title(fig, ax, title or 'Per-class test accuracy change vs the retrain model (%)')
  fig.colorbar(im, ax=ax, shrink=0.8, extend='both', label='% change')
  _save(fig, path)


def plot_prediction_counts(counts_MxK, methods, class_names, forget_classes, path, *,
                           retrain_counts_K=None, title='', max_classes=RELEVANT_CLASSES):
  """Counts of forget-class test images per predicted class (rows: methods).

  The retrain model's counts (``retrain_counts_K``) come first. Columns: the forget
  classes, then the ``max_classes`` classes with the largest count in any row, then one
  'other' column with the rest, so every row still sums to the number of images.
  """
  counts = np.asarray(counts_MxK, np.float64)
  rows = list(methods)
  if retrain_counts_K is not None:
    counts = np.vstack([np.asarray(retrain_counts_K, np.float64)[None], counts])
    rows = ['retrain (reference)'] + rows
  forget = [int(c) for c in forget_classes]
  peak = counts.max(axis=0)
  peak[forget] = -np.inf
  order = np.lexsort((np.arange(len(peak)), -peak))
  top = [int(k) for k in order[:max_classes] if peak[k] > 0]
  columns = forget + top
  values = counts[:, columns]
  labels = [f'{_short(class_names[k])}*' if k in forget else class_names[k] for k in columns]
  rest = counts.sum(axis=1) - values.sum(axis=1)
  if np.any(rest > 1e-9):
    values = np.hstack([values, rest[:, None]])
    labels.append('other')
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=_figsize(len(labels), len(rows), rows))
  # The 'other' column can dwarf the rest: the colour scale follows the named classes.
  named = values[:, :len(columns)]
  im = _grid(ax, values, rows, labels, 'viridis', 0.0, max(float(named.max()), 1.0),
             lambda v: f'{v:.0f}' if abs(v - round(v)) < 0.05 else f'{v:.1f}')
  if retrain_counts_K is not None:
    ax.axhline(0.5, color='white', linewidth=2)
  ax.set_xlabel('predicted class (* = forget class)')
  _title(fig, ax, title or 'Where forget-class test images go (mean count over runs)')
  fig.colorbar(im, ax=ax, shrink=0.8, extend='max', label='images')
  _save(fig, path)


def _title(fig, ax, text):
  ax.set_title(textwrap.fill(text, int(fig.get_figwidth() * 11)), fontsize=10)


def _save(fig, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  import matplotlib.pyplot as plt
  plt.close(fig)


def _mean_by_method(rows, key, exclude=()):
  names = [m for m in dict.fromkeys(r['method'] for r in rows) if m not in exclude
           and all(key in r for r in rows if r['method'] == m)]
  return names, np.array([np.mean([r[key] for r in rows if r['method'] == m], axis=0)
                          for m in names])


def write_scenario_plots(rows, class_names, forget_classes, out_dir, label):
  """Writes one scenario's figures into ``out_dir``; returns their paths.

  ``rows``: that scenario's result rows, the retrain model's included (method
  ``'retrain'``). Files: ``per_class_change_{label}.png`` (all retain classes, or the
  general view), ``per_class_change_relevant_{label}.png`` (many classes only) and
  ``prediction_counts_{label}.png``.
  """
  paths = []
  names, change = _mean_by_method(rows, 'per_class_change', exclude=('retrain',))
  forget = list(forget_classes)
  retain_count = len(class_names) - len(forget)
  classes = ', '.join(str(class_names[c]) for c in forget)
  if names:
    path = os.path.join(out_dir, f'per_class_change_{label}.png')
    view = ('' if retain_count <= GENERAL_CLASSES else
            f'; the {GENERAL_CLASSES} classes varying most across methods')
    plot_change_heatmap(change, names, class_names, forget, path,
                        title=f'Accuracy change vs retrain (%), forgetting {classes}{view}')
    paths.append(path)
  retrain = [r['forget_pred_counts'] for r in rows if r['method'] == 'retrain'
             and 'forget_pred_counts' in r]
  retrain_counts = np.mean(retrain, axis=0) if retrain else None
  if names and retrain_counts is not None and retain_count > GENERAL_CLASSES:
    path = os.path.join(out_dir, f'per_class_change_relevant_{label}.png')
    plot_change_heatmap(change, names, class_names, forget, path,
                        columns=relevant_classes(retrain_counts, forget),
                        title=f'Accuracy change vs retrain (%), forgetting {classes}; '
                              'classes the retrain model predicts for forget images')
    paths.append(path)
  names, counts = _mean_by_method(rows, 'forget_pred_counts', exclude=('retrain',))
  if names:
    path = os.path.join(out_dir, f'prediction_counts_{label}.png')
    plot_prediction_counts(counts, names, class_names, forget, path,
                           retrain_counts_K=retrain_counts,
                           title=f'Predictions for forget-class test images ({classes})')
    paths.append(path)
  return paths
