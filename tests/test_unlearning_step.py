"""cure_jax.make_unlearning_step on models the library does not ship (an MLP, a tiny ViT)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cure_jax
from cure_jax.classification import unlearn, defaults, unlearn_batches
from cure_jax.infra import sharding
from cure_jax.unlearning import losses, methods, user_step
from tests import helpers, tolerances

K, FORGET, B = 4, 1, 8
CURE = ('ghr', 'gsr', 'grogu', 'grogu_t1', 'ghr_descent', 'gsr_descent', 'grogu_descent',
        'grogu_t1_descent')


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x_BxHxWxC):
    h = nn.relu(nn.Dense(16)(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)))
    return nn.Dense(K)(h)


class TinyViT(nn.Module):
  """Patch embedding (Dense on 4x4 patches), LayerNorm, self-attention, MLP head."""

  @nn.compact
  def __call__(self, x_BxHxWxC):
    b, h, w, c = x_BxHxWxC.shape
    p = 4
    patches_BxNxP = x_BxHxWxC.reshape(b, h // p, p, w // p, p, c).transpose(
        0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * c)
    x_BxNxD = nn.Dense(8)(patches_BxNxP)
    x_BxNxD = x_BxNxD + self.param('pos', nn.initializers.normal(0.02), x_BxNxD.shape[1:])
    x_BxNxD = x_BxNxD + nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x_BxNxD))
    y_BxD = x_BxNxD.mean(axis=1)
    return nn.Dense(K)(nn.gelu(nn.Dense(16)(y_BxD)))


def _data(seed, n):
  """Separable classes: a class-dependent bright quadrant plus noise."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % K
  x = rng.normal(0, 0.3, (n, 8, 8, 1)).astype(np.float32)
  for i, c in enumerate(y):
    x[i, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 1.5
  return x, y.astype(np.int32)


def _pretrained(model):
  x, y = _data(0, 64)
  params = model.init(jax.random.key(0), x[:1])['params']
  tx = optax.adam(0.03)

  @jax.jit
  def fit(params):
    def one(carry, _):
      params, opt = carry
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          model.apply({'params': p}, x), y).mean())(params)
      upd, opt = tx.update(g, opt, params)
      return (optax.apply_updates(params, upd), opt), None
    return jax.lax.scan(one, (params, tx.init(params)), None, length=60)[0][0]
  return fit(params)


@pytest.fixture(scope='module')
def setups():
  out = {}
  for model in (MLP(), TinyViT()):
    params = _pretrained(model)
    apply_fn = lambda p, x, model=model: model.apply({'params': p}, x)
    out[type(model).__name__] = (apply_fn, params)
  return out


def _batches():
  x, y = _data(0, 64)   # training examples: the forget set is part of what the model learnt
  forget = {'inputs': x[y == FORGET][:B], 'labels': y[y == FORGET][:B]}
  retain = {'inputs': x[y != FORGET][:B], 'labels': y[y != FORGET][:B]}
  return forget, retain


def _forget_acc(apply_fn, params, forget):
  return float(np.mean(np.argmax(apply_fn(params, forget['inputs']), -1) == forget['labels']))


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])


@pytest.mark.parametrize('model', ['MLP', 'TinyViT'])
@pytest.mark.parametrize('name', helpers.step_methods())
def test_every_method_runs_on_user_models(setups, model, name):
  apply_fn, params = setups[model]
  forget, retain = _batches()
  unl = cure_jax.make_unlearning_step(apply_fn, name, teacher=None, forget_mask=[FORGET],
                                      hparams={'lr': 0.05, 'salun_fraction': 0.3},
                                      data_sizes=(B, B))   # read by scrub, salun_descent
  state = unl.init(params, forget_data=forget)
  before = _forget_acc(apply_fn, params, forget)
  assert before > 0.5   # the pretrained model knows the class: a drop is observable
  for i in range(3):
    state, metrics = unl.step(state, forget, retain, jax.random.key(i))
    assert np.isfinite(metrics['loss']) and bool(metrics['finite'])
  assert int(state['step']) == 3
  assert np.all(np.isfinite(_flat(state['params'])))
  # The fitted model's CE gradient is tiny: finetune's (retain), simnpo's (x 0.125) and
  # satimp's (x 0.1 p^5 (1 - p)) updates round away in float32 within three steps.
  if name not in ('finetune', 'simnpo', 'satimp'):
    assert np.any(_flat(state['params']) != _flat(params))
  if name in CURE:
    assert _forget_acc(apply_fn, state['params'], forget) <= before


