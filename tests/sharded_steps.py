"""Tiny sharded steps shared by the sharding tests and the multi-process worker.

An AdamW next-token fine-tuning step of a tiny CausalLM and a classification SGD step
(``cure_jax.classification.train.make_train_step``), run on a mesh with given parameter shardings or on one
device; the tests check both give the same numbers.
"""
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cure_jax.classification import train
from cure_jax.infra import sharding, train_state
from cure_jax.models.causal_lm import CausalLM, LMConfig
from tests import tolerances

LM = LMConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64,
              max_len=16)
MIN_SIZE = 256  # shard every kernel of the tiny model; norm scales (32) stay replicated
STEPS = 2
# LLVM optimisation level 0 halves the compile time, which dominates these tiny runs.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


class TinyClassifier(nn.Module):
  """Conv + BatchNorm + Dense: the layer types of the ResNets at a fraction of the compile."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(8, (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def lm_params(seed=0):
  """Host float32 parameters (the same on every process)."""
  model = CausalLM(LM)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32),
                      shapes['params'])


def lm_batches(batch=8, length=12):
  rng = np.random.default_rng(1)
  out = []
  for _ in range(STEPS):
    tokens = rng.integers(0, LM.vocab_size, (batch, length)).astype(np.int32)
    mask = (np.arange(length)[None] >= rng.integers(2, 6, (batch, 1))).astype(np.float32)
    out.append({'tokens': tokens, 'loss_mask': mask})
  return out


def lm_train_step():
  """AdamW on the mean next-token NLL of the masked positions."""
  model = CausalLM(LM)
  tx = optax.adamw(1e-2, weight_decay=0.1)

  def step(params, opt_state, batch):
    def loss_fn(p):
      logits = model.apply({'params': p}, batch['tokens'])[:, :-1]
      nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch['tokens'][:, 1:])
      mask = batch['loss_mask'][:, :-1]
      return jnp.sum(nll * mask) / jnp.sum(mask)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return tx, step


def run_lm(mesh, mode):
  """``STEPS`` fine-tuning steps; params/opt state sharded by ``mode`` on ``mesh``."""
  tx, step = lm_train_step()
  params = lm_params()
  opt_state = jax.eval_shape(tx.init, params)
  p_sh = sharding.shardings(params, mesh, mode, min_size=MIN_SIZE)
  o_sh = sharding.shardings(opt_state, mesh, mode, min_size=MIN_SIZE)
  params = sharding.put(params, p_sh)
  opt_state = jax.jit(tx.init, out_shardings=o_sh)(params)
  jitted = jax.jit(step, in_shardings=(p_sh, o_sh, sharding.batch_sharded(mesh)),
                   out_shardings=(p_sh, o_sh, None), donate_argnums=(0, 1),
                   compiler_options=FAST_COMPILE)
  losses = []
  for batch in lm_batches():
    params, opt_state, loss = jitted(params, opt_state, sharding.shard_batch(batch, mesh))
    losses.append(loss)
  return params, opt_state, losses


def classifier_batches(batch=8):
  rng = np.random.default_rng(2)
  return [{'image': rng.normal(size=(batch, 8, 8, 1)).astype(np.float32),
           'label': rng.integers(0, 10, batch).astype(np.int32)} for _ in range(STEPS)]


def run_classifier(mesh):
  """``STEPS`` steps of ``train.make_train_step`` (BatchNorm, SGD momentum) on ``mesh``."""
  model = TinyClassifier()
  cfg = types.SimpleNamespace(lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-3,
                              warmup_fraction=0.0)
  tx = train.make_optimizer(cfg)
  variables = train_state.init_variables(model, jax.random.key(0), (8, 8, 1))
  state = jax.device_get(train_state.create(variables, tx))
  state = sharding.place(state, mesh)
  step = train.make_train_step(model, cfg, mesh)
  for batch in classifier_batches():
    state, metrics = step(state, sharding.shard_batch(batch, mesh), 10)
  return state, metrics


def reordering_rtol(batch, length=1):
  """:func:`assert_close`'s bound for ``STEPS`` steps whose batch reductions a device split
  reorders (``batch x length`` terms): the first-order run bound, doubled for Adam's ratio
  ``m / sqrt(v)`` (each with the gradient's relative error)."""
  return 2 * tolerances.reordered_run(STEPS, batch * length)


LM_RTOL = reordering_rtol(8, 12)          # lm_batches
CLASSIFIER_RTOL = reordering_rtol(8, 8 * 8)   # classifier_batches: 8 images of 8 x 8


def assert_close(got, want, rtol=LM_RTOL, what=''):
  """Each array within ``rtol`` of the reference in norm: ``|got - want| <= rtol |want|``.

  A norm (not element-wise) bound because Adam divides by ``sqrt(v) + eps``: an element whose
  gradient is ~0 moves by an amount that float reduction order changes; a sharding bug (a
  wrong slice, a missing all-reduce) moves whole tensors by O(1).
  """
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (what, got.shape, want.shape)
  err, scale = np.linalg.norm(got - want), np.linalg.norm(want)
  assert err <= rtol * scale + 1e-30, f'{what}: |got - want| = {err:.3g} > {rtol} * {scale:.3g}'
