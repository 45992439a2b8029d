"""Fast GROGU (per-example inner products from layer inputs/cotangents) vs the vmap reference."""
import math

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cure_jax.unlearning.grogu import ghost
from cure_jax.unlearning import grogu
from cure_jax.unlearning.grogu import fast as grogu_fast
from cure_jax.unlearning import losses
from cure_jax.models import get_model
from cure_jax.models.causal_lm import CausalLM, LMConfig
from tests import sharded_steps, tolerances


def _random_variables(shapes, seed):
  """Random values for every leaf: non-trivial BatchNorm statistics and scales included."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  out = []
  for (path, leaf), key in zip(leaves, keys):
    name = str(path[-1].key)
    if name == 'var':
      out.append(jax.random.uniform(key, leaf.shape, minval=0.5, maxval=1.5))
    elif name == 'scale':
      out.append(1.0 + 0.2 * jax.random.normal(key, leaf.shape))
    elif name in ('bias', 'mean'):
      out.append(0.1 * jax.random.normal(key, leaf.shape))
    else:
      fan_in = math.prod(leaf.shape[:-1]) if name == 'kernel' else leaf.shape[-1]
      out.append(jax.random.normal(key, leaf.shape) * math.sqrt(2.0 / fan_in))
  return jax.tree.unflatten(treedef, out)


def _relative_error(a, b):
  diff = jax.tree.map(jnp.subtract, a, b)
  return float(jnp.sqrt(grogu.tree_vdot(diff, diff) / grogu.tree_vdot(b, b)))


def _classifier_case(name, batch):
  model = get_model(name, 10)
  x = jax.random.normal(jax.random.key(1), (batch, 8, 8, 3))
  variables = _random_variables(
      jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0)), 0)
  state = variables['batch_stats']
  apply_fn = lambda p, inputs: model.apply({'params': p, 'batch_stats': state}, inputs,
                                           train=False)
  teacher = 3.0 * jax.random.normal(jax.random.key(2), (batch, 10))
  mask = jnp.broadcast_to(jnp.isin(jnp.arange(10), jnp.array([1, 3])), (batch, 10))
  return apply_fn, variables['params'], x, dict(teacher=teacher, mask=mask,
                                                weight=jnp.ones((batch, 1)))


class _Awkward(nn.Module):
  """Layers whose per-example gradients are easy to get wrong."""

  @nn.compact
  def __call__(self, x_BxHxWxC):
    x = nn.Conv(5, (3, 3), strides=(2, 2), padding='SAME', name='stride2')(x_BxHxWxC)
    x = nn.Conv(6, (3, 2), padding=((2, 1), (0, 2)), kernel_dilation=(2, 1), name='dilated')(x)
    shared = nn.Dense(6, name='shared')
    x = shared(nn.gelu(shared(x)))  # one Dense applied twice on BxHxWxC
    x = nn.LayerNorm(name='norm')(x)
    x = nn.Conv(6, (2, 2), feature_group_count=2, name='grouped')(x)  # generic leaf
    x = _RawMatrix(name='raw')(x)  # a custom leaf reading its own matrix parameter
    return nn.Dense(10, name='head')(jnp.mean(x, axis=(1, 2)))


def _awkward_case(batch):
  model = _Awkward()
  x = jax.random.normal(jax.random.key(1), (batch, 7, 5, 3))
  params = _random_variables(jax.eval_shape(model.init, jax.random.key(0), x), 0)['params']
  apply_fn = lambda p, inputs: model.apply({'params': p}, inputs)
  teacher = 3.0 * jax.random.normal(jax.random.key(2), (batch, 10))
  mask = jnp.broadcast_to(jnp.isin(jnp.arange(10), jnp.array([1, 3])), (batch, 10))
  return apply_fn, params, x, dict(teacher=teacher, mask=mask, weight=jnp.ones((batch, 1)))


# The project's byte LM (vocab 264, untied head here) and SmolLM2's layout in miniature:
# tied embeddings, 3 query heads per KV head, RoPE base 1e5, RMSNorm.
LM_LAYOUTS = {
    'byte_lm': dict(vocab_size=264, num_layers=2, d_model=32, num_heads=4, num_kv_heads=4,
                    d_ff=64, max_len=16, tie_embeddings=False),
    'smollm2_layout': dict(vocab_size=48, num_layers=2, d_model=48, num_heads=6,
                           num_kv_heads=2, d_ff=64, max_len=16, rope_base=100000.0,
                           tie_embeddings=True),
}


def _lm_case(batch, layout='smollm2_layout'):
  settings = LM_LAYOUTS[layout]
  vocab, length = settings['vocab_size'], 8
  model = CausalLM(LMConfig(**settings))
  tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, vocab)
  params = _random_variables(jax.eval_shape(model.init, jax.random.key(0), tokens), 0)['params']
  apply_fn = lambda p, t: model.apply({'params': p}, t)
  teacher = 3.0 * jax.random.normal(jax.random.key(2), (batch, length, vocab))
  mask = jax.nn.one_hot(jnp.roll(tokens, -1, axis=1), vocab, dtype=bool)
  answer = (jnp.arange(length) >= 3).astype(jnp.float32)
  return apply_fn, params, tokens, dict(teacher=teacher, mask=mask,
                                        weight=jnp.broadcast_to(answer, (batch, length)))


def _case(name):
  if name in LM_LAYOUTS:
    return _lm_case(batch=3, layout=name)
  if name == 'awkward':
    return _awkward_case(batch=3)
  return _classifier_case(name, batch=3 if name == 'resnet8' else 4)


def _loss(kind, logits, ex, temperature=4.0):
  """Per-example loss: mean over weighted positions (answer tokens; one for images)."""
  if kind == 'h':
    per_position = losses.ghr(logits, ex['teacher'], ex['mask'])
  else:
    per_position = losses.gsr(logits, ex['teacher'], ex['mask'], temperature)
  if per_position.ndim == 1:
    return per_position * ex['weight'][:, 0]
  return jnp.sum(per_position * ex['weight'], -1) / jnp.sum(ex['weight'], -1)


# ResNet-18 has resnet8's layers (stem, basic blocks with identity and strided projection
# shortcuts, BatchNorm in inference mode, head), only more of them and wider, so it adds no
# path here (its compile was the slowest case of the suite).
@pytest.mark.parametrize('case,pulls,form', [
    ('resnet8', 'separate', 'by_shape'), ('cnn_small', None, 'by_shape'),
    ('byte_lm', None, 'by_shape'),
    ('smollm2_layout', 'vmapped', 'ghost'), ('smollm2_layout', 'separate', 'materialise'),
    ('awkward', None, 'ghost'), ('awkward', None, 'materialise')])
def test_fast_direction_matches_vmap_reference(case, pulls, form, monkeypatch):
  if form != 'by_shape':  # every leaf through one form, so that both are checked on each layer
    monkeypatch.setattr(ghost, 'ghost_is_cheaper', lambda *a: form == 'ghost')
  # In float64: the two paths are one formula with other reductions (tests/tolerances.py).
  with jax.enable_x64():
    _check_fast_direction(case, pulls)


def _check_fast_direction(case, pulls):
  apply_fn, params, inputs, extra = _case(case)
  kwargs = dict(eps=1e-8, w_h=0.3, w_s=0.7)
  assert grogu_fast.supports(apply_fn, params, inputs)

  def fast(p):
    return grogu_fast.grogu_direction_fast(
        apply_fn, p, inputs, lambda z: _loss('h', z, extra), lambda z: _loss('s', z, extra),
        pulls=pulls, **kwargs)

  def reference(p):
    def per_example(kind):
      def loss(q, example):
        one = jax.tree.map(lambda a: a[None], example)
        return _loss(kind, apply_fn(q, one['inputs']), one)[0]
      return loss
    return grogu.grogu_direction(per_example('h'), per_example('s'), p,
                                 dict(inputs=inputs, **extra), **kwargs)

  # CPU matmuls are full float32 already; 'highest' keeps the check meaningful on GPU/TPU.
  # LLVM optimisation level 0 halves the compile time, which dominates these tiny runs.
  jit = lambda f: jax.jit(f, compiler_options={'xla_backend_optimization_level': 0})
  with jax.default_matmul_precision('highest'):
    direction, aux = jit(fast)(params)
    expected = jit(reference)(params)
  assert jax.tree.structure(direction) == jax.tree.structure(params)
  # Longest reduction: the inner products over every parameter; stages: a forward and a
  # backward through each parameterised module, the losses, the projection.
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  modules = len({path[:-1] for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]})
  tolerances.assert_same_formula(flat(direction), flat(expected), 2 * modules + 4,
                                 flat(params).size, probabilistic=True)
  batch = jax.tree.leaves(inputs)[0].shape[0]
  for key in ('inner', 'sq_norm_h', 'sq_norm_s', 'coef_h', 'coef_s'):
    assert aux[key].shape == (batch,)
  # Restricted orthogonal sums keep the coefficients strictly below one unless inner <= 0.
  np.testing.assert_array_less(np.zeros(batch), np.asarray(aux['sq_norm_h']))
  np.testing.assert_array_equal(np.asarray(aux['coef_h'] < 1), np.asarray(aux['inner'] > 0))


@pytest.mark.parametrize('strides,padding,dilation', [
    ((1, 1), 'SAME', (1, 1)),
    ((2, 2), 'SAME', (1, 1)),
    ((2, 1), 'VALID', (1, 2)),
    ((1, 2), ((1, 0), (2, 1)), (2, 1)),
])
def test_conv_patches_reproduce_the_convolution(strides, padding, dilation):
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 2, 3, 4))
  patches = ghost.conv_patches(x, (3, 2), strides, padding, dilation)
  rows = jnp.concatenate(patches.blocks(), axis=-1)
  y = jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert rows.shape == (2, patches.rows, patches.width)
  # Each output is a sum of the 3 x 2 x 3 = 18 products of a patch row with a kernel column,
  # in another order: within reordered_sum(18) of the sum of their magnitudes, element-wise.
  flat_kernel = kernel.reshape(-1, 4)
  magnitude = np.abs(np.asarray(rows)) @ np.abs(np.asarray(flat_kernel))
  err = np.abs(np.asarray(rows @ flat_kernel) - np.asarray(y).reshape(2, -1, 4))
  assert np.all(err <= tolerances.reordered_sum(flat_kernel.shape[0]) * magnitude), err.max()


def _explicit_stats(grads_h, grads_s):
  flat = lambda g: g.reshape(g.shape[0], -1)
  g_h, g_s = flat(grads_h), flat(grads_s)
  return jnp.stack([jnp.sum(g_h * g_h, 1), jnp.sum(g_s * g_s, 1), jnp.sum(g_h * g_s, 1)])


def _randn(seed, *shape):
  return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize('use', ['dense', 'conv', 'tied_embedding', 'with_dense_grads'])
def test_stats_and_direction_equal_explicit_gradients(use):
  batch, rows = 3, 5
  pair = lambda seed, *shape: (_randn(seed, *shape), _randn(seed + 1, *shape))
  if use in ('dense', 'with_dense_grads'):
    left, right = _randn(0, batch, rows, 4), pair(1, batch, rows, 6)
    factors = [ghost.Factor([left[..., :1], left[..., 1:]], right, right_seeded=True)]
    explicit = [jnp.einsum('bnp,bnq->bpq', left, r) for r in right]
    grads = ()
    if use == 'with_dense_grads':
      grads = [pair(3, batch, 4, 6)]
      explicit = [e + g for e, g in zip(explicit, grads[0])]
  elif use == 'conv':
    x = _randn(0, batch, 5, 4, 2)
    patches = ghost.conv_patches(x, (2, 2), (1, 2), 'SAME', (1, 1))
    right = pair(1, batch, patches.rows, 3)
    factors, grads = [ghost.Factor(patches, right, right_seeded=True)], ()
    blocks = jnp.concatenate(patches.blocks(), axis=-1)
    explicit = [jnp.einsum('bnp,bnq->bpq', blocks, r) for r in right]
  else:
    # Lookup (one-hot rows, cotangent on the right) and tied head (cotangent on the left).
    vocab, width = 7, 4
    ids = jax.random.randint(jax.random.key(0), (batch, rows), 0, vocab)
    out_cot, head_cot, query = pair(1, batch, rows, width), pair(3, batch, rows, vocab), _randn(
        5, batch, rows, width)
    factors = [ghost.Factor(ghost.OneHot(ids, vocab), out_cot, right_seeded=True),
               ghost.Factor([head_cot], query, left_seeded=True)]
    grads = ()
    one_hot = jax.nn.one_hot(ids, vocab)
    explicit = [jnp.einsum('bnv,bnd->bvd', one_hot, o) + jnp.einsum('bnv,bnd->bvd', h, query)
                for o, h in zip(out_cot, head_cot)]
  expected = _explicit_stats(*explicit)
  w_h, w_s = _randn(7, batch), _randn(8, batch)
  expected_direction = (jnp.einsum('b,b...->...', w_h, explicit[0])
                        + jnp.einsum('b,b...->...', w_s, explicit[1])).ravel()
  # Ghost and explicit forms sum the same products in other orders: a statistic is a sum over
  # <= 28 gradient entries (4 x 6, 8 x 3, 7 x 4) of products of two sums over the 5 rows (two
  # factors at most): <= 2 x 5 x 5 x 28 terms. On these Gaussian factors the sums' magnitudes
  # exceed their values by ~sqrt(rows) per sum (~rows for a product): norm-wise (the inner
  # products can be ~0) within rows x reordered_sum(terms) of the whole (8.3e-4), where a
  # wrong factor, transpose or missing term moves them by O(1).
  rtol = rows * tolerances.reordered_sum(2 * rows * rows * 28)
  close = lambda got, want, what: sharded_steps.assert_close(got, want, rtol, what)
  g_h, g_s = ghost.per_example_grads(factors, grads)
  close(ghost.pair_stats(g_h, g_s), expected, 'pair_stats')
  if not grads:
    close(ghost.ghost_stats(factors), expected, 'ghost_stats')
    direction = sum(ghost.factor_direction(f, w_h, w_s) for f in factors)
    close(direction, expected_direction, 'factor_direction')
  stats, direction = ghost.leaf_plan(factors, grads)
  close(stats, expected, 'leaf_plan stats')
  close(direction(w_h, w_s), expected_direction, 'leaf_plan direction')


def test_cost_rule_materialises_early_convolutions_and_ghosts_late_ones():
  def conv_factor(size, channels):
    x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
    patches = ghost.conv_patches(x, (3, 3), (1, 1), 'SAME', (1, 1))
    cot = jax.ShapeDtypeStruct((2, size * size, channels), jnp.float32)
    return [ghost.Factor(patches, (cot, cot), right_seeded=True)]
  # CIFAR ResNet-18: 32x32x64 (N=1024 > PQ/(P+3Q)=58) vs 4x4x512 (N=16 < 460).
  assert not ghost.ghost_is_cheaper(conv_factor(32, 64), batch=128)
  assert ghost.ghost_is_cheaper(conv_factor(4, 512), batch=128)
  # Per-example gradients over the memory cap: ghost form even where it costs more.
  assert ghost.ghost_is_cheaper(conv_factor(32, 64), batch=10**6)


class _RawMatrix(nn.Module):
  """A custom leaf using its matrix parameter directly (handled by the generic path)."""

  @nn.compact
  def __call__(self, x):
    return x @ self.param('w', nn.initializers.normal(), (x.shape[-1], 3))


class _ReadsKernel(nn.Module):
  """Uses a Dense's kernel inside the Dense call and again directly (the 59 % gap)."""

  @nn.compact
  def __call__(self, x):
    dense = nn.Dense(3, name='dense')
    y = dense(x)
    return y + x @ self.variables['params']['dense']['kernel']


