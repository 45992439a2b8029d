"""Recording the parameter-layer calls of one Flax forward pass.

Under :func:`flax.linen.intercept_methods`, every call of a *parameter leaf* module (one whose
``'params'`` are all arrays: ``nn.Dense``, ``nn.Conv``, ``nn.Embed`` lookups and ``attend``,
norms, any custom leaf layer) saves its inputs and may get a perturbation added to its
output; pulling a vjp with respect to those perturbations gives each call's output
cotangents. Calls made inside an intercepted call are not intercepted again (a leaf's own
helper methods would otherwise count its parameters twice).

Kinds: ``dense``, ``conv``, ``embed``, ``attend`` have closed-form per-example gradients
(:mod:`cure_jax.unlearning.grogu.ghost`); ``generic`` layers (norm scales, grouped convolutions, custom
leaves) get theirs by ``vmap`` of the layer's own vjp over the examples.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_KNOWN = {(nn.Dense, '__call__'): 'dense', (nn.Conv, '__call__'): 'conv',
          (nn.Embed, '__call__'): 'embed', (nn.Embed, 'attend'): 'attend'}


@dataclasses.dataclass
class LayerCall:
  """What one intercepted call needs after the forward pass (static, from tracing)."""
  kind: str  # 'dense' | 'conv' | 'embed' | 'attend' | 'generic'
  path: tuple
  leaves: tuple  # parameter names under `path` this call uses
  out: Any = None  # ShapeDtypeStruct of the output
  problem: str = ''  # why the fast path cannot handle this call ('' if it can)
  config: dict = dataclasses.field(default_factory=dict)
  local: Any = None  # LocalCall: re-runs the layer alone


@dataclasses.dataclass(frozen=True)
class LocalCall:
  """One layer call re-run outside the model: ``fn(params, arrays) -> output``."""
  module: Any
  method: str
  treedef: Any
  is_array: tuple
  statics: tuple

  def __call__(self, layer_params, state, arrays):
    it = iter(arrays)
    leaves = [next(it) if a else v for a, v in zip(self.is_array, self.statics)]
    args, kwargs = jax.tree.unflatten(self.treedef, leaves)
    return self.module.apply({'params': layer_params, **state}, *args, method=self.method,
                             **kwargs)


def leaf_params(module):
  """The module's parameters if it is a parameter leaf (all its params arrays), else None."""
  try:
    variables = module.variables
  except Exception:  # pylint: disable=broad-except
    return None  # unbound or not yet set up
  params = variables.get('params', {})
  if params and all(hasattr(v, 'ndim') for v in params.values()):
    return dict(params)
  return None


def _first_arg(args, kwargs, name):
  return args[0] if args else kwargs[name]


def _conv_config(module, x):
  """Patch geometry of an ``nn.Conv`` call, or the reason it needs the generic path."""
  size = (module.kernel_size,) if isinstance(module.kernel_size, int) else tuple(
      module.kernel_size)
  rank = len(size)

  def broadcast(v):  # flax's int / None / sequence conventions for strides and dilations
    return tuple(v) if isinstance(v, (tuple, list)) else (1 if v is None else v,) * rank
  padding = nn.linear.canonicalize_padding(module.padding, rank)
  config = dict(kernel_size=size, strides=broadcast(module.strides),
                dilation=broadcast(module.kernel_dilation), padding=padding)
  generic = (x.ndim != rank + 2 or module.feature_group_count != 1 or module.mask is not None
             or set(broadcast(module.input_dilation)) != {1}
             or (isinstance(padding, str) and padding not in ('SAME', 'VALID')))
  return None if generic else config


