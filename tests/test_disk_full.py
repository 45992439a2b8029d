"""A full disk or an unwritable log file ends a run with one line naming the path and the fix,
never with Python logging's "--- Logging error ---" tracebacks; nothing half-written stays.

The disk is made full without privileges: ``WORKDIR/log.txt`` is a link to ``/dev/full``
(every write fails with ENOSPC), or a write's file descriptor is one on ``/dev/full``.
"""
import errno
import logging as std_logging
import os
import subprocess
import sys
import tempfile
import threading

import pytest
from absl import logging

from cure_jax import cli
from cure_jax.infra import checkpointing, console, files, locks, progress, trainer

from tests.test_trainer import _fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = '/dev/full'
needs_dev_full = pytest.mark.skipif(not os.path.exists(FULL), reason='needs /dev/full (Linux)')
USER_ERRORS = (ValueError, PermissionError, checkpointing.CheckpointError,
               progress.NonFiniteLossError, locks.InUseError)


def _main(workdir):
  return subprocess.run([sys.executable, '-m', 'experiments.main',
                         '--config=configs/digits.py:smoke', f'--workdir={workdir}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)


@needs_dev_full
def test_cli_with_a_full_disk_under_the_log_prints_one_line(tmp_path):
  os.symlink(FULL, tmp_path / 'log.txt')
  result = _main(tmp_path)
  assert result.returncode == 1
  assert result.stderr == (f'error: cannot write {tmp_path}/log.txt: No space left on device; '
                           'free space on that disk or use another --workdir\n')
  assert result.stdout == ''


def test_cli_with_a_log_path_it_cannot_open_prints_one_line(tmp_path):
  (tmp_path / 'log.txt').mkdir()  # root may write anywhere; nobody opens a directory
  result = _main(tmp_path)
  assert result.returncode == 1
  assert result.stderr == (f'error: cannot write {tmp_path}/log.txt: Is a directory; move '
                           'that directory away or use another --workdir\n')


class _FailingStream:
  """A log file whose writes fail with ``code`` once ``fail`` is set."""

  def __init__(self, code):
    self.code, self.fail, self.lines = code, False, []

  def write(self, text):
    if self.fail:
      raise OSError(self.code, os.strerror(self.code))
    self.lines.append(text)

  def flush(self):
    if self.fail:
      raise OSError(self.code, os.strerror(self.code))

  def close(self):
    self.flush()


@pytest.fixture
def failing_log(tmp_path):
  """console.setup in ``tmp_path`` with a log file stream that fails on demand (EACCES)."""
  handlers = console.setup(str(tmp_path))
  stream = _FailingStream(errno.EACCES)
  handlers[0].stream.close()
  handlers[0].stream = stream
  yield handlers[0], stream
  stream.fail = False
  console.teardown(handlers)


def test_a_failing_log_file_raises_once_then_stops_writing(failing_log, tmp_path, capfd):
  handler, stream = failing_log
  logging.info('written')
  stream.fail = True
  with pytest.raises(console.LogFileError) as raised:
    logging.info('refused')
  assert str(raised.value) == (f'cannot write {tmp_path}/log.txt: Permission denied; make it '
                               'writable or use another --workdir')
  stream.fail = False
  for i in range(50):  # a long run after the failure: not one write, not one report
    logging.info('after %d', i)
  assert console.log_file_error() is raised.value
  assert handler.stream is None and not any('after' in line for line in stream.lines)
  assert 'Logging error' not in capfd.readouterr().err
  assert cli._one_line(raised.value, str(tmp_path), USER_ERRORS) == str(raised.value)


def test_a_log_failure_in_another_thread_ends_the_run_at_its_next_record(failing_log, capfd):
  handler, stream = failing_log
  stream.fail = True
  worker = threading.Thread(target=logging.warning, args=('from a thread',))
  worker.start()
  worker.join()
  assert isinstance(handler.error, console.LogFileError)  # kept, not raised in the thread
  with pytest.raises(console.LogFileError):
    logging.info('the main thread goes on')
  logging.info('and once more')  # raised once only: the error report itself must log
  assert 'Logging error' not in capfd.readouterr().err


@needs_dev_full
def test_a_results_write_on_a_full_disk_leaves_the_old_file_and_says_so(tmp_path,
                                                                        monkeypatch):
  path = tmp_path / 'results.json'
  path.write_text('{"old": 1}')
  made = []

  def mkstemp(dir, prefix):  # pylint: disable=redefined-builtin
    name = os.path.join(dir, prefix + 'x')
    open(name, 'w').close()
    made.append(name)
    return os.open(FULL, os.O_WRONLY), name
  monkeypatch.setattr(tempfile, 'mkstemp', mkstemp)
  with pytest.raises(OSError) as raised:
    files.write_atomic(str(path), '{"new": 2}')
  assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
  assert path.read_text() == '{"old": 1}' and not os.path.exists(made[0])
  assert cli._one_line(raised.value, str(tmp_path), USER_ERRORS) == (
      f'cannot write {path}: No space left on device; free space on that disk or use '
      'another --workdir')


# TensorStore's error for a checkpoint on a full disk (orbax raises it as a ValueError).
TENSORSTORE = ('RESOURCE_EXHAUSTED: Error writing local file "/w/models/original-1/3.orbax-'
               'checkpoint-tmp/default/_sharding": Failed writing: "/w/models/original-1/3.'
               'orbax-checkpoint-tmp/default/_sharding.__lock": Failed to write 407 bytes to '
               "file 9: No space left on device [os_error_code='28']")


@pytest.mark.parametrize('error,line', [
    (ValueError(TENSORSTORE), 'cannot write /w/models/original-1/3.orbax-checkpoint-tmp/'
     'default/_sharding: No space left on device; free space on that disk or use another '
     '--workdir'),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), f'cannot write /w: '
     f'{os.strerror(errno.EDQUOT)}; free space within your disk quota or use another --workdir'),
    (PermissionError(errno.EACCES, 'Permission denied', '/w/x'),
     "[Errno 13] Permission denied: '/w/x'"),               # as before: a user error
    (ConnectionResetError(errno.ECONNRESET, 'reset'), None),  # as before: its traceback
])
def test_one_line_for_a_full_disk_others_as_before(error, line):
  assert cli._one_line(error, '/w', USER_ERRORS) == line