class _OwnParamAndChild(nn.Module):
  """A parameter owned by a module that also has parameter children."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x) * self.param('gain', nn.initializers.ones, (3,))


class _TrainModeNorm(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.BatchNorm(use_running_average=False)(x))


class _BatchCentering(nn.Module):
  """No parameter-layer problem, but examples interact through a batch mean."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(4)(x)
    return nn.Dense(3)(h - jnp.mean(h, axis=0))


class _BatchScale(nn.Module):
  """A custom norm leaf computing statistics over the batch axis."""

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],))
    return x / jnp.std(x, axis=0) * scale


@pytest.mark.parametrize('module,shape,reason', [
    (_ReadsKernel(), (2, 4), 'read outside'),
    (_OwnParamAndChild(), (2, 4), 'gain'),
    (_TrainModeNorm(), (2, 4), 'training mode'),
    (_BatchCentering(), (3, 4), 'interact'),
    (nn.Sequential([_BatchScale(), nn.Dense(3)]), (3, 4), 'interact'),
])
def test_unsupported_models_fall_back_to_vmap(module, shape, reason, monkeypatch):
  x = jax.random.normal(jax.random.key(1), shape)
  variables = module.init(jax.random.key(0), x)
  state = {k: v for k, v in variables.items() if k != 'params'}

  def apply_fn(p, inputs):
    if state:  # training-mode BatchNorm: statistics are mutable
      return module.apply({'params': p, **state}, inputs, mutable=list(state))[0]
    return module.apply({'params': p}, inputs)

  check = grogu_fast.supports(apply_fn, variables['params'], x)
  assert not check and reason in check.reason
  logged = []
  monkeypatch.setattr(logging, 'warning', lambda msg, *args: logged.append(msg % args))
  assert grogu_fast.choose_impl('fast', apply_fn, variables['params'], x) == 'vmap'
  assert len(logged) == 1 and reason in logged[0]


