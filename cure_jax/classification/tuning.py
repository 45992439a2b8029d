"""``mode=tune``: every method's hyperparameters chosen by one rule on the validation split.

Every method gets the same trials (:func:`trials`: the ``config.tune.lrs`` × ``epochs`` grid,
a method's own temperature searched inside it), each trial runs the protocol on the
validation split (every scenario, ``config.tune.seeds`` runs from tuning's own original
models, ``config.tune.model_seeds`` from ``config.tune.seed``, with unlearning keys from
``config.tune.seed`` on: no trial starts from a reported model or draws a reported run's
batches), and :func:`select` applies the paper's rule: among trials whose worst scenario's
mean forget accuracy is at most ``config.reproduce.forget_threshold``, the best mean retain
accuracy; diverged and collapsed trials are not eligible. Writes ``tune.json`` (the rule, the
choices, every trial) and ``tune.md`` (the choices as a table) in the workdir.
"""
import dataclasses
import itertools
import json
import os
import time

import numpy as np
from absl import logging

from cure_jax.classification import protocol, search
from cure_jax.infra import files, sweep_log
from cure_jax.unlearning import plan


def trials(config, run):
  """``(trial settings, the run with them)``: the starting design, the same
  ``len(lrs) × len(epochs)`` trials for every method. A method with a temperature of its own
  searches it inside that budget: trial ``(i, j)`` (the i-th learning rate, the j-th epoch
  count) takes temperature ``(i + j) mod len(temperatures)``, a Latin assignment that pairs
  every temperature with several learning rates and every epoch count; GROGU's weight
  ``w_h`` likewise takes ``(i + 2j) mod len(grogu_weights)``."""
  dims = search.dims_of(run)
  temps, weights = tuple(config.tune.temperatures), tuple(config.tune.grogu_weights)
  for (i, lr), (j, epochs) in itertools.product(enumerate(config.tune.lrs),
                                                enumerate(config.tune.epochs)):
    trial = {'lr': float(lr), 'epochs': float(epochs)}
    if 'temperature' in dims:
      trial['temperature'] = float(temps[(i + j) % len(temps)])
    if 'w_h' in dims:
      trial['w_h'] = float(weights[(i + 2 * j) % len(weights)])
    yield trial, with_trial(run, trial)


def with_trial(run, trial):
  """``run`` with a trial's settings (``w_h`` sets ``w_s = 1 − w_h``)."""
  hp = run.hparams.as_configdict()
  hp.update({k: float(v) for k, v in trial.items()})
  if 'w_h' in trial:
    hp.update(w_s=1.0 - float(trial['w_h']))
  return dataclasses.replace(run, hparams=type(run.hparams)(hp))


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


def _score(study, rows):
  """A trial's validation score over its runs, or None when one of them diverged."""
  ok = [r for r in rows if r['status'] == 'ok']
  if len(ok) < len(rows):
    return None
  per = {sc.label: [r for r in ok if r['scenario'] == sc.label] for sc in study.scenarios}
  return {'retain_acc': float(np.mean([r['retain_acc'] for r in ok])),
          'forget_acc': max(float(np.mean([r['forget_acc'] for r in v])) for v in per.values()),
          'min_retain_acc': float(min(r['retain_acc'] for r in ok))}


def budget(config):
  """Trials per method: ``config.tune.trials``, or the starting grid's size when 0."""
  return config.tune.trials or len(config.tune.lrs) * len(config.tune.epochs)


def _search(config, run, study, log, threshold):
  """``(scored trials, trial records)`` of one method: the starting design, then
  :func:`search.next_trial` until the budget is spent or no move is left."""
  space = search.space(config.tune, search.dims_of(run))
  queue = [t for t, _ in trials(config, run)]
  scored, tried, records = [], [], []
  while len(tried) < budget(config):
    if queue:
      trial = queue.pop(0)
    else:
      best = select(scored, threshold, config.tune.min_retain_acc, run.name) if scored else None
      trial = search.next_trial(space, best, tried) if best else None
      if trial is None:
        break
    tried.append(trial)
    score = _score(study, protocol.sweep(study, [with_trial(run, trial)], log))
    records.append({'method': run.name, **trial, **(score or {}),
                    'status': 'ok' if score else 'diverged'})
    if score:
      scored.append((trial, score))
      logging.info('tune %s %s: val retain %.3f (worst run %.3f) worst-scenario forget %.3f',
                   run.name, trial, score['retain_acc'], score['min_retain_acc'],
                   score['forget_acc'])
  return scored, records


