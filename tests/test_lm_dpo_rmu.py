"""open-unlearning's DPO / IdkDPO and RMU: the losses against numpy transcriptions of their
trainer code (labels with -100, token sums, hooks on a layer's output), the steered layer's
activations, only the chosen parameters training, the refusal set, and a study over several
forget sets on the tiny byte-level LM."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cure_jax.data import authors, refusals
from cure_jax import entry
from cure_jax.infra import sharding
from cure_jax.unlearning import plan
from cure_jax.infra.rules import ConfigError
from cure_jax.lm import defaults as lm_config, unlearn
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.unlearning import hparams, methods
from cure_jax.unlearning.baselines import preference, rmu
from cure_jax.unlearning.batch import StepInputs
from tests import tolerances
from tests.test_lm_methods_ou import IGNORE, _ce_none, _hf_labels

V = 11
# Row 0 answers tokens 3..5, row 1 tokens 2..3 (loss_mask[t]: token t+1 is an answer token).
TOKENS = np.array([[1, 2, 3, 4, 5, 0], [1, 6, 2, 7, 0, 0]], np.int32)
LOSS_MASK = np.array([[0, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], np.float32)
ALT_TOKENS = np.array([[1, 2, 9, 8, 0, 0], [1, 6, 10, 9, 8, 0]], np.int32)
ALT_MASK = np.array([[0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]], np.float32)


def _model(layers=3):
  model = CausalLM(LMConfig(vocab_size=V, num_layers=layers, d_model=16, num_heads=2,
                            num_kv_heads=1, d_ff=32, max_len=8))
  params = model.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))['params']
  return model, params


def _perturbed(params, seed, scale=0.05):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def _hp(**values):
  return hparams.HParams(dict(hparams.DEFAULTS, **values), {})


# ---- numpy transcriptions of open-unlearning ------------------------------------------------

def _batch_nll(logits, labels):
  """``compute_batch_nll``: per sequence, the summed token NLL of the shifted labels."""
  n, length, v = logits[:, :-1].shape
  return _ce_none(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1)).reshape(n, length).sum(-1)


def dpo_reference(win, win_ref, lose, lose_ref, win_labels, lose_labels, beta):
  """``compute_dpo_loss`` (the mean over the batch)."""
  win_log_ratio = -(_batch_nll(win, win_labels) - _batch_nll(win_ref, win_labels))
  lose_log_ratio = -(_batch_nll(lose, lose_labels) - _batch_nll(lose_ref, lose_labels))
  z = beta * (win_log_ratio - lose_log_ratio)
  return np.mean(-2 / beta * -np.logaddexp(0, -z))


def activation_reference(a1, a2, labels):
  """``compute_activation_loss`` with ``mask = labels != -100``."""
  mask = (labels != IGNORE).astype(np.float64)
  squared = (a1 - a2) ** 2
  per_seq = (squared * mask[..., None]).mean(axis=2).sum(axis=1)
  return np.mean(per_seq / mask.sum(-1))


def _dpo_tol(model, logits_f64, want):
  """The float32 DPO loss (and the GradDiff retain term) against its float64 transcription
  on the test's logits: the library's own forward may order its reductions otherwise (each
  logit within delta, tests/tolerances.py: lm_logits_delta), so each token's log-probability
  is within e = 2 delta + its NLL roundings; a log ratio sums 2 x 5 tokens, the margin two
  log ratios times beta, and -2/beta log sigmoid has slope <= 2/beta in it: 8 x 5 x e for
  the loss, e for the retain term, a few roundings of the result."""
  e = _logprob_err(model, logits_f64)
  return 8 * 5 * e + e + tolerances.gamma(8) * abs(want)


def _logprob_err(model, logits_f64):
  zmax = max(float(np.abs(z).max()) for z in logits_f64)
  return (2 * tolerances.lm_logits_delta(model.config, zmax)
          + tolerances.gamma(V + 12) * (2 * zmax + np.log(V)))


def _rmu_tol(model, hs, controls):
  """RMU's float32 activation loss against its float64 transcription on the test's
  activations: the library's forward to the steered layer may order its reductions
  otherwise (2 layers of 8 stages over <= d_ff terms: each activation within delta), and a
  squared distance moves by 2 |h - c| delta; then a mean over 16 features and sums over <= 6
  tokens and 2 sequences round (gamma(26) of the largest squared distance)."""
  dist = max(float(np.abs(h - c).max()) for h, c in zip(hs, controls))
  cfg = model.config
  delta = tolerances.logits_bound(tolerances.reordered_sum(max(cfg.d_ff, cfg.d_model)), 2 * 8,
                                  max(float(np.abs(h).max()) for h in hs))
  return 2 * dist * delta + tolerances.gamma(26) * dist * dist


def _lm_batch(tokens, mask, **extra):
  return unlearn.lm_batch(dict({'tokens': jnp.asarray(tokens), 'loss_mask': jnp.asarray(mask)},
                               **extra))


# ---- the checks ----------------------------------------------------------------------------

@pytest.mark.parametrize('beta', [0.1, 1.0, 2.5])
@pytest.mark.parametrize('descent', [False, True])
def test_dpo_matches_open_unlearning(beta, descent):
  model, ref = _model()
  params = _perturbed(ref, 1)
  apply = lambda p, t: model.apply({'params': p}, t)
  lose = _lm_batch(TOKENS, LOSS_MASK)
  win = _lm_batch(ALT_TOKENS, ALT_MASK)
  lose = lose.__class__(**{**lose.__dict__, 'teacher_logits': apply(ref, lose.inputs)})
  win = win.__class__(**{**win.__dict__, 'teacher_logits': apply(ref, win.inputs)})
  retain = _lm_batch(TOKENS[::-1], LOSS_MASK[::-1])
  inputs = StepInputs(apply, params, lose, retain, None, _hp(dpo_beta=beta, retain_weight=0.5),
                      alternate=win)
  name = 'idkdpo_descent' if descent else 'idkdpo'
  value, grad = methods.REGISTRY[name].direction(inputs)
  f64 = lambda p, t: np.asarray(apply(p, jnp.asarray(t)), np.float64)
  want = dpo_reference(f64(params, ALT_TOKENS), f64(ref, ALT_TOKENS), f64(params, TOKENS),
                       f64(ref, TOKENS), _hf_labels(ALT_TOKENS, ALT_MASK),
                       _hf_labels(TOKENS, LOSS_MASK), beta)
  if descent:   # their GradDiff retain term: the HF loss, a token mean
    labels = _hf_labels(TOKENS[::-1], LOSS_MASK[::-1])
    nll = _batch_nll(f64(params, TOKENS[::-1]), labels)
    counts = (labels[:, 1:] != IGNORE).sum(-1)
    want += 0.5 * np.mean(nll / counts)   # our retain NLL: mean of per-sequence means
  logits = [f64(p, t) for p in (params, ref) for t in (TOKENS, ALT_TOKENS, TOKENS[::-1])]
  tolerances.assert_within(float(value), want, _dpo_tol(model, logits, want))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


def test_dpo_raises_the_winner_over_the_loser():
  model, ref = _model()
  apply = lambda p, t: model.apply({'params': p}, t)
  win_teacher = apply(ref, jnp.asarray(ALT_TOKENS))
  lose_teacher = apply(ref, jnp.asarray(TOKENS))
  win = _lm_batch(ALT_TOKENS, ALT_MASK)
  lose = _lm_batch(TOKENS, LOSS_MASK)
  margin = lambda p: jnp.mean(
      preference.log_ratio(apply(p, win.inputs), win.__class__(**{**win.__dict__, 'teacher_logits': win_teacher}))
      - preference.log_ratio(apply(p, lose.inputs), lose.__class__(**{**lose.__dict__, 'teacher_logits': lose_teacher})))
  # The reference itself: both log ratios are 0 on paper, each a sum of 2 x 5 token
  # log-probabilities (tests/tolerances.py via _logprob_err), where training moves it > 1.
  e = _logprob_err(model, [np.asarray(win_teacher, np.float64),
                           np.asarray(lose_teacher, np.float64)])
  assert abs(float(margin(ref))) <= 2 * 2 * 5 * e
  alternate = {'tokens': ALT_TOKENS[:, None], 'loss_mask': ALT_MASK[:, None]}
  new = unlearn.unlearn(apply, ref, {'tokens': TOKENS, 'loss_mask': LOSS_MASK},
                        {'tokens': TOKENS[::-1], 'loss_mask': LOSS_MASK[::-1]},
                        _run_hp(lr=1e-2, epochs=4), 'idkdpo', 0, mesh=_one_device(),
                        alternate=alternate)
  assert float(margin(new)) > 1.0


def test_hidden_layer_is_the_residual_stream_the_logits_continue_from():
  model, params = _model()
  tokens = jnp.asarray(TOKENS)
  h = model.apply({'params': params}, tokens, hidden_layer=2)   # the last layer
  assert h.shape == (2, 6, 16)
  from cure_jax.models.causal_lm import RMSNorm
  x = RMSNorm(model.config.norm_eps, jnp.float32).apply({'params': params['norm']}, h)
  logits = x @ params['embed_tokens']['embedding'].T
  # The full forward's own norm and tied head (and, at worst, its 3 layers x 8 stages, if
  # ordered otherwise): reductions of <= d_ff = 32 terms, the first-order logit bound
  # (9.9e-5 of the largest logit); another layer's stream moves the logits by O(1e-1).
  want = np.asarray(model.apply({'params': params}, tokens), np.float64)
  delta = tolerances.logits_bound(tolerances.reordered_sum(32), 3 * 8 + 2, np.abs(want).max())
  assert np.abs(np.asarray(logits, np.float64) - want).max() <= delta
  # An earlier layer's output differs, and the layers above it are not needed.
  h0 = model.apply({'params': {k: v for k, v in params.items() if k not in ('layers_1', 'layers_2', 'norm')}},
                   tokens, hidden_layer=0)
  assert not np.allclose(h0, h)


@pytest.mark.parametrize('descent', [False, True])
def test_rmu_matches_open_unlearning(descent):
  model, ref = _model()
  params = _perturbed(ref, 2)
  apply = lambda p, t: model.apply({'params': p}, t)
  represent = lambda p, t: model.apply({'params': p}, t, hidden_layer=1)
  unit = np.asarray(rmu.control_unit(jax.random.key(3), 16))
  assert abs(np.linalg.norm(unit) - 1) < 1e-6 and np.all(unit >= 0)
  forget = _lm_batch(TOKENS, LOSS_MASK, target=jnp.broadcast_to(unit, (2, 16)))
  retain = _lm_batch(TOKENS[::-1], LOSS_MASK[::-1])
  retain = retain.__class__(**{**retain.__dict__,
                               'teacher_hidden': represent(ref, retain.inputs)})
  c = 6.5
  inputs = StepInputs(apply, params, forget, retain, None,
                      _hp(rmu_steering=c, retain_weight=0.5), represent=represent)
  value, _ = methods.REGISTRY['rmu_descent' if descent else 'rmu'].direction(inputs)
  h = np.asarray(represent(params, jnp.asarray(TOKENS)), np.float64)
  control = np.broadcast_to(unit[None, None] * c, h.shape)
  want = activation_reference(h, control, _hf_labels(TOKENS, LOSS_MASK))
  tol = _rmu_tol(model, [h], [control])
  if descent:
    h_r = np.asarray(represent(params, jnp.asarray(TOKENS[::-1])), np.float64)
    h_ref = np.asarray(represent(ref, jnp.asarray(TOKENS[::-1])), np.float64)
    want += 0.5 * activation_reference(h_r, h_ref, _hf_labels(TOKENS[::-1], LOSS_MASK[::-1]))
    tol += _rmu_tol(model, [h_r], [h_ref])
  tolerances.assert_within(float(value), want, tol)


def _one_device():
  return sharding.make_mesh(jax.devices()[:1])


def _run_hp(**values):
  cfg = lm_config.get_config('smoke').unlearn.to_dict()
  cfg.update(values, batch_size=2, warmup_fraction=0.0, log_every=100)
  return type('HP', (dict,), {'__getattr__': dict.__getitem__})(cfg)


@pytest.mark.parametrize('pattern, trained', [
    ('', {'layers_0/mlp/down_proj/kernel', 'layers_1/mlp/down_proj/kernel'}),
    (r'layers_1/self_attn/.*', None)])
def test_rmu_trains_only_the_chosen_parameters(pattern, trained):
  model, ref = _model()
  apply = lambda p, t: model.apply({'params': p}, t)
  represent = lambda p, t: model.apply({'params': p}, t, hidden_layer=1)
  data = {'tokens': TOKENS, 'loss_mask': LOSS_MASK}
  new = unlearn.unlearn(apply, ref, data, {'tokens': TOKENS[::-1], 'loss_mask': LOSS_MASK[::-1]},
                        _run_hp(lr=1e-2, epochs=2, rmu_layer=1, rmu_params=pattern),
                        'rmu_descent', 0, mesh=_one_device(), represent_fn=represent)
  flat = lambda p: {unlearn.param_path(k): v for k, v in jax.tree_util.tree_leaves_with_path(p)}
  old, got = flat(ref), flat(new)
  changed = {k for k in old if not np.array_equal(old[k], got[k])}
  if trained is None:
    trained = {k for k in old if k.startswith('layers_1/self_attn/')}
  assert changed == trained
  # The steered activations moved towards the direction: the forget loss fell.
  unit = np.asarray(rmu.control_unit(jax.random.fold_in(jax.random.key(0), 0x7FFFFFFF), 16))
  forget = _lm_batch(TOKENS, LOSS_MASK, target=jnp.broadcast_to(unit, (2, 16)))
  loss = lambda p: methods.REGISTRY['rmu'].direction(
      StepInputs(apply, p, forget, None, None, _hp(), represent=represent))[0]
  assert float(loss(new)) < float(loss(ref))


def test_rmu_refuses_a_pattern_that_matches_no_parameter():
  model, ref = _model()
  with pytest.raises(ValueError, match='matches no parameter'):
    unlearn.unlearn(lambda p, t: model.apply({'params': p}, t), ref,
                    {'tokens': TOKENS, 'loss_mask': LOSS_MASK},
                    {'tokens': TOKENS, 'loss_mask': LOSS_MASK},
                    _run_hp(lr=1e-2, epochs=1, rmu_params='layers_7/mlp/.*'), 'rmu', 0,
                    mesh=_one_device(), represent_fn=lambda p, t: t)


def test_lm_only_methods_are_refused_where_nothing_supplies_them():
  from configs import digits as digits_config
  from cure_jax import make_unlearning_step
  for name in ('dpo', 'idkdpo_descent', 'rmu'):
    assert methods.REGISTRY[name].lm_only
    with pytest.raises(ValueError, match='only the LM loop'):
      plan.runs(digits_config.get_config('smoke'), entries=[name])
    with pytest.raises(ValueError, match='only the LM loop'):
      make_unlearning_step(lambda p, x: x, name, teacher=None, forget_mask=[0])
  assert not any(m.lm_only for n, m in methods.REGISTRY.items() if n.startswith('grogu'))


def test_refusals_ours_and_from_a_file(tmp_path):
  ours = refusals.load_refusals('')
  assert len(ours) >= 20 and len(set(ours)) == len(ours)
  assert not any(ch.isdigit() for r in ours for ch in r)
  path = tmp_path / 'idk.jsonl'
  path.write_text("I don't know.\n\n  Not sure.  \n")
  assert refusals.load_refusals(str(path)) == ["I don't know.", 'Not sure.']
  (tmp_path / 'empty.txt').write_text('\n \n')
  with pytest.raises(ValueError, match='holds no refusal'):
    refusals.load_refusals(str(tmp_path / 'empty.txt'))


def test_forget_sets_are_disjoint_blocks_of_the_same_fine_tuning_authors():
  items = authors.generate_authors(9, 2, 0)
  sets = [authors.make_splits(items, 1, k) for k in range(4)]
  forgotten = [{i['author'] for i in s['forget']} for s in sets]
  assert all(len(f) == 1 for f in forgotten) and len(set.union(*forgotten)) == 4
  for s in sets:
    assert s['full'] == sets[0]['full'] and s['holdout'] == sets[0]['holdout']
    assert {i['author'] for i in s['retain']} == {i['author'] for i in s['full']} - {
        i['author'] for i in s['forget']}
  with pytest.raises(ValueError, match='forget sets'):
    authors.make_splits(items, 1, 4)   # 5 fine-tuned authors: a 5th set leaves no retain author


def _smoke(**overrides):
  config = lm_config.get_config('smoke')
  with config.unlocked():
    for key, value in overrides.items():
      section, _, name = key.rpartition('.')
      (config[section] if section else config)[name] = value
  return config


@pytest.mark.parametrize('overrides, match', [
    ({'data.forget_sets': 0}, 'forget_sets'),
    ({'data.forget_sets': 2, 'data.source': 'tofu', 'data.data_dir': '/x'}, 'forget_sets'),
    ({'unlearn.rmu_params': '(['}, 'rmu_params'),
    ({'unlearn.idk_path': '/nonexistent/idk.txt'}, 'idk_path'),
    ({'unlearn.rmu_layer': -1}, 'rmu_layer')])
def test_bad_settings_are_one_line(overrides, match):
  from cure_jax.lm import validate
  with pytest.raises(ConfigError, match=match):
    validate.validate(_smoke(**overrides), 1)


def test_a_study_over_two_forget_sets(tmp_path):
  config = _smoke(**{'data.forget_sets': 2,
                     'reproduce.runs': ('idkdpo_descent', 'dpo', 'rmu_descent:rmu_steering=4')})
  with config.unlocked():
    config.unlearn.rmu_layer = 0
  rows = entry.run(config, str(tmp_path))
  assert [r['forget_set'] for r in rows] == [0] * 5 + [1] * 5
  by_set = {k: [r for r in rows if r['forget_set'] == k] for k in (0, 1)}
  fp = lambda k, kind: next(r for r in by_set[k] if r['method'] == kind)['model_fingerprint']
  assert fp(0, 'original')['original'] == fp(1, 'original')['original']   # fine-tuned once
  assert fp(0, 'original')['retrain'] != fp(1, 'original')['retrain']     # a retrain per set
  assert len(os.listdir(tmp_path / 'models')) == 3
  for k in (0, 1):
    assert os.path.exists(tmp_path / f'forget_set{k}' / 'ou' / 'idkdpo_descent-beta=0.1-seed0' /
                          'TOFU_EVAL.json')
    assert os.path.exists(tmp_path / f'forget_set{k}' / 'results.json')
  with open(tmp_path / 'results.json') as f:
    assert len(json.load(f)['rows']) == 10
  table = (tmp_path / 'results.md').read_text()
  assert '2 forget sets' in table and '| Method | Variant | Runs |' in table
  assert '| rmu_descent | c=4 | 2 |' in table
  # A second run reuses both sets' finished units and the three models.
  timeless = lambda rs: [{k: v for k, v in r.items() if k != 'seconds'} for r in rs]
  assert timeless(entry.run(config, str(tmp_path))) == timeless(rows)
