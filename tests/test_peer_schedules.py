"""Per-epoch schedules (SCRUB, SalUn with retain data): the step -> (epoch, phase, batch,
pass) mapping against hand-written lists, and compiled runs against plain-Python loops that
run the peers' passes (max pass then min pass; forget pass then retain pass) with SGD
momentum 0.9 written out by hand."""
import dataclasses
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cure_jax
from cure_jax.classification import unlearn, defaults, unlearn_batches
from cure_jax.infra import sharding
from cure_jax.lm import unlearn as lm_unlearn
from cure_jax.unlearning import hparams, methods, schedule
from cure_jax.unlearning.baselines import saliency
from tests import helpers, tolerances

K, FORGET = 4, 1
B, N, M = 4, 6, 10          # batch size, forget set, retain subset (passes of 2 and 3 steps)
MEAN, STD = np.float32(0.5), np.float32(0.3)


# ---- the mapping ----------------------------------------------------------------------------

def _positions(name, n, m, b, steps, **hp):
  phases = methods.get(name).schedule
  hp = types.SimpleNamespace(**{k: jnp.float32(v) for k, v in hp.items()})
  locate = jax.jit(lambda s, n, m: schedule.locate(
      s, phases, hp, schedule.pass_lengths(n, m, b, b)))   # sizes traced, as in a run
  return [tuple(int(x) for x in locate(s, n, m)) for s in range(steps)]


def test_scrub_steps_map_to_max_passes_then_min_passes():
  # n=5, m=7, b=2: a max pass is 3 steps, a min pass 4; max passes in epochs 0 and 1 only.
  # (epoch, phase, batch within the pass, pass index of the phase's data)
  want = ([(0, 0, j, 0) for j in range(3)] + [(0, 1, j, 0) for j in range(4)]
          + [(1, 0, j, 1) for j in range(3)] + [(1, 1, j, 1) for j in range(4)]
          + [(2, 1, j, 2) for j in range(4)] + [(3, 1, j, 3) for j in range(4)])
  assert _positions('scrub', 5, 7, 2, len(want), scrub_max_epochs=2) == want
  no_max = [(e, 1, j, e) for e in range(3) for j in range(4)]
  assert _positions('scrub', 5, 7, 2, 12, scrub_max_epochs=0) == no_max
  always = [(e, p, j, e) for e in range(3) for p, n in ((0, 3), (1, 4)) for j in range(n)]
  assert _positions('scrub', 5, 7, 2, 21, scrub_max_epochs=9) == always


def test_salun_descent_steps_alternate_whole_passes():
  # n=3, m=5, b=2: each epoch 2 forget steps then 3 retain steps.
  want = [(e, p, j, e) for e in range(3) for p, n in ((0, 2), (1, 3)) for j in range(n)]
  assert _positions('salun_descent', 3, 5, 2, 15) == want


@pytest.mark.parametrize('name,n,m,b,steps,hp', [
    ('scrub', 5, 7, 2, 40, dict(scrub_max_epochs=2)), ('scrub', 5, 7, 2, 12,
                                                       dict(scrub_max_epochs=0)),
    ('scrub', 9, 4, 3, 30, dict(scrub_max_epochs=9)), ('scrub', 2, 2, 2, 5,
                                                       dict(scrub_max_epochs=1)),
    ('salun_descent', 3, 5, 2, 15, {}), ('salun_descent', 8, 1, 4, 7, {})])
def test_the_host_loop_calls_the_phase_the_program_locates(name, n, m, b, steps, hp):
  """On a CPU each phase is its own step program, chosen on the host: the same phase as
  the in-program mapping for every step."""
  located = [phase for _, phase, _, _ in _positions(name, n, m, b, steps, **hp)]
  lengths = schedule.pass_lengths(n, m, b, b)
  host = schedule.host_phases(methods.get(name).schedule, types.SimpleNamespace(**hp), steps,
                              lengths)
  assert host.tolist() == located


@pytest.mark.parametrize('epochs,k,steps,scrub_steps', [
    (3, 2, 18, 5), (2.5, 2, 16, 5), (1e-6, 2, 1, 1), (2, 0, 8, 2), (0.5, 0, 2, 1)])