def tune(config, workdir, runs):
  """Runs every method's trials on the validation split and applies :func:`select`; writes
  ``tune.json`` and ``tune.md`` and returns ``{method: chosen settings}`` (copy them into
  the config's ``unlearn.overrides``). A method whose every trial diverged gets no choice
  (a warning, and a line in tune.md), and the other methods are still tuned."""
  study = protocol.build_study(config, workdir, split='val', n_runs=config.tune.seeds,
                               runs=runs, model_seeds=plan.tune_model_seeds(config),
                               first_run_seed=config.tune.seed)
  log = sweep_log.SweepLog(os.path.join(workdir, 'tune.jsonl'),
                           protocol.sweep_key(config, extra=('tune',)))
  threshold, choices, records = config.reproduce.forget_threshold, {}, []
  begin = time.perf_counter()
  for run in runs:
    scored, mine = _search(config, run, study, log, threshold)
    records += mine
    if scored:
      choices[run.name] = select(scored, threshold, config.tune.min_retain_acc, run.name)
    else:
      logging.warning('tune %s: every trial diverged; no choice (lower config.tune.lrs).',
                      run.name)
  rule = {'dataset': config.data.name,
          'trials_per_method': budget(config),
          'lrs': list(config.tune.lrs), 'epochs': list(config.tune.epochs),
          'temperatures': list(config.tune.temperatures), 'split': 'val',
          'grogu_weights': list(config.tune.grogu_weights),
          'ladders': {d: list(v)
                      for d, v in search.space(config.tune, search.DIMS).ladders.items()},
          'scenarios': [sc.label for sc in study.scenarios],
          'model_seeds': list(study.model_seeds), 'first_run_seed': study.first_run_seed,
          'reported_model_seeds': list(plan.model_seeds(config)),
          'runs_per_scenario': config.tune.seeds,
          'forget_threshold': threshold, 'min_retain_acc': config.tune.min_retain_acc,
          'seconds': round(time.perf_counter() - begin, 1)}
  doc = {'rule': rule, 'choices': choices, 'trials': records}
  files.write_atomic(os.path.join(workdir, 'tune.md'),
                     markdown(doc, [r.name for r in runs], config.data.name))
  files.write_atomic(os.path.join(workdir, 'tune.json'), files.to_json(doc))
  print(json.dumps(choices, indent=1))
  return choices


def merge(doc, update, why):
  """``doc`` (a tune.json) with the methods tuned in ``update`` (another tune.json, the
  same rule) re-tuned: their trials and choices replace ``doc``'s, and ``doc['retuned']``
  lists them with ``why`` and the re-tuning time (tune.md says so)."""
  same = lambda rule: {k: v for k, v in rule.items() if k != 'seconds'}
  if same(doc['rule']) != same(update['rule']):
    diff = sorted(k for k in same(doc['rule']) if doc['rule'][k] != update['rule'].get(k))
    raise ValueError(f'the re-tuning used another rule ({", ".join(diff)} differ); tune '
                     'every method again with one rule instead.')
  names = sorted({t['method'] for t in update['trials']})
  trials, placed = [], set()
  for t in doc['trials'] + update['trials']:   # each re-tuned method where it was
    name = t['method']
    if name not in names:
      trials.append(t)
    elif name not in placed:
      placed.add(name)
      trials += [u for u in update['trials'] if u['method'] == name]
  choices = {k: v for k, v in doc['choices'].items() if k not in names}
  choices.update(update['choices'])
  retuned = list(doc.get('retuned', [])) + [
      {'methods': names, 'why': why, 'seconds': update['rule']['seconds']}]
  return dict(doc, choices=choices, trials=trials, retuned=retuned)


def _own(rule):
  """How the tuning models stand to the reported ones (older tune.json files lack it)."""
  if 'reported_model_seeds' not in rule:
    return ' (the reported runs\' own models: this tuning predates tuning seeds of its own)'
  return (f' (tuning\'s own: the reported runs use {rule["reported_model_seeds"]}; unlearning '
          f'keys from {rule["first_run_seed"]})')


def grid_edges(choice, rule):
  """The grid dimensions ``choice`` sits on an edge of (``'lr max'``, ``'epochs max'``, ...):
  the grid did not bracket the best value there, so a wider one might choose otherwise."""
  grids = {'lr': rule['lrs'], 'epochs': rule['epochs'], 'temperature': rule['temperatures']}
  out = []
  for key in ('lr', 'epochs', 'temperature'):
    values = sorted(float(v) for v in grids[key])
    if key in choice and len(values) > 1:
      if float(choice[key]) == values[0]:
        out.append(f'{key} min')
      elif float(choice[key]) == values[-1]:
        out.append(f'{key} max')
  return out


