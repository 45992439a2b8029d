"""SalUn, SCRUB, DELETE and GROGU T1 Descent: directions against hand-written references on
a tiny Flax MLP, and SalUn's freezing under momentum (the runner's optimizer).

The formula checks run in float64 (tests/tolerances.py: assert_same_formula): the MLP's
longest reduction has 12 terms (its hidden width; the batch is 7, the inputs 6, the classes
5) and a direction passes at most 16 such stages (forward, loss, backward; LUR's look-ahead
twice), so the bound is 16 float64 reorderings of 12 terms with room for cancellation, 4e-8
of the largest component, where a wrong sign, weight or mask moves it by 1e-3 or more."""
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cure_jax.classification import defaults
from cure_jax.unlearning import hparams, methods
from cure_jax.unlearning.baselines import peers, saliency
from cure_jax.unlearning.batch import Batch, StepInputs
from tests import helpers, tolerances

K, D, B = 5, 6, 7
FORGET = 2
STAGES, TERMS = 16, 12


def _close(got, want):
  tolerances.assert_same_formula(_flat(got), _flat(want), STAGES, TERMS)


class MLP(nn.Module):
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda n: nn.Dense(n, dtype=self.param_dtype, param_dtype=self.param_dtype)
    return dense(K)(nn.tanh(dense(12)(x)))


def _hp(**kw):
  c = defaults.classification_config().unlearn
  values = {k: c[k] for k in hparams.DYNAMIC}
  values.update(momentum=0.9, grogu_impl='vmap', temperature=1.0)
  values.update(kw)
  return types.SimpleNamespace(**values)


@pytest.fixture
def env():
  """The MLP, its parameters and a forget and a retain batch, in float64 for the test."""
  with jax.enable_x64():
    yield _env()


def _env():
  model = MLP(param_dtype=jnp.float64)
  params = model.init(jax.random.key(0), jnp.zeros((1, D), jnp.float64))['params']
  apply = lambda p, x: model.apply({'params': p}, x)
  rng = np.random.default_rng(0)
  mask_K = np.arange(K) == FORGET

  def batch(n, label=None, teacher=True):
    x = rng.normal(size=(n, D))
    y = np.full(n, label) if label is not None else rng.integers(0, K, n)
    return Batch(jnp.asarray(x), jnp.asarray(y),
                 teacher_logits=apply(params, x) if teacher else None,
                 forget_mask=jnp.broadcast_to(mask_K, (n, K)))
  forget, retain = batch(B, FORGET), batch(B, teacher=False)
  return apply, params, forget, retain


def _inputs(env, hp, step=0, aux=None):
  apply, params, forget, retain = env
  return StepInputs(apply, params, forget, retain, jax.random.key(3), hp, step=step, aux=aux)


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _log_softmax(z):
  return z - jax.scipy.special.logsumexp(z, axis=-1, keepdims=True)


# ---- registry and config --------------------------------------------------------------------

def test_dynamic_hparams_exist_in_the_config_and_registry_flags():
  unlearn = defaults.classification_config().unlearn
  assert [k for k in hparams.DYNAMIC if k not in unlearn] == []
  get = methods.get
  assert get('finetune').setting == 'forget' and get('finetune').uses_retain
  assert get('grogu_t1_descent').setting == 'retain'
  assert dict(get('grogu_t1_descent').defaults) == {'temperature': 1.0}
  assert [get(n).setting for n in ('salun', 'delete', 'scrub', 'salun_descent',
                                    'lur_randlabel')] == [
      'forget', 'forget', 'retain', 'retain', 'retain']
  assert get('salun').prepare is not None and get('scrub').prepare is not None
  assert get('delete').prepare is None and get('delete').needs_teacher


# ---- DELETE ---------------------------------------------------------------------------------

def test_delete_direction_is_the_gradient_of_kl_to_the_label_masked_teacher(env):
  apply, params, forget, _ = env

  def reference(p):  # KL(p_t ‖ q) with the true-label logit at -1e10, batch mean, T = 1
    z = np.array(forget.teacher_logits, np.float64)
    z[np.arange(B), np.asarray(forget.label)] = -1e10
    target = np.exp(z - z.max(-1, keepdims=True))
    target /= target.sum(-1, keepdims=True)
    log_q = _log_softmax(apply(p, forget.inputs))
    safe = np.where(target > 0, target, 1.0)
    return jnp.mean(jnp.sum(target * (np.log(safe) - log_q), -1))

  value, g = methods.get('delete').direction(_inputs(env, _hp()))
  ref_value, ref_g = jax.value_and_grad(reference)(params)
  _close(value, ref_value)
  _close(g, ref_g)


# ---- GROGU T1 Descent -----------------------------------------------------------------------

