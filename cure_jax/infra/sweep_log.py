"""A durable, resumable log of finished sweep units (``reproduce`` and ``tune``).

Each finished unit (one group of runs: scenario, method, model seeds, seeds, and the
hyperparameters it used) is appended to ``WORKDIR/<name>.jsonl`` as one JSON line and
fsync'ed before the sweep moves on. A rerun with the same sweep key skips every unit already
in the log and recomputes nothing else, so a killed sweep ends with the rows of an
uninterrupted one. The first line holds the sweep key (a digest of every setting that
changes results); a log with another key is set aside (``.stale``) and the sweep starts fresh.
A line cut short by a kill is ignored.
"""
import json
import os

from absl import logging


class SweepLog:

  def __init__(self, path, sweep_key):
    self.path, self.key = path, sweep_key
    self.done = {}
    lines = []
    if os.path.exists(path):
      with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().split('\n')
    header = _parse(lines[0]) if lines else None
    if header is not None and header.get('sweep_key') == sweep_key:
      for line in lines[1:]:
        record = _parse(line)
        if record is not None and 'unit' in record:
          self.done[record['unit']] = record['rows']
      if self.done:
        logging.info('%s: %d finished unit(s) found; they are not run again', path,
                     len(self.done))
      self._repair(lines)
    else:
      if lines:
        os.replace(path, path + '.stale')
        logging.warning('%s was written by another config; moved to %s.stale, starting '
                        'afresh', path, path)
      self._append({'sweep_key': sweep_key})

  def _repair(self, lines):
    """Drops a trailing partial line so the next append starts on a line of its own."""
    with open(self.path, 'rb') as f:
      data = f.read()
    if data and not data.endswith(b'\n'):
      cut = data.rfind(b'\n') + 1
      with open(self.path, 'r+b') as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())

  def _append(self, record):
    with open(self.path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(record, allow_nan=False) + '\n')
      f.flush()
      os.fsync(f.fileno())

  def get(self, unit):
    return self.done.get(unit)

  def add(self, unit, rows):
    self._append({'unit': unit, 'rows': rows})
    self.done[unit] = rows


def _parse(line):
  try:
    value = json.loads(line)
  except ValueError:
    return None
  return value if isinstance(value, dict) else None
