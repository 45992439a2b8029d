"""Tolerances of the numeric tests, derived from the computation instead of read off one CPU.

Two programs that compute the same float32 function may add its terms in another order: a
device split sums each device's share and then the shares, a stack of models vmapped into
one program runs its convolutions and matrix products with other loops, and another CPU
(AVX2 against AVX-512, FMA or not) or another XLA setting (``--xla_cpu_enable_fast_math``,
the number of threads Eigen uses) blocks the same loops differently. Rounding is then the
only difference, and its size follows from the length of the reductions:

* A float32 sum of ``n`` terms, in any order, is within ``gamma(n) * sum(|terms|)`` of the
  exact sum (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4), so
  two orders are within ``2 * gamma(n)`` of each other, relative to ``sum(|terms|)``:
  :func:`reordered_sum`.
* A training (or unlearning) run of ``steps`` steps whose every update is such a reduction
  moves its parameters by the sum of its updates. To first order (no amplification of an
  early difference by later steps, which holds for the few, small steps of the tests' runs)
  the parameters of two orders differ by at most ``steps * 2 * gamma(n)`` times the size of
  one update, and an update is smaller than the parameters it changes (learning rates of
  0.01-0.1 on unit-scale gradients): :func:`reordered_run` bounds ``|Δw| / |w|`` in norm.

Where a test checks a formula (the library's direction against a transcription of the paper's
or a peer's formula), both run in float64 (:func:`assert_same_formula`): its rounding is 29
bits below float32's, so a bound that allows for heavy cancellation still sits many orders
below what a wrong sign, weight, mask or temperature changes.

Where a test compares the same program with itself (a resumed run, a cache hit, a restored
checkpoint), the result is bitwise and the test says so with tolerance 0.
"""
import numpy as np

UNIT_ROUNDOFF = 2.0 ** -24   # float32, round to nearest
UNIT_ROUNDOFF_F64 = 2.0 ** -53
# How much smaller than the sum of its terms' magnitudes a reduction's result may be in a
# formula check (terms cancelling to 1 part in a million); a check's result smaller than this
# would need its own analysis. Even so the float64 bound stays below 1e-7 of the result.
CANCELLATION = 2.0 ** 20


def gamma(n, u=UNIT_ROUNDOFF):
  """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of ``n`` roundings."""
  nu = n * u
  if nu >= 1:
    raise ValueError(f'{n} roundings of {u:g} bound nothing (n u >= 1)')
  return nu / (1 - nu)


def gamma_probabilistic(n, lam=7.0, u=UNIT_ROUNDOFF):
  """Higham & Mary's probabilistic bound (SIAM J. Sci. Comput. 41(5), 2019, Thm. 2.4):
  rounding errors that are independent and of mean zero make ``n`` roundings' relative error
  ``exp(lam sqrt(n) u + n u^2 / (1 - u)) - 1`` at most, except with probability
  ``1 - P(lam) <= 2 exp(-lam^2 (1 - u)^2 / 2)`` (``lam = 7``: below 5e-11 for each bound,
  below 1e-4 over the millions of reductions of a test run)."""
  return float(np.expm1(lam * np.sqrt(n) * u + n * u * u / (1 - u)))


def reordered_sum(n):
  """Two float32 sums of the same ``n`` terms in other orders differ by at most this times
  ``sum(|terms|)``."""
  return 2 * gamma(n)


def reordered_run(steps, n, probabilistic=False):
  """``|w_a - w_b| / |w_b|`` (2-norm) after ``steps`` updates each a reordered float32
  reduction of ``n`` terms (first order; see the module docstring); ``probabilistic``: with
  :func:`gamma_probabilistic` in place of the worst case."""
  return steps * 2 * (gamma_probabilistic(n) if probabilistic else gamma(n))


def conv_terms(batch, image_shape):
  """The longest reduction of a convolutional network's step on ``batch`` images: a kernel
  gradient (and BatchNorm's statistics) at full resolution sums batch x H x W terms."""
  return int(batch) * int(np.prod(image_shape[:2]))


def relative_norm(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def logits_bound(eps, layers, max_abs_logit):
  """How far logits can move when every parameter tensor of a ``layers``-deep network moved
  by at most ``eps`` relatively: to first order a composition adds its factors' relative
  errors, so ``layers * eps`` relative to the largest logit."""
  return layers * eps * max_abs_logit


def near_ties(logits_NxK, delta):
  """Examples whose prediction logits within ``delta`` each can flip: top-2 margin <= 2 delta."""
  top2 = np.sort(np.asarray(logits_NxK, np.float64), axis=-1)[:, -2:]
  return (top2[:, 1] - top2[:, 0]) <= 2 * delta


def assert_within(got, want, tol):
  """Element-wise ``|got - want| <= tol`` in float64, shapes equal."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape and np.all(np.abs(got - want) <= tol), (got, want, tol)


def nll_bound(logits, classes, roundings):
  """A float32 NLL (a log-sum-exp over ``classes`` logits, a subtraction, means of them)
  against its float64 formula on the same logits: at most ``classes + roundings`` roundings
  on values of size ``2 max|z| + log(classes)``."""
  zmax = float(np.abs(np.asarray(logits)).max())
  return gamma(classes + roundings) * (2 * zmax + np.log(classes))


def lm_logits_delta(cfg, max_abs_logit):
  """How far an LM's logits from two programs that order their reductions differently may
  be apart: per layer 8 stages (norms, q/k/v, scores, attention, o_proj, gate/up, down),
  then the final norm and the head, each a reduction of at most
  ``max(d_ff, d_model, max_len)`` terms (:func:`logits_bound`)."""
  longest = max(cfg.d_ff, cfg.d_model, cfg.max_len)
  return logits_bound(reordered_sum(longest), 8 * cfg.num_layers + 2, max_abs_logit)


def assert_lm_logits_close(got, want, cfg):
  """An LM's logits from two programs (another head layout, padding, a KV cache, a window, a
  float64 forward) within :func:`lm_logits_delta` (about 1e-4 of the largest logit for the
  tests' tiny LMs), where a wrong head, mask, cache position or window moves them by
  > 1e-2."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape
  delta = lm_logits_delta(cfg, np.abs(want).max())
  assert np.abs(got - want).max() <= delta, (np.abs(got - want).max(), delta)


def assert_same_formula(got, want, stages, n, probabilistic=False):
  """Two float64 evaluations of one formula (the library's code and a test's transcription)
  that order their reductions differently: each of ``stages`` stages a reduction of at most
  ``n`` terms, first order, relative to the result's largest magnitude times
  :data:`CANCELLATION`; ``probabilistic``: :func:`gamma_probabilistic` in place of the worst
  case (for reductions over many parameters). Both must be float64 (a silent float32 cast in
  the code is an error here, not a rounding)."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.dtype == want.dtype == np.float64, (got.dtype, want.dtype)
  assert got.shape == want.shape
  g = (gamma_probabilistic(n, u=UNIT_ROUNDOFF_F64) if probabilistic
       else gamma(n, UNIT_ROUNDOFF_F64))
  delta = stages * 2 * g * CANCELLATION * np.abs(want).max()
  assert np.abs(got - want).max() <= delta, (np.abs(got - want).max(), delta)
