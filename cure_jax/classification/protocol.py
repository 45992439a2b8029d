"""The paper's protocol: K original models, K retrain models per forget scenario, every
method run ``config.seeds`` times per scenario; run i starts from original i mod K and is
compared with retrain model i mod K (docs/methods.md, "The evaluation protocol").

One :class:`Study` holds the data, the trained models and the evaluation sets of a sweep;
:func:`sweep` runs methods × scenarios × runs through the compiled programs of
:mod:`cure_jax.classification.unlearn`, evaluates each run and appends its rows to the
resumable log (:mod:`cure_jax.infra.sweep_log`). Each evaluated model's margins on the
scenario's KLOM examples go to ``WORKDIR/margins`` before its unit is logged; the report
computes KLOM from them (:mod:`cure_jax.classification.report`).
"""
import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from cure_jax import models
from cure_jax.classification import unlearn, evaluate, model_groups, sizes, validate
from cure_jax.infra import console, fingerprint, sharding
from cure_jax.data import load_dataset, views
from cure_jax.unlearning import methods, plan


def json_safe(obj):
  """NaN/inf → None (strict JSON), numpy scalars → Python, recursively."""
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


@dataclasses.dataclass
class Scenario:
  label: str                 # as written in the config, e.g. '1' or '1,3'
  forget_classes: tuple
  forget: Any                # forget training source
  retain: Any                # retain training source
  forget_x: Any              # uint8, exact
  forget_y: Any
  mask_K: Any
  mia_sets: Any
  retrain: list = dataclasses.field(default_factory=list)     # Trained per model seed
  references: list = dataclasses.field(default_factory=list)  # evaluator references
  klom_sets: Any = None      # evaluate.KlomSets, None when the study keeps no margins


class Timings(dict):
  """Wall seconds by phase (load, train with its step's compile, compile of the unlearning
  programs, unlearn, evaluate), added up as the study runs."""

  def __init__(self):
    super().__init__(dict.fromkeys(('load', 'train', 'compile', 'unlearn', 'evaluate'), 0.0))

  @contextlib.contextmanager
  def phase(self, name):
    start = time.perf_counter()
    try:
      yield
    finally:
      self[name] += time.perf_counter() - start


@dataclasses.dataclass
class Study:
  config: Any
  data: Any
  model: Any
  mesh: Any
  model_seeds: tuple
  originals: list            # Trained per model seed
  scenarios: list
  evaluator: Any
  programs: Any
  seed_parallel: bool
  n_runs: int                # runs per method and scenario
  timings: Timings
  margins_dir: Any = None    # where each evaluated model's KLOM margins go; None: nowhere
  first_run_seed: int = 0    # run i's unlearning key; tuning's start at config.tune.seed


def make_study(config, workdir, split='test', kinds=('original', 'retrain'), n_runs=None,
               runs=()):
  """Loads the data and trains (or reuses from the model cache) every model the sweep needs.
  ``config`` is checked first, as on the command line (a bad value: one ConfigError line),
  then every batch size against the sets it draws from (``runs``: the planned runs), before
  any model trains.

  A study on the validation split (tuning) measures accuracies only (no MIA-efficacy,
  per-class change, input-gradient distance or KLOM); one of both kinds on another split
  keeps every evaluated model's KLOM margins in ``WORKDIR/margins``."""
  validate.validate_config(config, workdir)
  return build_study(config, workdir, split, kinds, n_runs, runs)


