"""Fine-tuning the *original* (full author set) and *retrain* (retain only) causal LMs.

The loss is the token-level mean NLL over answer tokens (TOFU masks the question). The loss
of an effective batch split into ``grad_accum`` micro-batches is the mean of their losses
(Hugging Face Trainer's gradient accumulation). Training starts from a pretrained model's
parameters when given, else from a random initialisation. The loop, the checkpoints and the
model cache are :mod:`cure_jax.infra.trainer`'s (the directory is named for the fingerprint
of :func:`cure_jax.infra.fingerprint.lm_model_settings`), so a second run with the same
settings reuses the model and a run with other settings trains a new one beside it.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cure_jax.infra import recipe_switches, sharding, train_state, trainer
from cure_jax.unlearning import losses

KINDS = ('original', 'retrain')


def trim(encoded, multiple=16):
  """Drops the all-padding columns beyond the longest row (rounded up to ``multiple``)."""
  used = int(np.max(np.flatnonzero(encoded['loss_mask'].any(0)), initial=0)) + 2
  width = min(encoded['tokens'].shape[1], -(-used // multiple) * multiple)
  return {k: (v[:, :width] if k in ('tokens', 'loss_mask') else v) for k, v in encoded.items()}


def warmup_steps(fraction, total_steps):
  """Steps of linear warm-up from 0: none for ``fraction=0`` (a warm-up of one step would
  make the first step's learning rate 0, so a one-step run would not move), else at least
  one."""
  return 0 if fraction == 0 else max(1, int(fraction * total_steps))


# The recipe switches at the values that keep this fine-tuning's own behaviour.
RECIPE_DEFAULTS = recipe_switches.FINETUNE
recipe = recipe_switches.reader(RECIPE_DEFAULTS)


def hf_linear_schedule(lr, warmup, total_steps):
  """Hugging Face's ``get_linear_schedule_with_warmup`` (their default ``lr_scheduler_type``):
  ``lr · step / max(1, warmup)`` during the warm-up, then
  ``lr · max(0, (total - step) / max(1, total - warmup))``, step 0-based."""
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    rise = step / max(1, warmup)
    fall = jnp.maximum(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return lr * jnp.where(step < warmup, rise, fall)
  return schedule


def decay_mask(params):
  """Where AdamW decays: every weight but the norm scales and biases, as Hugging Face's
  ``Trainer.get_decay_parameter_names`` (Llama's RMSNorm is one of its layer norms)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) not in ('scale', 'bias'), params)


def lr_schedule(cfg, total_steps):
  """Linear warmup then cosine decay to a tenth of ``cfg.lr`` (``lr_schedule='cosine'``) or
  Hugging Face's linear decay to 0 (``'linear'``, open-unlearning's TOFU fine-tuning)."""
  warmup = warmup_steps(cfg.warmup_fraction, total_steps)
  if recipe(cfg, 'lr_schedule') == 'linear':
    return hf_linear_schedule(cfg.lr, warmup, total_steps)
  if warmup == 0:
    return optax.cosine_decay_schedule(cfg.lr, max(total_steps, 1), alpha=0.1)
  return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1),
                                            end_value=cfg.lr * 0.1)


def accumulated(loss_fn, params, batch_AxB):
  """Mean loss and gradient over the micro-batches ``batch_AxB`` (leading axis A), scanned so
  only one micro-batch's activations are alive at a time."""
  def body(carry, micro):
    loss, grads = jax.value_and_grad(loss_fn)(params, micro)
    return jax.tree.map(jnp.add, carry, (loss, grads)), None

  zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
  num = jax.tree.leaves(batch_AxB)[0].shape[0]
  (loss, grads), _ = jax.lax.scan(body, zeros, batch_AxB)
  return loss / num, jax.tree.map(lambda g: g / num, grads)


def micro_batches(batch, grad_accum):
  """Host batch ``(A*B, ...)`` -> ``(A, B, ...)``."""
  return {k: v.reshape((grad_accum, -1) + v.shape[1:]) for k, v in batch.items()}


