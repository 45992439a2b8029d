"""What a run prints: one line per phase, warnings, the final table; the rest goes to a file.

``setup(workdir, verbose)`` (called by ``experiments.main``) routes every log record to
``WORKDIR/log.txt`` and, unless ``verbose`` (absl's ``--verbosity`` given), replaces absl's
stderr handler by a console handler that shows only

* phase lines: records logged with :func:`phase` (a finished phase) or :func:`update`
  (progress of a running phase: redrawn in place on a terminal, at most once a minute
  otherwise), and
* warnings and errors, minus known third-party noise.

Orbax logs its INFO chatter through absl's own logger (no per-module logger), so it is
dropped from log.txt by the record's ``pathname``. Library code that never
calls ``setup`` (tests, notebooks) keeps absl's usual output: phase records are plain INFO.
"""
import logging as std_logging
import os
import sys
import time

from absl import logging

LOG_NAME = 'log.txt'
# Messages of shutdown noise that say nothing to a user (orbax's asyncio loops at exit).
NOISE = ('Event loop is closed',)
UPDATE_SECONDS_NOT_A_TTY = 60.0


def phase(msg, *args):
  """A finished phase (or a one-off step such as a restored checkpoint): one console line."""
  logging.info(msg, *args, extra={'console': 'line'}, stacklevel=2)


def update(msg, *args):
  """Progress of a running phase: redrawn in place on a terminal."""
  logging.info(msg, *args, extra={'console': 'update'}, stacklevel=2)


class ThirdPartyInfoFilter(std_logging.Filter):
  """Drops orbax records below WARNING (they reach us through absl's logger)."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or 'orbax' not in record.pathname


def _is_noise(record):
  text = record.getMessage() + (record.exc_text or '')
  if record.exc_info and record.exc_info[1] is not None:
    text += str(record.exc_info[1])
  return any(n in text for n in NOISE)


class ConsoleHandler(std_logging.StreamHandler):
  """Phase lines plainly, progress in place (terminal only), warnings and errors."""

  def __init__(self, stream=None):
    super().__init__(stream or sys.stderr)
    self.open_line = False   # an in-place progress line is on screen without its newline
    self.last_update = time.time()  # a non-terminal gets an update after a quiet minute
    self.is_tty = hasattr(self.stream, 'isatty') and self.stream.isatty()

  def emit(self, record):
    kind = getattr(record, 'console', None)
    if kind is False or _is_noise(record):
      return
    if kind is None and record.levelno < std_logging.WARNING:
      return
    try:
      if kind == 'update':
        self._update(record.getMessage())
        return
      text = record.getMessage()
      if kind is None:  # a warning/error: its first line here, the rest in log.txt
        lines = text.strip().splitlines() or ['']
        more = ' (more in log.txt)' if len(lines) > 1 or record.exc_info else ''
        text = f'{record.levelname.lower()}: {lines[0]}{more}'
      self._write(('\r\033[K' if self.open_line else '') + text + '\n')
      self.open_line, self.last_update = False, time.time()
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)

  def _update(self, text):
    now = time.time()
    if self.is_tty:
      self._write('\r\033[K' + text)
      self.open_line = True
    elif now - self.last_update >= UPDATE_SECONDS_NOT_A_TTY:
      self._write(text + '\n')
    else:
      return
    self.last_update = now

  def _write(self, text):
    self.stream.write(text)
    self.flush()


def _quiet_unraisable(default_hook):
  """Keeps orbax's "Event loop is closed" at interpreter exit off the console."""
  def hook(unraisable):
    if any(n in str(unraisable.exc_value) for n in NOISE):
      logging.debug('ignored at exit: %r', unraisable.exc_value)
      return
    default_hook(unraisable)
  return hook


def setup(workdir, verbose=False):
  """Full log in ``WORKDIR/log.txt``; the quiet console unless ``verbose``.

  Returns the added handlers (tests remove them with :func:`teardown`).
  """
  root = std_logging.getLogger()
  file_handler = std_logging.FileHandler(os.path.join(workdir, LOG_NAME), encoding='utf-8')
  file_handler.setFormatter(logging.PythonFormatter())
  file_handler.setLevel(std_logging.DEBUG)
  handlers = [file_handler]
  if not verbose:
    logging.set_verbosity(logging.INFO)
    file_handler.addFilter(ThirdPartyInfoFilter())
    absl_handler = logging.get_absl_handler()
    absl_handler.setLevel(std_logging.CRITICAL + 1)  # ours replaces it on the console
    handlers.append(ConsoleHandler())
    sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
  for handler in handlers:
    root.addHandler(handler)
  return handlers


def teardown(handlers):
  root = std_logging.getLogger()
  for handler in handlers:
    root.removeHandler(handler)
    handler.close()
  logging.get_absl_handler().setLevel(std_logging.NOTSET)
