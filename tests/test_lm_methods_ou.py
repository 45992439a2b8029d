"""open-unlearning's WGA, SatImp and CE-U: our per-example losses against numpy references
written the way their PyTorch code computes them (labels with -100, shift, token-level mean),
and one step of each registry entry on a tiny causal LM."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cure_jax.lm import unlearn
from cure_jax.unlearning import hparams, losses, objectives
from cure_jax.unlearning.batch import Batch
from tests.test_lm_unlearning import _batch as _step_batch
from tests.test_lm_unlearning import _one_step
from tests import tolerances
from tests.tolerances import assert_within

IGNORE = -100
# Two sequences of length 4 over a vocabulary of 5; loss_mask[t] = 1 where token t+1 is an
# answer token (our frame), so row 0 answers tokens 2 and 3, row 1 tokens 4, 1 and 3.
TOKENS = np.array([[0, 1, 2, 3], [0, 4, 1, 3]], np.int32)
LOSS_MASK = np.array([[0, 1, 1, 0], [1, 1, 1, 0]], np.float32)


def _logits(seed, shape=(2, 4, 5)):
  return np.asarray(jax.random.normal(jax.random.key(seed), shape) * 2.0, np.float64)


def _tol(logits, slope=1.0):
  """Our float32 losses against the float64 transcriptions on the same logits: a token's NLL
  (a log-sum-exp over 5 classes, a subtraction), its weight (an exp and a power) and a mean
  over <= 3 tokens round at most 5 + 12 times on values of size 2 max|z| + log 5 (1.5e-5
  here); ``slope`` bounds how much the loss moves per unit of an NLL (WGA's w(l) l: 1;
  SatImp's: 1 + beta1 + beta2; CE-U's soft targets round as much again: 2), times the
  loss's gamma. A wrong weight, shift or ignored token moves a loss by O(1e-1)."""
  return slope * tolerances.nll_bound(logits, 5, 12)


def _hf_labels(tokens, loss_mask):
  """Their ``labels``: the token where it is an answer token, else -100 (position 0 never)."""
  labels = np.full(tokens.shape, IGNORE, np.int64)
  labels[:, 1:] = np.where(loss_mask[:, :-1] > 0, tokens[:, 1:], IGNORE)
  return labels


# ---- numpy transcriptions of open-unlearning's trainer losses ------------------------------

def _log_softmax(z):
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _ce_none(logits_NxV, labels_N):
  """``nn.CrossEntropyLoss(ignore_index=-100, reduction='none')``: 0 at ignored labels."""
  safe = np.where(labels_N == IGNORE, 0, labels_N)
  nll = -np.take_along_axis(_log_softmax(logits_NxV), safe[:, None], -1)[:, 0]
  return np.where(labels_N == IGNORE, 0.0, nll)


def _shifted_lm_loss(logits, labels):
  shift_logits, shift_labels = logits[..., :-1, :], labels[..., 1:]
  lm_loss = _ce_none(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1))
  return lm_loss, shift_labels.reshape(-1) != IGNORE


def wga_reference(logits, labels, beta):
  """``compute_wga_loss``."""
  lm_loss, valid = _shifted_lm_loss(logits, labels)
  weight_ce = np.exp(-lm_loss) ** beta
  return -(weight_ce * lm_loss)[valid].mean()


def satimp_reference(logits, labels, beta1, beta2):
  """``compute_satimp_loss``."""
  lm_loss, valid = _shifted_lm_loss(logits, labels)
  weight_sat = np.exp(-lm_loss) ** beta1
  weight_imp = (1 - np.exp(-lm_loss)) ** beta2
  return -((weight_sat * weight_imp) * lm_loss)[valid].mean()


def _cross_entropy_unlearning(logits, labels):
  """``cross_entropy_unlearning_loss``: CE against softmax of the logits with the label's
  entry set to -inf, averaged over the valid positions."""
  valid_mask = labels != IGNORE
  valid_logits, valid_labels = logits[valid_mask], labels[valid_mask]
  target_logits = valid_logits.copy()
  target_logits[np.arange(len(valid_labels)), valid_labels] = -np.inf
  target_probs = np.exp(_log_softmax(target_logits))
  return np.mean(-(target_probs * _log_softmax(valid_logits)).sum(-1))


