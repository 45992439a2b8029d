"""The LLM concept-unlearning runner behind ``experiments.main`` (``config.task == 'lm'``).

Modes: ``train_original`` / ``train_retrain`` fine-tune (or reuse) one LM;
``unlearn`` runs ``config.unlearn.method`` for every seed; ``reproduce`` runs every entry
of ``config.reproduce.runs``. Both of the latter fine-tune (or reuse) the original and
retrain models, evaluate them, and write ``results.json`` / ``results.md`` /
``generations.json`` into the workdir, and every evaluated model's open-unlearning
``TOFU_EVAL.json`` / ``TOFU_SUMMARY.json`` into ``WORKDIR/ou/<method>[-<variant>]-seed<s>/``
(:mod:`cure_jax.lm.ou_files`). With ``config.eval.retain_logs`` (a retain model's
TOFU_EVAL.json) forget quality and privleak compare with those logs instead of the retrain
model, which is still trained and evaluated for its own row.

The model is either the small byte-level LM trained from scratch (``config.model.pretrained
= ''``) or a pretrained checkpoint (:mod:`cure_jax.lm.setup` loads it, its tokenizer and its
chat prompt), fine-tuned on the authors like TOFU; already fine-tuned original / retrain
checkpoints (``config.model.original`` / ``.retrain``) skip that fine-tuning.

Fine-tuned models live in the model cache of :mod:`cure_jax.infra.trainer` (same settings:
reused; other settings: trained anew beside). Each finished (method, variant, seed) run is
appended to ``runs.jsonl`` (:class:`cure_jax.infra.sweep_log.SweepLog`), so a killed
``reproduce`` rerun skips it. Hyperparameter precedence: :mod:`cure_jax.unlearning.plan`.
"""
import dataclasses
import math
import os
import time
from typing import Any

from absl import logging

from cure_jax.infra import fingerprint, sweep_log
from cure_jax.lm import (evaluate, exports, ou_files, protocol, report, setup, train, unlearn,
                         validate)
from cure_jax.unlearning import plan


def _row(method, variant, seed, result, seconds, extra):
  row = {'method': method, 'variant': variant, 'seed': seed, 'seconds': round(seconds, 1)}
  undefined = []
  for k, v in result.items():
    if k in evaluate.DETAIL_KEYS:
      continue
    row[k] = float(v) if math.isfinite(float(v)) else None  # strict JSON: null, not NaN
    if row[k] is None:
      undefined.append(k)
  if undefined:
    row['note'] = f'undefined (not finite): {", ".join(undefined)}'
    logging.warning('%s %s seed %d: %s', method, variant, seed, row['note'])
  row.update(extra)
  return row


def sweep_key(config, fingerprints):
  """Digest of every setting that changes the rows; the unit ids carry the method, its
  hyperparameters and the seed. A retain model's logs count by their numbers (in
  ``fingerprints``), not by their path."""
  cfg = config.to_dict()
  for section, key in (('finetune', 'log_every'), ('finetune', 'checkpoint_every'),
                       ('unlearn', 'log_every'), ('unlearn', 'method'), ('reproduce', 'runs'),
                       (None, 'mode'), (None, 'seeds'), (None, 'model_cache'),
                       (None, 'export'), ('eval', 'retain_logs')):
    (cfg[section] if section else cfg).pop(key, None)
  cfg['data'].pop('data_dir', None)
  return fingerprint.digest({'config': cfg, 'models': fingerprints,
                             'code': fingerprint.TRAIN_CODE_VERSION})


@dataclasses.dataclass
class References:
  """The original and retrain models' parameters, fingerprints, rows and what the unlearned
  models are compared with."""
  params: dict
  infos: dict
  rows: list
  truth_ratios: Any      # the retrain model's forget truth ratios (forget quality's reference)
  retrain_auc: Any       # the retrain model's min-k membership AUC (privleak's reference)
  samples: list          # forget questions whose generations go to generations.json


