"""The tasks and the small interface each one has: a ``validate`` module with
``validate(config, num_devices)`` (its fields, next to its defaults) and a ``run`` module
with ``run(config, workdir, cli_keys)`` (its modes). Imported on demand, so a runner loads
only its own task."""
import importlib

TASKS = {
    'classification': {'validate': 'cure_jax.classification.validate',
                       'run': 'cure_jax.classification.experiment'},
    'lm': {'validate': 'cure_jax.lm.validate', 'run': 'cure_jax.lm.run'},
}


def module(task, part):
  return importlib.import_module(TASKS[task][part])
