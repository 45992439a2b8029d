"""The one library entry point behind ``experiments.main``: the task's ``run``."""
import os

from cure_jax.infra import console, tasks


def run(config, workdir, cli_keys=frozenset()):
  """Runs ``config.mode`` of ``config.task`` (:data:`cure_jax.infra.tasks.TASKS`) in
  ``workdir``. ``cli_keys``: dotted config keys set on the command line (e.g.
  'unlearn.temperature'); they win over a config file's per-run settings
  (:mod:`cure_jax.infra.plan`).
  """
  if config.task not in tasks.TASKS:
    raise ValueError(f'Unknown task {config.task!r}; choose one of {sorted(tasks.TASKS)} '
                     '(config.task).')
  what = config.data.name if config.task == 'classification' else config.data.source
  console.phase('cure-jax %s %s (%s) in %s; full log: %s', config.task, config.mode, what,
                workdir, os.path.join(workdir, console.LOG_NAME))
  return tasks.module(config.task, 'run').run(config, workdir, cli_keys=cli_keys)