def _references(config, workdir, out, lm, splits, evaluator, retain_logs=None):
  """Fine-tunes (or reuses: models live in ``workdir``'s cache) and evaluates the original
  and retrain models; their open-unlearning files go to ``out``.

  Forget quality and privleak compare with the retrain model (its own row: 1 and 0), or
  with ``retain_logs`` (:class:`cure_jax.lm.ou_files.RetainLogs`) for every row, the
  retrain model's included.
  """
  infos = {kind: protocol.model_info(config, workdir, kind, lm, splits)
           for kind in ('original', 'retrain')}
  params = {kind: protocol.finetuned(config, workdir, kind, lm.model, lm.tokenizer, splits, lm)
            for kind in ('original', 'retrain')}
  extra = {'model_fingerprint': {k: i['fingerprint'] for k, i in infos.items()},
           'hparams': {k: v for k, v in config.finetune.to_dict().items()
                       if k not in ('log_every', 'checkpoint_every')}}
  t = time.time()
  if retain_logs is None:
    retrain = evaluator.evaluate(params['retrain'])
    retrain['forget_quality'] = 1.0  # KS test of a sample against itself
    if retrain.get('mia_min_k') is not None:
      retrain['privleak'] = 0.0  # relative to itself
    truth_ratios, auc = retrain['splits']['forget']['truth_ratios'], retrain.get('mia_min_k')
  else:
    truth_ratios, auc = retain_logs.truth_ratios, retain_logs.mia_auc
    retrain = evaluator.evaluate(params['retrain'], truth_ratios, auc)
  rows = [_row('retrain', '', config.seed, retrain, time.time() - t, extra)]
  t = time.time()
  original = evaluator.evaluate(params['original'], truth_ratios, auc)
  rows.insert(0, _row('original', '', config.seed, original, time.time() - t, extra))
  for kind, result in (('original', original), ('retrain', retrain)):
    ou_files.write(ou_files.run_directory(out, kind, '', config.seed), result)
  shown = min(config.eval.num_samples, len(splits['forget']))
  samples = [{'question': item['question'], 'answer': item['answer'],
              'original': original['splits']['forget']['generations'][i],
              'retrain': retrain['splits']['forget']['generations'][i]}
             for i, item in enumerate(splits['forget'][:shown])]
  return References(params, infos, rows, truth_ratios, auc, samples)


def _model_fns(config, lm, runs):
  """``(apply_fn, represent_fn)`` made once per job, so the compiled unlearning steps
  (cached by these functions) serve every forget set."""
  model, layer = lm.model, int(config.unlearn.rmu_layer)
  if any(r.method.represents for r in runs) and layer >= model.config.num_layers:
    raise ValueError(f'config.unlearn.rmu_layer={layer}: the model has '
                     f'{model.config.num_layers} decoder layers (0..{model.config.num_layers - 1}).')
  return (lambda p, tokens: model.apply({'params': p}, tokens),
          lambda p, tokens: model.apply({'params': p}, tokens, hidden_layer=layer))


def _unlearn_one(config, r, seed, refs, data, fns):
  method = r.method
  return unlearn.unlearn(fns[0], refs.params['original'], data['forget'], data['retain'],
                         r.hparams, r.name, seed, mode=config.model.sharding,
                         forget_ids=data['names'],
                         alternate=data['alternate'].get(method.alternate),
                         represent_fn=fns[1] if method.represents else None)


