"""Result files written whole or not at all (atomic text writes, strict JSON), and the one
line that reports a write the disk refused."""
import errno
import json
import os
import re
import tempfile

# What to do when a write fails with an errno, for the one-line error that ends the run.
_FIXES = {errno.ENOSPC: 'free space on that disk or use another --workdir',
          errno.EDQUOT: 'free space within your disk quota or use another --workdir',
          errno.EACCES: 'make it writable or use another --workdir',
          errno.EPERM: 'make it writable or use another --workdir',
          errno.EROFS: 'use another --workdir (that file system is read-only)',
          errno.EISDIR: 'move that directory away or use another --workdir'}
_OTHER_FIX = 'check that disk or use another --workdir'
# A full disk or quota, the errors that say "free space" rather than "fix this path".
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_atomic(path, text):
  """Writes ``text`` to ``path`` only once it is complete (temp file + rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 is not what a user expects
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and e.filename is None:  # a failed write names no file
      raise OSError(e.errno, e.strerror, path) from e
    raise


def to_json(obj):
  """Strict JSON (raises on NaN/inf: rows are made JSON-safe before they get here)."""
  return json.dumps(obj, indent=1, allow_nan=False)


def write_error_line(path, code, reason=None):
  """``cannot write PATH: <reason>; <what to do>`` for a write that failed with ``code``."""
  return f'cannot write {path}: {reason or os.strerror(code)}; {_FIXES.get(code, _OTHER_FIX)}'


def chain(error):
  """``error`` and the errors it was raised from or during, innermost last."""
  seen = []
  while error is not None and error not in seen:
    seen.append(error)
    error = error.__cause__ or error.__context__
  return seen


def no_space_line(error, where):
  """The one line for ``error`` if it (or an error it came from) is a full disk or quota,
  else None. ``where`` is named when the error names no file.

  Orbax checkpoints are written by TensorStore, whose errors are ValueErrors that carry the
  OS error and the file only in their text (``Error writing local file "PATH": ... No space
  left on device``): those are recognised by that text.
  """
  for e in chain(error):
    if isinstance(e, OSError) and e.errno in NO_SPACE:
      return write_error_line(e.filename or where, e.errno)
    text = str(e)
    for code in NO_SPACE:
      if os.strerror(code) in text:
        quoted = re.search(r'"(/[^"]+)"', text)
        return write_error_line(quoted.group(1) if quoted else where, code)
  return None
