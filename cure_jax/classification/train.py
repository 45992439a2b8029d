"""Training the *original* (all data) and *retrain* (forget classes removed) classifiers.

Trained models are cached by the fingerprint of every setting that determines their
parameters (:mod:`cure_jax.infra.trainer` has the layout), so a rerun with the same settings
reuses them and any change trains a new model beside the old one.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cure_jax.data import load_dataset, pipeline, views
from cure_jax.infra import fingerprint, group_fit, sharding, train_state, trainer
from cure_jax.unlearning import losses

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
  # warmup_fraction=0: no warm-up (one step of it would make the first learning rate 0).
  warmup = (jnp.maximum(jnp.floor(cfg.warmup_fraction * total), 1.0)
            if cfg.warmup_fraction > 0 else jnp.float32(0.0))
  step = jnp.asarray(step, jnp.float32)
  rise = cfg.lr * step / jnp.maximum(warmup, 1.0)
  frac = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
  decay = cfg.lr * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  return jnp.where(step < warmup, rise, decay)


_STEP_CACHE = {}


def initializer(model, cfg, image_shape, mesh):
  """``rng -> train state at step 0``, initialised where it lives (replicated over ``mesh``);
  compiled once per model/optimizer/input shape/mesh."""
  key = ('init', model, cfg.momentum, cfg.nesterov, cfg.weight_decay, tuple(image_shape), mesh)
  if key not in _STEP_CACHE:
    tx = make_optimizer(cfg)
    create = lambda rng: train_state.create(train_state.init_variables(model, rng, image_shape),
                                            tx)
    _STEP_CACHE[key] = sharding.jit_init(create, (jax.random.key(0),), mesh)
  return _STEP_CACHE[key]


def _step_fn(model, cfg):
  """``(state, batch, total_steps) -> (state, metrics)``: one SGD step on cross-entropy with
  BatchNorm in training mode."""
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
  return step


def _step_key(model, cfg, mesh):
  return (model, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.warmup_fraction,
          mesh)


def make_train_step(model, cfg, mesh):
  """The jitted data-parallel SGD step ``(state, batch, total_steps) -> (state, metrics)``
  on cross-entropy with BatchNorm in training mode; compiled once per model/optimizer/mesh."""
  key = _step_key(model, cfg, mesh)
  if key not in _STEP_CACHE:
    repl = sharding.replicated(mesh)
    _STEP_CACHE[key] = jax.jit(_step_fn(model, cfg),
                               in_shardings=(repl, sharding.batch_sharded(mesh), repl),
                               out_shardings=repl, donate_argnums=0)
  return _STEP_CACHE[key]


def make_group_train_step(model, cfg, mesh):
  """The same step over models stacked along axis 0 (``(seeds, data)`` ``mesh``: models split
  over ``seeds``, each model's batch over ``data``)."""
  key = ('group',) + _step_key(model, cfg, mesh)
  if key not in _STEP_CACHE:
    over = sharding.over_models(_step_fn(model, cfg), (0, 0, None), mesh)
    models, batches = sharding.seeds_sharded(mesh), sharding.seeds_sharded(mesh, True)
    _STEP_CACHE[key] = jax.jit(over, in_shardings=(models, batches, sharding.replicated(mesh)),
                               out_shardings=models, donate_argnums=0)
  return _STEP_CACHE[key]


def training_source(data, kind, forget_classes):
  if kind not in KINDS:
    raise ValueError(f'Unknown model kind {kind!r}; choose one of {KINDS}.')
  if kind == 'original':
    return data.train
  return views.forget_retain(data.train, forget_classes)[1]


def checkpoint_dir(workdir, config, kind, forget_classes=(), seed=None, data=None):
  """The cache directory of the model these settings train on ``data`` (default: loaded
  from ``config.data``); its name is the fingerprint."""
  seed = config.seed if seed is None else seed
  data = load_dataset(config.data) if data is None else data
  return trainer.model_dir(config, workdir, fingerprint.model_settings(
      config, kind, seed, forget_classes, data.digest))


def _plan(config, workdir, kind, data, forget_classes, seed, mesh):
  """``(total_steps, batches, directory, settings)`` of the model of one seed."""
  cfg = config.train
  sharding.check_batch_size(cfg.batch_size, mesh, 'config.train.batch_size')
  source = training_source(data, kind, forget_classes)
  steps_per_epoch = len(source) // cfg.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'config.train.batch_size={cfg.batch_size} exceeds the {len(source)} '
                     'training examples.')

  def batches(start):
    return pipeline.batches(source, cfg.batch_size, mean=data.mean, std=data.std, seed=seed,
                            augment=config.data.augment, pad=config.data.pad,
                            start_step=start)

  settings = fingerprint.model_settings(config, kind, seed, forget_classes, data.digest)
  return (cfg.epochs * steps_per_epoch, batches, trainer.model_dir(config, workdir, settings),
          settings)


def train_classifier(config, workdir, kind, data, model, mesh, forget_classes, on_step=None,
                     seed=None):
  """Trains (or resumes, or loads when finished) the ``kind`` model; returns its variables
  (its ``model.json`` record: ``trainer.read_info(checkpoint_dir(...))``).

  ``seed`` (default ``config.seed``) seeds the initialisation and the batch order.
  Checkpoints every ``config.train.checkpoint_every`` steps and at the end into
  :func:`checkpoint_dir`. ``on_step(step)`` is called after every step (tests use it to
  simulate a crash).
  """
  cfg = config.train
  seed = config.seed if seed is None else int(seed)
  total_steps, batches, directory, settings = _plan(config, workdir, kind, data,
                                                    forget_classes, seed, mesh)
  state = initializer(model, cfg, data.image_shape, mesh)(jax.random.key(seed))
  train_step = make_train_step(model, cfg, mesh)

  def step_fn(state, step, batch):
    return train_step(state, sharding.shard_batch(batch, mesh), np.int32(total_steps))

  state = trainer.fit(state, step_fn, batches, total_steps, directory, settings,
                      name=f'train {kind} seed {seed}', log_every=cfg.log_every,
                      checkpoint_every=cfg.checkpoint_every, on_step=on_step)
  return state.variables


def train_classifiers(config, workdir, kind, data, model, mesh, forget_classes, seeds,
                      seeds_mesh=None):
  """The ``kind`` models of ``seeds`` (variables, in order): one after another on ``mesh``,
  or with ``seeds_mesh`` (:func:`cure_jax.infra.sharding.make_seeds_mesh`) all in one
  program, split over its ``seeds`` axis (:mod:`cure_jax.infra.group_fit`). Each model is
  initialised, batched and cached exactly as :func:`train_classifier` does it."""
  if seeds_mesh is None or len(seeds) < 2:
    return [train_classifier(config, workdir, kind, data, model, mesh, forget_classes,
                             seed=s) for s in seeds]
  cfg = config.train
  plans = [_plan(config, workdir, kind, data, forget_classes, int(s), seeds_mesh)
           for s in seeds]
  total_steps = plans[0][0]
  init = initializer(model, cfg, data.image_shape, mesh)
  step = make_group_train_step(model, cfg, seeds_mesh)
  states = group_fit.fit_group(
      [init(jax.random.key(int(s))) for s in seeds],
      lambda state, i, batch: step(state, batch, np.int32(total_steps)),
      [p[1] for p in plans], total_steps, [p[2] for p in plans], [p[3] for p in plans],
      seeds_mesh, name=f'train {kind} seeds {",".join(str(s) for s in seeds)}',
      log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
  return [s.variables for s in states]