@functools.lru_cache(maxsize=8)
def _optimizer_and_step(model, weight_decay, grad_clip, decay_norms=True, b2=0.98):
  """AdamW whose learning rate is an input of the jitted step.

  The schedule is evaluated on the host, so the original and retrain runs (different step
  counts) share one compiled step. ``decay_norms=False`` spares the norm scales (and any
  bias) from weight decay, as Hugging Face's Trainer.
  """
  if decay_norms:
    adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, b2=b2,
                                                  weight_decay=weight_decay)
  else:
    adamw = optax.inject_hyperparams(optax.adamw, static_args=('mask',))(
        learning_rate=0.0, b2=b2, weight_decay=weight_decay, mask=decay_mask)
  tx = optax.chain(optax.clip_by_global_norm(grad_clip), adamw)

  def step(state, batch_AxB, lr):
    def loss_fn(params, batch):
      logits, targets, mask = losses.next_token_view(
          model.apply({'params': params}, batch['tokens']), batch['tokens'], batch['loss_mask'])
      nll = losses.cross_entropy(logits, targets)
      return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    loss, grads = accumulated(loss_fn, state.params, batch_AxB)
    opt_state = state.opt_state
    opt_state[1].hyperparams['learning_rate'] = lr
    updates, opt_state = tx.update(grads, opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {'loss': loss}

  return tx, jax.jit(step, donate_argnums=0)


def batch_indices(num_items, batch_size, step, seed):
  """The rows of training step ``step``: a function of the step, so a resume is exact.

  Batches are uniformly random. (Length-sorted pools were tried: they saved little here,
  where most rows need the full width anyway, and memorised the answers less well.)
  """
  steps_per_epoch = num_items // batch_size
  epoch, within = divmod(step, steps_per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_items)
  return order[within * batch_size:(within + 1) * batch_size]


def stream_steps(num_items, micro, grad_accum, epochs):
  """HF Trainer's ``max_steps``: ``epochs × max(micro-batches per epoch // grad_accum, 1)``."""
  return epochs * max(-(-num_items // micro) // grad_accum, 1)


def check_stream(num_items, micro, grad_accum, section, what):
  """One line when ``drop_last=False`` cannot follow HF: a partial micro-batch would need a
  second compiled shape, and an epoch of fewer than ``grad_accum`` micro-batches makes HF
  step on a partial accumulation (its ``is_last_step_and_steps_less_than_grad_acc``)."""
  if num_items % micro or num_items // micro < grad_accum:
    raise ValueError(f'config.{section}.drop_last=False needs the {num_items} {what} to split '
                     f'into whole micro-batches of {micro}, at least grad_accum={grad_accum} '
                     f'of them; choose config.{section}.batch_size / grad_accum to fit or set '
                     'drop_last=True.')


def stream_indices(num_items, micro, grad_accum, step, seed):
  """The rows of step ``step`` as Hugging Face Trainer 4.45 draws them (``drop_last=False``):
  each epoch's order (the one :func:`batch_indices` uses) cut into micro-batches of
  ``micro``, every ``grad_accum`` consecutive ones a step, counted across epoch ends (their
  ``total_batched_samples``), so a step may span two epochs. A function of the step, so a
  resume is exact; ``num_items`` is a whole number of micro-batches (checked before)."""
  per_epoch = num_items // micro
  rows = []
  for j in range(step * grad_accum, (step + 1) * grad_accum):
    epoch, within = divmod(j, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_items)
    rows.append(order[within * micro:(within + 1) * micro])
  return np.concatenate(rows)


def batch_width(lengths, multiple=32):
  """A batch's width: its longest row rounded up (a few compiled shapes in all)."""
  return -(-int(np.max(lengths)) // multiple) * multiple


def _steps(encoded, cfg, seed, grad_accum, mesh, step_fn, schedule):
  """The trainer's ``step_fn`` and ``batches`` for fine-tuning on ``encoded``."""
  num_items, width = len(encoded['tokens']), encoded['tokens'].shape[1]
  # Used length per row: up to the last answer token and the token it predicts.
  lengths = np.array([int(np.max(np.flatnonzero(m), initial=0)) + 2
                      for m in encoded['loss_mask']])

  def batch(step):
    if recipe(cfg, 'drop_last'):
      idx = batch_indices(num_items, cfg.batch_size, step, seed)
    else:
      idx = stream_indices(num_items, cfg.batch_size // grad_accum, grad_accum, step, seed)
    # Right padding beyond a batch's longest row changes no loss term: cut it.
    cut = min(width, batch_width(lengths[idx]))
    return micro_batches({k: encoded[k][idx, :cut] for k in ('tokens', 'loss_mask')},
                         grad_accum)

  def train_step(state, step, host_batch):
    return step_fn(state, sharding.shard_batch(host_batch, mesh, batch_axis=1),
                   np.float32(schedule(step)))

  def batches(start):
    return (batch(step) for step in itertools.count(start))
  return train_step, batches


def finetune(model, encoded, cfg, seed, directory, settings, mesh=None, name='finetune',
             init_params=None, mode='replicated'):
  """Trains (or loads the finished checkpoint of) an LM on ``encoded`` QA arrays.

  Args:
    model: the :class:`~cure_jax.models.causal_lm.CausalLM`.
    encoded: ``tokens`` / ``loss_mask`` numpy arrays (see ``cure_jax.data.tofu.encode_qa``).
    cfg: ``config.finetune`` (lr, epochs, batch_size (effective), grad_accum,
      warmup_fraction, weight_decay, grad_clip, log_every, checkpoint_every and the recipe
      switches, :data:`RECIPE_DEFAULTS` where absent).
    seed: initialisation and batch order.
    directory, settings: where the model lives and the JSON-able settings that determine it
      (:func:`cure_jax.infra.trainer.fit`).
    init_params: start point (a pretrained model); None: random initialisation.
    mode: 'replicated' or 'fsdp' (parameters and optimizer state sharded).
  Returns:
    The parameters (host numpy pytree).
  """
  num_items = len(encoded['tokens'])
  if num_items < cfg.batch_size:
    raise ValueError(f'{name}: {num_items} training items are fewer than '
                     f'config.finetune.batch_size={cfg.batch_size}.')
  mesh = sharding.make_mesh() if mesh is None else mesh
  grad_accum = int(cfg.grad_accum)
  if grad_accum < 1 or cfg.batch_size % grad_accum:
    raise ValueError(f'config.finetune.grad_accum={grad_accum} must be >= 1 and divide '
                     f'config.finetune.batch_size={cfg.batch_size}.')
  sharding.check_batch_size(cfg.batch_size // grad_accum, mesh,
                            'config.finetune.batch_size / grad_accum')
  if recipe(cfg, 'drop_last'):
    total = cfg.epochs * (num_items // cfg.batch_size)
  else:   # HF Trainer's steps (stream_indices)
    check_stream(num_items, cfg.batch_size // grad_accum, grad_accum, 'finetune',
                 f'{name} items')
    total = stream_steps(num_items, cfg.batch_size // grad_accum, grad_accum, cfg.epochs)
  tx, step_fn = _optimizer_and_step(model, float(cfg.weight_decay), float(cfg.grad_clip),
                                    bool(recipe(cfg, 'decay_norms')),
                                    float(recipe(cfg, 'adam_b2')))
  if init_params is None:
    # Initialised eagerly, not under jit: XLA fuses the 0.02 scale of the normal initialiser
    # into the sampler there, which moves about a quarter of the values by one ulp and with
    # them every published byte-LM result. Only the small from-scratch LM takes this path.
    init_params = model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params']
  state = train_state.start({'params': init_params, 'batch_stats': {}}, tx, mesh, mode)
  train_step, batches = _steps(trim(encoded), cfg, seed, grad_accum, mesh, step_fn,
                               lr_schedule(cfg, total))
  state = trainer.fit(state, train_step, batches, total, directory, settings, name=name,
                      log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                      max_to_keep=1)
  return jax.device_get(state.params)
