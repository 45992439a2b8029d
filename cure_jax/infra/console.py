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

A log file that cannot be written (a full disk, a file made read-only) is not reported once
per record (Python logging's "--- Logging error ---" tracebacks): :class:`LogFileHandler`
stops writing at the first failure and raises :class:`LogFileError` in the thread that set
it up, which ``experiments.main`` turns into one line (:func:`log_file_error`).
"""
import logging as std_logging
import os
import sys
import threading
import time

from absl import logging

from cure_jax.infra import files

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
  if ((record.name == 'asyncio' or 'orbax' in record.pathname) and
      any(os.strerror(code) in text for code in files.NO_SPACE)):
    # Orbax's thread and unretrieved-future reports of a failed checkpoint write on a full
    # disk, a dozen or more: the run ends with one line naming the file.
    return True
  return any(n in text for n in NOISE)


class LogFileError(OSError):
  """The log file cannot be written; ``str()`` is the one line that ends the run."""

  def __str__(self):
    return files.write_error_line(self.filename, self.errno, self.strerror)


class LogFileHandler(std_logging.FileHandler):
  """``WORKDIR/log.txt``; after its first failed write it writes nothing more.

  The failure is raised as :class:`LogFileError` in the thread that created the handler (the
  run's main thread: the run ends there) and kept in ``error`` (other threads only stop
  writing). A failure to open the file raises it at once.
  """

  def __init__(self, path):
    self.error, self._raised, self._thread = None, False, threading.get_ident()
    try:
      super().__init__(path, encoding='utf-8')
    except OSError as e:
      raise LogFileError(e.errno, e.strerror, path) from e

  def emit(self, record):
    if self.error is None:
      super().emit(record)  # calls handleError on a failure
    self._raise_once()

  def handleError(self, record):
    error = sys.exc_info()[1]
    if not isinstance(error, OSError):  # a bad format string: logging's usual report
      super().handleError(record)
      return
    self.error = LogFileError(error.errno, error.strerror, self.baseFilename)
    try:
      self.close()  # flushing what is buffered fails too: the file is given up
    except OSError:
      pass

  def _raise_once(self):
    if self.error is not None and not self._raised and threading.get_ident() == self._thread:
      self._raised = True
      raise self.error


def log_file_error():
  """The :class:`LogFileError` of the log file :func:`setup` opened, or None."""
  for handler in std_logging.getLogger().handlers:
    if isinstance(handler, LogFileHandler) and handler.error is not None:
      return handler.error
  return None


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

  Returns the added handlers (tests remove them with :func:`teardown`). Raises
  :class:`LogFileError` if the log file cannot be opened for writing.
  """
  root = std_logging.getLogger()
  file_handler = LogFileHandler(os.path.join(workdir, LOG_NAME))
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
