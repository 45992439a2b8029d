"""The LM unlearning loop: a registry method run from the fine-tuned original model.

Every method is an entry of the one registry (:mod:`cure_jax.unlearning.methods`) and
every step comes from the one step builder (:func:`cure_jax.unlearning.step.build_update`).
What is LM-specific lives here: batches of encoded QA pairs (token ids and the answer
mask, read through the core's token view), the frozen original model's logits computed
per micro-batch inside the step, the per-token forget classes, forget items paired with
random retain items, micro-batch accumulation and the optimizer.

Optimizer: AdamW as in open-unlearning's TOFU recipe (``unlearn.optimizer='sgd'`` gives the
CURE paper's image-classification choice). Adam's per-parameter normalisation makes one
learning rate work for every method, whose raw gradient scales differ by 20x (w=0.5 vs 10).

The recipe switches (:data:`RECIPE_DEFAULTS`, config.py) select open-unlearning's choices
point by point (configs/tofu.py cites their code): HF's linear decay, its micro-batch stream
across epochs, the token-mean NLL, UNDIAL on every position, no decay on norm scales and
gradient clipping; their defaults keep this loop's published behaviour.
"""
import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cure_jax.infra import progress, sharding, train_state
from cure_jax.lm import finetune
from cure_jax.unlearning import hparams as hparams_lib, losses, methods, step as step_lib
from cure_jax.unlearning.batch import Batch


def get_method(name):
  """The registry entry ``name``, refused with one line when it only fits a classifier or
  runs a per-epoch schedule of passes (:mod:`cure_jax.unlearning.schedule`)."""
  method = methods.get(name)
  if method.classifier_only:
    usable = sorted(k for k, m in methods.REGISTRY.items() if not m.classifier_only)
    raise ValueError(f'Method {name!r} draws or targets whole classes and runs on classifiers '
                     f'only; for an LM choose one of {usable}.')
  if method.schedule:   # every scheduled method is a classifier's today; this loop pairs batches
    raise ValueError(f'Method {name!r} runs passes over the forget and retain sets, which the '
                     'LM loop does not schedule; use cure_jax.make_unlearning_step with '
                     'data_sizes.')
  return method


# The open-unlearning recipe switches (config.py documents each) at the values that keep
# this loop's own behaviour, for unlearning settings written before the switches existed.
RECIPE_DEFAULTS = {'lr_schedule': 'constant', 'drop_last': True, 'loss_mean': 'sequence',
                   'undial_positions': 'answer', 'decay_norms': True, 'grad_clip': 0.0}
UNDIAL = ('undial', 'undial_descent')


def recipe(cfg, key):
  """``cfg.<key>`` of a recipe switch, its :data:`RECIPE_DEFAULTS` value where absent."""
  return getattr(cfg, key, RECIPE_DEFAULTS[key])


def make_optimizer(cfg, total_steps):
  """AdamW (open-unlearning's TOFU choice) or SGD after a linear warm-up from 0
  (``warmup_fraction=0``: the full learning rate from the first step), then constant
  (``lr_schedule='constant'``) or Hugging Face's linear decay to 0 (``'linear'``);
  ``decay_norms=False`` spares norm scales and biases from weight decay, ``grad_clip > 0``
  clips the (accumulated) gradient's global norm first, as HF's ``max_grad_norm``."""
  warmup = finetune.warmup_steps(cfg.warmup_fraction, total_steps)
  if recipe(cfg, 'lr_schedule') == 'linear':
    schedule = finetune.hf_linear_schedule(cfg.lr, warmup, total_steps)
  elif warmup == 0:
    schedule = optax.constant_schedule(cfg.lr)
  else:
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)], [warmup])
  if cfg.optimizer == 'adamw':
    mask = None if recipe(cfg, 'decay_norms') else finetune.decay_mask
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=mask)
  elif cfg.optimizer == 'sgd':
    tx = optax.sgd(schedule, momentum=cfg.momentum or None)
  else:
    raise ValueError(f"config.unlearn.optimizer={cfg.optimizer!r}; use 'adamw' or 'sgd'.")
  clip = float(recipe(cfg, 'grad_clip'))
  return tx if clip == 0 else optax.chain(optax.clip_by_global_norm(clip), tx)


def lm_batch(batch, token_mean=False):
  """A core :class:`Batch` from encoded QA pairs: the tokens are the inputs and (shifted
  by the view) the targets; the answer mask weighs the positions. ``token_mean``: its NLL
  terms are the token mean over the (micro-)batch, Hugging Face's loss."""
  return Batch(inputs=batch['tokens'], label=batch['tokens'], weights=batch['loss_mask'],
               token_mean=token_mean)


