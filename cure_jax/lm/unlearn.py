"""LLM unlearning: the method registry and the jitted step every method shares.

A method is one :data:`METHODS` entry: how to turn a forget batch into an update direction
(the gradient of a per-example loss, or GROGU's restricted orthogonal combination) and
whether the retain term ``α · NLL_r`` on a paired retain batch is added (SPEC §4). The
step computes the frozen original model's logits (teacher / reference), the direction,
the retain gradient, and applies the optimiser through
:func:`cure_jax.unlearning_step.build_update`, the step builder the classification runner
and :func:`cure_jax.make_unlearning_step` use.

Optimiser: AdamW as in open-unlearning's TOFU recipe (``unlearn.optimizer='sgd'`` gives the
CURE paper's image-classification choice). Adam's per-parameter normalisation makes one
learning rate work for every method, whose raw gradient scales differ by 20x (w=0.5 vs 10).
"""
import dataclasses
import functools
import types
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from cure_jax import grogu, parallel, progress, train_state, unlearning_step
from cure_jax.lm import objectives


@dataclasses.dataclass(frozen=True)
class Method:
  """An LLM unlearning method.

  Attributes:
    forget_loss: per-example forget loss ``(logits, ref_logits, batch, hp) -> (B,)``; its
      batch-mean gradient is the forget direction. None for GROGU.
    retain: whether ``α · mean NLL_r`` on the paired retain batch is added.
    grogu: the forget direction is GROGU's (GHR and GSR per-example gradients projected).
    variant_keys: hyper-parameters that name a run's variant in the results (e.g. T, w).
  """
  forget_loss: Optional[Callable]
  retain: bool
  grogu: bool = False
  variant_keys: tuple = ()


METHODS = {
    'gradasc': Method(objectives.gradasc_loss, retain=False),
    'graddiff': Method(objectives.gradasc_loss, retain=True),
    'npo': Method(objectives.npo_loss, retain=True, variant_keys=('npo_beta',)),
    'simnpo': Method(objectives.simnpo_loss, retain=True,
                     variant_keys=('simnpo_beta', 'simnpo_delta', 'simnpo_gamma')),
    'undial': Method(objectives.undial_loss, retain=True, variant_keys=('undial_beta',)),
    'ghr': Method(objectives.ghr_loss, retain=True),
    'gsr': Method(objectives.gsr_loss, retain=True, variant_keys=('temperature',)),
    'grogu': Method(None, retain=True, grogu=True, variant_keys=('temperature', 'w_h', 'w_s')),
}

_SHORT_NAMES = {'npo_beta': 'beta', 'simnpo_beta': 'beta', 'simnpo_delta': 'delta',
                'simnpo_gamma': 'gamma', 'undial_beta': 'beta', 'temperature': 'T', 'w_h': 'w_h',
                'w_s': 'w_s'}


def get_method(name):
  if name not in METHODS:
    raise ValueError(f'Unknown unlearning method {name!r} (config.unlearn.method); choose one '
                     f'of {sorted(METHODS)}.')
  return METHODS[name]


def variant_name(method_name, hp):
  """A run's variant label from its hyper-parameters, e.g. ``'T=5,w=10'``."""
  keys = list(get_method(method_name).variant_keys)
  parts = []
  for k in keys:
    if k == 'w_s' and hp['w_h'] == hp['w_s']:
      continue
    name = 'w' if k == 'w_h' and hp['w_h'] == hp['w_s'] else _SHORT_NAMES[k]
    parts.append(f'{name}={hp[k]:g}')
  return ','.join(parts)


def _grogu_fast_module():
  try:
    from cure_jax import grogu_fast  # pylint: disable=g-import-not-at-top
    return grogu_fast
  except ImportError:
    return None


def choose_grogu_impl(requested, apply_fn, params, tokens):
  """'fast' when asked for and supported by :mod:`cure_jax.grogu_fast`, else 'vmap'."""
  if requested not in ('fast', 'vmap'):
    raise ValueError(f"config.unlearn.grogu_impl={requested!r}; use 'fast' or 'vmap'.")
  fast = _grogu_fast_module()
  if requested == 'fast' and fast is None:
    logging.info('GROGU: cure_jax.grogu_fast is not available; using the vmap reference.')
    return 'vmap'
  if requested == 'vmap':
    return 'vmap'
  return fast.resolve_grogu_impl(requested, apply_fn, params, tokens)