def build_study(config, workdir, split='test', kinds=('original', 'retrain'), n_runs=None,
                runs=(), model_seeds=None, first_run_seed=0):
  """:func:`make_study` of a config already checked (the task's ``execute``); ``model_seeds``
  and ``first_run_seed`` (tuning's own) replace ``config.model_seeds`` and run i's key i."""
  timings = Timings()
  with timings.phase('load'):
    sharding.maybe_initialize_distributed(config.distributed)
    data = load_dataset(config.data)
  sizes.check(config, data, plan.scenarios(config, data.num_classes), runs, kinds)
  seeds = tuple(model_seeds) if model_seeds is not None else plan.model_seeds(config)
  mesh, group_mesh = sharding.make_mesh(), model_groups.seeds_mesh(config)
  model = models.get_model(config.model.name, data.num_classes, config.model.dtype)
  trained = functools.partial(model_groups.train_models, config, workdir, data=data,
                              model=model, mesh=mesh, group_mesh=group_mesh, seeds=seeds,
                              timings=timings)
  originals = trained(kind='original', classes=()) if 'original' in kinds else []
  evaluator = evaluate.Evaluator(model, data, getattr(data, split), mesh,
                                 config.train.eval_batch_size)
  # Tuning (the validation split) scores trials by their accuracies alone: no MIA, no
  # comparison with the retrain models and no KLOM margins, which cost more than the run.
  full = split != 'val'
  keep_margins = full and {'original', 'retrain'} <= set(kinds)
  scenarios = []
  for label, classes in plan.scenarios(config, data.num_classes):
    forget, retain = views.forget_retain(data.train, classes)
    fx, fy = evaluate.materialize(forget)
    size = int(np.sum(~np.isin(evaluator.y, classes)))  # |non-members| (SalUn's |test|)
    sc = Scenario(label, classes, forget, retain, fx, fy,
                  np.isin(np.arange(data.num_classes), classes),
                  evaluate.mia_sets(retain, forget, size) if full else None)
    if keep_margins:
      sc.klom_sets = evaluate.klom_sets(forget, retain, data.val, label)
    if 'retrain' in kinds:
      sc.retrain = trained(kind='retrain', classes=classes, label=label)
      with timings.phase('evaluate'):
        sc.references = [evaluator.reference(r.variables, classes) if full else None
                         for r in sc.retrain]
    scenarios.append(sc)
  programs = unlearn.programs(model, tuple(np.ravel(data.mean)),
                              tuple(np.ravel(data.std)), group_mesh or mesh)
  return Study(config, data, model, mesh, seeds, originals, scenarios, evaluator, programs,
               model_groups.resolve_seed_parallel(config.seed_parallel),
               n_runs or config.seeds, timings,
               os.path.join(workdir, evaluate.MARGINS_DIR) if keep_margins else None,
               first_run_seed)


def reference_rows(study):
  """Rows of the original and retrain models, per scenario and model seed."""
  rows = []
  for sc in study.scenarios:
    for k, s in enumerate(study.model_seeds):
      for kind, model in (('original', study.originals[k]), ('retrain', sc.retrain[k])):
        with study.timings.phase('evaluate'):
          m = study.evaluator.evaluate(model.variables, sc.forget_classes, sc.mia_sets,
                                       sc.references[k], sc.klom_sets, defer=True)
        train_s = model.train_s
        rows.append(json_safe({
            'scenario': sc.label, 'model_seed': s, 'seed': None, 'method': kind,
            'setting': 'reference', 'hparams': {}, 'status': 'ok', **_metric_fields(m),
            'time_s': train_s, 'compile_s': None,
            'time_ratio': 1.0 if kind == 'retrain' and train_s else None,
            'model_fingerprint': {kind: model.fingerprint},
            'forget_classes': list(sc.forget_classes)}))
        evaluate.keep_margins(study.margins_dir, sc.klom_sets, rows[-1], m)
  with study.timings.phase('evaluate'):
    return evaluate.resolve(rows)  # the SVC fits ran beside the next models' evaluation


_METRICS = ('retain_acc', 'forget_acc', 'overall_acc', 'mia_efficacy', 'input_grad_dist',
            'per_class_acc', 'per_class_change', 'forget_pred_counts')


def _metric_fields(m):
  return {k: m.get(k) for k in _METRICS}


