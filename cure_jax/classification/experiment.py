"""Class unlearning experiments: the modes of ``experiments.main`` for image datasets.

``reproduce`` (and ``unlearn``, one method) runs the paper's protocol
(:mod:`cure_jax.classification.protocol`) and writes results.json / results.md / plots;
``tune`` grid-searches each method on the validation split; ``train_original`` /
``train_retrain`` only train (or reuse) the models.
Sweeps are resumable: finished runs are logged in ``WORKDIR/runs.jsonl`` (``tune.jsonl``).
"""
import dataclasses
import itertools
import json
import os
import time

import numpy as np
from absl import logging

from cure_jax.classification import protocol, report, tables
from cure_jax.infra import files, fingerprint, plan, sweep_log, validation


def _meta(config, study, cli_keys):
  infos = [m.info for m in study.originals] + [m.info for sc in study.scenarios
                                                for m in sc.retrain]
  return fingerprint.run_metadata(
      config, infos, cli_keys, scenarios=[sc.label for sc in study.scenarios],
      model_seeds=list(study.model_seeds),
      timings={k: round(v, 3) for k, v in study.timings.items()})


def run_unlearning(config, workdir, runs, cli_keys=frozenset()):
  study = protocol.make_study(config, workdir)
  rows = protocol.reference_rows(study)
  log = sweep_log.SweepLog(os.path.join(workdir, 'runs.jsonl'), protocol.sweep_key(config))
  rows += protocol.sweep(study, runs, log)
  title = (f'{config.data.name}: scenarios {"; ".join(sc.label for sc in study.scenarios)}, '
           f'K = {len(study.model_seeds)} model seeds, {config.seeds} runs per method')
  class_names = list(study.data.class_names) or [str(k) for k in range(study.data.num_classes)]
  report.write_report(rows, workdir, threshold=config.reproduce.forget_threshold,
                      title=title, class_names=class_names, plots=config.reproduce.plots,
                      meta=_meta(config, study, cli_keys))
  print(f'## {title}\n\nTable 1 (test retain / forget accuracy, mean ± std; bold = best per '
        f'scenario and setting)\n')
  print(tables.table1(rows, config.reproduce.forget_threshold))
  print(f'Full report: {os.path.join(workdir, "results.md")}')
  return rows


def _uses_temperature(run):
  """Whether the method has a temperature of its own (grogu_t1 fixes T = 1 by name)."""
  return ('temperature' in run.method.own_hparams
          and 'temperature' not in dict(run.method.defaults))


def _trials(config, run):
  """``(trial settings, the run with them)``: the same ``len(lrs) × len(epochs)`` trials for
  every method, so that no method gets a larger search than another. A method with a
  temperature of its own searches it inside that budget: trial ``(i, j)`` (the i-th learning
  rate, the j-th epoch count) takes temperature ``(i + j) mod len(temperatures)``, a Latin
  assignment that pairs every temperature with several learning rates and every epoch count."""
  own_t = _uses_temperature(run)
  temps = tuple(config.tune.temperatures)
  for (i, lr), (j, epochs) in itertools.product(enumerate(config.tune.lrs),
                                                enumerate(config.tune.epochs)):
    temperature = temps[(i + j) % len(temps)] if own_t else run.hparams.temperature
    hp = run.hparams.as_configdict()
    hp.update(lr=float(lr), epochs=float(epochs), temperature=float(temperature))
    trial = {'lr': float(lr), 'epochs': float(epochs)}
    if own_t:
      trial['temperature'] = float(temperature)
    yield trial, dataclasses.replace(run, hparams=type(run.hparams)(hp))


def select(scored, threshold, min_retain_acc=0.0, name=''):
  """The earliest trial with the best mean retain acc among those whose worst scenario's
  mean forget acc ≤ threshold; else the trial with the lowest forget acc. Trials with a
  run whose retain acc is below ``min_retain_acc`` (collapsed) are not eligible unless every
  trial collapsed (then a warning names ``name``)."""
  kept = [t for t in scored if t[1].get('min_retain_acc', 1.0) >= min_retain_acc]
  if kept:
    scored = kept
  else:
    logging.warning('tune %s: every trial collapsed (a run below val retain %.2f); chose '
                    'among all of them.', name, min_retain_acc)
  ok = [i for i, (_, s) in enumerate(scored) if s['forget_acc'] <= threshold + 1e-12]
  if ok:
    return scored[max(ok, key=lambda i: (scored[i][1]['retain_acc'], -i))][0]
  return min(scored, key=lambda t: t[1]['forget_acc'])[0]