def grogu_forget_direction(apply_fn, params, ref_logits, batch, hp, impl):
  """GROGU's direction for a forget batch: per-example GHR and GSR gradients projected."""
  ghr = lambda logits, ref, b: objectives.ghr_loss(logits, ref, b, hp)
  gsr = lambda logits, ref, b: objectives.gsr_loss(logits, ref, b, hp)
  kwargs = dict(eps=hp['eps'], w_h=hp['w_h'], w_s=hp['w_s'])
  if impl == 'fast':
    direction, _ = _grogu_fast_module().grogu_direction_fast(
        apply_fn, params, batch['tokens'], lambda logits: ghr(logits, ref_logits, batch),
        lambda logits: gsr(logits, ref_logits, batch), **kwargs)
    return direction

  def per_example(loss_fn):
    def loss(p, example):
      one = {'tokens': example['tokens'][None], 'loss_mask': example['loss_mask'][None]}
      return loss_fn(apply_fn(p, one['tokens']), example['ref_logits'][None], one)[0]
    return loss

  examples = {'tokens': batch['tokens'], 'loss_mask': batch['loss_mask'],
              'ref_logits': ref_logits}
  return grogu.grogu_direction(per_example(ghr), per_example(gsr), params, examples, **kwargs)


def make_optimizer(cfg, total_steps):
  """AdamW (open-unlearning's TOFU choice) or plain SGD, with linear warmup then constant."""
  warmup = max(1, int(cfg.warmup_fraction * total_steps))
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)], [warmup])
  if cfg.optimizer == 'adamw':
    return optax.adamw(schedule, weight_decay=cfg.weight_decay)
  if cfg.optimizer == 'sgd':
    return optax.sgd(schedule)
  raise ValueError(f"config.unlearn.optimizer={cfg.optimizer!r}; use 'adamw' or 'sgd'.")


def make_unlearn_step(apply_fn, method_name, hp, tx, grogu_impl='vmap', grad_accum=1):
  """The jitted step ``(state, ref_params, forget, retain) -> (state, metrics)``.

  ``apply_fn(params, tokens_BxL) -> logits_BxLxV``; ``forget`` / ``retain`` are batches of
  encoded QA pairs (``tokens``, ``loss_mask``); ``hp`` holds the method's hyper-parameters
  and ``alpha`` (the retain weight), and optionally ``forget_ids`` (see
  :func:`cure_jax.lm.objectives.token_forget_mask`). With ``grad_accum > 1`` the batches
  carry a leading micro-batch axis and the update direction is the mean of the micro-batch
  directions (scanned: one micro-batch's activations alive at a time).
  """
  method = get_method(method_name)

  def micro_direction(params, ref_params, forget, retain):
    ref_logits = jax.lax.stop_gradient(apply_fn(ref_params, forget['tokens']))
    metrics, loss = {}, jnp.zeros(())
    if method.grogu:  # a direction, not the gradient of a loss: only the retain loss is logged
      direction = grogu_forget_direction(apply_fn, params, ref_logits, forget, hp, grogu_impl)
    else:
      def forget_objective(p):
        return jnp.mean(method.forget_loss(apply_fn(p, forget['tokens']), ref_logits, forget, hp))
      loss, direction = jax.value_and_grad(forget_objective)(params)
      metrics['forget_loss'] = loss
    if method.retain:
      retain_loss, retain_grad = jax.value_and_grad(
          lambda p: jnp.mean(objectives.answer_nll(apply_fn(p, retain['tokens']), retain)))(params)
      direction = jax.tree.map(lambda d, r: d + hp['alpha'] * r, direction, retain_grad)
      metrics['retain_nll'] = retain_loss
      loss = loss + hp['alpha'] * retain_loss
    metrics['loss'] = loss
    return direction, metrics

  def lm_direction(inputs):
    """The update direction for the one step builder; ``inputs.aux`` is the reference
    (original) model's parameters."""
    params, ref_params = inputs.params, inputs.aux
    if grad_accum == 1:
      direction, metrics = micro_direction(params, ref_params, inputs.forget, inputs.retain)
    else:
      def body(carry, micro):
        out = micro_direction(params, ref_params, *micro)
        return jax.tree.map(jnp.add, carry, out), None
      zeros = jax.eval_shape(micro_direction, params, ref_params,
                             *jax.tree.map(lambda x: x[0], (inputs.forget, inputs.retain)))
      zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), zeros)
      total, _ = jax.lax.scan(body, zeros, (inputs.forget, inputs.retain))
      direction, metrics = jax.tree.map(lambda x: x / grad_accum, total)
    return metrics, direction

  # The classification runner's and make_unlearning_step's builder: direction, then the
  # optimiser's update (AdamW or SGD with its own schedule, applied as it is).
  _, update = unlearning_step.build_update(types.SimpleNamespace(direction=lm_direction),
                                           {'momentum': None}, optimizer=tx)

  def step(state, ref_params, forget, retain):
    params, opt_state, metrics = update(apply_fn, state.params, state.opt_state, forget,
                                        retain, None, hp, None, state.step, ref_params)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=32)