def _sweep(config, workdir, runs, lm, data, evaluator, refs, fns):
  """Every run × seed from the original model (finished ones from ``runs.jsonl``)."""
  fps = refs.rows[0]['model_fingerprint']
  keyed = fps
  if config.eval.retain_logs:
    keyed = dict(fps, retain_logs=fingerprint.digest([list(map(float, refs.truth_ratios)),
                                                      refs.retrain_auc]))
  log = sweep_log.SweepLog(os.path.join(workdir, 'runs.jsonl'), sweep_key(config, keyed))
  rows, seconds = [], {'unlearn': 0.0, 'evaluate': 0.0}
  for r in runs:
    logging.info('%s %s: effective hyperparameters %s', r.name, r.variant, r.record)
    for seed in range(config.seeds):
      unit = f'{r.name}|{r.variant}|{fingerprint.digest(r.record)}|seed={seed}'
      done = log.get(unit)
      if done is None:
        t = time.time()
        new_params = _unlearn_one(config, r, seed, refs, data, fns)
        t_eval = time.time()
        result = evaluator.evaluate(new_params, refs.truth_ratios, refs.retrain_auc)
        seconds['unlearn'] += t_eval - t
        seconds['evaluate'] += time.time() - t_eval
        row = _row(r.name, r.variant, seed, result, time.time() - t,
                   {'model_fingerprint': fps, 'hparams': r.record})
        if config.export.format:   # before the unit is logged: a logged run has its export
          row['export'] = exports.write(config, workdir, lm, new_params, r, seed, unit)
        ou_files.write(ou_files.run_directory(workdir, r.name, r.variant, seed), result)
        done = {'row': row, 'generations':
                result['splits']['forget']['generations'][:len(refs.samples)]}
        log.add(unit, done)
      elif config.export.format and not exports.written(done['row'], config, workdir, r, seed):
        # The row was logged without this export: the run is deterministic (same program,
        # seed and models, which the sweep key pins), so unlearning again gives its params.
        logging.info('%s %s seed %d: finished earlier without the requested %s export; '
                     'unlearning again to write it', r.name, r.variant, seed,
                     config.export.format)
        new_params = _unlearn_one(config, r, seed, refs, data, fns)
        row = dict(done['row'], export=exports.write(config, workdir, lm, new_params, r, seed,
                                                     unit))
        done = dict(done, row=row)
        log.add(unit, done)
      else:
        logging.info('%s %s seed %d: finished earlier (%s)', r.name, r.variant, seed, log.path)
      rows.append(done['row'])
      logging.info('%s %s seed %d: %s', r.name, r.variant, seed,
                   {k: round(v, 3) for k, v in done['row'].items() if isinstance(v, float)})
      if seed == 0:
        for sample, generation in zip(refs.samples, done['generations']):
          sample[f'{r.name} {r.variant}'.strip()] = generation
  return rows, seconds


def _retain_logs(config, evaluator):
  """``config.eval.retain_logs`` read before any training (None when unset); its min-k% AUC
  is required only when a holdout split gives privleak."""
  if not config.eval.retain_logs:
    return None
  logs = ou_files.read_retain_logs(config.eval.retain_logs, 'holdout' in evaluator.splits)
  forget = len(evaluator.splits['forget'])
  if len(logs.truth_ratios) != forget:
    logging.warning('%s has %d forget truth ratios but %d forget items are evaluated here: '
                    'was the retain model evaluated on the same forget split?', logs.path,
                    len(logs.truth_ratios), forget)
  return logs


def _forget_set(config, workdir, k, lm, runs, fns):
  """Forget set ``k``: its splits, references and sweep; outputs in ``out`` (the workdir
  itself for a one-set job, else ``WORKDIR/forget_set<k>``). Returns (reference rows, run
  rows, samples, out, seconds, forget authors)."""
  start = time.time()
  out = exports.forget_set_dir(config, workdir, k)
  os.makedirs(out, exist_ok=True)
  splits = protocol.load_splits(config.data, k)
  # Encode before any training: an answer too long for the context fails in seconds.
  data = {name: train.trim(protocol.encode(lm.tokenizer, splits[name], config, lm.template))
          for name in ('forget', 'retain')}
  data['names'] = protocol.forget_ids(config, lm.tokenizer, splits)
  data['alternate'] = {kind: protocol.alternates(lm.tokenizer, splits['forget'], config,
                                                 lm.template, kind)
                       for kind in sorted({r.method.alternate for r in runs} - {None})}
  evaluator = evaluate.Evaluator(lm.model, lm.tokenizer, protocol.eval_splits(splits, config),
                                 lm.template, config.eval.batch_size, config.eval.max_new_tokens,
                                 config.model.max_len, config.eval.num_perturbed)
  retain_logs = _retain_logs(config, evaluator)
  refs = _references(config, workdir, out, lm, splits, evaluator, retain_logs)
  seconds = {'references': time.time() - start}
  rows, sweep_s = _sweep(config, out, runs, lm, data, evaluator, refs, fns)
  seconds.update(sweep_s)
  authors = sorted({item['author'] for item in splits['forget']})
  if config.data.forget_sets > 1:
    for row in refs.rows + rows:
      row['forget_set'] = k
    for sample in refs.samples:
      sample['forget_set'] = k
  return refs, rows, out, seconds, authors


