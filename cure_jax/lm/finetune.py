"""Fine-tuning the *original* (full author set) and *retrain* (retain only) causal LMs.

The loss is the token-level mean NLL over answer tokens (TOFU masks the question). The loss
of an effective batch split into ``grad_accum`` micro-batches is the mean of their losses
(Hugging Face Trainer's gradient accumulation). Training starts from a pretrained model's
parameters when given, else from a random initialisation. The fine-tuned parameters are
checkpointed in a directory named for the fingerprint of the settings that produced them
(:func:`cure_jax.infra.fingerprint.lm_model_settings`; the caller picks
``workdir/checkpoints/<kind>-<digest>``), so a second run with the same settings reuses them
and a run with other settings trains a new model beside them; ``settings.json`` there
records the settings.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from cure_jax.infra import checkpointing, progress, sharding, train_state
from cure_jax.unlearning import losses
from cure_jax.infra.files import write_atomic

KINDS = ('original', 'retrain')


def trim(encoded, multiple=16):
  """Drops the all-padding columns beyond the longest row (rounded up to ``multiple``)."""
  used = int(np.max(np.flatnonzero(encoded['loss_mask'].any(0)), initial=0)) + 2
  width = min(encoded['tokens'].shape[1], -(-used // multiple) * multiple)
  return {k: (v[:, :width] if k in ('tokens', 'loss_mask') else v) for k, v in encoded.items()}


def lr_schedule(cfg, total_steps):
  """Linear warmup then cosine decay to a tenth of ``cfg.lr``."""
  warmup = max(1, int(cfg.warmup_fraction * total_steps))
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
def _optimizer_and_step(model, weight_decay, grad_clip):
  """AdamW whose learning rate is an input of the jitted step.

  The schedule is evaluated on the host, so the original and retrain runs (different step
  counts) share one compiled step.
  """
  tx = optax.chain(optax.clip_by_global_norm(grad_clip),
                   optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, b2=0.98,
                                                         weight_decay=weight_decay))

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


def batch_width(lengths, multiple=32):
  """A batch's width: its longest row rounded up (a few compiled shapes in all)."""
  return -(-int(np.max(lengths)) // multiple) * multiple


def _record_settings(directory, settings):
  """Writes ``settings.json``; refuses a directory that holds a model of other settings."""
  path = os.path.join(directory, 'settings.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      stored = json.load(f)
    if stored != settings:
      changed = sorted(k for k in set(stored) | set(settings)
                       if stored.get(k) != settings.get(k))
      raise ValueError(f'{directory} holds a model fine-tuned with different settings '
                       f'(changed: {changed}); delete that directory.')
    return
  os.makedirs(directory, exist_ok=True)
  write_atomic(path, json.dumps(settings, indent=1, sort_keys=True))


def finetune(model, encoded, cfg, seed, directory, settings, mesh=None, name='finetune',
             init_params=None, place=None):
  """Trains (or loads the finished checkpoint of) an LM on ``encoded`` QA arrays.

  Args:
    model: the :class:`~cure_jax.models.causal_lm.CausalLM`.
    encoded: ``tokens`` / ``loss_mask`` numpy arrays (see ``cure_jax.data.tofu.encode_qa``).
    cfg: ``config.finetune`` (lr, epochs, batch_size (effective), grad_accum,
      warmup_fraction, weight_decay, grad_clip, log_every, checkpoint_every).
    seed: initialisation and batch order.
    directory: checkpoint directory; settings: the JSON-able settings that determine the
      model (stored as ``settings.json``; a directory holding other settings is refused).
    init_params: start point (a pretrained model); None: random initialisation.
    place: ``(tree, mesh) -> tree on the mesh`` for the train state (default: replicated;
      an FSDP placement shards parameters and optimizer state).
  Returns:
    The parameters (host numpy pytree).
  """
  num_items = len(encoded['tokens'])
  if num_items < cfg.batch_size:
    raise ValueError(f'{name}: {num_items} training items are fewer than '
                     f'config.finetune.batch_size={cfg.batch_size}.')
  mesh = sharding.make_mesh() if mesh is None else mesh
  grad_accum = int(cfg.get('grad_accum', 1))
  if grad_accum < 1 or cfg.batch_size % grad_accum:
    raise ValueError(f'config.finetune.grad_accum={grad_accum} must be >= 1 and divide '
                     f'config.finetune.batch_size={cfg.batch_size}.')
  sharding.check_batch_size(cfg.batch_size // grad_accum, mesh,
                            'config.finetune.batch_size / grad_accum')
  _record_settings(directory, settings)
  encoded = trim(encoded)
  total = cfg.epochs * (num_items // cfg.batch_size)
  tx, step_fn = _optimizer_and_step(model, float(cfg.weight_decay), float(cfg.grad_clip))
  schedule = lr_schedule(cfg, total)
  if init_params is None:
    init_params = model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params']
  place = place or sharding.replicate
  # The step donates its state: never hand it the caller's (e.g. pretrained) arrays.
  init_params = jax.tree.map(lambda x: jnp.array(x, copy=True), init_params)
  state = place(train_state.create({'params': init_params, 'batch_stats': {}}, tx), mesh)
  mgr = checkpointing.manager(os.path.join(directory, 'state'), max_to_keep=1)
  restored = checkpointing.restore_latest(mgr, state)
  start = 0 if restored is None else int(restored.step)
  if restored is not None:
    state = restored
  if start >= total:
    logging.info('%s: reusing the finished checkpoint in %s', name, directory)
    mgr.close()
    return jax.device_get(state.params)
  # Used length per row: up to the last answer token and the token it predicts.
  lengths = np.array([int(np.max(np.flatnonzero(m), initial=0)) + 2
                      for m in encoded['loss_mask']])
  width = encoded['tokens'].shape[1]
  prog = progress.Progress(name, total, cfg.log_every, start)
  for step in range(start, total):
    idx = batch_indices(num_items, cfg.batch_size, step, seed)
    # Right padding beyond a batch's longest row changes no loss term: cut it.
    cut = min(width, batch_width(lengths[idx]))
    batch = micro_batches({k: encoded[k][idx, :cut] for k in ('tokens', 'loss_mask')},
                          grad_accum)
    state, metrics = step_fn(state, sharding.shard_batch(batch, mesh, batch_axis=1),
                             np.float32(schedule(step)))
    prog.add(step, metrics)
    if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == total:
      prog.flush()  # never checkpoint a state whose loss went non-finite
      checkpointing.save(mgr, step + 1, state)
  mgr.close()
  return jax.device_get(state.params)
