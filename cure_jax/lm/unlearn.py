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
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cure_jax.infra import progress, recipe_switches, sharding, train_state
from cure_jax.lm import train
from cure_jax.lm.unlearn_batches import batch_size_for, paired_batches, stream_batches
from cure_jax.unlearning import hparams as hparams_lib, losses, methods, step as step_lib
from cure_jax.unlearning.baselines import rmu
from cure_jax.unlearning.batch import Batch, StepInputs


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


# The recipe switches at the values that keep this loop's own behaviour.
RECIPE_DEFAULTS = recipe_switches.UNLEARN
recipe = recipe_switches.reader(RECIPE_DEFAULTS)
UNDIAL = ('undial', 'undial_descent')


def param_path(path):
  """A parameter's name, its keys joined by '/' (``layers_7/mlp/down_proj/kernel``)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def trainable_labels(params, pattern):
  """``'train'`` for the parameters whose :func:`param_path` fully matches the regular
  expression ``pattern``, ``'frozen'`` for the others (RMU's chosen layers)."""
  regex = re.compile(pattern)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 'train' if regex.fullmatch(param_path(path)) else 'frozen', params)


def make_optimizer(cfg, total_steps, trainable=None):
  """AdamW (open-unlearning's TOFU choice) or SGD after a linear warm-up from 0
  (``warmup_fraction=0``: the full learning rate from the first step), then constant
  (``lr_schedule='constant'``) or Hugging Face's linear decay to 0 (``'linear'``);
  ``decay_norms=False`` spares norm scales and biases from weight decay, ``grad_clip > 0``
  clips the (accumulated) gradient's global norm first, as HF's ``max_grad_norm``.
  ``trainable``: a regular expression over :func:`param_path`; only the parameters it
  matches train (the others keep their values, no optimizer state, and their gradients
  count in no clipping norm: PyTorch's ``requires_grad=False``)."""
  warmup = train.warmup_steps(cfg.warmup_fraction, total_steps)
  if recipe(cfg, 'lr_schedule') == 'linear':
    schedule = train.hf_linear_schedule(cfg.lr, warmup, total_steps)
  elif warmup == 0:
    schedule = optax.constant_schedule(cfg.lr)
  else:
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)], [warmup])
  if cfg.optimizer == 'adamw':
    mask = None if recipe(cfg, 'decay_norms') else train.decay_mask
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=mask)
  elif cfg.optimizer == 'sgd':
    tx = optax.sgd(schedule, momentum=cfg.momentum or None)
  else:
    raise ValueError(f"config.unlearn.optimizer={cfg.optimizer!r}; use 'adamw' or 'sgd'.")
  clip = float(recipe(cfg, 'grad_clip'))
  tx = tx if clip == 0 else optax.chain(optax.clip_by_global_norm(clip), tx)
  if trainable is None:
    return tx
  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                               functools.partial(trainable_labels, pattern=trainable))


def lm_batch(batch, token_mean=False):
  """A core :class:`Batch` from encoded QA pairs: the tokens are the inputs and (shifted
  by the view) the targets; the answer mask weighs the positions. ``token_mean``: its NLL
  terms are the token mean over the (micro-)batch, Hugging Face's loss."""
  if batch is None:
    return None
  return Batch(inputs=batch['tokens'], label=batch['tokens'], weights=batch['loss_mask'],
               token_mean=token_mean, target=batch.get('target'))


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


def _completer(method, apply_fn, represent_fn, all_positions, forget_ids):
  """The step's ``complete``: what the frozen original model adds to each micro-batch."""

  def complete(inputs):
    """The frozen original model's logits and the token forget classes, per micro-batch
    (and its logits of the preferred answers, or its activations on the retain batch)."""
    if method.represents and method.uses_retain:
      hidden = jax.lax.stop_gradient(represent_fn(inputs.aux, inputs.retain.inputs))
      inputs = dataclasses.replace(
          inputs, retain=dataclasses.replace(inputs.retain, teacher_hidden=hidden))
    if method.alternate is not None:
      alt = inputs.alternate
      logits = jax.lax.stop_gradient(apply_fn(inputs.aux, alt.inputs))
      inputs = dataclasses.replace(inputs, alternate=dataclasses.replace(
          alt, teacher_logits=logits))
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

  return complete