def _cached_step(apply_fn, method_name, hp_items, opt_settings, total, impl, grad_accum=1):
  """One optimiser and compiled step per (method, settings): the seeds of a run share it."""
  tx = make_optimizer(types.SimpleNamespace(**dict(opt_settings)), total)
  return tx, make_unlearn_step(apply_fn, method_name, dict(hp_items), tx, impl, grad_accum)


def paired_batches(num_forget, num_retain, batch_size, epochs, seed):
  """Index batches ``(forget_idx, retain_idx)``: the forget set is shuffled every epoch and
  each forget item is paired with a uniformly random retain item (open-unlearning's TOFU)."""
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(num_forget)
    for start in range(0, num_forget - batch_size + 1, batch_size):
      yield order[start:start + batch_size], rng.integers(0, num_retain, batch_size)


def unlearn(apply_fn, original_params, forget, retain, cfg, method_name, hp, seed, mesh=None,
            place=None):
  """Runs one unlearning job from the original parameters; returns the new parameters.

  Args:
    apply_fn: ``(params, tokens_BxL) -> logits``.
    original_params: the fine-tuned original model (start point, teacher and reference).
    forget, retain: encoded QA arrays (``tokens``, ``loss_mask``), numpy.
    cfg: ``config.unlearn`` (lr, epochs, batch_size (effective), grad_accum, optimizer,
      warmup_fraction, weight_decay, grogu_impl, log_every).
    method_name: a key of :data:`METHODS`; hp: its hyper-parameters plus ``alpha`` (and
      ``forget_ids`` for the author-names forget mask).
    seed: batch order and retain pairing.
    place: ``(tree, mesh) -> tree on the mesh`` for the state and the reference parameters
      (default: replicated; an FSDP placement shards them).
  """
  num_forget, num_retain = len(forget['tokens']), len(retain['tokens'])
  if num_forget == 0:
    raise ValueError('The forget split is empty: nothing to unlearn (check data.forget_pct).')
  if get_method(method_name).retain and num_retain == 0:
    raise ValueError(f'{method_name} needs retain data but the retain split is empty.')
  mesh = parallel.make_mesh() if mesh is None else mesh
  grad_accum = int(cfg.get('grad_accum', 1))
  if grad_accum < 1:
    raise ValueError(f'config.unlearn.grad_accum={grad_accum} must be >= 1.')
  batch_size = min(cfg.batch_size, num_forget)
  batch_size -= batch_size % (mesh.devices.size * grad_accum)
  if batch_size == 0:
    raise ValueError(f'{num_forget} forget items cannot fill one batch of {grad_accum} '
                     f'micro-batches on the {mesh.devices.size} devices; use fewer devices, '
                     'a smaller config.unlearn.grad_accum or more forget data.')
  total = cfg.epochs * (num_forget // batch_size)
  impl = 'vmap'
  if get_method(method_name).grogu:
    impl = choose_grogu_impl(cfg.grogu_impl, apply_fn, original_params, forget['tokens'][:2])
  opt_settings = tuple((k, cfg[k]) for k in ('optimizer', 'lr', 'warmup_fraction', 'weight_decay'))
  tx, step_fn = _cached_step(apply_fn, method_name, tuple(sorted(hp.items())), opt_settings,
                             total, impl, grad_accum)
  place = place or parallel.replicate
  # The step donates its state: never hand it the caller's arrays (reused by every run).
  start = jax.tree.map(lambda x: jnp.array(x, copy=True), original_params)
  state = place(train_state.create({'params': start, 'batch_stats': {}}, tx), mesh)
  ref_params = place(original_params, mesh)
  prog = progress.Progress(f'unlearn {method_name} {variant_name(method_name, hp)}', total,
                           cfg.log_every)
  def take(data, idx):
    batch = {k: data[k][idx] for k in ('tokens', 'loss_mask')}
    if grad_accum == 1:
      return parallel.shard_batch(batch, mesh)
    batch = {k: v.reshape((grad_accum, -1) + v.shape[1:]) for k, v in batch.items()}
    return parallel.shard_batch(batch, mesh, batch_axis=1)

  for step, (f_idx, r_idx) in enumerate(
      paired_batches(num_forget, max(num_retain, 1), batch_size, cfg.epochs, seed)):
    retain_batch = take(retain, r_idx) if num_retain else take(forget, f_idx)
    state, metrics = step_fn(state, ref_params, take(forget, f_idx), retain_batch)
    prog.add(step, metrics)
  prog.flush()
  return jax.device_get(state.params)