def test_total_steps_counts_the_passes(epochs, k, steps, scrub_steps):
  lengths = schedule.pass_lengths(5, 7, 2, 2)   # passes of 3 (forget) and 4 (retain) steps
  phases = methods.get('scrub').schedule
  run = types.SimpleNamespace(scrub_max_epochs=float(k))
  assert schedule.total_steps(phases, run, epochs, lengths) == steps
  # SCRUB's own batch sizes (512, 256) hold each set whole: passes of one step each.
  assert unlearn.total_steps(epochs, 5, 2, methods.get('scrub'), run, 7) == scrub_steps
  wide = dataclasses.replace(methods.get('scrub'), defaults=(('forget_batch', 2),
                                                              ('retain_batch', 2)))
  assert unlearn.total_steps(epochs, 5, 2, wide, run, 7) == steps
  # An unscheduled method still takes epochs * n / b steps, whatever the retain subset.
  assert unlearn.total_steps(3, 5, 2, methods.get('ghr_descent'), run, 7) == 8


def test_a_pass_draws_every_example_once_in_a_fresh_order():
  key = jax.random.key(0)
  passes = [np.concatenate([np.asarray(unlearn_batches.pass_batch(key, p, j, 5, 8, 2))
                            for j in range(3)]) for p in range(3)]
  for order in passes:
    assert sorted(order[:5]) == list(range(5)) and order[5] == order[0]  # topped up
  assert len({tuple(o) for o in passes}) == 3
  np.testing.assert_array_equal(unlearn_batches.pass_batch(key, 0, 0, 5, 8, 2),
                                unlearn_batches.cycled_batch(key, 0, 5, 8, 2))


def test_registry_schedules_and_peer_defaults():
  get = methods.get
  assert [p.data for p in get('scrub').schedule] == ['forget', 'retain']
  assert get('scrub').schedule[0].first_epochs == 'scrub_max_epochs'
  assert [p.data for p in get('salun_descent').schedule] == ['forget', 'retain']
  for name in ('salun_descent', 'delete', 'delete_descent'):
    assert dict(get(name).defaults) == {'momentum': 0.9}, name
  # SCRUB's code: forget batches of 512, retain batches of 256, each capped at its set.
  assert dict(get('scrub').defaults) == {'momentum': 0.9, 'forget_batch': 512,
                                         'retain_batch': 256}
  assert methods.batch_sizes(get('scrub'), 32, 6000, 18000) == (512, 256)
  assert methods.batch_sizes(get('scrub'), 32, 180, 100) == (180, 100)
  assert methods.batch_sizes(get('salun_descent'), 32, 6000, 18000) == (32, 32)
  assert not get('salun').schedule and not get('salun').defaults   # our variant, unchanged
  assert hparams.problem('scrub_max_epochs', 2.5) == 'use a whole number >= 0'
  assert hparams.problem('scrub_max_epochs', 3.0) is None
  with pytest.raises(ValueError, match='one phase that runs every epoch'):
    methods.Method(lambda i: None, schedule=(schedule.Phase('forget', None, 'scrub_alpha'),))


# ---- compiled runs against plain loops ------------------------------------------------------

@pytest.fixture(scope='module')
def env():
  model = helpers.BNMLP(K)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  rng = np.random.default_rng(0)
  data = unlearn.RunData(
      rng.integers(0, 256, (8, 8, 8, 1), dtype=np.uint8), np.full(8, FORGET, np.int32), N,
      rng.integers(0, 256, (1, 12, 8, 8, 1), dtype=np.uint8),
      rng.integers(0, K, (1, 12)).astype(np.int32), M, np.arange(K) == FORGET)
  programs = unlearn.Programs(model, [MEAN], [STD], sharding.make_mesh(jax.devices()[:1]))
  apply = jax.jit(lambda p, x: model.apply(
      {'params': p, 'batch_stats': variables['batch_stats']}, x, train=False))
  return variables, data, programs, apply