def run_data(study, sc, run, seeds):
  """Padded device inputs of one scenario's runs (sizes shared by all scenarios)."""
  hp = run.hparams
  b = int(hp.batch_size)
  n_pad = max(unlearn.padded_size(len(s.forget_y), b) for s in study.scenarios)
  m_pad = max(unlearn.padded_size(sizes.retain_subset_size(len(s.retain),
                                                           hp.retain_fraction), b)
              for s in study.scenarios)
  n = len(sc.forget_y)
  rx, ry = [], []
  m = sizes.retain_subset_size(len(sc.retain), hp.retain_fraction)
  sizes.check_unlearn_batch(b, n, m, sc.label, run.method.uses_retain)
  if not run.method.uses_retain:  # a placeholder the program never reads
    shape = (len(seeds), b, *sc.forget_x.shape[1:])
    return unlearn.RunData(unlearn.pad_rows(sc.forget_x, n_pad),
                           unlearn.pad_rows(sc.forget_y, n_pad), n,
                           np.zeros(shape, np.uint8), np.zeros(shape[:2], np.int32), b,
                           sc.mask_K)
  for seed in seeds:
    subset = views.retain_subset(sc.retain, hp.retain_fraction, seed)
    x, y = evaluate.materialize(subset)
    rx.append(unlearn.pad_rows(x, m_pad))
    ry.append(unlearn.pad_rows(y, m_pad))
  return unlearn.RunData(unlearn.pad_rows(sc.forget_x, n_pad),
                         unlearn.pad_rows(sc.forget_y, n_pad), n, np.stack(rx),
                         np.stack(ry), m, sc.mask_K)


def run_units(study, run):
  """``[(unit_id, scenario, [(model index, seed), ...]), ...]`` in sweep order."""
  k = len(study.model_seeds)
  runs = [(i % k, study.first_run_seed + i) for i in range(study.n_runs)]
  groups = model_groups.seed_groups(runs, study.programs.mesh if study.seed_parallel else None,
                                    study.config.models_per_device)
  hp_key = fingerprint.digest(run.record)
  out = []
  for sc in study.scenarios:
    for group in groups:
      ident = ','.join(f'{study.model_seeds[m]}/{s}' for m, s in group)
      par = 'v' if study.seed_parallel else 's'
      out.append((f'{sc.label}|{run.name}|{hp_key}|{par}|{ident}', sc, group))
  return out


def run_unit(study, run, sc, group, defer=False):
  """Runs one group of runs and evaluates them; returns its rows (strict JSON values;
  with ``defer``, MIA-efficacy may still be a future: :func:`evaluate.resolve`)."""
  name = run.name
  data = run_data(study, sc, run, [s for _, s in group])
  starts = [study.originals[m].variables for m, _ in group]
  keys = [np.asarray(jax.random.key_data(jax.random.key(s))) for _, s in group]
  with study.timings.phase('unlearn'):
    params, bads, seconds, compile_s = unlearn.run_group(
        study.programs, run, data, starts, keys, study.seed_parallel)
  study.timings['unlearn'] -= compile_s  # the compile has its own phase
  study.timings['compile'] += compile_s
  rows = []
  for i, (m, s) in enumerate(group):
    p = params[i]
    finite = all(np.all(np.isfinite(x)) for x in jax.tree.leaves(p))
    retrain_s = sc.retrain[m].train_s
    row = {'scenario': sc.label, 'model_seed': study.model_seeds[m], 'seed': s,
           'method': name, 'setting': run.method.setting,
           'hparams': run.record, 'status': 'ok',
           'time_s': seconds[i], 'compile_s': compile_s if i == 0 else 0.0,
           'time_ratio': seconds[i] / retrain_s if retrain_s else None,
           'model_fingerprint': {'original': study.originals[m].fingerprint,
                                 'retrain': sc.retrain[m].fingerprint},
           'forget_classes': list(sc.forget_classes)}
    metrics = None
    if bads[i] < 0 and finite:
      variables = {'params': p, 'batch_stats': starts[i]['batch_stats']}
      try:
        with study.timings.phase('evaluate'):
          metrics = study.evaluator.evaluate(variables, sc.forget_classes, sc.mia_sets,
                                             sc.references[m], sc.klom_sets, defer=defer)
      except evaluate.NonFiniteOutputs as e:
        why = str(e)
    else:
      why = f'loss non-finite at step {bads[i]}' if bads[i] >= 0 else 'parameters non-finite'
    if metrics is None:
      row.update({k: None for k in _METRICS}, status='diverged',
                 note=why + '; lower the learning rate')
      logging.warning('%s scenario %s seed %d diverged (%s)', name, sc.label, s, row['note'])
    else:
      row.update(_metric_fields(metrics))
      if not math.isfinite(metrics['forget_acc']):
        row['note'] = 'no forget-class example in the evaluation split: forget_acc undefined'
        logging.warning('%s scenario %s: %s', name, sc.label, row['note'])
    rows.append(json_safe(row))
    if metrics is not None:
      evaluate.keep_margins(study.margins_dir, sc.klom_sets, rows[-1], metrics)
  return rows