def undial_all_positions(forget, vocab_size, forget_ids=None):
  """open-unlearning's UNDIAL frame (``compute_undial_loss``): every position of the
  micro-batch up to its longest row (prompt and right padding included, their ``loss.mean()``
  over all positions), with the answer's next token lowered by β and, where their label is
  -100 (prompt, padding), vocabulary entry ``-100 mod V`` (their index wraps to V - 100).

  Returns the batch's ``weights`` (the same positions in every row, so the step's mean of
  per-row means is their mean over positions) and its ``forget_mask``.
  """
  answer = forget.weights[:, :-1] > 0
  positions = jnp.arange(answer.shape[1])
  last = jnp.max(jnp.where(answer, positions, -1))   # the longest row's last prediction
  targets = jnp.where(answer, forget.label[:, 1:], -100 % vocab_size)
  mask = losses.token_forget_mask(targets, vocab_size, forget_ids)
  weights = jnp.broadcast_to(jnp.arange(forget.weights.shape[1]) <= last, forget.weights.shape)
  return weights.astype(forget.weights.dtype), mask


def make_unlearn_step(apply_fn, method_name, hp, tx, grad_accum=1, forget_ids=None,
                      token_mean=False, undial_positions='answer'):
  """The jitted step ``(state, ref_params, forget, retain, rng) -> (state, metrics)``.

  ``apply_fn(params, tokens_BxL) -> logits_BxLxV``; ``forget`` / ``retain`` are batches of
  encoded QA pairs (``tokens``, ``loss_mask``); ``hp`` holds every method hyperparameter
  (:data:`cure_jax.unlearning.hparams.DEFAULTS` keys, compiled in). ``forget_ids``: the
  forget classes at every answer token (token ids), else the true next token. With
  ``grad_accum > 1`` the batches carry a leading micro-batch axis and the update direction
  is the mean of the micro-batch directions (HF Trainer 4.45: each micro-batch's loss over
  the accumulation steps). ``token_mean``: the NLL terms as token means per micro-batch;
  ``undial_positions='all'``: UNDIAL on :func:`undial_all_positions`.
  """
  method = get_method(method_name)
  all_positions = undial_positions == 'all' and method_name in UNDIAL

  def complete(inputs):
    """The frozen original model's logits and the token forget classes, per micro-batch."""
    if not method.needs_teacher:
      return inputs
    ref_logits = jax.lax.stop_gradient(apply_fn(inputs.aux, inputs.forget.inputs))
    if all_positions:
      weights, mask = undial_all_positions(inputs.forget, ref_logits.shape[-1], forget_ids)
      forget = dataclasses.replace(inputs.forget, teacher_logits=ref_logits, forget_mask=mask,
                                   weights=weights)
      return dataclasses.replace(inputs, forget=forget)
    mask = losses.token_forget_mask(inputs.forget.label[:, 1:], ref_logits.shape[-1],
                                    forget_ids)
    forget = dataclasses.replace(inputs.forget, teacher_logits=ref_logits, forget_mask=mask)
    return dataclasses.replace(inputs, forget=forget)

  _, update = step_lib.build_update(method, hp, optimizer=tx, micro_batches=grad_accum,
                                    complete=complete)
  static = hparams_lib.HParams(hp, {})

  def step(state, ref_params, forget, retain, rng):
    params, opt_state, loss = update(apply_fn, state.params, state.opt_state,
                                     lm_batch(forget, token_mean), lm_batch(retain, token_mean),
                                     rng, static, None, state.step, ref_params)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return state, {'loss': loss}

  return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=32)
def _cached_step(apply_fn, method_name, hp_items, opt_settings, total, grad_accum, forget_ids,
                 token_mean, undial_positions):
  """One optimiser and compiled step per (method, settings): the seeds of a run share it."""
  tx = make_optimizer(types.SimpleNamespace(**dict(opt_settings)), total)
  return tx, make_unlearn_step(apply_fn, method_name, dict(hp_items), tx, grad_accum,
                               forget_ids, token_mean, undial_positions)


def paired_batches(num_forget, num_retain, batch_size, epochs, seed):
  """Index batches ``(forget_idx, retain_idx)``: the forget set is shuffled every epoch and
  each forget item is paired with a uniformly random retain item (open-unlearning's TOFU);
  the last partial batch of an epoch is dropped (``drop_last=True``)."""
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(num_forget)
    for start in range(0, num_forget - batch_size + 1, batch_size):
      yield order[start:start + batch_size], rng.integers(0, num_retain, batch_size)


def stream_batches(num_forget, num_retain, micro, grad_accum, epochs, seed):
  """Index batches as Hugging Face Trainer 4.45 draws them (``drop_last=False``): every
  epoch a new order cut into micro-batches of ``micro`` (``dataloader_drop_last=False``),
  each forget item paired with a random retain item, and every ``grad_accum`` consecutive
  micro-batches one step, counted across epoch ends (``total_batched_samples``), so a batch
  may span two epochs; the run stops after ``epochs × (micro-batches per epoch //
  grad_accum)`` steps (``max_steps``), leaving the rest of the last epoch unread."""
  rng = np.random.default_rng(seed)

  def micro_batches():
    for _ in range(epochs):
      order = rng.permutation(num_forget)
      for start in range(0, num_forget, micro):
        idx = order[start:start + micro]
        yield idx, rng.integers(0, num_retain, len(idx))

  stream = micro_batches()
  for _ in range(finetune.stream_steps(num_forget, micro, grad_accum, epochs)):
    group = [next(stream) for _ in range(grad_accum)]
    yield tuple(np.concatenate(part) for part in zip(*group))