def _with_loaders(run, loaders):
  """``run`` with its method's (forget, retain) batch sizes fixed to ``loaders``."""
  fixed = dict(run.method.defaults, forget_batch=loaders[0], retain_batch=loaders[1])
  return dataclasses.replace(run, method=dataclasses.replace(
      run.method, defaults=tuple(fixed.items())))


def _run(env, name, epochs, loaders=None, **hp):
  """A compiled run of registry method ``name``; ``loaders``: other (forget, retain) batch
  sizes fixed by the name."""
  variables, data, programs, _ = env
  run = helpers.run_of(defaults.classification_config(), name, batch_size=B, epochs=epochs,
                       lr=0.05, **hp)
  if loaders is not None:
    run = _with_loaders(run, loaders)
  assert run.hparams.momentum == 0.9 or not run.method.defaults   # the peers' SGD
  key = np.asarray(jax.random.key_data(jax.random.key(1)))
  [params], [bad], _, _ = unlearn.run_group(programs, run, data, [variables], [key],
                                            vmapped=False)
  assert bad == -1
  return params, run.hparams


def _norm(x):
  return (x.astype(np.float32) / 255.0 - MEAN) / STD


def _order(key, stream, index, n, size):
  """The runner's seeded order of pass ``index`` (written out: uniform keys, sorted)."""
  u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, stream), index), (size,))
  return np.argsort(np.where(np.arange(size) < n, u, 2.0), kind='stable')


def _passes(epochs, max_epochs):
  """``[(data, pass index)]`` of whole epochs: the max (forget) pass first while it runs."""
  return [(d, e) for e in range(epochs) for d in (('forget', 'retain') if e < max_epochs
                                                  else ('retain',))]


def _plain_loop(env, epochs, max_epochs, direction, lr=0.05, momentum=0.9, batches=(B, B)):
  """SGD with momentum by hand over the passes; ``direction(params, data, x, y, step)``;
  ``batches``: the forget and the retain batch size. Returns the final parameters and the
  step list ``[(data, x, y)]``."""
  variables, data, _, _ = env
  key = jax.random.wrap_key_data(np.asarray(jax.random.key_data(jax.random.key(1))))
  params, trace, step, taken = variables['params'], None, 0, []
  for name, index in _passes(epochs, max_epochs):
    x_all, y_all, n, stream, b = (
        (data.forget_x, data.forget_y, N, 1 << 20, batches[0]) if name == 'forget'
        else (data.retain_x[0], data.retain_y[0], M, 1 << 21, batches[1]))
    order = _order(key, stream, index, n, len(y_all))
    for j in range(math.ceil(n / b)):
      idx = order[(j * b + np.arange(b)) % n]
      x, y = _norm(x_all[idx]), y_all[idx]
      g = direction(params, name, x, y, jax.random.fold_in(key, step))
      trace = g if trace is None else jax.tree.map(lambda t, gi: gi + momentum * t, trace, g)
      params = jax.tree.map(lambda p, t: p - lr * t, params, trace)
      taken.append((name, x, y))
      step += 1
  return params, taken


# The longest float32 reduction of a step of the BNMLP: the first Dense's 8 x 8 x 1 = 64
# inputs (its kernel gradient sums a batch of at most 10 rows; BatchNorm runs on frozen
# statistics).
STEP_TERMS = 64


def _assert_reordered(got, want, steps):
  """A compiled run and a hand-written loop (or two programs of the runner) are the same SGD
  run with other float32 orders of each step's reductions: within the first-order bound of
  ``steps`` such steps in norm (:func:`tests.tolerances.reordered_run`: 7.6e-6 a step; a
  wrong batch, phase or momentum moves the run by O(1) of its updates, ~1e-2 of the
  parameters)."""
  bound = tolerances.reordered_run(steps, STEP_TERMS)
  err = tolerances.relative_norm(_flat(got), _flat(want))
  assert err <= bound, (err, bound, steps)


def _kl_t(student, teacher, t):
  p = jax.nn.softmax(teacher / t)
  return t * t * jnp.sum(p * (jnp.log(p) - jax.nn.log_softmax(student / t)), -1)