def test_the_fallback_reasons_are_real():
  """Where supports() refuses, the fast direction would indeed be wrong (not overcautious)."""
  module = _ReadsKernel()
  x = jax.random.normal(jax.random.key(1), (3, 4))
  params = module.init(jax.random.key(0), x)['params']
  apply_fn = lambda p, inputs: module.apply({'params': p}, inputs)
  target = jax.random.normal(jax.random.key(2), (3, 3))
  loss_h = lambda z: jnp.sum((z - target) ** 2, -1)
  loss_s = lambda z: jnp.sum(jnp.abs(z - 1.0), -1)
  fast, _ = grogu_fast.grogu_direction_fast(apply_fn, params, x, loss_h, loss_s, eps=1e-8)
  per_example = lambda loss: lambda p, ex: loss(apply_fn(p, ex[None]))[0]
  expected = grogu.grogu_direction(per_example(loss_h), per_example(loss_s), params, x,
                                   eps=1e-8)
  assert _relative_error(fast, expected) > 1e-2


def test_resolve_impl():
  apply_fn, params, inputs, _ = _lm_case(batch=2)
  assert grogu_fast.choose_impl('fast', apply_fn, params, inputs) == 'fast'
  assert grogu_fast.choose_impl('vmap', apply_fn, params, inputs) == 'vmap'
  with pytest.raises(ValueError, match='grogu_impl'):
    grogu_fast.choose_impl('fastest', apply_fn, params, inputs)