def make_unlearn_step(apply_fn, method_name, hp, tx, grad_accum=1, forget_ids=None,
                      token_mean=False, undial_positions='answer', represent_fn=None):
  """The jitted step ``(state, ref_params, forget, retain, rng, alternate=None) -> (state,
  metrics)``.

  ``apply_fn(params, tokens_BxL) -> logits_BxLxV``; ``forget`` / ``retain`` are batches of
  encoded QA pairs (``tokens``, ``loss_mask``); ``hp`` holds every method hyperparameter
  (:data:`cure_jax.unlearning.hparams.DEFAULTS` keys, compiled in). ``forget_ids``: the
  forget classes at every answer token (token ids), else the true next token. With
  ``grad_accum > 1`` the batches carry a leading micro-batch axis and the update direction
  is the mean of the micro-batch directions (HF Trainer 4.45: each micro-batch's loss over
  the accumulation steps). ``token_mean``: the NLL terms as token means per micro-batch;
  ``undial_positions='all'``: UNDIAL on :func:`undial_all_positions`. ``alternate``: the
  forget questions with their preferred answers (DPO, IdkDPO); ``represent_fn(params,
  tokens_BxL) -> activations_BxLxD`` of the layer RMU steers, whose forget batch carries
  the steering direction as ``target`` ``[B, D]``.
  """
  method = get_method(method_name)
  if method.represents and represent_fn is None:
    raise ValueError(f'{method_name} needs represent_fn (the steered layer\'s activations).')
  all_positions = undial_positions == 'all' and method_name in UNDIAL

  complete = _completer(method, apply_fn, represent_fn, all_positions, forget_ids)
  _, update = step_lib.build_update(method, hp, optimizer=tx, micro_batches=grad_accum,
                                    complete=complete)
  static = hparams_lib.HParams(hp, {})

  def step(state, ref_params, forget, retain, rng, alternate=None):
    inputs = StepInputs(apply_fn, state.params, lm_batch(forget, token_mean),
                        lm_batch(retain, token_mean), rng, static, step=state.step,
                        aux=ref_params, alternate=lm_batch(alternate, token_mean),
                        represent=represent_fn)
    params, opt_state, loss = update(inputs, state.opt_state)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return state, {'loss': loss}

  return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=32)
def _cached_step(apply_fn, method_name, hp_items, opt_settings, total, grad_accum, forget_ids,
                 token_mean, undial_positions, represent_fn, trainable):
  """One optimiser and compiled step per (method, settings): the seeds of a run share it,
  and so do the forget sets of a study (same shapes, the same ``apply_fn``)."""
  tx = make_optimizer(types.SimpleNamespace(**dict(opt_settings)), total, trainable)
  return tx, make_unlearn_step(apply_fn, method_name, dict(hp_items), tx, grad_accum,
                               forget_ids, token_mean, undial_positions, represent_fn)


def step_hparams(hp):
  """The method hyperparameters a compiled LM step closes over (hashable, plain floats)."""
  out = {k: float(hp[k]) for k in hparams_lib.DYNAMIC}
  out.update(grogu_impl=hp['grogu_impl'], momentum=float(hp['momentum'] or 0.0))
  return out


def _step_for(apply_fn, method_name, hp, total, forget_ids, represent_fn):
  """``(tx, step)`` of a run's settings from :func:`_cached_step` (RMU: its layer function
  and trained parameters; other methods leave both out of the cache key)."""
  represents = get_method(method_name).represents
  opt_settings = tuple((k, hp[k]) for k in ('optimizer', 'lr', 'warmup_fraction',
                                            'weight_decay', 'momentum')) + tuple(
      (k, recipe(hp, k)) for k in ('lr_schedule', 'decay_norms', 'grad_clip'))
  return _cached_step(apply_fn, method_name, tuple(sorted(step_hparams(hp).items())),
                      opt_settings, total, int(hp.grad_accum), forget_ids,
                      recipe(hp, 'loss_mean') == 'token', recipe(hp, 'undial_positions'),
                      represent_fn if represents else None,
                      rmu_trainable(hp) if represents else None)


def rmu_trainable(hp):
  """The regular expression of the parameters RMU trains: ``rmu_params``, or by default the
  MLP down-projections of the steered layer and the two below it (WMDP's choice)."""
  if hp.get('rmu_params'):
    return hp['rmu_params']
  layer = int(hp.get('rmu_layer', 7))
  return f'layers_({"|".join(str(i) for i in range(max(0, layer - 2), layer + 1))})' \
      '/mlp/down_proj/kernel'


