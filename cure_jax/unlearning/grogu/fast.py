"""GROGU without per-example gradients through the network (the closed form of docs/methods.md).

GROGU needs, per example j, only ``c_j = ⟨g_H,j, g_S,j⟩``, ``‖g_H,j‖²`` and ``‖g_S,j‖²``,
then ``G = ∇θ mean_j [a_j ℓ_H,j + b_j ℓ_S,j]`` with ``a_j, b_j`` held constant. The work:

1. One forward pass under :mod:`cure_jax.unlearning.grogu.layer_calls`: every parameter-leaf call (``nn.Dense``,
   ``nn.Conv``, ``nn.Embed`` lookup and tied ``attend``, norms and other leaves) saves its
   inputs and gets a zero added to its output.
2. Two *activation* pulls of that forward's vjp, taken with respect to the added zeros only
   (parameters are constants: no weight gradients), seeded with each loss's logit cotangent:
   the per-example output cotangents ``B_H``, ``B_S`` of every call.
3. Per leaf (:func:`cure_jax.unlearning.grogu.ghost.leaf_plan`), the per-example inner products, and
4. the direction from what is already there: a weight used as ``y = x W`` gets
   ``Σ_j x_jᵀ (a_j B_H,j + b_j B_S,j)/B`` (biases: summed cotangents; embeddings: a
   scatter-add; ``attend``: the combined cotangent times the query; generic leaves: weighted
   sums of their per-example gradients). There is no third pass through the network.

Choices, per layer by shape (:func:`cure_jax.unlearning.grogu.ghost.ghost_is_cheaper`): with ``N`` rows per
example (positions), ``P`` inputs and ``Q`` outputs, the ghost identity costs about
``N²(P+3Q) + NPQ`` multiply-adds per example (three Gram pairs, then one weight-gradient
product for the direction) and materialising ``2NPQ`` (the gradient of each seed, whose
weighted sum is then the direction for free); the cheaper wins, unless the per-example
gradients would exceed :data:`cure_jax.unlearning.grogu.ghost.MATERIALISE_MAX_BYTES`. Early convolutions
(many positions) materialise, late ones and transformer projections use the ghost form.
Pulls (:func:`pull_plan`): one pull vmapped over the two seeds doubles the backward's working
set at once; two pulls keep only the first seed's cotangents alive meanwhile, which GROGU
holds anyway. Two pulls are used unless the vmapped one's extra working set (taken as four times the
largest layer output: a conv, norm and activation chain holds a few at once) is below 1/16
of the cotangents held (then one vmapped pull, with larger and fewer matrix products).

Requirements, checked by :func:`supports` (a caller falls back to the ``jax.vmap`` reference,
:func:`cure_jax.unlearning.grogu.grogu_direction`, with a logged notice): every parameter belongs to a
recorded leaf call and is read nowhere else; examples do not interact (BatchNorm frozen, no
batch statistics anywhere; see :mod:`cure_jax.unlearning.grogu.checks`); every recorded call's inputs
and outputs and the logits lead with the batch.
"""
import dataclasses
import math

from absl import logging
import jax
import jax.numpy as jnp

from cure_jax.unlearning import grogu
from cure_jax.unlearning.grogu import checks as grogu_checks, ghost, layer_calls

IMPLEMENTATIONS = ('fast', 'vmap')


@dataclasses.dataclass(frozen=True)
class SupportCheck:
  """Truthy when the fast path applies; ``reason`` says why not otherwise."""
  ok: bool
  reason: str = ''

  def __bool__(self):
    return self.ok


def _param_paths(params):
  return {tuple(str(getattr(k, 'key', k)) for k in path)
          for path, _ in jax.tree_util.tree_leaves_with_path(params)}


def _discover(apply_fn, params, inputs):
  """Layer calls of one abstract forward pass, the root call and the structural problem."""
  holder = {}

  def run(p, x):
    logits, holder['calls'], saved, holder['root'] = layer_calls.traced_apply(apply_fn, p, x)
    return logits, saved

  logits, saved = jax.eval_shape(run, params, inputs)
  calls = holder['calls']
  batch = jax.tree.leaves(inputs)[0].shape[0]
  reason = ''
  if not isinstance(logits, jax.ShapeDtypeStruct) or logits.ndim == 0 or (
      logits.shape[0] != batch):
    reason = f'the logits are not one array leading with the batch size {batch}'
  known = _param_paths(params)
  covered = set()
  for call, arrays in zip(calls, saved):
    name = '/'.join(call.path) or type(call.local.module).__name__
    shapes = [a.shape for a in jax.tree.leaves((arrays.get('x'), arrays.get('ids'),
                                                arrays.get('args')))]
    shapes += [call.out.shape] if call.out is not None else []
    if call.problem:
      reason = reason or f'{name}: {call.problem}'
    elif any(not s or s[0] != batch for s in shapes):
      reason = reason or f'{name}: an input or output does not lead with the batch {batch}'
    for leaf in call.leaves:
      if call.path + (leaf,) not in known:
        reason = reason or (f'{name}/{leaf} is not in params: apply_fn must pass params as the '
                            "model's 'params' collection")
      covered.add(call.path + (leaf,))
  missing = sorted('/'.join(p) for p in known - covered)
  if missing:
    reason = reason or f'parameters outside any parameter-leaf module call: {missing[:5]}'
  return calls, holder['root'], batch, reason


