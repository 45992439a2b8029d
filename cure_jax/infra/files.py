"""Result files written whole or not at all: atomic text writes and strict JSON."""
import json
import os
import tempfile


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
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def to_json(obj):
  """Strict JSON (raises on NaN/inf: rows are made JSON-safe before they get here)."""
  return json.dumps(obj, indent=1, allow_nan=False)
