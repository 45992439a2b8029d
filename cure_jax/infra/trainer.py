"""The one training loop of every model the library trains (image classifiers, fine-tuned LMs):
restore the latest checkpoint, step, report progress, checkpoint, write the model's metadata.

A trained model lives in one cache layout, whatever the task::

  <cache>/<kind>-<digest>/        cache = config.model_cache, else WORKDIR/models
      <step>/                     orbax checkpoints of the train state
      model.json                  fingerprint, settings, steps, training seconds
      .cure-jax.lock              locked while a process trains the model (orbax ignores it)

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

from cure_jax.infra import checkpointing, files, fingerprint, locks, progress

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


def as_stored(settings):
  """``settings`` as ``model.json`` stores them (JSON round trip, keys sorted)."""
  return json.loads(json.dumps(settings, sort_keys=True, default=str))


def lock_suffix():
  """The model lock file's suffix of this process: the processes of one multi-host job
  train together, each under its own lock file (one file for all would make process 1 wait
  for process 0 while process 0 waits for it)."""
  return f'.{jax.process_index()}' if jax.process_index() else ''


def check_settings(directory, settings):
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
  While one process trains a model, another that needs it waits for the model's lock
  (:func:`cure_jax.infra.locks.model_lock`), then restores what the first left: the
  finished model, or its last checkpoint if it died.
  """
  settings = as_stored(settings)
  with locks.model_lock(directory, lock_suffix()):
    return _fit_locked(state, step_fn, batches, total_steps, directory, settings, name=name,
                       log_every=log_every, checkpoint_every=checkpoint_every,
                       max_to_keep=max_to_keep, on_step=on_step)


def _fit_locked(state, step_fn, batches, total_steps, directory, settings, *, name,
                log_every, checkpoint_every, max_to_keep, on_step):
  check_settings(directory, settings)
  mgr = checkpointing.manager(directory, max_to_keep)
  try:
    restored = checkpointing.restore_latest(mgr, state)
    state = state if restored is None else restored
    start = int(state.step)
    if start == 0:
      _note_other_inputs(directory, settings, name)
    if start < total_steps:
      state, seconds = _train(mgr, state, start, step_fn, batches, total_steps, name,
                              log_every, checkpoint_every, on_step)
  except BaseException:
    close_quietly(mgr)  # orbax's save threads end now, not amid interpreter shutdown
    raise
  mgr.close()
  if start < total_steps:
    write_info(directory, settings, total_steps, seconds if start == 0 else None)
  else:
    logging.info('%s: finished, reused from %s', name, directory)
    if not read_info(directory):  # killed between the last checkpoint and model.json
      write_info(directory, settings, total_steps, None)
  return state


def _note_other_inputs(directory, settings, name):
  """One line when a model of the same settings but other data or weights sits beside this
  new one (the data changed since): the rerun trains anew, and says why."""
  older = fingerprint.same_settings_other_inputs(directory, settings)
  if older:
    logging.warning('%s: the %s changed since %s was trained with these settings; training a '
                    'new model %s beside it', name, ' and '.join(
                        _INPUT_NAMES[k] for k in older[1]), older[0], os.path.basename(directory))


_INPUT_NAMES = {'data_digest': 'data', 'items': 'training items', 'weights_digest':
                'pretrained weights'}


def _train(mgr, state, start, step_fn, batches, total_steps, name, log_every,
           checkpoint_every, on_step):
  """Steps ``start .. total_steps - 1`` with checkpoints; returns the state and the training
  seconds (the first step, which compiles, counted as an average one)."""
  if start:
    logging.info('%s: resuming from step %d', name, start)
  prog = progress.Progress(name, total_steps, log_every, start)
  return step_loop(state, step_fn, batches(start), start, total_steps, prog, checkpoint_every,
                   lambda step, s: checkpointing.save(mgr, step, s), on_step)


def step_loop(state, step_fn, stream, start, total_steps, prog, checkpoint_every, save,
              on_step=None):
  """Steps ``start .. total_steps - 1`` on ``stream``'s batches, ``save(step, state)`` every
  ``checkpoint_every`` steps and after the last; returns the state and the training seconds
  (the first step, which compiles, counted as an average one)."""
  first_end = None
  for step in range(start, total_steps):
    state, metrics = step_fn(state, step, next(stream))
    if first_end is None:  # the first step compiles: the training time leaves it out
      jax.block_until_ready(metrics)
      first_end = time.perf_counter()
    prog.add(step, metrics)
    if (step + 1) % checkpoint_every == 0 or step + 1 == total_steps:
      prog.flush()  # never checkpoint a state whose loss went non-finite
      save(step + 1, state)
    if on_step is not None:
      on_step(step)
  done = total_steps - start
  return state, (time.perf_counter() - first_end) * done / max(done - 1, 1)


def close_quietly(mgr):
  try:
    mgr.close()
  except Exception as e:  # pylint: disable=broad-except
    # The error being raised says more; a second one from orbax would only hide it.
    logging.info('checkpoint manager closed after an error: %s', e)


def write_info(directory, settings, total_steps, seconds):
  """``model.json``, written last and atomically: only a finished model has one."""
  info = {'fingerprint': os.path.basename(os.path.normpath(directory)), 'settings': settings,
          'train_s': seconds, 'steps': total_steps}
  if jax.process_index() == 0:
    files.write_atomic(os.path.join(directory, INFO_NAME), json.dumps(info, indent=1))
