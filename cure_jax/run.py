"""The one library entry point behind ``experiments.main``."""
import inspect
import os

from cure_jax import console


def _call(runner, config, workdir, cli_keys):
  """``runner(config, workdir, cli_keys=...)`` where the runner takes command-line keys."""
  if 'cli_keys' in inspect.signature(runner).parameters:
    return runner(config, workdir, cli_keys=cli_keys)
  return runner(config, workdir)


def run(config, workdir, cli_keys=frozenset()):
  """Runs ``config.mode`` of ``config.task`` ('classification' or 'lm') in ``workdir``.

  ``cli_keys``: dotted config keys set on the command line (e.g. 'unlearn.temperature');
  they take precedence over a config file's per-method overrides.
  """
  what = config.data.get('name') or config.data.get('source') or ''
  console.phase('cure-jax %s %s (%s) in %s; full log: %s', config.task, config.mode, what,
                workdir, os.path.join(workdir, console.LOG_NAME))
  if config.task == 'lm':
    from cure_jax.lm import run as lm_run
    return _call(lm_run.run, config, workdir, cli_keys)
  if config.task != 'classification':
    raise ValueError(f'Unknown task {config.task!r}; choose "classification" or "lm" '
                     '(config.task).')
  from cure_jax import classification
  return _call(classification.run, config, workdir, cli_keys)
