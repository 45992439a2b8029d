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
import ast
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
flags.mark_flags_as_required(['config', 'workdir'])

_OVERRIDE = re.compile(r'^--?config\.([\w.]+)=(.*)$', re.S)
# Overrides that config_flags cannot parse (a None-valued field or the value None), applied
# after parsing: {dotted key: value}.
_DEFERRED = {}


def _literal(text):
  """``True``/``false``/``None``/numbers/tuples as Python values, anything else as text."""
  lowered = text.strip().lower()
  if lowered in ('true', 'false', 'none'):
    return {'true': True, 'false': False, 'none': None}[lowered]
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _user_error(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def _unknown_key_message(config, argv, error):
  """Names the --config.* flag whose key does not exist and what the parent allows."""
  for arg in argv:
    match = _OVERRIDE.match(arg)
    if not match:
      continue
    node, path = config, []
    for part in match.group(1).split('.'):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in keys:
        where = 'config.' + '.'.join(path) if path else 'config'
        hint = ''
        if path[:2] == ['unlearn', 'overrides']:
          hint = (' (set a hyperparameter for every method with --config.unlearn.<name>; '
                  'a command-line value wins over per-method overrides)')
        return (f'{arg.split("=")[0]}: unknown config key {part!r}; {where} has '
                f'{sorted(keys)}{hint}.')
      node, path = node[part], path + [part]
  return f'cannot parse the command line ({type(error).__name__}: {error})'


def _holds_none(config, key):
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return False
    node = node[part]
  return node is None


def _parse(argv):
  sys.argv = argv  # config_flags reads the overrides from sys.argv
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _user_error(str(e).split('. Currently')[0])


def parse_flags(argv):
  """absl flag parsing with one-line errors and support for None-valued config fields.

  config_flags cannot override a field whose value is None (no type to parse with) nor
  set a typed field to None: such overrides are taken out here and applied in ``main``.
  """
  argv = list(argv)
  _parse([a for a in argv if not _OVERRIDE.match(a)])  # the config file alone
  config = _CONFIG.value
  for arg in list(argv):
    match = _OVERRIDE.match(arg)
    if match and (match.group(2).strip().lower() == 'none' or
                  _holds_none(config, match.group(1))):
      _DEFERRED[match.group(1)] = _literal(match.group(2))
      argv.remove(arg)
  try:
    return _parse(argv)
  except (AttributeError, KeyError) as e:  # config_flags' error for an unknown key
    _user_error(_unknown_key_message(config, argv, e))


def _set(config, key, value):
  *parents, last = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  if last not in node:
    _user_error(f'--config.{key}: unknown config key {last!r}; '
                f'config{"." if parents else ""}{".".join(parents)} has {sorted(node.keys())}.')
  try:
    node[last] = value
  except (TypeError, ValueError) as e:  # a typed field (e.g. placeholder(bool)) refuses it
    _user_error(f'--config.{key}={value!r} is not allowed: {e}')


def cli_keys(config_flag):
  """Dotted config keys given on the command line (``--config.unlearn.lr`` -> 'unlearn.lr')."""
  return frozenset(config_flags.get_override_values(config_flag)) | frozenset(_DEFERRED)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from cure_jax import checkpointing, console, progress, run, validation
  config, workdir = _CONFIG.value, _WORKDIR.value
  for key, value in _DEFERRED.items():
    _set(config, key, value)
  verbose = flags.FLAGS['verbosity'].present
  try:
    validation.check_workdir(workdir)
  except validation.ConfigError as e:
    _user_error(str(e))
  console.setup(workdir, verbose=verbose)
  try:
    validation.validate(config)  # before any data loads; may start the JAX backend
  except validation.ConfigError as e:
    logging.error('%s', e, extra={'console': False})
    _user_error(str(e))
  user_errors = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                 PermissionError, progress.NonFiniteLossError, checkpointing.CheckpointError)
  try:
    run.run(config, workdir, cli_keys=cli_keys(flags.FLAGS['config']))
  except user_errors as e:
    # Configuration, data and checkpoint problems: one clear line (the log has the rest).
    logging.error('%s: %s', type(e).__name__, e, exc_info=True, extra={'console': False})
    _user_error(str(e).strip())


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