def _ghr_reference(logits, teacher, mask):
  """Mean CE against the teacher's best class outside the mask (written out in numpy)."""
  logits, teacher = np.asarray(logits, np.float64), np.asarray(teacher, np.float64)
  labels = np.argmax(np.where(mask, -np.inf, teacher), -1)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  return -np.mean(np.take_along_axis(logp, labels[..., None], -1))


def _loss_tol(logits, fan_in, layers):
  """How far a step's float32 mean CE can be from :func:`_ghr_reference` on ``logits`` taken
  outside the step: the step recomputes the logits in its own program (each layer's
  ``fan_in``-term dot products reordered: :func:`tests.tolerances.logits_bound`), a CE moves
  by at most twice its logits' change, and the float32 log-softmax and mean round a few
  times (``K`` classes, ``logits.size`` terms) on values of size ``2 max|z| + log K``."""
  zmax = float(np.abs(np.asarray(logits)).max())
  delta = tolerances.logits_bound(tolerances.reordered_sum(fan_in), layers, zmax)
  return 2 * delta + tolerances.gamma(2 * K + np.size(logits)) * (2 * zmax + np.log(K))


def test_teacher_forms_agree_and_match_the_ghr_formula(setups):
  apply_fn, params = setups['MLP']
  forget, _ = _batches()
  teacher_params = jax.tree.map(lambda p: p * 0.9, params)
  teacher_logits = apply_fn(teacher_params, forget['inputs'])
  mask = np.arange(K) == FORGET
  want = _ghr_reference(apply_fn(params, forget['inputs']), teacher_logits, mask)
  results = []
  for teacher, fmask, batch in [
      (teacher_params, [FORGET], forget),
      (lambda x: apply_fn(teacher_params, x), mask, forget),
      ('batch', [FORGET], dict(forget, teacher_logits=teacher_logits))]:
    unl = cure_jax.make_unlearning_step(apply_fn, 'ghr', teacher=teacher, forget_mask=fmask,
                                        hparams={'lr': 0.1})
    state, metrics = unl.step(unl.init(params), batch, None, jax.random.key(0))
    # The MLP's longest dot products: 8 x 8 x 1 = 64 inputs (about 1e-4 of a loss near 3).
    logits = apply_fn(params, forget['inputs'])
    assert abs(float(metrics['loss']) - want) <= _loss_tol(logits, 64, 2)
    results.append(_flat(state['params']))
  # The teacher's logits computed in the step's program, in a function's or outside: one SGD
  # step whose reductions (64 inputs, a batch of 8) may be ordered differently (7.6e-6).
  for other in results[1:]:
    assert tolerances.relative_norm(other, results[0]) <= tolerances.reordered_run(1, 64)


class TinyLM(nn.Module):
  @nn.compact
  def __call__(self, tokens_BxT):
    return nn.Dense(11)(nn.Embed(11, 8)(tokens_BxT))   # logits BxTxV


def test_per_token_mask_rule_for_lm_logits():
  model = TinyLM()
  tokens = np.random.default_rng(0).integers(0, 11, (4, 6)).astype(np.int32)
  params = model.init(jax.random.key(0), tokens)['params']
  apply_fn = lambda p, t: model.apply({'params': p}, t)
  # Forget the next token wherever it is token 3: a per-position mask over the vocabulary.
  rule = lambda b: (b['labels'] == 3)[..., None] & (jnp.arange(11) == 3)
  unl = cure_jax.make_unlearning_step(apply_fn, 'ghr', teacher=None, forget_mask=rule,
                                      hparams={'lr': 0.1})
  batch = {'inputs': tokens, 'labels': np.roll(tokens, -1, axis=1)}
  state, metrics = unl.step(unl.init(params), batch, None, jax.random.key(0))
  logits = apply_fn(params, tokens)
  mask = (batch['labels'] == 3)[..., None] & (np.arange(11) == 3)
  # Embed then Dense(11) of 8 features: one 8-term dot product per logit.
  assert abs(float(metrics['loss']) - _ghr_reference(logits, logits, mask)) <= _loss_tol(
      logits, 8, 1)
  assert np.all(np.isfinite(_flat(state['params'])))


