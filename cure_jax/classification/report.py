"""results.json, results.md (the paper's table layouts) and the per-scenario plots.

Files are written atomically (:mod:`cure_jax.infra.files`). results.json is strict JSON:
an undefined metric is null, and its row says why (``status`` / ``note``).

KLOM (:mod:`cure_jax.metrics.klom`) is a property of a method's runs in a scenario taken
together, not of one run, so results.json holds it beside the rows: ``klom.groups``, one
record per (scenario, method), computed here from the margins the sweep kept in
``WORKDIR/margins`` (a resumed sweep has them for every logged unit).
"""
import os

import numpy as np

from cure_jax.classification import claims, claims_text, evaluate, tables
from cure_jax.infra.files import to_json, write_atomic
from cure_jax.metrics import klom

KLOM_DEFINITION = {
    'paper': 'Georgiev et al. 2024, Attribute-to-Delete (arXiv:2410.23232), appendix E.1',
    'code': 'RoyRin/data-unlearning-bench unlearning_bench/eval.py compute_binned_KL_div',
    'margin': 'logit of the true class - logsumexp of the other logits',
    'divergence': 'KL(unlearned models || retrain models) per example',
    'bins': klom.BINS, 'eps': klom.EPS, 'clip': list(klom.CLIP),
    'percentiles': list(klom.PERCENTILES),
    'examples': {'forget': 'training examples of the forget classes',
                 'retain': 'training examples of the other classes',
                 'val': 'validation split'},
    'max_examples_per_set': evaluate.KLOM_MAX_EXAMPLES}


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


def _load_all(directory, rows):
  """``((sets digest, {set: [models, examples]}), None)`` of the models of ``rows``, or
  ``(None, why not)``."""
  if not rows:
    return None, 'no finished (ok) model'
  loaded = [evaluate.load_margins(directory, r) for r in rows]
  missing = sum(x is None for x in loaded)
  if missing:
    return None, f'margins of {missing} of {len(rows)} models not recorded'
  if len({d for d, _ in loaded}) > 1:
    return None, 'margins recorded on different examples'
  stacked = {k: np.stack([m[k] for _, m in loaded]) for k in evaluate.KLOM_SETS}
  if any(np.isnan(v).any() for v in stacked.values()):
    return None, 'NaN margins'
  return (loaded[0][0], stacked), None


def _klom_group(directory, runs, retrain, loaded_retrain):
  """One ``klom.groups`` record: KLOM of ``runs`` against ``retrain`` (loaded:
  ``loaded_retrain``, :func:`_load_all`) per example set."""
  record = {'n_models': len(runs), 'n_retrain': len(retrain)}
  mine, note = _load_all(directory, runs)
  ref, ref_note = loaded_retrain
  note = note or (ref_note and 'retrain models: ' + ref_note)
  if not note and mine[0] != ref[0]:
    note = 'margins recorded on different examples'
  if note:
    return {**record, **dict.fromkeys(evaluate.KLOM_SETS), 'note': note}
  for k in evaluate.KLOM_SETS:
    u, r = mine[1][k], ref[1][k]
    record[k] = klom.summary(klom.klom(u, r)) if u.shape[1] else None
  return record


def klom_section(rows, workdir):
  """results.json's ``klom``: per (scenario, method) the summaries of KLOM over the forget,
  retain and validation examples, comparing the method's ok runs with the scenario's retrain
  models (the original models' line compares them with the same). None when the sweep kept
  no margins."""
  directory = os.path.join(workdir, evaluate.MARGINS_DIR)
  if not os.path.isdir(directory):
    return None
  ok = [r for r in rows if r.get('status') == 'ok']
  groups = []
  for scenario in dict.fromkeys(r['scenario'] for r in rows):
    retrain = [r for r in ok if r['scenario'] == scenario and r['method'] == 'retrain']
    loaded_retrain = _load_all(directory, retrain)
    for method in dict.fromkeys(r['method'] for r in rows if r['scenario'] == scenario):
      if method == 'retrain':
        continue
      runs = [r for r in ok if r['scenario'] == scenario and r['method'] == method]
      setting = next(r['setting'] for r in rows if r['method'] == method)
      groups.append({'scenario': scenario, 'method': method, 'setting': setting,
                     **_klom_group(directory, runs, retrain, loaded_retrain)})
  return {'definition': KLOM_DEFINITION, 'groups': groups}


def write_report(rows, workdir, *, threshold, title, class_names, plots=True, meta=None,
                 claims_spec=claims.Spec()):
  """Writes results.md, claims.md (:mod:`cure_jax.classification.claims`, compared and
  decided as ``claims_spec`` says), results.json (``{'meta', 'rows'}``, and ``'klom'`` when
  the sweep kept margins) and the plots; returns the markdown."""
  section = klom_section(rows, workdir)
  text = tables.markdown_report(rows, threshold, title, class_names, klom=section)
  if plots:
    write_plots(rows, workdir, class_names)
  write_atomic(os.path.join(workdir, 'results.md'), text)
  result, forest_name = claims.claims(rows, threshold, claims_spec), None
  if plots:
    from cure_jax.classification import forest
    if forest.plot_claims(result, os.path.join(workdir, forest.FILENAME), title):
      forest_name = forest.FILENAME
  write_atomic(os.path.join(workdir, 'claims.md'),
               claims_text.claims_markdown(rows, threshold, f'{title}: the paper\'s claims',
                                           claims_spec, forest=forest_name, result=result))
  doc = {'meta': meta or {}, 'rows': rows}
  if section is not None:
    doc['klom'] = section
  # results.json last: its presence means the whole report is complete.
  write_atomic(os.path.join(workdir, 'results.json'), to_json(doc))
  return text