def test_grogu_t1_descent_adds_the_retain_gradient_to_grogu(env):
  apply, params, _, retain = env
  hp = _hp(temperature=1.0, retain_weight=0.7)
  _, g = methods.get('grogu_t1_descent').direction(_inputs(env, hp))
  _, g_forget = methods.get('grogu_t1').direction(_inputs(env, hp))
  ce = lambda p: jnp.mean(-_log_softmax(apply(p, retain.inputs))[jnp.arange(B), retain.label])
  g_retain = jax.grad(ce)(params)
  _close(_flat(g), _flat(g_forget) + 0.7 * _flat(g_retain))


# ---- SCRUB ----------------------------------------------------------------------------------

def _kl_t(student, teacher, t):
  p = jax.nn.softmax(teacher / t)
  return t * t * jnp.sum(p * (jnp.log(p) - _log_softmax(student / t)), -1)


@pytest.mark.parametrize('phase,kind', [(0, 'max'), (1, 'min')])
def test_scrub_direction_per_phase(env, phase, kind):
  """Phase 0 (the forget pass) ascends the forget KL, phase 1 (the retain pass) descends
  gamma*CE + alpha*KL; both add the weight decay (tests/test_peer_schedules.py: which
  steps are which phase)."""
  apply, params, forget, retain = env
  hp = _hp(scrub_temperature=2.0, scrub_alpha=0.3, scrub_gamma=0.9, scrub_weight_decay=0.01)
  moved = jax.tree.map(lambda x: x + 0.3, params)   # the student has left the teacher
  aux = methods.get('scrub').prepare(apply, params, forget, None, hp)
  inputs = StepInputs(apply, moved, forget, retain, jax.random.key(3), hp, aux=aux,
                      phase=jnp.int32(phase))
  value, g = methods.get('scrub').direction(inputs)

  def max_ref(p):   # ascend the forget KL: minimise its negative
    return -jnp.mean(_kl_t(apply(p, forget.inputs), forget.teacher_logits, 2.0))

  def min_ref(p):
    logits = apply(p, retain.inputs)
    ce = -_log_softmax(logits)[jnp.arange(B), retain.label]
    return jnp.mean(0.9 * ce + 0.3 * _kl_t(logits, apply(params, retain.inputs), 2.0))
  ref_value, ref_g = jax.value_and_grad(max_ref if kind == 'max' else min_ref)(moved)
  _close(value, ref_value)
  _close(_flat(g), _flat(ref_g) + 0.01 * _flat(moved))
  if kind == 'max':
    assert value < 0


# ---- SalUn ----------------------------------------------------------------------------------

@pytest.mark.parametrize('fraction', [0.1, 0.5, 0.77])
def test_top_fraction_mask_selects_exactly_the_largest(fraction):
  scores = {'a': jnp.asarray(np.random.default_rng(1).random((13, 7))),
            'b': jnp.asarray(np.random.default_rng(2).random(30))}
  mask = saliency.top_fraction_mask(scores, jnp.float32(fraction))
  flat_s, flat_m = _flat(scores), _flat(mask)
  assert flat_m.sum() == int(np.floor(fraction * flat_s.size))
  assert flat_s[flat_m].min() > flat_s[~flat_m].max()


def test_saliency_gradient_matches_the_full_batch_gradient(env):
  apply, params, forget, _ = env
  chunked = saliency.forget_gradient(apply, params, forget.inputs, forget.label, chunk=3)
  ce = lambda p: jnp.mean(-_log_softmax(apply(p, forget.inputs))[jnp.arange(B), forget.label])
  _close(chunked, jax.grad(ce)(params))


def _run_salun(env, name, steps, hp):
  """The runner's update rule: SGD(1, momentum) scaled by lr, `steps` times."""
  apply, params, forget, _ = env
  method = methods.get(name)
  aux = method.prepare(apply, params, forget, jax.random.key(1), hp)
  tx = optax.sgd(1.0, momentum=hp.momentum)
  opt_state, p = tx.init(params), params
  for step in range(steps):
    inputs = StepInputs(apply, p, forget, env[3], jax.random.key(step), hp,
                                step=jnp.int32(step), aux=aux)
    _, direction = method.direction(inputs)
    updates, opt_state = tx.update(direction, opt_state, p)
    p = optax.apply_updates(p, jax.tree.map(lambda u: hp.lr * u, updates))
  return aux, p


@pytest.mark.parametrize('name', ['salun', 'salun_descent'])
def test_salun_frozen_weights_stay_bit_identical_under_momentum(env, name):
  params = env[1]
  hp = _hp(salun_fraction=0.3, salun_weight_decay=0.01, lr=0.5, momentum=0.9)
  mask, after = _run_salun(env, name, 5, hp)
  m, before, now = _flat(mask), _flat(params), _flat(after)
  assert m.sum() == int(0.3 * m.size)
  np.testing.assert_array_equal(now[~m], before[~m])     # bit-identical
  assert np.all(now[m] != before[m])


