"""Progress lines (step, metrics, ETA) and the NaN/inf guard of long loops.

Every check writes a detailed log line (``WORKDIR/log.txt``) and a console progress update;
the end of the loop writes the phase's one console line (see :mod:`cure_jax.infra.console`).
"""
import time

import jax
import numpy as np
from absl import logging

from cure_jax.infra import console


class NonFiniteLossError(FloatingPointError):
  pass


class Progress:
  """Collects per-step device scalars; checks and logs them every ``every`` steps.

  Scalars stay on the device between checks so the host never waits on each step.
  """

  def __init__(self, name, total_steps, every, start_step=0):
    self.name, self.total, self.every = name, total_steps, max(1, every)
    self.start_step, self.start_time = start_step, time.time()
    self.pending = []
    console.update('%s: %d/%d steps', name, start_step, total_steps)

  def add(self, step, metrics):
    self.pending.append((step, metrics))
    if (step + 1) % self.every == 0 or step + 1 == self.total:
      self.flush()

  def flush(self):
    """Raises :class:`NonFiniteLossError` naming the first bad step; logs the last metrics."""
    if not self.pending:
      return
    host = jax.device_get([m for _, m in self.pending])
    for (step, _), metrics in zip(self.pending, host):
      if not np.all(np.isfinite(metrics['loss'])):
        raise NonFiniteLossError(
            f'{self.name}: loss became {metrics["loss"]} at step {step}; no checkpoint of this '
            'state was written. Lower the learning rate or check the inputs.')
    step, metrics = self.pending[-1][0], host[-1]
    self.pending = []
    done = step + 1 - self.start_step
    elapsed = time.time() - self.start_time
    eta = elapsed / max(done, 1) * (self.total - step - 1)
    text = ' '.join(f'{k}={float(np.mean(v)):.4f}' for k, v in metrics.items())
    rate = done / max(elapsed, 1e-9)
    logging.info('%s step %d/%d %s (%.1f steps/s, ETA %.0fs)', self.name, step + 1,
                 self.total, text, rate, eta)
    if step + 1 >= self.total:
      console.phase('%s: done, %d steps in %s (%.1f steps/s), %s', self.name, done,
                    _duration(elapsed), rate, text)
    else:
      console.update('%s %s %d/%d %s, %.1f steps/s, ETA %s', self.name,
                     _bar(step + 1, self.total), step + 1, self.total, text, rate,
                     _duration(eta))


def _bar(done, total, width=20):
  filled = int(width * done / max(total, 1))
  return '[' + '#' * filled + '.' * (width - filled) + ']'


def _duration(seconds):
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  return f'{minutes // 60}h{minutes % 60:02d}m'
