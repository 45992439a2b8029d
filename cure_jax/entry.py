"""The one library entry point behind ``experiments.main``: the config validated once, then
the task's run.

Each task (:data:`TASKS`) has a ``validate`` module with ``validate_config(config, workdir,
num_devices)`` (the whole config, its own fields next to its defaults) and a ``run`` module
with ``run(config, workdir, cli_keys)`` (checks, then its modes) and ``execute`` (the modes
of a config already checked). Imported on demand, so a runner loads only its own task.
"""
import contextlib
import importlib
import os

from cure_jax.infra import console, locks, validation

TASKS = {
    'classification': {'validate': 'cure_jax.classification.validate',
                       'experiment': 'cure_jax.classification.experiment'},
    'lm': {'validate': 'cure_jax.lm.validate', 'experiment': 'cure_jax.lm.experiment'},
}


def task_module(task, part):
  return importlib.import_module(TASKS[task][part])


def validate(config, workdir=None, num_devices=None):
  """Raises :class:`~cure_jax.infra.rules.ConfigError` for the first bad field of
  ``config`` (of either task) or the workdir, as the command line checks them."""
  validation.check_task(config, TASKS)
  task_module(config.task, 'validate').validate_config(config, workdir, num_devices)


def workdir_lock(config, workdir):
  """One run per workdir: held, a second process's run raises
  :class:`cure_jax.infra.locks.InUseError` naming the holder. Every process of a multi-host
  job runs in the same workdir, and before ``jax.distributed.initialize`` they cannot be told
  apart: there the model locks (:func:`cure_jax.infra.trainer.fit`) alone apply."""
  if config.get('distributed', False):
    return contextlib.nullcontext()
  return locks.workdir_lock(workdir)


def run(config, workdir, cli_keys=frozenset()):
  """Runs ``config.mode`` of ``config.task`` (:data:`TASKS`) in ``workdir``; returns the
  task's result rows (None for the training modes).

  The whole config is checked once, here (:func:`validate`: a bad value raises
  :class:`~cure_jax.infra.rules.ConfigError` naming it before any data loads); the task
  then runs it as checked. ``cli_keys``: dotted config keys set on the command line (e.g.
  'unlearn.temperature'); they win over a config file's per-run settings
  (:mod:`cure_jax.unlearning.plan`). The workdir is locked for the whole run: another
  process already running in it raises :class:`cure_jax.infra.locks.InUseError`.
  """
  validate(config, workdir)
  with workdir_lock(config, workdir):
    what = config.data.name if config.task == 'classification' else config.data.source
    console.phase('cure-jax %s %s (%s) in %s; full log: %s', config.task, config.mode, what,
                  workdir, os.path.join(workdir, console.LOG_NAME))
    return task_module(config.task, 'experiment').execute(config, workdir, cli_keys=cli_keys)