def sweep(study, runs, log):
  """Runs each of ``runs`` (:class:`cure_jax.unlearning.plan.Run`) over every scenario and seed.
  Finished units come from / go to ``log``. Returns the rows in sweep order."""
  rows = []
  for run in runs:
    name = run.name
    logging.info('%s: effective hyperparameters %s', name, run.record)
    for sc in study.scenarios:
      note = methods.no_op_note(name, run.hparams['temperature'], study.data.num_classes,
                                len(sc.forget_classes))
      if note:
        logging.warning('%s (scenario %s)', note, sc.label)
    start, fresh, compile_s = time.perf_counter(), 0, 0.0
    pending = []  # the last unit, logged once its MIA's SVC (run beside this unit) is done
    try:
      for unit, sc, group in run_units(study, run):
        done = log.get(unit)
        if done is None:
          done = run_unit(study, run, sc, group, defer=True)
          _log_finished(study, log, pending)
          pending.append((unit, done))
          fresh += len(group)
          compile_s += sum(r['compile_s'] or 0.0 for r in done)
        rows += done
    finally:  # an interrupted sweep (Ctrl-C, an error) still logs the unit it finished
      _log_finished(study, log, pending)
    mine = [r for r in rows if r['method'] == name and r['status'] == 'ok']
    mean = lambda key, label: np.mean([r[key] for r in mine if r['scenario'] == label])
    summary = ' '.join(
        f'[{sc.label}] retain {mean("retain_acc", sc.label):.3f}'
        f' forget {mean("forget_acc", sc.label):.3f}'
        for sc in study.scenarios if any(r['scenario'] == sc.label for r in mine))
    console.phase('%-16s %d new run(s) in %.1fs (compile %.1fs)  %s', name, fresh,
           time.perf_counter() - start, compile_s, summary)
  return rows


def _log_finished(study, log, pending):
  """Waits for the pending units' MIA-efficacy and logs them (a killed sweep reruns a unit
  it had not logged: runs are deterministic)."""
  with study.timings.phase('evaluate'):
    for unit, rows in pending:
      log.add(unit, evaluate.resolve(rows))
  pending.clear()


def sweep_key(config, extra=()):
  """Digest of every setting that changes a sweep's rows (units carry the rest: each
  unit's id holds its run's effective hyperparameters, so a method re-tuned in
  ``unlearn.overrides`` reruns alone)."""
  cfg = config.to_dict()
  for path in (('train', 'log_every'), ('train', 'checkpoint_every'),
               ('unlearn', 'log_every'), ('unlearn', 'overrides'),
               ('reproduce', 'plots'), ('reproduce', 'methods'),
               ('reproduce', 'forget_threshold'), ('unlearn', 'method'), ('mode',),
               ('seeds',), ('scenarios',), ('forget_classes',), ('model_seeds',),
               ('model_cache',), ('claims',)):
    d = cfg
    for p in path[:-1]:
      d = d.get(p, {})
    d.pop(path[-1], None)
  cfg['data'].pop('data_dir', None)
  return fingerprint.digest({'config': cfg, 'code': fingerprint.TRAIN_CODE_VERSION,
                             'extra': list(extra)})