def run(config, workdir, cli_keys=frozenset()):
  """Runs ``config.mode``; returns the result rows (unlearn / reproduce) or None.

  ``cli_keys``: dotted config keys given on the command line (the precedence rule of
  :mod:`cure_jax.unlearning.plan`). ``config`` is checked first, as
  :func:`cure_jax.entry.run` checks it. With ``config.data.forget_sets > 1`` every
  forget set runs in ``WORKDIR/forget_set<k>`` (its own results and files) on the one
  fine-tuned original, and ``WORKDIR/results.*`` gather all rows: mean ± std over sets.
  """
  validate.validate_config(config, workdir)
  return execute(config, workdir, cli_keys)


def execute(config, workdir, cli_keys=frozenset()):
  """:func:`run` of a config already checked (:func:`cure_jax.entry.run` checked it)."""
  start = time.time()
  if config.mode not in ('train_original', 'train_retrain'):
    runs = plan.runs(config, cli_keys)
    exports.check_targets(config, workdir, runs)   # before any model loads
  lm = setup.load_model(config)
  if config.mode in ('train_original', 'train_retrain'):
    protocol.finetuned(config, workdir, config.mode.split('_')[1], lm.model, lm.tokenizer,
                       protocol.load_splits(config.data), lm)
    return None
  fns = _model_fns(config, lm, runs)
  all_rows, samples, infos, seconds, forgotten = [], [], [], {}, []
  for k in range(config.data.forget_sets):
    refs, rows, out, set_s, authors = _forget_set(config, workdir, k, lm, runs, fns)
    all_rows += refs.rows + rows
    samples += refs.samples
    infos += list(refs.infos.values())
    forgotten.append(', '.join(authors))
    for key, value in set_s.items():
      seconds[key] = seconds.get(key, 0.0) + value
    if config.data.forget_sets > 1:   # each set's own table beside its files
      report.write_report(refs.rows + rows, out, samples=refs.samples,
                          title=_title(config, [forgotten[-1]], k))
  title = _title(config, forgotten, None)
  table = report.write_report(all_rows, workdir, samples=samples, title=title,
                              meta=fingerprint.run_metadata(config, infos, cli_keys))
  logging.info('%s mode finished in %.0fs: fine-tuning (or loading) and reference '
               'evaluations %.0fs, unlearning %.0fs, evaluations of unlearned models %.0fs',
               config.mode, time.time() - start, seconds['references'], seconds['unlearn'],
               seconds['evaluate'])
  print(table)
  print(f'Full report: {os.path.join(workdir, "results.md")}', flush=True)
  return all_rows


def _title(config, forgotten, k):
  """The report's heading: data, model, split, the forget authors of each set, mask."""
  sets = (f'forget set {k}: {forgotten[0]}' if k is not None else
          '; '.join(f'set {i}: {a}' for i, a in enumerate(forgotten)) if len(forgotten) > 1
          else f'forget authors: {forgotten[0]}')
  title = (f'LLM concept unlearning ({config.data.source}, '
           f'{config.model.pretrained or "byte-level LM"}, '
           f'split forget{config.data.forget_pct:02d} ({sets}), '
           f'forget mask {config.unlearn.forget_mask})')
  if config.eval.retain_logs:   # the table's text otherwise says: against the retrain model
    title += f'; forget quality and privleak against the retain logs {config.eval.retain_logs}'
  return title
