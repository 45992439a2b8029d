"""Class unlearning experiments: the modes of ``experiments.main`` for image datasets.

``reproduce`` (and ``unlearn``, one method) runs the paper's protocol
(:mod:`cure_jax.classification.protocol`) and writes results.json / results.md / plots;
``tune`` searches each method's hyperparameters on the validation split
(:mod:`cure_jax.classification.tuning`); ``train_original`` /
``train_retrain`` only train (or reuse) the models.
Sweeps are resumable: finished runs are logged in ``WORKDIR/runs.jsonl`` (``tune.jsonl``).
"""
import os

from cure_jax.classification import claims, protocol, report, tables, tuning, validate
from cure_jax.infra import files, fingerprint, sweep_log
from cure_jax.unlearning import plan


def _meta(config, study, cli_keys):
  infos = [m.info for m in study.originals] + [m.info for sc in study.scenarios
                                                for m in sc.retrain]
  return fingerprint.run_metadata(
      config, infos, cli_keys, scenarios=[sc.label for sc in study.scenarios],
      model_seeds=list(study.model_seeds),
      timings={k: round(v, 3) for k, v in study.timings.items()})


def run_unlearning(config, workdir, runs, cli_keys=frozenset()):
  study = protocol.build_study(config, workdir, runs=runs)
  rows = protocol.reference_rows(study)
  log = sweep_log.SweepLog(os.path.join(workdir, 'runs.jsonl'), protocol.sweep_key(config))
  rows += protocol.sweep(study, runs, log)
  title = (f'{config.data.name}: scenarios {"; ".join(sc.label for sc in study.scenarios)}, '
           f'K = {len(study.model_seeds)} model seeds, {config.seeds} runs per method')
  class_names = list(study.data.class_names) or [str(k) for k in range(study.data.num_classes)]
  report.write_report(rows, workdir, threshold=config.reproduce.forget_threshold,
                      title=title, class_names=class_names, plots=config.reproduce.plots,
                      meta=_meta(config, study, cli_keys),
                      claims_spec=claims.Spec.from_config(config.claims))
  print(f'## {title}\n\nTable 1 (test retain / forget accuracy, mean ± std; bold = best per '
        f'scenario and setting)\n')
  print(tables.table1(rows, config.reproduce.forget_threshold))
  print(f'Full report: {os.path.join(workdir, "results.md")}')
  return rows


def train_only(config, workdir, kind):
  study = protocol.build_study(config, workdir, kinds=('original',) if kind == 'original'
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
  precedence rule of :mod:`cure_jax.unlearning.plan`). ``config`` is checked first, as
  :func:`cure_jax.entry.run` checks it."""
  validate.validate_config(config, workdir)
  return execute(config, workdir, cli_keys)


def execute(config, workdir, cli_keys=frozenset()):
  """:func:`run` of a config already checked (:func:`cure_jax.entry.run` checked it)."""
  if config.mode in ('train_original', 'train_retrain'):
    return train_only(config, workdir, config.mode.split('_')[1])
  runs = plan.runs(config, cli_keys)
  if config.mode == 'tune':
    return tuning.tune(config, workdir, runs)
  return run_unlearning(config, workdir, runs, cli_keys)