# ---- the runner takes the same step ----------------------------------------------------------

@pytest.mark.parametrize('name', ['grogu_descent', 'salun'])
def test_step_equals_the_runners_step(name):
  model, b, n, m, steps = helpers.BNMLP(K), 8, 12, 20, 2
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  rng = np.random.default_rng(0)
  forget_x = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
  forget_y = np.full(16, FORGET, np.int32)
  retain_x = rng.integers(0, 256, (1, 24, 8, 8, 1), dtype=np.uint8)
  retain_y = rng.integers(0, K, (1, 24)).astype(np.int32)
  mean, std = np.float32(0.5), np.float32(0.3)
  data = unlearn.RunData(forget_x, forget_y, n, retain_x, retain_y, m,
                         np.arange(K) == FORGET)
  run = helpers.run_of(defaults.classification_config(), name, batch_size=b,
                       epochs=steps * b / n, lr=0.05, momentum=0.9, grogu_impl='fast',
                       salun_fraction=0.3)
  hp = run.hparams
  key = np.asarray(jax.random.key_data(jax.random.key(1)))
  programs = unlearn.Programs(model, [mean], [std], sharding.make_mesh(jax.devices()[:1]))
  [want], _, _, _ = unlearn.run_group(programs, run, data, [variables], [key], False)

  norm = lambda x: (x.astype(np.float32) / 255.0 - mean) / std
  apply_fn = lambda p, x: model.apply({'params': p, 'batch_stats': variables['batch_stats']},
                                      x, train=False)
  unl = cure_jax.make_unlearning_step(
      apply_fn, name, teacher=None, forget_mask=[FORGET],
      hparams={k: hp[k] for k in ('lr', 'momentum', 'grogu_impl', 'salun_fraction')})
  state = unl.init(variables['params'],
                   forget_data={'inputs': norm(forget_x[:n]), 'labels': forget_y[:n]})
  typed = jax.random.wrap_key_data(key)
  for i in range(steps):
    fi = unlearn_batches.cycled_batch(jax.random.fold_in(typed, unlearn_batches._SHUFFLE_STREAM), i,
                                      n, 16, b)
    ri = unlearn_batches.cycled_batch(jax.random.fold_in(typed, unlearn_batches._RETAIN_STREAM), i,
                                      m, 24, b)
    forget = {'inputs': norm(forget_x[np.asarray(fi)]), 'labels': forget_y[np.asarray(fi)]}
    retain = {'inputs': norm(retain_x[0][np.asarray(ri)]), 'labels': retain_y[0][np.asarray(ri)]}
    state, _ = unl.step(state, forget, retain, jax.random.fold_in(typed, i))
  # The runner's program and the public step's: the same 2 SGD-momentum steps in other float32
  # orders. Longest reductions: GROGU's inner products over all the parameters (1140), the
  # first Dense's 64 inputs (SalUn): 2.7e-4 worst case, far below a wrong batch or update.
  terms = max(64, _flat(want).size)
  assert tolerances.relative_norm(_flat(state['params']), _flat(want)) <= (
      tolerances.reordered_run(steps, terms))


def test_four_device_mesh_equals_one_device(setups):
  assert len(jax.devices()) >= 4   # tests/conftest.py forces four host devices
  apply_fn, params = setups['MLP']
  forget, retain = _batches()
  mesh = sharding.make_mesh(jax.devices()[:4])
  out = []
  for m in (None, mesh):
    unl = cure_jax.make_unlearning_step(apply_fn, 'ghr_descent', teacher=None,
                                        forget_mask=[FORGET], hparams={'lr': 0.05,
                                                                       'momentum': 0.9},
                                        mesh=m)
    state = unl.init(params if m is None else sharding.replicate(params, m))
    f, r = (forget, retain) if m is None else (sharding.shard_batch(forget, m),
                                               sharding.shard_batch(retain, m))
    for i in range(3):
      state, _ = unl.step(state, f, r, jax.random.key(i))
    if m is not None:
      assert state['params']['Dense_0']['kernel'].sharding.is_fully_replicated
    out.append(_flat(state['params']))
  # Four devices reorder each step's batch reductions (the two batches' rows); 3 steps.
  terms = len(forget['labels']) + len(retain['labels'])
  assert tolerances.relative_norm(out[1], out[0]) <= tolerances.reordered_run(3, terms)