def ceu_reference(logits, labels, ignore_first_n):
  """``compute_batch_ceu``: the first n answer labels dropped, then shifted."""
  valid_mask = labels != IGNORE
  update_mask = (np.cumsum(valid_mask, -1) <= ignore_first_n) & valid_mask
  labels = np.where(update_mask, IGNORE, labels)
  return _cross_entropy_unlearning(logits[..., :-1, :], labels[..., 1:])


# ---- the checks ------------------------------------------------------------------------------

def _hp(**values):
  return hparams.HParams(dict(hparams.DEFAULTS, **values), {})


def _ours(fn, logits, hp, tokens=TOKENS, loss_mask=LOSS_MASK):
  batch = unlearn.lm_batch({'tokens': jnp.asarray(tokens), 'loss_mask': jnp.asarray(loss_mask)})
  return np.asarray(fn(jnp.asarray(logits, jnp.float32), batch, None, hp), np.float64)


def _per_sequence(reference, logits, labels):
  """Their loss on each sequence alone: the value our per-example frame keeps."""
  return np.array([reference(logits[i:i + 1], labels[i:i + 1]) for i in range(len(labels))])


WGA_HPS = [dict(wga_beta=1.0, wga_gamma=1.0), dict(wga_beta=0.7, wga_gamma=0.5),
           dict(wga_beta=2.5, wga_gamma=2.0)]
SATIMP_HPS = [dict(satimp_beta1=5.0, satimp_beta2=1.0, satimp_gamma=0.1),
              dict(satimp_beta1=2.0, satimp_beta2=1.5, satimp_gamma=0.3),
              dict(satimp_beta1=0.5, satimp_beta2=3.0, satimp_gamma=1.0)]


@pytest.mark.parametrize('hp', WGA_HPS)
@pytest.mark.parametrize('seed', [0, 1])
def test_wga_matches_open_unlearning(hp, seed):
  logits, labels = _logits(seed), _hf_labels(TOKENS, LOSS_MASK)
  want = hp['wga_gamma'] * _per_sequence(
      lambda z, y: wga_reference(z, y, hp['wga_beta']), logits, labels)
  assert_within(_ours(objectives.wga, logits, _hp(**hp)), want, _tol(logits, hp['wga_gamma']))


@pytest.mark.parametrize('hp', SATIMP_HPS)
@pytest.mark.parametrize('seed', [0, 1])
def test_satimp_matches_open_unlearning(hp, seed):
  logits, labels = _logits(seed), _hf_labels(TOKENS, LOSS_MASK)
  want = hp['satimp_gamma'] * _per_sequence(
      lambda z, y: satimp_reference(z, y, hp['satimp_beta1'], hp['satimp_beta2']), logits, labels)
  slope = hp['satimp_gamma'] * (1 + hp['satimp_beta1'] + hp['satimp_beta2'])
  assert_within(_ours(objectives.satimp, logits, _hp(**hp)), want, _tol(logits, slope))


@pytest.mark.parametrize('n', [0, 1])
@pytest.mark.parametrize('seed', [0, 1])
def test_ceu_matches_open_unlearning(n, seed):
  logits, labels = _logits(seed), _hf_labels(TOKENS, LOSS_MASK)
  want = _per_sequence(lambda z, y: ceu_reference(z, y, n), logits, labels)
  assert_within(_ours(objectives.ceu, logits, _hp(ceu_ignore_first=float(n))), want,
                _tol(logits, 2))


def test_ceu_sequence_with_every_answer_token_ignored_contributes_zero():
  logits, labels = _logits(2), _hf_labels(TOKENS, LOSS_MASK)
  got = _ours(objectives.ceu, logits, _hp(ceu_ignore_first=2.0))
  assert got[0] == 0.0   # row 0 has two answer tokens; theirs has no position left (NaN)
  assert_within(got[1], ceu_reference(logits[1:], labels[1:], 2), _tol(logits, 2))


def test_batch_mean_is_their_token_mean_when_answers_are_equally_long():
  """With equal answer lengths the step's mean over sequences is their micro-batch loss."""
  mask = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], np.float32)
  logits, labels = _logits(3), _hf_labels(TOKENS, mask)
  hp = _hp()
  pairs = [(objectives.wga, wga_reference(logits, labels, 1.0)),
           (objectives.satimp, 0.1 * satimp_reference(logits, labels, 5.0, 1.0)),
           (objectives.ceu, ceu_reference(logits, labels, 1))]
  for fn, want in pairs:
    # The slopes above at the default hyperparameters (SatImp: 0.1 x (1 + 5 + 1)); CE-U's 2.
    assert_within(_ours(fn, logits, hp, loss_mask=mask).mean(), want, _tol(logits, 2))