def test_salun_direction_is_masked_randlabel_gradient_plus_weight_decay(env):
  apply, params, forget, _ = env
  hp = _hp(salun_fraction=0.5, salun_weight_decay=0.01)
  mask = peers.salun_prepare(apply, params, forget, None, hp)
  inputs = _inputs(env, hp, aux=mask)
  _, g = methods.get('salun').direction(inputs)
  # Reference: the same random labels (uniform outside the forget class), by hand.
  allowed = np.arange(K) != FORGET
  logits = jnp.broadcast_to(jnp.where(allowed, 0.0, -1e9), (B, K))
  labels = jax.random.categorical(inputs.rng, logits, axis=-1)
  ce = lambda p: jnp.mean(-_log_softmax(apply(p, forget.inputs))[jnp.arange(B), labels])
  ref = _flat(jax.grad(ce)(params)) + 0.01 * _flat(params)
  m = _flat(mask)
  _close(_flat(g)[m], ref[m])
  assert np.all(_flat(g)[~m] == 0.0)
  # The mask: the largest half of |∇ CE_forget(true labels)|.
  score = np.abs(_flat(jax.grad(lambda p: jnp.mean(
      -_log_softmax(apply(p, forget.inputs))[jnp.arange(B), forget.label]))(params)))
  assert score[m].min() >= score[~m].max()


# ---- LUR ------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['lur', 'lur_randlabel'])
def test_lur_is_the_look_ahead_objective_by_hand(env, name):
  apply, params, forget, retain = env
  hp = _hp(lur_alpha=0.2, lur_w_r=0.7, lur_w_f=1.3)
  inputs = _inputs(env, hp)
  allowed = np.arange(K) != FORGET
  labels = jax.random.categorical(inputs.rng, jnp.broadcast_to(
      jnp.where(allowed, 0.0, -1e9), (B, K)), axis=-1)

  def ce(p, x, y):
    return jnp.mean(-_log_softmax(apply(p, x))[jnp.arange(B), y])

  def objective(p):
    g_r = jax.grad(ce)(p, retain.inputs, retain.label)
    ahead = jax.tree.map(lambda a, g: a - 0.2 * g, p, g_r)
    l_u = (-ce(ahead, forget.inputs, forget.label) if name == 'lur'
           else ce(ahead, forget.inputs, labels))
    return 0.7 * ce(p, retain.inputs, retain.label) + 1.3 * l_u
  value, g = methods.get(name).direction(inputs)
  ref_value, ref_g = jax.value_and_grad(objective)(params)
  _close(value, ref_value)
  _close(g, ref_g)


# ---- end to end through the compiled runner (cure_jax.classification.unlearn) -------------------

class TinyConvNet(nn.Module):
  """Conv + BatchNorm + Dense: the runner's model interface at a fraction of the compile time."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    return nn.Dense(K)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope='module')
def runner():
  from cure_jax.classification import unlearn
  from cure_jax.infra import sharding
  model = TinyConvNet()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
  rng = np.random.default_rng(0)
  b, n, m = 8, 12, 20
  mask = np.arange(K) == FORGET
  forget_x = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
  retain_x = rng.integers(0, 256, (1, 24, 8, 8, 1), dtype=np.uint8)
  data = unlearn.RunData(forget_x, np.full(16, FORGET, np.int32), n, retain_x,
                         rng.integers(0, K, (1, 24)).astype(np.int32), m, mask)
  programs = unlearn.Programs(model, [0.5], [0.3], sharding.make_mesh(jax.devices()[:1]))
  config = defaults.classification_config()

  def run(name, **overrides):
    kw = dict(batch_size=b, epochs=4 * b / n, lr=0.05, momentum=0.9, grogu_impl='vmap')
    planned = helpers.run_of(config, name, **dict(kw, **overrides))
    key = np.asarray(jax.random.key_data(jax.random.key(1)))
    params, bad, _, _ = unlearn.run_group(programs, planned, data, [variables], [key],
                                          vmapped=False)
    assert bad == [-1]
    return params[0]
  return variables, run


@pytest.mark.parametrize('name', ['salun', 'salun_descent', 'scrub', 'delete',
                                  'grogu_t1_descent'])
def test_four_steps_through_the_runner(runner, name):
  variables, run = runner
  extra = {'salun_fraction': 0.3} if name.startswith('salun') else {}
  before, after = _flat(variables['params']), _flat(run(name, **extra))
  assert np.all(np.isfinite(after))
  changed = after != before
  if name.startswith('salun'):   # only the salient 30 % moved; the rest is bit-identical
    assert 0.29 * before.size < changed.sum() <= 0.3 * before.size + 1
  else:
    assert changed.mean() > 0.5

