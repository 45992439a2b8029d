"""Training the *original* (all data) and *retrain* (forget classes removed) classifiers.

Trained models are cached under ``WORKDIR/models/<fingerprint>`` (:mod:`cure_jax.infra.fingerprint`:
every setting that determines the parameters is part of the key), so a rerun with the same
settings reuses them and any change trains a new model beside the old one.
"""
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from cure_jax.infra import checkpointing, files, fingerprint, progress, sharding, train_state
from cure_jax.unlearning import losses
from cure_jax.data import pipeline, views

KINDS = ('original', 'retrain')


def make_optimizer(cfg):
  """SGD with momentum on L2-decayed gradients, at unit step size: the train step scales
  the update by :func:`learning_rate`, so one compiled step serves every schedule length
  (original and retrain models of every scenario)."""
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(1.0, momentum=cfg.momentum, nesterov=cfg.nesterov))


def learning_rate(cfg, step, total_steps):
  """Linear warmup from 0 over ``warmup_fraction`` of the steps, then cosine decay to 0
  (``optax.warmup_cosine_decay_schedule``; ``total_steps`` may be traced)."""
  total = jnp.asarray(total_steps, jnp.float32)
  warmup = jnp.maximum(jnp.floor(cfg.warmup_fraction * total), 1.0)
  step = jnp.asarray(step, jnp.float32)
  rise = cfg.lr * step / warmup
  frac = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
  decay = cfg.lr * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  return jnp.where(step < warmup, rise, decay)


_STEP_CACHE = {}


def make_train_step(model, cfg, mesh):
  """The jitted data-parallel SGD step ``(state, batch, total_steps) -> (state, metrics)``
  on cross-entropy with BatchNorm in training mode; compiled once per model/optimizer/mesh."""
  key = (model, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.warmup_fraction,
         mesh)
  if key in _STEP_CACHE:
    return _STEP_CACHE[key]
  tx = make_optimizer(cfg)

  def step(state, batch, total_steps):
    def loss_fn(params):
      logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                    batch['image'], train=True, mutable=['batch_stats'])
      loss = losses.cross_entropy(logits, batch['label']).mean()
      return loss, (logits, updates['batch_stats'])
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    lr = learning_rate(cfg, state.step, total_steps)
    updates = jax.tree.map(lambda u: lr * u, updates)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    return new_state, {'loss': loss, 'accuracy': accuracy}

  repl = sharding.replicated(mesh)
  _STEP_CACHE[key] = jax.jit(step, in_shardings=(repl, sharding.batch_sharded(mesh), repl),
                             out_shardings=repl, donate_argnums=0)
  return _STEP_CACHE[key]


def training_source(data, kind, forget_classes):
  if kind not in KINDS:
    raise ValueError(f'Unknown model kind {kind!r}; choose one of {KINDS}.')
  if kind == 'original':
    return data.train
  return views.forget_retain(data.train, forget_classes)[1]


INFO_NAME = 'model.json'


def checkpoint_dir(workdir, config, kind, forget_classes=(), seed=None):
  """The cache directory of the model these settings train (its name is the fingerprint)."""
  seed = config.seed if seed is None else seed
  settings = fingerprint.model_settings(config, kind, seed, forget_classes)
  return os.path.join(fingerprint.cache_root(config, workdir, 'models'),
                      fingerprint.model_fingerprint(settings))


def model_info(directory):
  """``model.json`` of a finished model (fingerprint, settings, training seconds) or {}."""
  try:
    with open(os.path.join(directory, INFO_NAME)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def train_classifier(config, workdir, kind, data, model, mesh, forget_classes, on_step=None,
                     seed=None):
  """Trains (or resumes, or loads when finished) the ``kind`` model; returns its variables.

  ``seed`` (default ``config.seed``) seeds the initialisation and the batch order.
  Checkpoints every ``config.train.checkpoint_every`` steps and at the end into
  :func:`checkpoint_dir`, then writes ``model.json`` there (fingerprint, settings and the
  training time without compilation). The batch order is a function of the step, so a
  resumed run reaches the same parameters as an uninterrupted one.
  ``on_step(step)`` is called after every step (tests use it to simulate a crash).
  """
  cfg = config.train
  seed = config.seed if seed is None else int(seed)
  sharding.check_batch_size(cfg.batch_size, mesh, 'config.train.batch_size')
  source = training_source(data, kind, forget_classes)
  steps_per_epoch = len(source) // cfg.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'config.train.batch_size={cfg.batch_size} exceeds the {len(source)} '
                     'training examples.')
  total_steps = cfg.epochs * steps_per_epoch
  tx = make_optimizer(cfg)
  rng = jax.random.key(seed)
  state = train_state.create(train_state.init_variables(model, rng, data.image_shape), tx)
  state = sharding.replicate(state, mesh)

  directory = checkpoint_dir(workdir, config, kind, forget_classes, seed)
  mgr = checkpointing.manager(directory)
  restored = checkpointing.restore_latest(mgr, state)
  if restored is not None:
    state = restored
  start = int(state.step)
  if start >= total_steps:
    logging.info('%s model (seed %d): finished, reused from %s', kind, seed, directory)
    mgr.close()
    return state.variables
  if start:
    logging.info('%s model: resuming from step %d', kind, start)

  step_fn = make_train_step(model, cfg, mesh)
  stream = pipeline.batches(source, cfg.batch_size, mean=data.mean, std=data.std,
                            seed=seed, augment=config.data.augment, pad=config.data.pad,
                            start_step=start)
  prog = progress.Progress(f'train {kind} seed {seed}', total_steps, cfg.log_every, start)
  first_end = None
  for step in range(start, total_steps):
    state, metrics = step_fn(state, sharding.shard_batch(next(stream), mesh),
                             np.int32(total_steps))
    if first_end is None:  # the first step compiles: the training time leaves it out
      jax.block_until_ready(metrics)
      first_end = time.perf_counter()
    prog.add(step, metrics)
    if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total_steps:
      prog.flush()  # never checkpoint a state whose loss went non-finite
      checkpointing.save(mgr, step + 1, state)
    if on_step is not None:
      on_step(step)
  mgr.close()
  steps_done = total_steps - start
  seconds = (time.perf_counter() - first_end) * steps_done / max(steps_done - 1, 1)
  settings = fingerprint.model_settings(config, kind, seed, forget_classes)
  info = {'fingerprint': os.path.basename(directory), 'settings': settings,
          'train_s': seconds if start == 0 else None, 'steps': total_steps}
  if jax.process_index() == 0:
    files.write_atomic(os.path.join(directory, INFO_NAME), json.dumps(info, indent=1))
  return state.variables