def _ce(logits, y):
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])


def _scrub_direction(env, t=4.0, alpha=0.001, gamma=0.99, wd=0.01):
  apply, teacher = env[3], env[0]['params']

  @jax.jit
  def grad(params, is_max, x, y):
    def loss(p):
      logits = apply(p, x)
      kl = jnp.mean(_kl_t(logits, apply(teacher, x), t))
      return jnp.where(is_max, -kl, gamma * _ce(logits, y) + alpha * kl)
    return jax.tree.map(lambda g, p: g + wd * p, jax.grad(loss)(params), params)
  return lambda params, name, x, y, rng: grad(params, name == 'forget', x, y)


@pytest.mark.parametrize('epochs,loaders,batches,first', [
    # SCRUB's own 512 and 256 capped at the 6 forget and 10 retain examples: one step a pass.
    (1, None, (N, M), ['forget', 'retain']), (3, None, (N, M), ['forget', 'retain']),
    # Sizes under the sets (forget passes of 2 steps, the last topped up; retain of 4).
    (3, (4, 3), (4, 3), ['forget'] * 2 + ['retain'] * 4)])
def test_compiled_scrub_equals_max_then_min_passes_by_hand(env, epochs, loaders, batches,
                                                            first):
  got, hp = _run(env, 'scrub', float(epochs), loaders, scrub_weight_decay=0.01)
  assert hp.scrub_max_epochs == 2 and hp.momentum == 0.9
  want, taken = _plain_loop(env, epochs, 2, _scrub_direction(env), batches=batches)
  assert [d for d, _, _ in taken][:len(first)] == first
  assert [len(y) for _, _, y in taken][:len(first)] == [
      batches[d == 'retain'] for d in first]
  _assert_reordered(got, want, len(taken))
  assert np.abs(_flat(got) - _flat(env[0]['params'])).max() > 1e-3


def test_fused_loop_and_vmapped_seeds_take_the_same_schedule(env, monkeypatch):
  """One ``fori_loop`` program (accelerators) and the host loop over a compiled step (CPU)
  agree, and two seeds run vmapped equal the two run one after another."""
  variables, data, programs, _ = env
  run = _with_loaders(helpers.run_of(defaults.classification_config(), 'scrub',
                                     batch_size=B, epochs=3.0, lr=0.05), (4, 3))
  keys = [np.asarray(jax.random.key_data(jax.random.key(s))) for s in (1, 2)]
  two = dataclasses.replace(data, retain_x=np.repeat(data.retain_x, 2, 0),
                            retain_y=np.repeat(data.retain_y, 2, 0))
  looped, _, _, _ = unlearn.run_group(programs, run, two, [variables] * 2, keys, False)
  vmapped, _, _, _ = unlearn.run_group(programs, run, two, [variables] * 2, keys, True)
  monkeypatch.setattr(unlearn, 'fused_loop', lambda: True)
  fused, _, _, _ = unlearn.run_group(programs, run, two, [variables] * 2, keys, False)
  # 3 epochs of at most a forget pass (2 steps) and a retain pass (4 steps): 18 steps, whose
  # reductions the vmapped and the fused programs may order differently (1.4e-4).
  for a, b, c in zip(looped, vmapped, fused):
    _assert_reordered(b, a, 18)
    _assert_reordered(c, a, 18)
  assert not np.allclose(_flat(looped[0]), _flat(looped[1]))