def tune(config, workdir, runs):
  """Grid search per method on the *validation* split over every scenario; writes
  tune.json with the choices (copy them into the config's overrides)."""
  study = protocol.make_study(config, workdir, split='val', n_runs=config.tune.seeds)
  log = sweep_log.SweepLog(os.path.join(workdir, 'tune.jsonl'),
                           protocol.sweep_key(config, extra=('tune',)))
  threshold, choices, records = config.reproduce.forget_threshold, {}, []
  begin = time.perf_counter()
  for run in runs:
    name, scored = run.name, []
    for trial, trial_run in _trials(config, run):
      rows = protocol.sweep(study, [trial_run], log)
      ok = [r for r in rows if r['status'] == 'ok']
      if len(ok) < len(rows):
        records.append({'method': name, **trial, 'status': 'diverged'})
        continue
      per = {sc.label: [r for r in ok if r['scenario'] == sc.label] for sc in study.scenarios}
      score = {'retain_acc': float(np.mean([r['retain_acc'] for r in ok])),
               'forget_acc': max(float(np.mean([r['forget_acc'] for r in v]))
                                 for v in per.values()),
               'min_retain_acc': float(min(r['retain_acc'] for r in ok))}
      scored.append((trial, score))
      records.append({'method': name, **trial, **score, 'status': 'ok'})
      logging.info('tune %s %s: val retain %.3f (worst run %.3f) worst-scenario forget %.3f',
                   name, trial, score['retain_acc'], score['min_retain_acc'],
                   score['forget_acc'])
    if not scored:
      raise FloatingPointError(f'tune: every trial of {name} diverged; lower config.tune.lrs.')
    choices[name] = select(scored, threshold, config.tune.min_retain_acc, name)
  rule = {'trials_per_method': len(config.tune.lrs) * len(config.tune.epochs),
          'lrs': list(config.tune.lrs), 'epochs': list(config.tune.epochs),
          'temperatures': list(config.tune.temperatures), 'split': 'val',
          'scenarios': [sc.label for sc in study.scenarios],
          'model_seeds': list(study.model_seeds), 'runs_per_scenario': config.tune.seeds,
          'forget_threshold': threshold, 'min_retain_acc': config.tune.min_retain_acc,
          'seconds': round(time.perf_counter() - begin, 1)}
  files.write_atomic(os.path.join(workdir, 'tune.json'),
                     files.to_json({'rule': rule, 'choices': choices, 'trials': records}))
  print(json.dumps(choices, indent=1))
  return choices


def train_only(config, workdir, kind):
  study = protocol.make_study(config, workdir, kinds=('original',) if kind == 'original'
                              else ('retrain',))
  out = []
  for sc in study.scenarios:
    trained = study.originals if kind == 'original' else sc.retrain
    for s, model in zip(study.model_seeds, trained):
      m = study.evaluator.evaluate(model.variables, sc.forget_classes)
      out.append({'scenario': sc.label, 'model_seed': s,
                  **{k: m[k] for k in ('overall_acc', 'retain_acc', 'forget_acc')}})
    if kind == 'original':
      break
  print(files.to_json(protocol.json_safe(out)))
  return out


def run(config, workdir, cli_keys=frozenset()):
  """Runs ``config.mode``. ``cli_keys``: dotted keys given on the command line (the
  precedence rule of :mod:`cure_jax.infra.plan`). ``config`` is checked
  as :func:`cure_jax.infra.entry.run` checks it (a lookup when that already did)."""
  validation.validate(config, workdir)
  if config.mode in ('train_original', 'train_retrain'):
    return train_only(config, workdir, config.mode.split('_')[1])
  runs = plan.runs(config, cli_keys)
  if config.mode == 'tune':
    return tune(config, workdir, runs)
  return run_unlearning(config, workdir, runs, cli_keys)
