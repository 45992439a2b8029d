"""The one library entry point behind ``experiments.main``: the config validated once, then
the task's ``run``."""
import contextlib
import os

from cure_jax.infra import console, locks, tasks, validation


def workdir_lock(config, workdir):
  """One run per workdir: held, a second process's run raises
  :class:`cure_jax.infra.locks.InUseError` naming the holder. Every process of a multi-host
  job runs in the same workdir, and before ``jax.distributed.initialize`` they cannot be told
  apart: there the model locks (:func:`cure_jax.infra.trainer.fit`) alone apply."""
  if config.get('distributed', False):
    return contextlib.nullcontext()
  return locks.workdir_lock(workdir)


def run(config, workdir, cli_keys=frozenset()):
  """Runs ``config.mode`` of ``config.task`` (:data:`cure_jax.infra.tasks.TASKS`) in
  ``workdir``; returns the task's result rows (None for the training modes).

  The whole config is checked first (:func:`cure_jax.infra.validation.validate`: a bad value
  raises :class:`~cure_jax.infra.validation.ConfigError` naming it before any data loads);
  the tasks' ``run`` functions take it as checked. ``cli_keys``: dotted config keys set on
  the command line (e.g. 'unlearn.temperature'); they win over a config file's per-run
  settings (:mod:`cure_jax.infra.plan`). The workdir is locked for the whole run: another
  process already running in it raises :class:`cure_jax.infra.locks.InUseError`.
  """
  validation.validate(config, workdir)
  with workdir_lock(config, workdir):
    what = config.data.name if config.task == 'classification' else config.data.source
    console.phase('cure-jax %s %s (%s) in %s; full log: %s', config.task, config.mode, what,
                  workdir, os.path.join(workdir, console.LOG_NAME))
    return tasks.module(config.task, 'run').run(config, workdir, cli_keys=cli_keys)