def test_compiled_salun_descent_equals_forget_then_retain_passes_by_hand(env):
  variables, data, _, apply = env
  got, _ = _run(env, 'salun_descent', 2.0, salun_fraction=0.3, salun_weight_decay=0.01)
  mask = saliency.saliency_mask(apply, variables['params'], _norm(data.forget_x[:N]),
                                data.forget_y[:N], 0.3)
  allowed = jnp.where(np.arange(K) != FORGET, 0.0, -1e9)

  @jax.jit
  def grad(params, x, labels):
    g = jax.grad(lambda p: _ce(apply(p, x), labels))(params)
    return jax.tree.map(lambda gi, p, m: jnp.where(m, gi + 0.01 * p, 0.0), g, params, mask)

  def direction(params, name, x, y, rng):
    if name == 'forget':   # random labels outside the forget class, drawn per step
      y = jax.random.categorical(rng, jnp.broadcast_to(allowed, (B, K)), axis=-1)
    return grad(params, x, y)
  want, taken = _plain_loop(env, 2, math.inf, direction)
  assert [d for d, _, _ in taken] == (['forget'] * 2 + ['retain'] * 3) * 2
  _assert_reordered(got, want, len(taken))
  frozen = ~_flat(mask)
  np.testing.assert_array_equal(_flat(got)[frozen], _flat(variables['params'])[frozen])


def test_unscheduled_method_keeps_one_forget_and_one_retain_batch_per_step(env):
  """gradasc_descent: ceil(epochs * n / b) steps, each on the cycled forget and retain
  batches of its index, SGD without momentum (the default), as before schedules."""
  variables, data, _, apply = env
  got, hp = _run(env, 'gradasc_descent', 2.0)
  assert hp.momentum == 0.0
  key = jax.random.wrap_key_data(np.asarray(jax.random.key_data(jax.random.key(1))))
  grad = jax.jit(jax.grad(lambda p, fx, fy, rx, ry: -_ce(apply(p, fx), fy)
                          + _ce(apply(p, rx), ry)))
  params = variables['params']
  for step in range(math.ceil(2.0 * N / B)):
    fi = np.asarray(unlearn_batches.cycled_batch(jax.random.fold_in(key, 1 << 20), step, N, 8, B))
    ri = np.asarray(unlearn_batches.cycled_batch(jax.random.fold_in(key, 1 << 21), step, M, 12,
                                                 B))
    g = grad(params, _norm(data.forget_x[fi]), data.forget_y[fi], _norm(data.retain_x[0][ri]),
             data.retain_y[0][ri])
    params = jax.tree.map(lambda p, gi: p - 0.05 * gi, params, g)
  _assert_reordered(got, params, math.ceil(2.0 * N / B))


# ---- the public step follows the schedule -----------------------------------------------------

def test_user_step_follows_the_schedule_and_equals_the_runner(env):
  variables, data, _, apply = env
  got, _ = _run(env, 'scrub', 3.0, scrub_weight_decay=0.01)
  unl = cure_jax.make_unlearning_step(apply, 'scrub', teacher=None, forget_mask=[FORGET],
                                      hparams={'lr': 0.05, 'scrub_weight_decay': 0.01},
                                      data_sizes=(N, M))
  _, taken = _plain_loop(env, 3, 2, _scrub_direction(env), batches=(N, M))
  assert unl.batch_sizes(B) == (N, M)                   # SCRUB's 512 and 256, capped
  assert unl.total_steps(3, N, M) == len(taken) == 5    # max+min, max+min, min
  state = unl.init(variables['params'], forget_data={'inputs': _norm(data.forget_x[:N]),
                                                     'labels': data.forget_y[:N]})
  first = {d: (x, y) for d, x, y in reversed(taken)}   # any batch of the other set will do
  for i, (name, x, y) in enumerate(taken):
    assert unl.data_at(i, N, M) == name
    batches = dict(first, **{name: (x, y)})
    state, _ = unl.step(state, batches['forget'], batches['retain'], jax.random.key(i))
  _assert_reordered(state['params'], got, len(taken))


def test_scheduled_methods_refuse_without_data_sizes_and_in_the_lm_loop(env):
  apply = env[3]
  with pytest.raises(ValueError, match=r"'salun_descent' runs passes .* data_sizes="):
    cure_jax.make_unlearning_step(apply, 'salun_descent', teacher=None, forget_mask=[FORGET])
  unl = cure_jax.make_unlearning_step(apply, 'ghr', teacher=None, forget_mask=[FORGET])
  with pytest.raises(ValueError, match='only a scheduled method'):
    unl.data_at(0, B)
  with pytest.raises(ValueError, match='runs on classifiers only'):
    lm_unlearn.get_method('scrub')