# ---- user errors: one clear line ---------------------------------------------------------

def test_user_errors(setups):
  apply_fn, params = setups['MLP']
  forget, _ = _batches()
  make = lambda name, **kw: cure_jax.make_unlearning_step(
      apply_fn, name, teacher=None, forget_mask=kw.pop('forget_mask', [FORGET]), **kw)
  with pytest.raises(ValueError, match="Unknown unlearning method 'grgu'"):
    make('grgu')
  with pytest.raises(ValueError, match=r"hparams\['lrr'\]: unknown hyperparameter"):
    make('ghr', hparams={'lrr': 0.1})
  for bad in ({'lr': 'fast'}, {'lr': -0.1}, {'temperature': 0}, {'eps': -1}):
    with pytest.raises(ValueError, match=r"hparams\['\w+'\]=.* is not allowed: use a number"):
      make('gsr', hparams=bad)
  with pytest.raises(ValueError, match=r"hparams\['grogu_impl'\]='slow'"):
    make('grogu', hparams={'grogu_impl': 'slow'})
  with pytest.raises(ValueError, match=r"hparams\['momentum'\]=1.0 is not allowed: use a fraction"):
    make('ghr', hparams={'momentum': 1.0})
  with pytest.raises(ValueError, match='forget_mask'):
    make('ghr', forget_mask=[-1])
  with pytest.raises(ValueError, match="'randlabel' relabels .* needs class ids"):
    make('randlabel', forget_mask=lambda b: b['labels'] == FORGET)
  with pytest.raises(ValueError, match='needs the whole forget set'):
    make('salun').init(params)
  unl = make('ghr_descent')
  with pytest.raises(ValueError, match='trains on retain data: pass a retain_batch'):
    unl.step(unl.init(params), forget, None, jax.random.key(0))
  with pytest.raises(ValueError, match="'batch_stats' collection: .* variables\\['params'\\]"):
    make('ghr').init({'params': params, 'batch_stats': {'mean': jnp.zeros(3)}})
  with pytest.raises(ValueError, match="'batch_stats' collection"):
    cure_jax.make_unlearning_step(apply_fn, 'ghr', teacher={'params': params, 'batch_stats': {}},
                                  forget_mask=[FORGET]).init(params)
  mutable = lambda p, x: (apply_fn(p, x), {'batch_stats': {}})   # Flax's mutable apply
  unl = cure_jax.make_unlearning_step(mutable, 'ghr', teacher=None, forget_mask=[FORGET])
  with pytest.raises(ValueError, match='apply_fn returned a tuple, not a logits array'):
    unl.step(unl.init(params), forget, None, jax.random.key(0))
  with pytest.raises(ValueError, match='apply_fn must be a function'):
    cure_jax.make_unlearning_step(params, 'ghr', teacher=None, forget_mask=[FORGET])


def test_schedule_arguments_are_checked_as_the_command_line_checks_them():
  """Batch sizes, epochs and steps of a scheduled method's helpers: the rules of
  config.unlearn (a ZeroDivisionError or a silent 1 before)."""
  unl = cure_jax.make_unlearning_step(lambda p, x: x @ p['w'], 'scrub', teacher=None,
                                      forget_mask=[0], data_sizes=(8, 8))
  for call, match in ((lambda: unl.total_steps(1.0, 0), 'forget_batch_size=0'),
                      (lambda: unl.total_steps(1.0, -4), 'forget_batch_size=-4'),
                      (lambda: unl.total_steps(1.0, 4, 0), 'retain_batch_size=0'),
                      (lambda: unl.total_steps(0.0, 4), 'epochs=0.0'),
                      (lambda: unl.total_steps(float('nan'), 4), 'epochs=nan'),
                      (lambda: unl.batch_sizes(0), 'batch_size=0'),
                      (lambda: unl.data_at(-1, 4), 'step=-1')):
    with pytest.raises(ValueError, match=match + ' is not allowed'):
      call()
  assert unl.total_steps(1.0, 4) == 4 and unl.batch_sizes(4) == (8, 8)