def _as_one_answer_token(reference):
  """Their LM loss on a two-token sequence whose first logit row predicts the label."""
  return lambda row, y: reference(np.stack([row, row])[None], np.array([[IGNORE, y]]))


@pytest.mark.parametrize('fn, reference', [
    (objectives.wga, _as_one_answer_token(lambda z, y: wga_reference(z, y, 1.0))),
    (objectives.satimp, _as_one_answer_token(lambda z, y: 0.1 * satimp_reference(z, y, 5.0, 1.0))),
    (objectives.ceu, lambda row, y: _cross_entropy_unlearning(row[None], np.array([y])))])
def test_a_classifier_example_is_one_answer_token(fn, reference):
  """On a classifier (no answer mask) each example is one position and nothing is ignored."""
  logits, labels = _logits(4, (3, 5)), np.array([1, 4, 0])
  batch = Batch(inputs=None, label=jnp.asarray(labels))
  got = np.asarray(fn(jnp.asarray(logits, jnp.float32), batch, None, _hp()), np.float64)
  want = [reference(logits[i], labels[i]) for i in range(3)]
  assert_within(got, want, _tol(logits, 2))


def test_weights_are_held_constant():
  """WGA's gradient is its weight times the NLL gradient (no gradient through the weight)."""
  logits = jnp.asarray(_logits(5), jnp.float32)
  batch = unlearn.lm_batch({'tokens': jnp.asarray(TOKENS), 'loss_mask': jnp.asarray(LOSS_MASK)})
  hp = _hp(wga_beta=2.0)
  nll_t = lambda z: losses.cross_entropy(z[:, :-1], batch.label[:, 1:])
  w = jnp.exp(-2.0 * nll_t(logits))
  want = jax.grad(lambda z: -jnp.sum(losses.sequence_mean(w * nll_t(z), LOSS_MASK[:, :-1])))(logits)
  got = jax.grad(lambda z: jnp.sum(objectives.wga(z, batch, None, hp)))(logits)
  # The same gradient by two float32 expressions: the weight w = exp(-2 nll) moves by 2 x an
  # NLL's bound relative to itself, the NLL's gradient (softmax - one-hot) by its roundings.
  tol = (2 * _tol(logits) + tolerances.gamma(5 + 12)) * float(jnp.abs(want).max())
  assert_within(got, want, tol)


OU = {'wga': objectives.wga, 'satimp': objectives.satimp, 'ceu': objectives.ceu}


@pytest.mark.parametrize('method', [f'{m}{v}' for m in OU for v in ('', '_descent')])
def test_each_entry_runs_one_lm_step(method):
  apply_fn, params, new_params, metrics = _one_step(method, {})
  batch = _step_batch()
  retain = {'tokens': batch['tokens'][::-1], 'loss_mask': batch['loss_mask'][::-1]}
  hp = _hp(retain_weight=0.5)
  want = jnp.mean(OU[method.split('_')[0]](apply_fn(params, batch['tokens']),
                                            unlearn.lm_batch(batch), None, hp))
  if method.endswith('_descent'):
    want += 0.5 * jnp.mean(losses.answer_nll(apply_fn(params, retain['tokens']),
                                             retain['tokens'], retain['loss_mask']))
  # The step's program recomputes the logits (test_lm_unlearning._tiny_lm: 1 layer x 8
  # stages + norm + head, reductions <= 32 terms: the first-order logit bound delta): a
  # loss above moves by at most 2 x its NLLs' change (2 delta each), the retain NLL's half
  # by delta, plus the float32 losses' own roundings.
  zmax = float(jnp.abs(apply_fn(params, batch['tokens'])).max())
  delta = tolerances.logits_bound(tolerances.reordered_sum(32), 8 + 2, zmax)
  tol = 5 * delta + tolerances.gamma(7 + 16) * (abs(float(want)) + 2 * zmax + np.log(7))
  assert abs(float(metrics['loss']) - float(want)) <= tol
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  assert np.all(np.isfinite(flat(new_params)))
  assert np.any(flat(new_params) != flat(params))
