"""Training several models of one shape together, as one program (the protocol's K models).

The models are stacked along a leading axis split over the ``seeds`` axis of a
``(seeds, data)`` mesh (:func:`cure_jax.infra.sharding.make_seeds_mesh`); one step advances
all of them, each on its own batch. Everything else is :mod:`cure_jax.infra.trainer`'s: each
model keeps its own cache directory, lock, checkpoints and ``model.json``, so a model trained
in a group is the same cache entry as one trained alone, and a later run reuses or resumes it
either way. A model already finished is restored; the others resume from their own last
checkpoint, the models that stopped at the same step training on together.
"""
import collections
import contextlib

import jax
from absl import logging

from cure_jax.infra import checkpointing, locks, progress, sharding, trainer


def fit_group(states, group_step, batches, total_steps, directories, settings, mesh, *,
              name, log_every, checkpoint_every, max_to_keep=2):
  """Trains each ``states[i]`` to ``total_steps`` in ``directories[i]``; returns the final
  states (unstacked, in order).

  Args:
    states: one initial train state per model (restores take their structure).
    group_step: ``(stacked_state, step, stacked_batch) -> (stacked_state, metrics)`` over
      models stacked along axis 0 and split over ``mesh``'s ``seeds`` axis.
    batches: per model, ``start -> iterator`` over its host batches from step ``start``.
    directories, settings: per model, as :func:`cure_jax.infra.trainer.fit` takes them.
    name: the progress lines' prefix.
  A model's ``train_s`` is its group's training seconds divided by the models in it.
  """
  settings = [trainer.as_stored(s) for s in settings]
  suffix = trainer.lock_suffix()
  with contextlib.ExitStack() as held:
    for d in sorted(directories):  # one order for every process: no lock cycle
      held.enter_context(locks.model_lock(d, suffix))
    mgrs = []
    held.callback(lambda: [trainer.close_quietly(m) for m in mgrs])
    out = list(states)
    for i, (d, s) in enumerate(zip(directories, settings)):
      trainer.check_settings(d, s)
      mgrs.append(checkpointing.manager(d, max_to_keep))
      restored = checkpointing.restore_latest(mgrs[i], states[i])
      out[i] = states[i] if restored is None else restored
    starts = collections.defaultdict(list)
    for i, state in enumerate(out):
      starts[int(state.step)].append(i)
    for start, members in sorted(starts.items()):
      if start >= total_steps:
        for i in members:
          logging.info('%s: model %s finished, reused', name, directories[i])
          if not trainer.read_info(directories[i]):
            trainer.write_info(directories[i], settings[i], total_steps, None)
        continue
      trained, seconds = _train_together(
          [out[i] for i in members], group_step, [batches[i] for i in members], start,
          total_steps, [mgrs[i] for i in members], mesh, name, log_every, checkpoint_every)
      for i, state in zip(members, trained):
        out[i] = state
        trainer.write_info(directories[i], settings[i], total_steps,
                           seconds / len(members) if start == 0 else None)
  return out


def unstack(stacked, count):
  """The first ``count`` models of a stacked tree, as host arrays."""
  host = jax.device_get(stacked)
  return [jax.tree.map(lambda x: x[i], host) for i in range(count)]


def _train_together(states, group_step, batches, start, total_steps, mgrs, mesh, name,
                    log_every, checkpoint_every):
  count = len(states)
  if start:
    logging.info('%s: %d models resuming from step %d', name, count, start)
  template, saved = states[0], []

  def step_fn(stacked, step, host):
    stacked, metrics = group_step(stacked, step, sharding.stack_models(host, mesh, batches=True))
    return stacked, jax.tree.map(lambda m: m[:count], metrics)  # without the padding models

  def save(step, stacked):
    saved[:] = _placed(unstack(stacked, count), template)
    for mgr, state in zip(mgrs, saved):
      checkpointing.save(mgr, step, state)

  prog = progress.Progress(f'{name} ({count} models)', total_steps, log_every, start)
  _, seconds = trainer.step_loop(sharding.stack_models(states, mesh), step_fn,
                                 zip(*[b(start) for b in batches]), start, total_steps, prog,
                                 checkpoint_every, save)
  return saved, seconds  # the last step always checkpoints: these are the final states


def _placed(host_states, template):
  """Host states put where a model trained alone keeps its state (``template``'s
  shardings), so checkpoints and the returned states look the same either way."""
  where = jax.tree.map(lambda x: x.sharding, template)
  return [jax.tree.map(jax.device_put, s, where) for s in host_states]
