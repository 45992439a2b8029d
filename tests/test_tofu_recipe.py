"""open-unlearning's TOFU recipe, point by point (configs/tofu.py cites their code): each
switch against a computation written here from Hugging Face Trainer 4.45's and their code."""
import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cure_jax.infra import train_state
from cure_jax.infra.rules import ConfigError
from cure_jax.lm import defaults as lm_config, train, unlearn, validate
from cure_jax.weights import pretrained
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.unlearning import hparams, objectives
from cure_jax.unlearning.batch import StepInputs, retain_loss
from tests import tiny_llama, tolerances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 128   # >= 100, so their label -100 indexes entry V - 100 as in a real vocabulary


def _load_config(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'configs', name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _hf_linear(step, warmup, total):
  """transformers optimization.py ``_get_linear_schedule_with_warmup_lr_lambda``."""
  if step < warmup:
    return float(step) / float(max(1, warmup))
  return max(0.0, float(total - step) / float(max(1, total - warmup)))


# Schedule values at lr 0.1: a handful of float32 roundings (ratios, products, the cosine)
# of values <= lr: within lr gamma(8), far below a step's rate off by one (lr / total).
SCHEDULE_TOL = 0.1 * tolerances.gamma(8)


def _cfg(**kw):
  base = dict(lr=0.1, warmup_fraction=0.3, optimizer='sgd', momentum=0.0, weight_decay=0.0)
  return ml_collections.ConfigDict(dict(base, **kw))


# ---- learning-rate schedules ---------------------------------------------------------------

def test_unlearning_linear_schedule_is_hf_get_linear_schedule_with_warmup():
  total = 10
  tx = unlearn.make_optimizer(_cfg(lr_schedule='linear'), total)
  params = {'w': jnp.zeros(2)}
  state = tx.init(params)
  for step in range(total + 2):   # SGD on a unit gradient: the update is -lr(step)
    updates, state = tx.update({'w': jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates['w'], -0.1 * _hf_linear(step, 3, total), rtol=0,
                               atol=SCHEDULE_TOL)


def test_unlearning_constant_schedule_stays_the_default():
  tx = unlearn.make_optimizer(_cfg(), 10)    # no lr_schedule key: this loop's own choice
  params = {'w': jnp.zeros(1)}
  state = tx.init(params)
  seen = []
  for _ in range(10):
    updates, state = tx.update({'w': jnp.ones(1)}, state, params)
    seen.append(-float(updates['w'][0]))
  np.testing.assert_allclose(seen, [0.0, 0.1 / 3, 0.2 / 3] + [0.1] * 7, rtol=0, atol=SCHEDULE_TOL)


def test_fine_tuning_linear_schedule_decays_to_zero():
  cfg = ml_collections.ConfigDict(dict(lr=1e-5, warmup_fraction=0.2, lr_schedule='linear'))
  schedule = train.lr_schedule(cfg, 25)
  for step in range(27):
    assert float(schedule(step)) == pytest.approx(1e-5 * _hf_linear(step, 5, 25),
                                                  abs=1e-5 * tolerances.gamma(8))
  cosine = train.lr_schedule(ml_collections.ConfigDict(dict(lr=1e-5, warmup_fraction=0.2)),
                             25)
  # The default: cosine to a tenth (its float32 roundings as above, at lr 1e-5).
  assert float(cosine(25)) == pytest.approx(1e-6, abs=1e-5 * tolerances.gamma(8))


def test_grad_clip_caps_the_global_norm():
  tx = unlearn.make_optimizer(_cfg(warmup_fraction=0.0, lr=1.0, grad_clip=1.0), 4)
  params = {'a': jnp.zeros(1), 'b': jnp.zeros(1)}
  updates, _ = tx.update({'a': jnp.array([3.0]), 'b': jnp.array([4.0])}, tx.init(params), params)
  # The global norm (2 squares, a sum, a root), the ratio and the scaling: <= 8 roundings.
  np.testing.assert_allclose([updates['a'][0], updates['b'][0]], [-0.6, -0.8],
                             rtol=tolerances.gamma(8))


# ---- steps and epochs ----------------------------------------------------------------------

def _hf_stream(num_items, micro, accum, epochs, orders):
  """HF Trainer 4.45's optimizer steps: micro-batches of every epoch's order (the last one
  kept), a step each ``total_batched_samples % accum == 0``, stopped at max_steps."""
  max_steps = int(np.ceil(epochs * max(int(np.ceil(num_items / micro)) // accum, 1)))
  steps, pending, total = [], [], 0
  for epoch in range(epochs):
    for start in range(0, num_items, micro):
      pending.append(orders[epoch][start:start + micro])
      total += 1
      if total % accum == 0:
        steps.append(np.concatenate(pending))
        pending = []
        if len(steps) == max_steps:
          return steps
  return steps


def test_unlearning_stream_keeps_the_partial_batch_and_spans_epochs():
  # 10 items, micro-batches of 2, 2 per step: 5 micro-batches an epoch, so every step after
  # the second spans an epoch end and 2 x 3 = 6 steps leave the last epoch's tail unread.
  got = list(unlearn.stream_batches(10, 7, 2, 2, epochs=3, seed=0))
  assert len(got) == train.stream_steps(10, 2, 2, 3) == 6
  stream = np.concatenate([f for f, _ in got])
  for epoch in (stream[:10], stream[10:20]):
    assert sorted(epoch.tolist()) == list(range(10))   # every item once per epoch
  assert len(set(stream[20:].tolist())) == 4
  assert all(len(f) == len(r) == 4 and r.max() < 7 for f, r in got)
  dropped = list(unlearn.paired_batches(10, 7, 4, epochs=3, seed=0))
  assert len(dropped) == 6 and all(len(set(np.concatenate(
      [f for f, _ in dropped[i:i + 2]]).tolist())) == 8 for i in (0, 2, 4))


def test_fine_tuning_stream_is_hf_steps_over_the_epoch_orders():
  orders = [np.random.default_rng([5, e]).permutation(12) for e in range(3)]
  # 6 micro-batches an epoch, 4 a step: max_steps 3, and the second step spans epochs 0-1.
  want = _hf_stream(12, 2, 4, 3, orders)
  total = train.stream_steps(12, 2, 4, 3)
  assert total == len(want) == 3
  for step in range(total):
    np.testing.assert_array_equal(train.stream_indices(12, 2, 4, step, seed=5), want[step])
  with pytest.raises(ValueError, match='config.finetune.drop_last=False'):
    train.check_stream(11, 2, 4, 'finetune', 'original items')   # a partial micro-batch
  with pytest.raises(ValueError, match='at least grad_accum=4'):
    train.check_stream(6, 2, 4, 'finetune', 'original items')


# ---- the token-mean NLL --------------------------------------------------------------------

def _qa(seed, rows=3, width=7):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, V, (rows, width)).astype(np.int32)
  mask = np.zeros((rows, width), np.float32)
  for b, (start, stop) in enumerate([(1, 5), (2, 3), (0, 2)][:rows]):   # uneven answers
    mask[b, start:stop] = 1.0
  return {'tokens': tokens, 'loss_mask': mask}


def _np_nll(logits, tokens):
  logits = np.asarray(logits, np.float64)[:, :-1]
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  return logz - np.take_along_axis(logits, tokens[:, 1:, None], -1)[..., 0]


def _np_token_mean(logits, batch):
  mask = batch['loss_mask'][:, :-1]
  return float((_np_nll(logits, batch['tokens']) * mask).sum() / mask.sum())


def _nll_tol(logits, recomputed=False):
  """Float32 token NLLs (and means of them) against the float64 formulas: a log-sum-exp over
  V classes, a subtraction and a mean over <= 21 tokens round at most V + 24 times on values
  of size 2 max|z| + log V. ``recomputed``: the step recomputes the logits of _tiny_lm in its
  own program (1 layer x 8 stages + norm + head, reductions of <= 32 terms: the first-order
  logit bound), which moves an NLL by at most twice that."""
  tol = tolerances.nll_bound(logits, V, 24)
  if recomputed:
    zmax = float(np.abs(np.asarray(logits)).max())
    tol += 2 * tolerances.logits_bound(tolerances.reordered_sum(32), 8 + 2, zmax)
  return tol


def test_token_mean_is_the_micro_batch_token_mean():
  batch = _qa(0)
  logits = jax.random.normal(jax.random.key(1), batch['tokens'].shape + (V,)) * 3
  want = _np_token_mean(logits, batch)
  hp = hparams.HParams(hparams.DEFAULTS, {})
  got = jnp.mean(objectives.gradasc(logits, unlearn.lm_batch(batch, True), None, hp))
  assert abs(float(got) + want) <= _nll_tol(logits)
  inputs = StepInputs(lambda p, t: logits, None, None, unlearn.lm_batch(batch, True), None, hp)
  assert abs(float(retain_loss(inputs, None)) - want) <= _nll_tol(logits)
  per_sequence = jnp.mean(objectives.gradasc(logits, unlearn.lm_batch(batch), None, hp))
  assert abs(float(per_sequence) + want) > 1e-3   # the default differs on uneven answers


def _tiny_lm():
  model = CausalLM(LMConfig(vocab_size=V, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                            d_ff=32, max_len=16))
  params = model.init(jax.random.key(0), jnp.zeros((1, 7), jnp.int32))['params']
  params = jax.tree.map(lambda x: 4.0 * x, params)   # far from uniform: positions differ
  return (lambda p, t: model.apply({'params': p}, t)), params


def _step_loss(method, forget, retain, accum, **switches):
  apply_fn, params = _tiny_lm()
  tx = optax.sgd(1e-3)
  state = train_state.create({'params': jax.tree.map(jnp.copy, params), 'batch_stats': {}}, tx)
  hp = dict(hparams.DEFAULTS, retain_weight=0.5)
  step = unlearn.make_unlearn_step(apply_fn, method, hp, tx, accum, **switches)
  split = lambda b: b if accum == 1 else {k: v.reshape((accum, -1) + v.shape[1:])
                                          for k, v in b.items()}
  _, metrics = step(state, params, split(forget), split(retain), jax.random.key(0))
  return float(metrics['loss']), apply_fn, params


def test_graddiff_step_averages_the_micro_batch_token_means():
  forget, retain = _qa(2, rows=2), _qa(3, rows=2)
  forget = {k: np.concatenate([v, _qa(4, rows=2)[k]]) for k, v in forget.items()}
  retain = {k: np.concatenate([v, _qa(5, rows=2)[k]]) for k, v in retain.items()}
  loss, apply_fn, params = _step_loss('gradasc_descent', forget, retain, 2, token_mean=True)
  halves = lambda b, i: {k: v[2 * i:2 * i + 2] for k, v in b.items()}
  want = np.mean([-_np_token_mean(apply_fn(params, halves(forget, i)['tokens']), halves(forget, i))
                  + 0.5 * _np_token_mean(apply_fn(params, halves(retain, i)['tokens']),
                                         halves(retain, i)) for i in range(2)])
  # Forget and 0.5 x retain token means: their NLLs' bound, 1.5 times.
  logits = apply_fn(params, np.concatenate([forget['tokens'], retain['tokens']]))
  assert abs(loss - want) <= 1.5 * _nll_tol(logits, recomputed=True)


# ---- UNDIAL on every position --------------------------------------------------------------

def _np_undial_all(student, teacher, batch, beta):
  """open-unlearning's compute_undial_loss on a right-padded micro-batch of their width (the
  longest row): labels -100 outside the answer, which index entry V - 100."""
  mask = batch['loss_mask']
  width = max(int(np.flatnonzero(m).max()) + 2 for m in mask)
  s = np.asarray(student, np.float64)[:, :width - 1]
  t = np.asarray(teacher, np.float64)[:, :width - 1]
  labels = np.where(mask[:, :width - 1] > 0, batch['tokens'][:, 1:width], V - 100)
  t = t - beta * np.eye(V)[labels]
  soft = np.exp(t - t.max(-1, keepdims=True))
  soft /= soft.sum(-1, keepdims=True)
  log_q = s - s.max(-1, keepdims=True)
  log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
  return float(-(soft * log_q).sum(-1).mean())


def test_undial_all_positions_is_their_mean_over_the_micro_batch():
  batch = _qa(6)
  batch = {k: np.pad(v, [(0, 0), (0, 4)]) for k, v in batch.items()}   # wider than theirs
  student = jax.random.normal(jax.random.key(2), batch['tokens'].shape + (V,)) * 2
  teacher = jax.random.normal(jax.random.key(3), batch['tokens'].shape + (V,)) * 2
  forget = unlearn.lm_batch(batch)
  weights, mask = unlearn.undial_all_positions(forget, V)
  b = dataclasses.replace(forget, teacher_logits=teacher, forget_mask=mask, weights=weights)
  hp = hparams.HParams(hparams.DEFAULTS, {})
  got = jnp.mean(objectives.undial(student, b, None, hp))
  # A cross-entropy against soft targets: as an NLL (its targets' softmax rounds likewise).
  assert abs(float(got) - _np_undial_all(student, teacher, batch, 10.0)) <= 2 * _nll_tol(
      np.concatenate([student, teacher]))


def test_undial_step_on_all_positions():
  forget, retain = _qa(7), _qa(8)
  loss, apply_fn, params = _step_loss('undial', forget, retain, 1, undial_positions='all')
  logits = apply_fn(params, forget['tokens'])
  # Student and teacher logits both recomputed in the step's program (each within the
  # first-order logit bound delta): the CE moves by 2 delta through the student, and through
  # the teacher by its targets' change (|dp|_1 <= 2 delta) times half the spread of the
  # student's log-probabilities (<= max|z|); plus the float32 roundings (2e-3 here, against
  # a loss of 4 and a 1e-2 gap to the answer-only variant).
  zmax = float(np.abs(np.asarray(logits)).max())
  delta = tolerances.logits_bound(tolerances.reordered_sum(32), 8 + 2, zmax)
  tol = 2 * _nll_tol(logits) + 2 * delta * (1 + zmax)
  assert abs(loss - _np_undial_all(logits, logits, forget, 10.0)) <= tol
  answer_only, _, _ = _step_loss('undial', forget, retain, 1)
  assert abs(answer_only - loss) > 1e-2


# ---- weight decay --------------------------------------------------------------------------

def _decayed(tx, params):
  """The leaves AdamW moves on a zero gradient (Adam's own update is 0 there: decay only)."""
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  flat = jax.tree_util.tree_flatten_with_path(updates)[0]
  return {'/'.join(k.key for k in path) for path, u in flat if float(jnp.abs(u).max()) > 0}


def test_weight_decay_skips_norm_scales_like_hf(tmp_path):
  cfg, weights, _ = tiny_llama.write_hf(tmp_path / 'm', 'untied_gqa')
  params = pretrained.load(tmp_path / 'm').params
  every = {'/'.join(k.key for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  # Hand-listed: what HF's get_decay_parameter_names leaves out of a Llama (its RMSNorms).
  norms = {'norm/scale'} | {f'layers_{i}/{n}/scale' for i in range(cfg['num_hidden_layers'])
                            for n in ('input_layernorm', 'post_attention_layernorm')}
  hf_norms = [n for n in weights if n.endswith('norm.weight')]
  assert norms <= every and len(norms) == len(hf_norms)
  opt = _cfg(optimizer='adamw', weight_decay=0.5, warmup_fraction=0.0, decay_norms=False)
  assert _decayed(unlearn.make_optimizer(opt, 4), params) == every - norms
  assert len(every - norms) == len(weights) - len(hf_norms)
  opt.decay_norms = True
  assert _decayed(unlearn.make_optimizer(opt, 4), params) == every
  tx, _ = train._optimizer_and_step(None, 0.5, 1.0, False, 0.999)
  state = tx.init(params)
  state[1].hyperparams['learning_rate'] = jnp.float32(0.1)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  moved = {'/'.join(k.key for k in path)
           for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]
           if float(jnp.abs(u).max()) > 0}
  assert moved == every - norms


# ---- the configs ---------------------------------------------------------------------------

TOFU = {'unlearn': dict(lr_schedule='linear', drop_last=False, loss_mean='token',
                        undial_positions='all', decay_norms=False, grad_clip=1.0, lr=1e-5,
                        epochs=10, batch_size=32, grad_accum=8, warmup_fraction=0.1,
                        weight_decay=0.01),
        'finetune': dict(lr_schedule='linear', drop_last=False, decay_norms=False,
                         adam_b2=0.999, grad_clip=1.0, lr=1e-5, epochs=5, batch_size=32,
                         grad_accum=8, warmup_fraction=0.2, weight_decay=0.01)}


def test_tofu_sets_open_unlearnings_choices_and_authors_keep_ours():
  tofu = _load_config('tofu')
  for section, values in TOFU.items():
    assert {k: tofu[section][k] for k in values} == values, section
  assert 'undial_descent:retain_weight=0' in tofu.reproduce.runs
  for name in ('authors', 'authors_smollm2'):
    config = _load_config(name)
    assert {k: config.unlearn[k] for k in unlearn.RECIPE_DEFAULTS} == unlearn.RECIPE_DEFAULTS
    assert {k: config.finetune[k] for k in train.RECIPE_DEFAULTS} == train.RECIPE_DEFAULTS


@pytest.mark.parametrize('section, key, value', [
    ('unlearn', 'lr_schedule', 'cosine'), ('unlearn', 'loss_mean', 'batch'),
    ('unlearn', 'undial_positions', 'prompt'), ('finetune', 'lr_schedule', 'constant'),
    ('unlearn', 'grad_clip', -1.0), ('finetune', 'adam_b2', 1.0)])
def test_unknown_recipe_values_fail_in_one_line(section, key, value):
  config = lm_config.get_config('smoke')
  config[section][key] = value
  with pytest.raises(ConfigError, match=f'config.{section}.{key}=') as e:
    validate.validate(config, 1)
  assert '\n' not in str(e.value)