def _setting(trial):
  return ', '.join(f'{k} {trial[k]:g}' for k in search.DIMS if k in trial)


def edges(choice, rule, tried):
  """Where ``choice`` sits unbracketed: :func:`search.position` against the rule's ladders
  and the method's ``tried`` trials; for a tuning without ladders (before the search),
  :func:`grid_edges`."""
  if 'ladders' not in rule:
    return grid_edges(choice, rule)
  space = search.Space({d: tuple(v) for d, v in rule['ladders'].items() if d in choice})
  return search.position(space, choice, tried)


def _search_text(rule):
  grid = len(rule['lrs']) * len(rule['epochs'])
  if 'ladders' not in rule or rule['trials_per_method'] <= grid:
    return ''
  return (f'; GROGU\'s weight w_h {rule["grogu_weights"]}; then {rule["trials_per_method"] - grid} '
          'one-rung moves of the current choice, first where it is unbracketed, along the '
          f'ladders {_ladders(rule)} (cure_jax/classification/search.py)')


def _ladders(rule):
  return '; '.join(f'{d} {v[0]:g} … {v[-1]:g}' for d, v in rule['ladders'].items())


def markdown(doc, methods, dataset):
  """tune.md: the rule, then per method its choice, the choice's validation score and how
  many of its trials were eligible, diverged or collapsed."""
  rule = doc['rule']
  lines = [f'# {dataset}: tuning on the validation split', '',
           f'Rule: the same {rule["trials_per_method"]} trials for every method (lr '
           f'{rule["lrs"]} × epochs {rule["epochs"]}; a method with its own temperature '
           f'searches {rule["temperatures"]} inside them{_search_text(rule)}), '
           f'{rule["runs_per_scenario"]} '
           f'run(s) per scenario {rule["scenarios"]} from the original models '
           f'{rule["model_seeds"][:rule["runs_per_scenario"]]}{_own(rule)}; chosen: the best '
           f'mean validation retain accuracy among '
           f'trials whose worst scenario\'s mean forget accuracy is ≤ '
           f'{rule["forget_threshold"]:g}, else the lowest forget accuracy; diverged trials and '
           f'trials with a run below retain {rule["min_retain_acc"]:g} (collapsed) are not '
           f'eligible. Tuning time: {rule["seconds"]:.0f} s.', '',
           *[f'Re-tuned alone by the same rule ({r["seconds"]:.0f} s): '
             f'{", ".join(r["methods"])}, {r["why"]}' for r in doc.get('retuned', [])],
           *([''] if doc.get('retuned') else []),
           '| Method | Chosen | Val retain | Worst-scenario val forget | Under threshold | '
           'Trials ok / diverged / collapsed | Not bracketed |', '|---|---|---|---|---|---|---|']
  where = []   # per chosen method: the dimensions its choice leaves unbracketed
  for name in methods:
    mine = [t for t in doc['trials'] if t['method'] == name]
    ok = [t for t in mine if t['status'] == 'ok']
    collapsed = sum(t['min_retain_acc'] < rule['min_retain_acc'] for t in ok)
    counts = f'{len(ok) - collapsed} / {len(mine) - len(ok)} / {collapsed}'
    choice = doc['choices'].get(name)
    if choice is None:
      lines.append(f'| {name} | – (every trial diverged) | – | – | – | {counts} | – |')
      continue
    best = next(t for t in ok if all(t[k] == v for k, v in choice.items()))
    under = 'yes' if best['forget_acc'] <= rule['forget_threshold'] + 1e-12 else 'no'
    where.append(edges(choice, rule, mine))
    lines.append(f'| {name} | {_setting(choice)} | {best["retain_acc"]:.3f} | '
                 f'{best["forget_acc"]:.3f} | {under} | {counts} | '
                 f'{", ".join(where[-1]) or "–"} |')
  on_edge = sum(bool(w) for w in where)
  if 'ladders' not in rule:
    lines += ['', f'{on_edge} of {len(doc["choices"])} choices sit on an edge of the grid (the '
              'last column): there the grid did not bracket the best value.']
  else:
    capped = sum(any(e.endswith('(cap)') for e in w) for w in where)
    lines += ['', f'{on_edge} of {len(doc["choices"])} choices are not bracketed in some '
              f'dimension (the last column): {capped} at a cap of its ladder '
              f'({_ladders(rule)}), the others where the budget ran out before the search '
              'bracketed them.']
  return '\n'.join(lines) + '\n'