def record(module, method, args, kwargs, y):
  """``(LayerCall, saved arrays)`` of one intercepted call with output ``y``."""
  params = leaf_params(module)
  flat, treedef = jax.tree.flatten((args, kwargs))
  is_array = tuple(isinstance(v, jax.Array) for v in flat)
  local = LocalCall(module.clone(parent=None), method, treedef, is_array,
                    tuple(None if a else v for a, v in zip(is_array, flat)))
  call = LayerCall('generic', tuple(module.path), tuple(params), local=local)
  kind = _KNOWN.get((type(module), method))
  if not isinstance(y, jax.Array):
    call.problem = f'{type(module).__name__}.{method} returns {type(y).__name__}, not an array'
  if isinstance(module, nn.BatchNorm) and not nn.merge_param(
      'use_running_average', module.use_running_average, kwargs.get('use_running_average')):
    call.problem = 'BatchNorm in training mode (examples interact through batch statistics)'
  if kind == 'dense' and module.dot_general is None and module.dot_general_cls is None:
    call.kind = kind
    return call, {'x': _first_arg(args, kwargs, 'inputs')}
  if kind == 'conv':
    x = _first_arg(args, kwargs, 'inputs')
    config = _conv_config(module, x)
    if config is not None:
      call.kind, call.config = kind, config
      return call, {'x': x}
  if kind == 'embed':
    call.kind, call.config = kind, dict(size=module.num_embeddings)
    return call, {'ids': _first_arg(args, kwargs, 'inputs')}
  if kind == 'attend':
    call.kind = kind
    return call, {'x': _first_arg(args, kwargs, 'query')}
  state = {k: v for k, v in module.variables.items() if k != 'params'}
  return call, {'args': [v for a, v in zip(is_array, flat) if a], 'state': state}


def traced_apply(apply_fn, params, inputs, perturbations=None, frozen_params=False):
  """``apply_fn`` with every parameter-leaf call recorded.

  Args:
    perturbations: arrays added to the calls' outputs, in call order (None: none).
    frozen_params: re-run each call with ``stop_gradient`` on its own parameters (so that
      derivatives with respect to ``params`` can only flow through reads outside the calls).
  Returns:
    ``(outputs, calls, saved, root)``; ``root`` describes the outermost module call.
  """
  calls, saved, holder = [], [], {'depth': 0, 'root': None}

  def interceptor(next_fun, args, kwargs, context):
    module, method = context.module, context.method_name
    if holder['root'] is None:  # the first call seen is the outermost one
      holder['root'] = _root_record(module, method, args, kwargs)
    if holder['depth'] > 0 or method == 'setup' or leaf_params(module) is None:
      return next_fun(*args, **kwargs)
    holder['depth'] += 1
    try:
      y = next_fun(*args, **kwargs)
      call, arrays = record(module, method, args, kwargs, y)
      if frozen_params:
        frozen = jax.lax.stop_gradient(leaf_params(module))
        y = call.local(frozen, {k: v for k, v in module.variables.items() if k != 'params'},
                       [v for v in jax.tree.leaves((args, kwargs)) if isinstance(v, jax.Array)])
    finally:
      holder['depth'] -= 1
    if isinstance(y, jax.Array):
      call.out = jax.ShapeDtypeStruct(y.shape, y.dtype)
      if perturbations is not None:
        y = y + perturbations[len(calls)]
    calls.append(call)
    saved.append(arrays)
    return y

  with nn.intercept_methods(interceptor):
    outputs = apply_fn(params, inputs)
  return outputs, calls, saved, holder['root']


def _root_record(module, method, args, kwargs):
  flat, treedef = jax.tree.flatten((args, kwargs))
  is_array = tuple(isinstance(v, jax.Array) for v in flat)
  local = LocalCall(module.clone(parent=None), method, treedef, is_array,
                    tuple(None if a else v for a, v in zip(is_array, flat)))
  shapes = lambda tree: jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), tree)
  return dict(local=local, variables=shapes(dict(module.variables)),
              args=[jax.ShapeDtypeStruct(v.shape, v.dtype) for v in flat
                    if isinstance(v, jax.Array)])


def generic_grads(call, layer_params, arrays, cot):
  """Per-example gradients (a ``(B x ..., B x ...)`` seed pair per leaf) of a generic call."""
  def one(args_j, cot_h_j, cot_s_j):
    fn = lambda p: call.local(p, arrays['state'], [a[None] for a in args_j])
    _, pull = jax.vjp(fn, layer_params)
    return pull(cot_h_j[None])[0], pull(cot_s_j[None])[0]

  grads_h, grads_s = jax.vmap(one)(arrays['args'], *cot)
  return {k: (grads_h[k].astype(jnp.float32), grads_s[k].astype(jnp.float32))
          for k in grads_h}