def test_orbax_reports_of_a_full_disk_stay_off_the_console():
  def record(msg, path, name='absl', exc=None):
    exc_info = None if exc is None else (type(exc), exc, None)
    return std_logging.LogRecord(name, std_logging.ERROR, path, 1, msg, (), exc_info)
  orbax = '/site-packages/orbax/checkpoint/_src/futures/future.py'
  assert console._is_noise(record('_SignalingThread.run() raised an exception: [Errno 28] '
                                  'No space left on device', orbax))
  assert console._is_noise(record('Task exception was never retrieved', '/asyncio/base.py',
                                  'asyncio', ValueError(TENSORSTORE)))
  assert not console._is_noise(record('Save Finalize thread failed: bad shape', orbax))
  assert not console._is_noise(record('No space left on device', '/x/cure_jax/a.py'))


def test_a_model_cut_off_before_its_model_json_is_restored_and_gets_one(tmp_path):
  settings = {'kind': 'original', 'lr': 0.1}
  _fit(tmp_path, settings)
  (tmp_path / trainer.INFO_NAME).unlink()  # as if killed between the last save and model.json
  calls = []
  again = _fit(tmp_path, settings, calls=calls)
  assert calls == [] and int(again.step) == 7  # the final checkpoint is whole (orbax renames)
  info = trainer.read_info(tmp_path)
  assert info['steps'] == 7 and info['train_s'] is None and info['settings'] == settings