def supports(apply_fn, params, inputs, probe=True):
  """Whether :func:`grogu_direction_fast` handles this model; a falsy result has ``reason``.

  ``probe=False`` skips the numeric check that examples do not interact (it runs the model
  twice on random values, compiled once).
  """
  try:
    _, root, batch, reason = _discover(apply_fn, params, inputs)
    if not reason and grogu_checks.reads_outside_calls(apply_fn, params, inputs):
      reason = ('a parameter is read outside its layer call (e.g. module.variables[...] in a '
                'custom __call__)')
    if not reason and probe and root is not None:
      reason = grogu_checks.examples_interact(root, batch)
  except Exception as e:  # pylint: disable=broad-except
    reason = f'tracing the model failed: {type(e).__name__}: {e}'
  return SupportCheck(not reason, reason)


def choose_impl(impl, apply_fn, params, inputs):
  """The GROGU implementation to run for ``grogu_impl`` ('fast' or 'vmap'), for every task.

  'fast' falls back to 'vmap' with a logged notice when :func:`supports` says no.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'grogu_impl={impl!r}; use one of {IMPLEMENTATIONS}.')
  if impl == 'fast':
    check = supports(apply_fn, params, inputs)
    if not check:
      logging.warning('GROGU fast path unavailable (%s); using the vmap reference.',
                      check.reason)
      return 'vmap'
  return impl


def _rows(x, batch):
  """``Bx...xP -> BxNxP`` in :func:`grogu.accumulation_dtype` (all middle axes are positions
  sharing the weight)."""
  return x.reshape(batch, -1, x.shape[-1]).astype(grogu.accumulation_dtype(x.dtype))


def _pair(cot, fn):
  return tuple(fn(c) for c in cot)


def _uses(call, arrays, cot, params, batch):
  """``(leaf path, Factor or per-example gradient pair)`` for each parameter use of a call."""
  as_rows = lambda c: _rows(c, batch)
  if call.kind in ('dense', 'conv'):
    right = _pair(cot, as_rows)
    if call.kind == 'dense':
      left = [_rows(arrays['x'], batch)]
    else:
      x = arrays['x']
      left = ghost.conv_patches(x.astype(grogu.accumulation_dtype(x.dtype)), **call.config)
    yield call.path + ('kernel',), ghost.Factor(left, right, right_seeded=True)
    if 'bias' in call.leaves:
      yield call.path + ('bias',), _pair(right, lambda r: jnp.sum(r, axis=1))
  elif call.kind == 'embed':
    ids = arrays['ids'].reshape(batch, -1)
    if call.config['size'] == 1:
      ids = jnp.zeros_like(ids)  # flax broadcasts the single row instead of indexing
    yield call.path + ('embedding',), ghost.Factor(ghost.OneHot(ids, call.config['size']),
                                                   _pair(cot, as_rows), right_seeded=True)
  elif call.kind == 'attend':
    yield call.path + ('embedding',), ghost.Factor([_pair(cot, as_rows)],
                                                   _rows(arrays['x'], batch), left_seeded=True)
  else:
    layer_params = params
    for key in call.path:
      layer_params = layer_params[key]
    layer_params = {k: layer_params[k] for k in call.leaves}
    for leaf, grad in layer_calls.generic_grads(call, layer_params, arrays, cot).items():
      yield call.path + (leaf,), grad


def per_example_plans(calls, saved, cotangents, params, batch):
  """``(3xB stats summed over leaves, {leaf path: direction(w_h, w_s)})``.

  ``cotangents`` holds, per call, the pair (ℓ_H seed, ℓ_S seed) of output cotangents.
  """
  by_leaf = {}
  for call, arrays, cot in zip(calls, saved, cotangents):
    for leaf, use in _uses(call, arrays, cot, params, batch):
      factors, grads = by_leaf.setdefault(leaf, ([], []))
      (factors if isinstance(use, ghost.Factor) else grads).append(use)
  plans = {leaf: ghost.leaf_plan(*uses) for leaf, uses in by_leaf.items()}
  return sum(stats for stats, _ in plans.values()), {k: d for k, (_, d) in plans.items()}


def pull_plan(calls, logits):
  """'vmapped' (one pull over both seeds) or 'separate' (two pulls); see the module doc."""
  sizes = [math.prod(c.out.shape) for c in calls] + [math.prod(logits.shape)]
  return 'vmapped' if 64 * max(sizes) < 2 * sum(sizes) else 'separate'


def grogu_direction_fast(apply_fn, params, inputs, loss_h, loss_s, *, eps, w_h=1.0, w_s=1.0,
                         pulls=None):
  """GROGU direction from per-example inner products (no per-example gradients pulled).

  Args:
    apply_fn: ``(params, inputs) -> logits`` for the whole batch (BatchNorm frozen, no
      interaction between examples).
    params: the parameter pytree (passed by ``apply_fn`` as the ``'params'`` collection).
    inputs: a pytree whose leaves lead with the batch axis.
    loss_h, loss_s: ``logits -> per-example losses (B,)`` (GHR and GSR; they close over the
      teacher logits and forget masks).
    eps: stabiliser of the projections.
    w_h, w_s: objective weights applied to the two losses before projecting.
    pulls: 'separate' or 'vmapped' to override :func:`pull_plan`.
  Returns:
    ``(direction, aux)``: the direction is a pytree like ``params``; ``aux`` holds per-example
    ``'inner'``, ``'sq_norm_h'``, ``'sq_norm_s'`` (of the weighted gradients), the
    coefficients ``'coef_h'``, ``'coef_s'`` and the unweighted ``'loss_h'``, ``'loss_s'``.
  Raises:
    ValueError: the model is outside what :func:`supports` accepts (structural checks only;
      call :func:`supports` for the full check).
  """
  logits, calls, saved, cotangents, losses = cotangents_of_calls(
      apply_fn, params, inputs, loss_h, loss_s, w_h=w_h, w_s=w_s, pulls=pulls)
  batch = logits.shape[0]
  stats, directions = per_example_plans(calls, saved, cotangents, params, batch)
  sq_norm_h, sq_norm_s, inner = stats
  coef_h, coef_s = grogu.grogu_coefficients(inner, sq_norm_h, sq_norm_s, eps)
  leaf_directions = {leaf: d(coef_h / batch, coef_s / batch) for leaf, d in directions.items()}

  def assemble(path, p):
    key = tuple(str(getattr(k, 'key', k)) for k in path)
    return leaf_directions[key].reshape(p.shape).astype(p.dtype)

  direction = jax.tree_util.tree_map_with_path(assemble, params)
  aux = dict(inner=inner, sq_norm_h=sq_norm_h, sq_norm_s=sq_norm_s, coef_h=coef_h,
             coef_s=coef_s, loss_h=losses[0], loss_s=losses[1])
  return direction, aux


def cotangents_of_calls(apply_fn, params, inputs, loss_h, loss_s, *, w_h, w_s, pulls=None):
  """Steps 1-2: ``(logits, calls, saved inputs, [(B_H, B_S) per call], (ℓ_H, ℓ_S))``."""
  calls, _, _, reason = _discover(apply_fn, params, inputs)
  if reason:
    raise ValueError(f'grogu_direction_fast cannot handle this model: {reason}. Use '
                     "grogu_impl='vmap'.")
  zeros = [jnp.zeros(c.out.shape, c.out.dtype) for c in calls]

  def forward(perturbations):
    logits, _, saved, _ = layer_calls.traced_apply(apply_fn, params, inputs, perturbations)
    return logits, saved

  # Parameters are constants here: the pulls compute activation cotangents only.
  logits, pull, saved = jax.vjp(forward, zeros, has_aux=True)
  loss_h_B, dlogits_h = _per_example_value_and_grad(loss_h, logits)
  loss_s_B, dlogits_s = _per_example_value_and_grad(loss_s, logits)
  seeds = jnp.stack([w_h * dlogits_h, w_s * dlogits_s]).astype(logits.dtype)
  if (pulls or pull_plan(calls, logits)) == 'vmapped':
    both = jax.vmap(lambda s: pull(s)[0])(seeds)
    cotangents = [(c[0], c[1]) for c in both]
  else:
    cotangents = list(zip(pull(seeds[0])[0], pull(seeds[1])[0]))
  return logits, calls, saved, cotangents, (loss_h_B, loss_s_B)


def _per_example_value_and_grad(loss, logits):
  """Per-example losses and ``∂ Σ_j ℓ_j / ∂ logits`` (row j only touches example j)."""
  values, pull = jax.vjp(loss, logits)
  if values.shape != logits.shape[:1]:
    # A (B, T) per-token loss would be summed over T here, silently weighting examples by
    # their length and giving another per-example gradient than GROGU's.
    raise ValueError(f'GROGU needs one loss per example, shape ({logits.shape[0]},); the loss '
                     f'function returned shape {values.shape} (average per-token losses over '
                     'their positions first).')
  return values, pull(jnp.ones_like(values))[0]
