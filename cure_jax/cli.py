"""What ``experiments/main.py`` does beyond defining its flags: absl parsing with one-line
errors, None-valued config overrides, start-up validation and the call into
:func:`cure_jax.entry.run` (importable, so tests and other entry points share it).

config_flags cannot override a field whose value is None (no type to parse with) nor set a
typed field to None: such ``--config.key=value`` arguments are taken out before parsing and
applied to the config before the run (:data:`DEFERRED`).
"""
import ast
import re
import sys

from absl import flags, logging
from ml_collections import config_flags

OVERRIDE = re.compile(r'^--?config\.([\w.]+)=(.*)$', re.S)
# Overrides that config_flags cannot parse, applied after parsing: {dotted key: value}.
DEFERRED = {}
# Keys that were renamed when the LM and classification registries became one.
RENAMED = {'unlearn.alpha': 'unlearn.retain_weight',
           'unlearn.undial_beta': 'unlearn.undial_strength'}


def literal(text):
  """``True``/``false``/``None``/numbers/tuples as Python values, anything else as text."""
  lowered = text.strip().lower()
  if lowered in ('true', 'false', 'none'):
    return {'true': True, 'false': False, 'none': None}[lowered]
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def user_error(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def _unknown_key_message(config, argv, error):
  """Names the --config.* flag whose key does not exist and what the parent allows."""
  for arg in argv:
    match = OVERRIDE.match(arg)
    if not match:
      continue
    if match.group(1) in RENAMED:
      return (f'{arg.split("=")[0]}: this key is now config.{RENAMED[match.group(1)]}; '
              'use that name.')
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
    user_error(str(e).split('. Currently')[0])


def flags_parser(config_holder):
  """An ``app.run(flags_parser=...)`` for the config flag ``config_holder``."""

  def parse_flags(argv):
    argv = list(argv)
    _parse([a for a in argv if not OVERRIDE.match(a)])  # the config file alone
    config = config_holder.value
    for arg in list(argv):
      match = OVERRIDE.match(arg)
      if match and (match.group(2).strip().lower() == 'none' or
                    _holds_none(config, match.group(1))):
        DEFERRED[match.group(1)] = literal(match.group(2))
        argv.remove(arg)
    try:
      return _parse(argv)
    except (AttributeError, KeyError) as e:  # config_flags' error for an unknown key
      user_error(_unknown_key_message(config, argv, e))

  return parse_flags


def _set(config, key, value):
  *parents, last = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  if last not in node:
    user_error(f'--config.{key}: unknown config key {last!r}; '
               f'config{"." if parents else ""}{".".join(parents)} has {sorted(node.keys())}.')
  try:
    node[last] = value
  except (TypeError, ValueError) as e:  # a typed field (e.g. placeholder(bool)) refuses it
    user_error(f'--config.{key}={value!r} is not allowed: {e}')


def cli_keys(config_flag):
  """Dotted config keys given on the command line (``--config.unlearn.lr`` -> 'unlearn.lr')."""
  return frozenset(config_flags.get_override_values(config_flag)) | frozenset(DEFERRED)


def _one_line(error, workdir, user_errors):
  """The line that ends a run ``error`` stopped, or None where its traceback is the report."""
  from cure_jax.infra import console, files
  for cause in files.chain(error):
    if isinstance(cause, console.LogFileError):
      return str(cause)
  full = files.no_space_line(error, workdir)  # a results or checkpoint write on a full disk
  if full is not None:
    return full
  return str(error).strip() if isinstance(error, user_errors) else None


def run_experiment(config, workdir, config_flag, verbose):
  """Deferred overrides, workdir and config checks, console set-up, then the run; a user
  error (bad value, missing file, NaN, corrupt checkpoint, a workdir in use by another run,
  a full disk, an unwritable log file) ends it with one line, exit 1."""
  from cure_jax import entry
  from cure_jax.infra import checkpointing, console, locks, progress, validation
  for key, value in DEFERRED.items():
    _set(config, key, value)
  try:
    validation.check_workdir(workdir)  # before the console log is opened in it
  except validation.ConfigError as e:
    user_error(str(e))
  user_errors = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                 PermissionError, progress.NonFiniteLossError, checkpointing.CheckpointError,
                 locks.InUseError)
  logged = False
  try:
    # Locked before the log opens, so a run refused here writes nothing into the other's
    # log.txt; entry.run takes the same lock again (a no-op in the process holding it).
    with entry.workdir_lock(config, workdir):
      console.setup(workdir, verbose=verbose)
      logged = True
      result = entry.run(config, workdir, cli_keys=cli_keys(config_flag))
  except Exception as e:  # pylint: disable=broad-except
    line = _one_line(e, workdir, user_errors)
    if line is None:
      raise
    if logged:  # the details into log.txt (before set-up they would reach the console)
      try:
        logging.error('%s: %s', type(e).__name__, e, exc_info=True, extra={'console': False})
      except console.LogFileError:  # the log file failed in another thread: this line says more
        pass
    user_error(line)
  failed = console.log_file_error()  # the log failed in a thread the run went on without
  if failed is not None:
    user_error(str(failed))
  return result
