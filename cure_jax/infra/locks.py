"""Advisory file locks (``fcntl.flock``): one process per workdir, one trainer per model.

The operating system releases a ``flock`` lock when its process ends, however it ends (a
kill, an out-of-memory kill, a crash), so a lock is never stale: no cleanup, no timeouts.
The holder writes ``<pid> <host>`` into the lock file so that whoever finds the lock taken
can say who holds it. Lock files are left in place after release: deleting one would let a
waiter lock the deleted file while a newcomer locks a fresh one.

Two uses:

* :func:`workdir_lock` (held by :func:`cure_jax.entry.run` for the whole run): a second
  run in the same workdir fails at once with :class:`InUseError`.
* :func:`model_lock` (held by :func:`cure_jax.infra.trainer.fit`): a process that needs a
  model another one is training waits for it, then reuses (or resumes) what it left.

A process that already holds a lock takes it again without blocking (a nested run or fit in
one process must not wait for itself).
"""
import contextlib
import errno
import fcntl
import os
import socket
import threading
import time

from absl import logging

from cure_jax.infra import console

LOCK_NAME = '.cure-jax.lock'  # in the workdir and in each model directory
# Errors of a file system without flock support (some network mounts): run unlocked there.
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF, errno.EINVAL)
_HOLDER_WAIT_S = 1.0  # a new holder writes its pid right after locking: wait that long for it

_held = {}  # real path -> how many times this process holds that lock now
_held_guard = threading.Lock()


class InUseError(RuntimeError):
  """Another process holds the lock (the message names it and what to do)."""


def holder(path):
  """``'pid N (host H)'`` of the process holding the lock file ``path``, as it wrote it."""
  deadline = time.monotonic() + _HOLDER_WAIT_S
  while True:
    try:
      with open(path, encoding='utf-8', errors='replace') as f:
        fields = f.read().split()
    except OSError:
      fields = []
    if len(fields) >= 2 or time.monotonic() >= deadline:
      break
    time.sleep(0.05)
  if len(fields) < 2:
    return 'another process'
  return f'pid {fields[0]} (host {fields[1]})'


def _open(path):
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  try:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
  except PermissionError:  # another user's lock file in a shared cache: lock it read-only
    return os.open(path, os.O_RDONLY), False


def _flock(fd, blocking):
  """True once locked; False if another process holds it (non-blocking only)."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    return True
  except BlockingIOError:
    return False


def _write_holder(fd):
  # Only for messages: the lock holds without it (on a full disk the write that fails next
  # names its file).
  with contextlib.suppress(OSError):
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)


@contextlib.contextmanager
def hold(path, on_busy):
  """Holds the exclusive lock on file ``path`` for the ``with`` body.

  ``on_busy(holder_text)`` is called when another process holds it: it raises to give up
  (:class:`InUseError`) or returns to wait until the lock is free.
  """
  key = os.path.realpath(path)
  with _held_guard:
    nested = key in _held  # this process holds it already
    if nested:
      _held[key] += 1
  if nested:
    try:
      yield
    finally:
      with _held_guard:
        _held[key] -= 1
    return
  fd, writable = _open(key)
  try:
    try:
      if not _flock(fd, blocking=False):
        on_busy(holder(key))
        _flock(fd, blocking=True)
    except OSError as e:
      if e.errno not in _UNSUPPORTED:
        raise
      logging.warning('%s: file locks are not supported here (%s); running unlocked, so '
                      'another run on the same files is not detected', key, e.strerror)
    if writable:
      _write_holder(fd)
    with _held_guard:
      _held[key] = 1
    try:
      yield
    finally:
      with _held_guard:
        del _held[key]
      if writable:
        with contextlib.suppress(OSError):
          os.ftruncate(fd, 0)  # while still held: later, it could erase the next holder's pid
  finally:
    os.close(fd)  # closing the last descriptor releases the lock


def workdir_lock(workdir):
  """Held for a whole run: a second process on ``workdir`` raises :class:`InUseError`."""
  def busy(who):
    raise InUseError(f'workdir {workdir} is in use by {who}; wait for it or use another '
                     '--workdir')
  return hold(os.path.join(workdir, LOCK_NAME), busy)


def model_lock(directory, suffix=''):
  """Held while a model is trained in ``directory``: another process waits for it.

  The lock file is ``<directory>/.cure-jax.lock<suffix>``: orbax takes only entries whose
  names parse as step numbers for checkpoints (as it ignores ``model.json``), and a file in
  the directory keeps the cache's listing one entry per model. ``suffix`` tells the
  processes of one multi-host job apart.
  """
  directory = os.path.normpath(directory)

  def busy(who):
    console.phase('waiting for %s training %s', who, directory)
  return hold(os.path.join(directory, LOCK_NAME + suffix), busy)