def batch_size_for(cfg, num_forget, num_devices):
  """The effective unlearning batch: at most the forget set, whole micro-batches per device."""
  grad_accum = int(cfg.grad_accum)
  batch_size = min(cfg.batch_size, num_forget)
  batch_size -= batch_size % (num_devices * grad_accum)
  if batch_size == 0:
    raise ValueError(f'{num_forget} forget items cannot fill one batch of {grad_accum} '
                     f'micro-batches on the {num_devices} devices; use fewer devices, '
                     'a smaller config.unlearn.grad_accum or more forget data.')
  return batch_size


def step_hparams(hp):
  """The method hyperparameters a compiled LM step closes over (hashable, plain floats)."""
  out = {k: float(hp[k]) for k in hparams_lib.DYNAMIC}
  out.update(grogu_impl=hp['grogu_impl'], momentum=float(hp['momentum'] or 0.0))
  return out


def unlearn(apply_fn, original_params, forget, retain, hp, method_name, seed, mesh=None,
            mode='replicated', forget_ids=None):
  """Runs one unlearning job from the original parameters; returns the new parameters.

  Args:
    apply_fn: ``(params, tokens_BxL) -> logits``.
    original_params: the fine-tuned original model (start point, teacher and reference).
    forget, retain: encoded QA arrays (``tokens``, ``loss_mask``), numpy.
    hp: the run's effective ``config.unlearn`` values (lr, epochs, batch_size (effective),
      grad_accum, optimizer, momentum, warmup_fraction, weight_decay, log_every, every
      method hyperparameter and the recipe switches, :data:`RECIPE_DEFAULTS` where absent).
    method_name: a registry name.
    seed: batch order, retain pairing and the methods' random draws.
    mode: 'replicated' or 'fsdp': the state and the reference parameters sharded by the
      rule of :func:`cure_jax.infra.sharding.shardings`.
    forget_ids: token ids that are the forget classes at every answer token (None: the
      true next token).
  """
  num_forget, num_retain = len(forget['tokens']), len(retain['tokens'])
  if num_forget == 0:
    raise ValueError('The forget split is empty: nothing to unlearn (check data.forget_pct).')
  if get_method(method_name).uses_retain and num_retain == 0:
    raise ValueError(f'{method_name} needs retain data but the retain split is empty.')
  mesh = sharding.make_mesh() if mesh is None else mesh
  grad_accum = int(hp.grad_accum)
  if recipe(hp, 'drop_last'):
    batch_size = batch_size_for(hp, num_forget, mesh.devices.size)
    total = hp.epochs * (num_forget // batch_size)
    batches = paired_batches(num_forget, max(num_retain, 1), batch_size, hp.epochs, seed)
  else:   # HF's micro-batches as configured (the validator checked the devices divide them)
    micro = hp.batch_size // grad_accum
    finetune.check_stream(num_forget, micro, grad_accum, 'unlearn', 'forget items')
    total = finetune.stream_steps(num_forget, micro, grad_accum, hp.epochs)
    batches = stream_batches(num_forget, max(num_retain, 1), micro, grad_accum, hp.epochs, seed)
  opt_settings = tuple((k, hp[k]) for k in ('optimizer', 'lr', 'warmup_fraction',
                                            'weight_decay', 'momentum')) + tuple(
      (k, recipe(hp, k)) for k in ('lr_schedule', 'decay_norms', 'grad_clip'))
  method_hp = step_hparams(hp)
  tx, step_fn = _cached_step(apply_fn, method_name, tuple(sorted(method_hp.items())),
                             opt_settings, total, grad_accum, forget_ids,
                             recipe(hp, 'loss_mean') == 'token', recipe(hp, 'undial_positions'))
  state = train_state.start({'params': original_params, 'batch_stats': {}}, tx, mesh, mode)
  ref_params = sharding.place(original_params, mesh, mode)
  prog = progress.Progress(f'unlearn {method_name}', total, hp.log_every)

  def take(data, idx):
    batch = {k: data[k][idx] for k in ('tokens', 'loss_mask')}
    if grad_accum == 1:
      return sharding.shard_batch(batch, mesh)
    batch = {k: v.reshape((grad_accum, -1) + v.shape[1:]) for k, v in batch.items()}
    return sharding.shard_batch(batch, mesh, batch_axis=1)

  key = jax.random.key(seed)
  for step, (f_idx, r_idx) in enumerate(batches):
    retain_batch = take(retain, r_idx) if num_retain else take(forget, f_idx)
    state, metrics = step_fn(state, ref_params, take(forget, f_idx), retain_batch,
                             jax.random.fold_in(key, step))
    prog.add(step, metrics)
  prog.flush()
  return jax.device_get(state.params)
