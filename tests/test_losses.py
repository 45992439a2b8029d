import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from cure_jax.unlearning import losses
from tests import tolerances
from tests.tolerances import assert_within

K = 7


def _case(seed, batch=5, shape=()):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, *shape, K)).astype(np.float32) * 3
  teacher = rng.normal(size=(batch, *shape, K)).astype(np.float32) * 3
  return logits, teacher


def _tol(logits, teacher, t=1.0):
  """A float32 loss of K classes against its float64 formula on the same logits: the student's
  and the teacher's log-softmax (K-term sums), the targets' softmax and the K-term weighted
  sum round at most 4K times on log-probabilities of size 2 max|z| / t + log K (two of them
  per term), times the t^2 scale: ~7e-5 at t = 1 here, where a wrong target, mask or scale
  moves a loss by O(1)."""
  zmax = max(float(np.abs(logits).max()), float(np.abs(teacher).max()))
  return t * t * tolerances.gamma(4 * K) * 2 * (2 * zmax / t + np.log(K))


MASKS = {
    'one class': np.eye(K, dtype=bool)[2],
    'two classes': np.isin(np.arange(K), [0, 5]),
    'per example': np.eye(K, dtype=bool)[[1, 3, 3, 6, 0]],
}


@pytest.mark.parametrize('name', MASKS)
@pytest.mark.parametrize('temperature', [1.0, 4.0, 70.0])
def test_gsr_target_puts_exactly_zero_mass_on_forget_classes(name, temperature):
  _, teacher = _case(0)
  teacher[:, :] += 50.0 * MASKS[name]  # the forget class is the teacher's favourite
  p = np.asarray(losses.gsr_target(teacher, MASKS[name], temperature))
  mask = np.broadcast_to(MASKS[name], p.shape)
  assert np.all(p[mask] == 0.0)
  # Each probability rounds K + 2 times (a K-term sum, exp, division), their sum K more.
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=0, atol=tolerances.gamma(2 * K + 2))


@pytest.mark.parametrize('name', MASKS)
def test_ghr_labels_never_hit_a_forget_class(name):
  _, teacher = _case(1)
  teacher += 100.0 * MASKS[name]
  labels = np.asarray(losses.guided_hard_labels(teacher, MASKS[name]))
  mask = np.broadcast_to(MASKS[name], teacher.shape)
  assert not np.any(mask[np.arange(len(labels)), labels])
  expected = np.argmax(np.where(mask, -np.inf, teacher), -1)
  np.testing.assert_array_equal(labels, expected)


def test_gsr_is_t_squared_kl_by_hand():
  logits, teacher = _case(2)
  mask, t = MASKS['two classes'], 3.0
  z = np.where(mask, -np.inf, teacher) / t
  p = softmax(z, -1)
  log_q = log_softmax(logits / t, -1)
  kl = np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - log_q), 0), -1)
  assert_within(losses.gsr(logits, teacher, mask, t), t * t * kl, _tol(logits, teacher, t))


def test_ghr_and_undial_by_hand():
  logits, teacher = _case(3)
  mask = MASKS['one class']
  labels = np.argmax(np.where(mask, -np.inf, teacher), -1)
  ce = -log_softmax(logits, -1)[np.arange(len(labels)), labels]
  assert_within(losses.ghr(logits, teacher, mask), ce, _tol(logits, teacher))
  target = softmax(teacher - 10.0 * mask, -1)
  expected = -np.sum(target * log_softmax(logits, -1), -1)
  assert_within(losses.undial(logits, teacher, mask, 10.0), expected, _tol(logits, teacher + 10.0))


def test_gsr_vanishes_when_student_matches_masked_teacher():
  _, teacher = _case(4)
  mask = MASKS['one class']
  student = np.where(mask, -30.0, teacher)
  assert np.all(np.asarray(losses.gsr(student, teacher, mask, 1.0)) < 1e-6)


def test_per_token_masks_and_extreme_logits_stay_finite():
  logits, teacher = _case(5, batch=2, shape=(6,))
  teacher[..., 0] = 1e30
  tokens = np.random.default_rng(0).integers(0, K, size=(2, 6))
  mask = jax.nn.one_hot(tokens, K).astype(bool)
  for fn in (lambda l: losses.ghr(l, teacher, mask), lambda l: losses.gsr(l, teacher, mask, 5.0),
             lambda l: losses.undial(l, teacher, mask, 10.0)):
    value, grad = jax.value_and_grad(lambda l: jnp.sum(fn(l)))(jnp.asarray(logits))
    assert fn(logits).shape == (2, 6)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_random_non_forget_labels_avoid_the_forget_classes():
  mask = MASKS['two classes']
  labels = np.asarray(losses.random_non_forget_labels(jax.random.key(0), jnp.asarray(mask),
                                                      (2000,)))
  assert not np.any(np.isin(labels, [0, 5]))
  assert set(np.unique(labels)) == {1, 2, 3, 4, 6}


def _kl_by_hand(p, logits):
  log_q = log_softmax(logits, -1)
  return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - log_q), 0), -1)


def test_delete_is_kl_to_the_teacher_with_the_own_label_at_minus_1e10():
  logits, teacher = _case(6)
  labels = np.array([0, 3, 3, 6, 2])
  z = teacher.astype(np.float64).copy()
  z[np.arange(5), labels] = -1e10
  expected = _kl_by_hand(softmax(z, -1), logits)
  got = np.asarray(losses.delete(logits, teacher, labels))
  assert_within(got, expected, _tol(logits, teacher))
  # Only the own label is masked: the other classes keep the teacher's relative odds.
  assert np.all(got > 0)
  assert np.asarray(losses.delete(np.where(np.eye(K)[labels] > 0, -40.0, teacher), teacher,
                                  labels)).max() < 1e-5


@pytest.mark.parametrize('temperature', [1.0, 4.0])
def test_distill_kl_is_t_squared_kl_of_softened_distributions(temperature):
  logits, teacher = _case(7)
  expected = temperature**2 * _kl_by_hand(softmax(teacher / temperature, -1),
                                          logits / temperature)
  assert_within(losses.distill_kl(logits, teacher, temperature), expected,
          _tol(logits, teacher, temperature))