def _index_batches(hp, num_forget, num_retain, num_devices, seed):
  """``(steps, iterator of (forget_idx, retain_idx))`` by the run's recipe switches."""
  grad_accum = int(hp.grad_accum)
  if recipe(hp, 'drop_last'):
    batch_size = batch_size_for(hp, num_forget, num_devices)
    return (hp.epochs * (num_forget // batch_size),
            paired_batches(num_forget, max(num_retain, 1), batch_size, hp.epochs, seed))
  micro = hp.batch_size // grad_accum   # HF's micro-batches (the validator checked devices)
  train.check_stream(num_forget, micro, grad_accum, 'unlearn', 'forget items')
  return (train.stream_steps(num_forget, micro, grad_accum, hp.epochs),
          stream_batches(num_forget, max(num_retain, 1), micro, grad_accum, hp.epochs, seed))


def _check_inputs(method, method_name, num_forget, num_retain, alternate, params, hp):
  """One clear error for an input the run cannot use."""
  if num_forget == 0:
    raise ValueError('The forget split is empty: nothing to unlearn (check data.forget_pct).')
  if method.uses_retain and num_retain == 0:
    raise ValueError(f'{method_name} needs retain data but the retain split is empty.')
  if method.alternate is not None and alternate is None:
    raise ValueError(f'{method_name} prefers other answers to the forget questions; pass '
                     'alternate (encoded [N, A, L] arrays).')
  if method.represents and 'train' not in jax.tree.leaves(
      trainable_labels(params, rmu_trainable(hp))):
    raise ValueError(f'config.unlearn.rmu_params={rmu_trainable(hp)!r} matches no parameter; '
                     "write a regular expression over paths such as "
                     "'layers_7/mlp/down_proj/kernel'.")


def unlearn(apply_fn, original_params, forget, retain, hp, method_name, seed, mesh=None,
            mode='replicated', forget_ids=None, alternate=None, represent_fn=None):
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
    alternate: for DPO / IdkDPO, each forget question with ``A`` preferred answers
      (``tokens``, ``loss_mask`` ``[N, A, L]``); every time a step reads an item it takes
      one of them uniformly at random, as open-unlearning draws a refusal per read.
    represent_fn: for RMU, ``(params, tokens_BxL) -> activations_BxLxD`` of the steered
      layer; only :func:`rmu_trainable`'s parameters train.
  """
  from cure_jax.lm import validate  # pylint: disable=g-import-not-at-top (it imports this)
  method = get_method(method_name)
  mesh = sharding.make_mesh() if mesh is None else mesh
  validate.check_unlearn_values(hp, 'hp', mesh.devices.size)   # as the CLI checks them
  num_forget, num_retain = len(forget['tokens']), len(retain['tokens'])
  _check_inputs(method, method_name, num_forget, num_retain, alternate, original_params, hp)
  grad_accum = int(hp.grad_accum)
  total, batches = _index_batches(hp, num_forget, num_retain, mesh.devices.size, seed)
  tx, step_fn = _step_for(apply_fn, method_name, hp, total, forget_ids, represent_fn)
  state = train_state.start({'params': original_params, 'batch_stats': {}}, tx, mesh, mode)
  ref_params = sharding.place(original_params, mesh, mode)
  prog = progress.Progress(f'unlearn {method_name}', total, hp.log_every)
  key = jax.random.key(seed)
  steering = {}   # RMU's forget batches only
  if method.represents:   # RMU's direction, drawn once per run
    dim = jax.eval_shape(represent_fn, original_params, forget['tokens'][:1]).shape[-1]
    steering['target'] = np.asarray(rmu.control_unit(jax.random.fold_in(key, 0x7FFFFFFF), dim))

  def take(data, idx, added=None):
    batch = {k: data[k][idx] for k in ('tokens', 'loss_mask')}
    batch.update({k: np.broadcast_to(v, (len(idx),) + v.shape) for k, v in (added or {}).items()})
    if grad_accum == 1:
      return sharding.shard_batch(batch, mesh)
    batch = {k: v.reshape((grad_accum, -1) + v.shape[1:]) for k, v in batch.items()}
    return sharding.shard_batch(batch, mesh, batch_axis=1)

  draws = np.random.default_rng((seed, 0xA17))   # a stream apart: batch orders stay as they were
  for step, (f_idx, r_idx) in enumerate(batches):
    retain_batch = take(retain, r_idx) if num_retain else take(forget, f_idx)
    alt = None
    if alternate is not None and method.alternate is not None:
      pick = draws.integers(0, alternate['tokens'].shape[1], len(f_idx))
      alt = take({k: alternate[k][f_idx, pick] for k in ('tokens', 'loss_mask')},
                 np.arange(len(f_idx)))
    state, metrics = step_fn(state, ref_params, take(forget, f_idx, steering), retain_batch,
                             jax.random.fold_in(key, step), alt)
    prog.add(step, metrics)
  prog.flush()
  return jax.device_get(state.params)
