"""The one training loop of every model the library trains (image classifiers, fine-tuned LMs):
restore the latest checkpoint, step, report progress, checkpoint, write the model's metadata.

A trained model lives in one cache layout, whatever the task::

  <cache>/<kind>-<digest>/        cache = config.model_cache, else WORKDIR/models
      <step>/                     orbax checkpoints of the train state
      model.json                  fingerprint, settings, steps, training seconds

The digest is the fingerprint of every setting that determines the parameters
(:mod:`cure_jax.infra.fingerprint`), so a rerun with the same settings reuses the model and
any change trains a new one beside it. A directory whose ``model.json`` records other
settings (a copied or renamed directory) is refused rather than resumed. The tasks' batches
are a function of the step alone, so a resumed run reaches the same parameters as an
uninterrupted one.
"""
import json
import os
import time

import jax
from absl import logging

from cure_jax.infra import checkpointing, files, fingerprint, progress

INFO_NAME = 'model.json'
CACHE_NAME = 'models'


def model_dir(config, workdir, settings):
  """The directory of the model ``settings`` determine: in ``config.model_cache`` if set
  (shared between workdirs: the fingerprint names each model, so different settings never
  collide), else in ``WORKDIR/models``."""
  root = config.model_cache or os.path.join(workdir, CACHE_NAME)
  return os.path.join(root, fingerprint.model_fingerprint(settings))


def read_info(directory):
  """``model.json`` of a finished model (fingerprint, settings, steps, train_s) or {}."""
  try:
    with open(os.path.join(directory, INFO_NAME), encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _check_settings(directory, settings):
  stored = read_info(directory).get('settings')
  if stored is not None and stored != settings:
    changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
    raise ValueError(f'{directory} holds a model trained with other settings (changed: '
                     f'{changed}); delete that directory or use another workdir.')


def fit(state, step_fn, batches, total_steps, directory, settings, *, name, log_every,
        checkpoint_every, max_to_keep=2, on_step=None):
  """Trains ``state`` to ``total_steps`` in ``directory``; returns the final state.

  Args:
    state: the initial train state, placed on its mesh (a restore takes its structure,
      shardings and dtypes).
    step_fn: ``(state, step, host_batch) -> (state, metrics)``.
    batches: ``start -> iterator`` over the host batches of steps ``start, start + 1, ...``.
    directory, settings: where the model lives (:func:`model_dir`) and what determined it
      (JSON-able; stored in ``model.json``).
    name: the progress lines' prefix; log_every / checkpoint_every: steps between them.
    on_step: ``step -> None`` after every step (tests use it to simulate a crash).
  A finished model is restored, not trained again; ``model.json`` is written at the end.
  """
  settings = json.loads(json.dumps(settings, sort_keys=True, default=str))  # as stored
  _check_settings(directory, settings)
  mgr = checkpointing.manager(directory, max_to_keep)
  restored = checkpointing.restore_latest(mgr, state)
  state = state if restored is None else restored
  start = int(state.step)
  if start >= total_steps:
    logging.info('%s: finished, reused from %s', name, directory)
    mgr.close()
    return state
  if start:
    logging.info('%s: resuming from step %d', name, start)
  prog = progress.Progress(name, total_steps, log_every, start)
  stream, first_end = batches(start), None
  for step in range(start, total_steps):
    state, metrics = step_fn(state, step, next(stream))
    if first_end is None:  # the first step compiles: the training time leaves it out
      jax.block_until_ready(metrics)
      first_end = time.perf_counter()
    prog.add(step, metrics)
    if (step + 1) % checkpoint_every == 0 or step + 1 == total_steps:
      prog.flush()  # never checkpoint a state whose loss went non-finite
      checkpointing.save(mgr, step + 1, state)
    if on_step is not None:
      on_step(step)
  mgr.close()
  done = total_steps - start
  seconds = (time.perf_counter() - first_end) * done / max(done - 1, 1)
  info = {'fingerprint': os.path.basename(os.path.normpath(directory)), 'settings': settings,
          'train_s': seconds if start == 0 else None, 'steps': total_steps}
  if jax.process_index() == 0:
    files.write_atomic(os.path.join(directory, INFO_NAME), json.dumps(info, indent=1))
  return state
