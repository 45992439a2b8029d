import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cure_jax import models
from cure_jax.unlearning import grogu, losses
from tests import tolerances


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
          'b': {'x': jnp.asarray(rng.normal(size=(5,)), jnp.float32)}}


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)]).astype(np.float64)


def test_project_out_is_orthogonal_to_b_over_the_whole_tree():
  a, b = _tree(0), _tree(1)
  p = grogu.project_out(a, b, eps=0.0)
  assert abs(np.dot(_flat(p), _flat(b))) < 1e-5 * np.linalg.norm(_flat(a)) * np.linalg.norm(_flat(b))
  # Whole-vector projection, not leaf by leaf.
  leafwise = jax.tree.map(lambda x, y: x - jnp.vdot(x, y) / jnp.vdot(y, y) * y, a, b)
  assert not np.allclose(_flat(p), _flat(leafwise))


def test_closed_form_coefficients_match_the_projections():
  gh, gs = _flat(_tree(2)), _flat(_tree(3))
  eps = 1e-3
  a, b = grogu.grogu_coefficients(gh @ gs, gh @ gh, gs @ gs, eps)
  expected = (gh - (gh @ gs) / (gs @ gs + eps) * gs) + (gs - (gh @ gs) / (gh @ gh + eps) * gh)
  np.testing.assert_allclose(a * gh + b * gs, expected, rtol=1e-10)


def _algorithm3_loop(loss_h, loss_s, params, batch, eps, w_h, w_s):
  """The paper's Algorithm 3 literally: a Python loop, flat numpy vectors."""
  unravel = jax.flatten_util.ravel_pytree(params)[1]
  grad_h = jax.jit(jax.grad(lambda p, ex: w_h * loss_h(p, ex)))
  grad_s = jax.jit(jax.grad(lambda p, ex: w_s * loss_s(p, ex)))
  total, scale = 0.0, 0.0
  n = len(jax.tree.leaves(batch)[0])
  for j in range(n):
    ex = jax.tree.map(lambda x: x[j], batch)
    gh, gs = _flat(grad_h(params, ex)), _flat(grad_s(params, ex))
    g = (gh - (gh @ gs) / (gs @ gs + eps) * gs) + (gs - (gh @ gs) / (gh @ gh + eps) * gh)
    total = total + g
    scale = scale + np.linalg.norm(gh) + np.linalg.norm(gs)
  return unravel(jnp.asarray(total / n, jnp.float32)), scale / n


@pytest.mark.parametrize('w_h,w_s,temperature', [(1.0, 1.0, 1.0), (0.5, 0.5, 4.0),
                                                 (0.3, 0.7, 12.0)])
def test_grogu_direction_equals_the_per_example_loop(w_h, w_s, temperature):
  import jax.flatten_util  # noqa: F401
  model = models.get_model('resnet8', 10)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  teacher = jnp.asarray(rng.normal(size=(4, 10)) * 3, jnp.float32)
  mask = jnp.broadcast_to(jnp.arange(10) == 1, (4, 10))
  batch = {'image': x, 'teacher': teacher, 'mask': mask}

  def logits(p, ex):
    return model.apply({'params': p, 'batch_stats': variables['batch_stats']},
                       ex['image'][None], train=False)[0]

  loss_h = lambda p, ex: losses.ghr(logits(p, ex), ex['teacher'], ex['mask'])
  loss_s = lambda p, ex: losses.gsr(logits(p, ex), ex['teacher'], ex['mask'], temperature)
  eps = 1e-12
  fast = grogu.grogu_direction(loss_h, loss_s, variables['params'], batch, eps=eps, w_h=w_h,
                               w_s=w_s)
  loop, scale = _algorithm3_loop(loss_h, loss_s, variables['params'], batch, eps, w_h, w_s)
  # Vmapped per-example gradients against one-example programs: each gradient is a forward
  # and a backward pass through the 19 modules of ResNet-8 whose reductions (3 x 3 x 64 =
  # 576 terms at most) are reordered (first order: 2 x 19 x the probabilistic reordered sum);
  # the projections' inner products over the P parameters then round in float32 against the
  # loop's float64 (3 roundings of P terms). Per example, the direction moves by at most 4x the
  # gradients' error plus 3x the inner products' error, times |g_h| + |g_s| (``scale``):
  # about 3e-3 of it, where a wrong coefficient or sign moves it by O(1).
  terms = _flat(variables['params']).size
  grad_err = 2 * 19 * 2 * tolerances.gamma_probabilistic(576)
  bound = 4 * grad_err + 3 * tolerances.gamma_probabilistic(terms)
  assert np.linalg.norm(_flat(fast) - _flat(loop)) <= bound * scale
  assert np.linalg.norm(_flat(loop)) > 0.1 * scale   # the bound is not vacuous