def test_finite_covers_the_updated_parameters():
  """The loss is taken before the update; an update that overflows is not 'finite'."""
  x, y = jnp.full((4, 3), 1e3), jnp.full(4, 2, jnp.int32)   # class 2, relabelled to 1
  params = {'w': jnp.ones((3, 3))}
  apply_fn = lambda p, x: x @ p['w'] * jnp.arange(3.0)
  make = lambda lr: cure_jax.make_unlearning_step(apply_fn, 'ghr', teacher=None,
                                                  forget_mask=[2], hparams={'lr': lr})
  big, small = make(1e38), make(1e-9)
  _, metrics = big.step(big.init(params), (x, y), None, jax.random.key(0))
  assert bool(jnp.isfinite(metrics['loss'])) and not bool(metrics['finite'])
  assert bool(small.step(small.init(params), (x, y), None, jax.random.key(0))[1]['finite'])


@pytest.mark.parametrize('name', ['grogu', 'grogu_descent'])
def test_grogu_per_token_rule_fast_equals_vmap_and_sequence_reference(name):
  """With BxTxV logits GROGU projects whole-sequence gradients (per-token losses averaged
  over positions): fast == vmap, and both equal an independent per-sequence reference."""
  model = TinyLM()
  tokens = np.random.default_rng(1).integers(0, 11, (4, 6)).astype(np.int32)
  params = model.init(jax.random.key(0), tokens)['params']
  apply_fn = lambda p, t: model.apply({'params': p}, t)
  rule = lambda b: (b['labels'] == 3)[..., None] & (jnp.arange(11) == 3)
  batch = {'inputs': tokens, 'labels': np.roll(tokens, -1, axis=1)}
  out = {}
  for impl in ('fast', 'vmap'):
    unl = cure_jax.make_unlearning_step(apply_fn, name, teacher=None, forget_mask=rule,
                                        hparams={'lr': 1.0, 'grogu_impl': impl})
    state, _ = unl.step(unl.init(params), batch, batch, jax.random.key(0))
    out[impl] = _flat(jax.tree.map(lambda a, b: b - a, params, state['params']))
  rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
  assert rel(out['fast'], out['vmap']) < 1e-4, rel(out['fast'], out['vmap'])
  if name == 'grogu':   # reference: per-sequence GHR / GSR gradients projected by hand
    mask = (batch['labels'] == 3)[..., None] & (np.arange(11) == 3)
    teacher = apply_fn(params, tokens)
    hp = user_step.resolve_hparams(methods.get(name), {'lr': 1.0})

    def seq_grad(loss_fn, j):
      def f(p):
        return jnp.mean(loss_fn(apply_fn(p, tokens[j:j + 1]), teacher[j:j + 1], mask[j:j + 1]))
      return _flat(jax.grad(f)(params))
    total = 0.0
    for j in range(len(tokens)):
      g_h = hp.w_h * seq_grad(losses.ghr, j)
      g_s = hp.w_s * seq_grad(lambda s, t, m: losses.gsr(s, t, m, hp.temperature), j)
      dot = float(np.dot(g_h, g_s))
      total = total + (g_h - dot / (np.dot(g_s, g_s) + hp.eps) * g_s
                       + g_s - dot / (np.dot(g_h, g_h) + hp.eps) * g_h)
    assert rel(out['vmap'], -total / len(tokens)) < 1e-4, rel(out['vmap'], -total / len(tokens))


def test_grogu_t1_with_one_retained_class_is_a_no_op_and_says_so(caplog):
  """Three classes, two forgotten, T = 1: GHR's and GSR's gradients coincide, GROGU's
  projections cancel; the step leaves the parameters and logs why (T = 4 moves them)."""
  params = {'w': jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)), jnp.float32)}
  apply_fn = lambda p, x: x @ p['w']
  batch = (jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32),
           jnp.asarray([0, 1, 0, 1], jnp.int32))
  moved = {}
  for name in ('grogu_t1', 'grogu'):
    unl = cure_jax.make_unlearning_step(apply_fn, name, teacher=None, forget_mask=[0, 1],
                                        hparams={'lr': 0.5, 'grogu_impl': 'vmap'})
    with caplog.at_level('WARNING'):
      state, _ = unl.step(unl.init(params), batch, None, jax.random.key(0))
    moved[name] = float(jnp.abs(state['params']['w'] - params['w']).max())
  assert moved['grogu_t1'] < 1e-6 < 1e-3 < moved['grogu']
  assert 'grogu_t1: with one retained class and T = 1 of 3' in caplog.text
  assert 'grogu:' not in caplog.text
