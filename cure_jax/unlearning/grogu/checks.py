"""Checks that a model fits the fast GROGU path's assumptions (see :mod:`cure_jax.unlearning.grogu.fast`).

1. Parameters reach the outputs only through recorded layer calls: trace the forward with
   every call re-run on ``stop_gradient`` of its own parameters and ask whether the outputs'
   tangent still depends on the parameters' tangent (a dependence walk over the jaxpr). A
   ``module.variables['params'][...]`` read in a custom ``__call__``, or a parameter used
   outside its leaf, shows up here.
2. Examples do not interact: the outermost module call is re-run alone on random variables
   and random inputs twice, with only examples 1.. changed; row 0 of the outputs and of every
   recorded layer output must not move. Abstract tracing cannot see the batch axis of every
   operation; this numeric probe catches batch statistics, cross-example attention or
   ``x - x.mean(0)`` whatever layer computes them.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from cure_jax.unlearning.grogu import layer_calls

# Primitive parameters holding a sub-jaxpr whose inputs are the equation's inputs, in order.
_CALL_JAXPRS = ('jaxpr', 'call_jaxpr', 'fun_jaxpr')


def _var_key(v):
  return None if type(v).__name__ == 'Literal' else id(v)


def _needed_inputs(jaxpr, needed_outputs):
  """Which of ``jaxpr.invars`` the outputs flagged in ``needed_outputs`` depend on."""
  live = {id(v) for v, n in zip(jaxpr.outvars, needed_outputs) if n and _var_key(v)}
  for eqn in reversed(jaxpr.eqns):
    used = [id(v) in live for v in eqn.outvars]
    if not any(used):
      continue
    sub = next((eqn.params[k] for k in _CALL_JAXPRS if k in eqn.params), None)
    sub = getattr(sub, 'jaxpr', sub)
    if sub is not None and len(sub.invars) == len(eqn.invars) and len(sub.outvars) == len(
        eqn.outvars):
      flags = _needed_inputs(sub, used)
    else:
      flags = [True] * len(eqn.invars)  # conservative: every input may matter
    live.update(id(v) for v, f in zip(eqn.invars, flags) if f and _var_key(v))
  return [id(v) in live for v in jaxpr.invars]


def reads_outside_calls(apply_fn, params, inputs):
  """True when the outputs depend on ``params`` other than through recorded layer calls."""
  abstract = lambda t: jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), t)

  def forward(p):
    return layer_calls.traced_apply(apply_fn, p, inputs, frozen_params=True)[0]

  def tangent(p, t):
    return jax.jvp(forward, (p,), (t,))[1]

  closed = jax.make_jaxpr(tangent)(abstract(params), abstract(params))
  jaxpr = closed.jaxpr
  num_params = len(jax.tree.leaves(params))
  flags = _needed_inputs(jaxpr, [True] * len(jaxpr.outvars))
  return any(flags[num_params:])


def _random_like(rng, struct, name=''):
  """Random values for the probe (numpy: per-shape jax.random calls would each compile)."""
  shape, dtype = struct.shape, struct.dtype
  if jnp.issubdtype(dtype, jnp.floating):
    if len(shape) >= 2 and name == 'params':
      value = rng.normal(size=shape) / math.sqrt(max(1, math.prod(shape[:-1])))
    elif name == 'args':
      value = rng.normal(size=shape)
    else:  # vector parameters and state (BatchNorm variances): positive, near one
      value = rng.uniform(0.5, 1.5, size=shape)
  elif jnp.issubdtype(dtype, jnp.integer):
    value = rng.integers(0, 2, size=shape)
  elif dtype == jnp.bool_:
    value = rng.integers(0, 2, size=shape).astype(bool)
  else:
    value = np.zeros(shape)
  return np.asarray(value).astype(dtype)


def _randomise(tree, rng, name):
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, [_random_like(rng, v, name) for v in leaves])


def examples_interact(root, batch, rtol=1e-4):
  """Whether row 0 of the root call's outputs or its layer outputs depends on other rows.

  ``root`` is :func:`cure_jax.unlearning.grogu.layer_calls.traced_apply`'s description of the outermost call.
  Returns ``''`` when it does not, else a one-line reason.
  """
  if batch < 2:
    return ''
  rng = np.random.default_rng(0)
  variables = {col: _randomise(tree, rng, 'params' if col == 'params' else 'state')
               for col, tree in sorted(root['variables'].items())}
  structs = root['args']
  batched = [len(s.shape) > 0 and s.shape[0] == batch for s in structs]
  # Two examples suffice (0 fixed, 1 changed) and keep the probe cheap.
  structs = [jax.ShapeDtypeStruct((2,) + s.shape[1:], s.dtype) if b else s
             for s, b in zip(structs, batched)]
  args_a = _randomise(structs, rng, 'args')
  fresh = _randomise(structs, rng, 'args')
  args_b = [np.concatenate([a[:1], f[1:]]) if b else a
            for a, f, b in zip(args_a, fresh, batched)]
  local = root['local']

  def probe(v, arrays):
    def apply_fn(params, xs):
      return local(params, {k: x for k, x in v.items() if k != 'params'}, xs)
    out, _, saved, _ = layer_calls.traced_apply(apply_fn, v.get('params', {}), arrays)
    return out, saved  # the model's outputs and every recorded layer's inputs

  try:
    # LLVM optimisation off: compiling dominates a probe that runs twice.
    compiled = jax.jit(probe, compiler_options={'xla_backend_optimization_level': 0})
    # Run now, with concrete values, even while an outer jit is tracing the caller.
    with jax.ensure_compile_time_eval():
      out_a, out_b = (jax.tree.map(np.asarray, compiled(variables, args))
                      for args in (args_a, args_b))
  except Exception as e:  # pylint: disable=broad-except
    return f'the model could not be probed on random inputs ({type(e).__name__}: {e})'
  for a, b in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b)):
    if a.ndim == 0 or a.shape[0] != 2:
      continue
    a0, b0 = np.asarray(a[0], np.float64), np.asarray(b[0], np.float64)
    scale = max(1.0, float(np.nanmax(np.abs(a0))) if a0.size else 1.0)
    if not np.allclose(a0, b0, rtol=rtol, atol=rtol * scale, equal_nan=True):
      return ('examples interact inside the model (an output of example 0 changed with the '
              'other examples of the batch)')
  return ''
