r"""Command-line entry point for every cure-jax experiment.

  python -m experiments.main --config=configs/digits.py --workdir=/tmp/digits
  python -m experiments.main --config=configs/digits.py --config.mode=unlearn \
      --config.unlearn.method=grogu --config.forget_classes=1 --workdir=/tmp/digits

Modes (``--config.mode``): train_original, train_retrain, unlearn, reproduce, tune
(classification) and the same for ``configs/authors.py`` (concept unlearning in an LM).

The console shows one line per phase, warnings and the final table; the full log is in
``WORKDIR/log.txt``; ``--verbosity=0`` (or higher) prints every log line instead. A bad
flag or config value stops the run at start-up with one line naming it (exit code 1).
"""
from absl import app, flags
from ml_collections import config_flags

from cure_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.run_experiment(_CONFIG.value, _WORKDIR.value, flags.FLAGS['config'],
                     verbose=flags.FLAGS['verbosity'].present)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.flags_parser(_CONFIG))
