"""LLM unlearning objectives, the shared step, the evaluator, the runner, its report and the
Colab notebook (tiny LM; one smoke run shared by the runner, evaluator and notebook tests)."""
import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cure_jax.infra import train_state
from cure_jax.lm import defaults as lm_config
from cure_jax import entry
from cure_jax.infra import sharding
from cure_jax.unlearning import plan
from cure_jax.lm import evaluate, train, ou_files, report, setup, protocol, unlearn
from cure_jax.unlearning import hparams, losses, objectives
from cure_jax.models.causal_lm import CausalLM, LMConfig
from cure_jax.text.tokenizer import ByteTokenizer
from tests import helpers, tolerances
from tests.tolerances import assert_within

V = 7


def _batch():
  # Two rows of length 5; answers are the tokens after the prompt (targets of masked t).
  tokens = np.array([[1, 2, 3, 4, 5], [1, 6, 2, 0, 0]], np.int32)
  loss_mask = np.array([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], np.float32)
  return {'tokens': tokens, 'loss_mask': loss_mask}


def _logits(seed):
  return jax.random.normal(jax.random.key(seed), (2, 5, V)) * 2.0


def _manual_nll(logits, batch):
  """Per-token NLL of tokens[t+1] at t, as plain numpy loops, and the (B,T) mask."""
  logits = np.asarray(logits, np.float64)
  nll = np.zeros((2, 4))
  for b in range(2):
    for t in range(4):
      row = logits[b, t]
      nll[b, t] = np.log(np.exp(row - row.max()).sum()) + row.max() - row[batch['tokens'][b, t + 1]]
  return nll, batch['loss_mask'][:, :-1]


def _nll_tol(logits):
  """Float32 NLLs (and their means over <= 4 tokens) against the float64 formulas on the
  same logits: a log-sum-exp over V classes, a subtraction and a mean round at most V + 12
  times on values of size 2 max|z| + log V (about 1.6e-5 here; a wrong token, mask or
  formula moves a loss by O(1))."""
  return tolerances.nll_bound(logits, V, 12)


HP = {'npo_beta': 0.1, 'simnpo_beta': 4.5, 'simnpo_delta': 0.3, 'simnpo_gamma': 0.125,
      'undial_strength': 10.0, 'temperature': 2.0}


def _hp(hp=None):
  return hparams.HParams(dict(hparams.DEFAULTS, **(hp or HP)), {})


def _core(batch, ref):
  """The core's batch of encoded QA pairs, with the teacher and the answer-token mask."""
  mask = losses.token_forget_mask(batch['tokens'][:, 1:], V)
  return dataclasses.replace(unlearn.lm_batch(batch), teacher_logits=ref, forget_mask=mask)


def _loss(fn, logits, ref, batch, hp=None):
  return fn(logits, _core(batch, ref), None, _hp(hp))


def test_forget_losses_match_hand_formulas():
  batch, logits, ref = _batch(), _logits(0), _logits(1)
  nll, mask = _manual_nll(logits, batch)
  ref_nll, _ = _manual_nll(ref, batch)
  seq_sum, seq_mean = (nll * mask).sum(1), (nll * mask).sum(1) / mask.sum(1)
  tol = max(_nll_tol(logits), _nll_tol(ref))
  assert_within(_loss(objectives.gradasc, logits, ref, batch), -seq_mean, tol)
  log_ratio = (ref_nll * mask).sum(1) - seq_sum  # Σ log π_θ − Σ log π_ref
  npo = -(2 / 0.1) * np.log(1 / (1 + np.exp(0.1 * log_ratio)))
  # NPO's slope in the log-ratio is at most 2, and the log-ratio sums 2 x <= 3 NLLs; then a
  # few roundings (exp, log, scale) of the result.
  assert_within(_loss(objectives.npo, logits, ref, batch), npo,
          2 * 2 * 3 * tol + tolerances.gamma(8) * np.abs(npo))
  simnpo = 0.125 * -(2 / 4.5) * np.log(1 / (1 + np.exp(-4.5 * (seq_mean - 0.3))))
  # SimNPO's slope in the mean NLL is 0.125 x 2 x sigmoid <= 0.25.
  assert_within(_loss(objectives.simnpo, logits, ref, batch), simnpo,
          0.25 * tol + tolerances.gamma(8) * np.abs(simnpo))


def test_npo_at_reference_is_2_log2_over_beta():
  batch, logits = _batch(), _logits(0)
  want = np.array([2 / 0.1 * np.log(2)] * 2)
  assert_within(_loss(objectives.npo, logits, logits, batch), want,   # as in the test above
          2 * 2 * 3 * _nll_tol(logits) + tolerances.gamma(8) * want)


def test_ghr_forgets_the_ground_truth_next_token():
  batch, logits, ref = _batch(), _logits(0), _logits(1)
  _, mask = _manual_nll(logits, batch)
  expected = np.zeros(2)
  for b in range(2):
    terms = []
    for t in np.flatnonzero(mask[b]):
      teacher = np.array(ref[b, t], np.float64)
      teacher[batch['tokens'][b, t + 1]] = -np.inf  # the forget class is the true next token
      row = np.asarray(logits[b, t], np.float64)
      terms.append(np.log(np.exp(row).sum()) - row[np.argmax(teacher)])
    expected[b] = np.mean(terms)
  assert_within(_loss(objectives.ghr, logits, ref, batch), expected, _nll_tol(logits))


def test_gsr_target_has_no_mass_on_the_true_token_and_vanishes_at_its_optimum():
  batch, ref = _batch(), _logits(1)
  _, targets, mask = losses.next_token_view(ref, batch['tokens'], batch['loss_mask'])
  masked = jnp.where(losses.token_forget_mask(targets, V), -1e9, ref[:, :-1])
  # A student equal to the masked teacher at T has zero KL (up to the -1e9 stand-in).
  student = jnp.concatenate([masked, ref[:, -1:]], axis=1)
  # The -1e9 stand-in leaves exp(-1e9) = 0 exactly. Then T^2 KL(p || q) with p = q on paper:
  # log p and log q each within the NLL bound of logits z / T, so the KL within twice it
  # (p sums to one), times T^2 (~1e-5 here, where a misplaced mask gives O(1)).
  t = HP['temperature']
  tol = t * t * 2 * tolerances.nll_bound(np.asarray(ref) / t, V, 12)
  assert_within(_loss(objectives.gsr, student, ref, batch), np.zeros(2), tol)
  assert float(_loss(objectives.gsr, ref, ref, batch).min()) > 0.0


def _tiny_lm():
  model = CausalLM(LMConfig(vocab_size=V, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                            d_ff=32, max_len=8))
  params = model.init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))['params']
  return (lambda p, t: model.apply({'params': p}, t)), params


def _one_step(method, hp, impl='vmap', lr=1e-2):
  apply_fn, params = _tiny_lm()
  tx = optax.sgd(lr)
  # The step donates its state: give it its own copy of the reference parameters.
  state = train_state.create({'params': jax.tree.map(jnp.copy, params), 'batch_stats': {}}, tx)
  hp = dict(hparams.DEFAULTS, **hp, retain_weight=0.5, eps=1e-12, grogu_impl=impl)
  step = unlearn.make_unlearn_step(apply_fn, method, hp, tx)
  batch = _batch()
  retain = {'tokens': batch['tokens'][::-1], 'loss_mask': batch['loss_mask'][::-1]}
  new_state, metrics = step(state, params, batch, retain, jax.random.key(0))
  return apply_fn, params, new_state.params, metrics


@pytest.mark.parametrize('method, loss', [('gradasc', objectives.gradasc),
                                          ('npo_descent', objectives.npo),
                                          ('gsr_descent', objectives.gsr)])
def test_step_descends_the_methods_objective(method, loss):
  apply_fn, params, new_params, metrics = _one_step(method, HP)
  batch = _batch()
  retain = {'tokens': batch['tokens'][::-1], 'loss_mask': batch['loss_mask'][::-1]}

  def objective(p):  # the method's forget loss plus, where it has one, 0.5 * retain NLL
    value = jnp.mean(_loss(loss, apply_fn(p, batch['tokens']), apply_fn(params, batch['tokens']),
                           batch))
    if method.endswith('_descent'):
      value += 0.5 * jnp.mean(losses.answer_nll(apply_fn(p, retain['tokens']),
                                                retain['tokens'], retain['loss_mask']))
    return float(value)

  # The step's program and the eager objective compute the logits in other float32 orders
  # (_tiny_lm: 1 layer x 8 stages + norm + head, reductions of d_ff = 32 terms at most: the
  # first-order logit bound delta). The most sensitive loss, NPO's, moves by at most 2 x its
  # log-ratio's change, which sums 3 tokens' NLLs of both models (each moving by 2 delta),
  # and the retain NLL adds 0.5 x 2 delta: 25 delta (~1e-3 of the loss), plus the float32
  # losses' own roundings (gamma(V + 16) of their size).
  zmax = float(jnp.abs(apply_fn(params, batch['tokens'])).max())
  delta = tolerances.logits_bound(tolerances.reordered_sum(32), 8 + 2, zmax)
  want = objective(params)
  tol = 25 * delta + tolerances.gamma(V + 16) * (abs(want) + 2 * zmax + np.log(V))
  assert abs(float(metrics['loss']) - want) <= tol, (float(metrics['loss']), want, tol)
  assert objective(new_params) < objective(params)


def test_grogu_step_fast_equals_vmap():
  hp = dict(HP, temperature=5.0, w_h=10.0, w_s=10.0)
  with jax.default_matmul_precision('highest'):
    _, params, vmap_params, _ = _one_step('grogu_descent', hp, 'vmap')
    _, _, fast_params, _ = _one_step('grogu_descent', hp, 'fast')
  delta = lambda new: np.concatenate([np.ravel(a - b) for a, b in zip(
      jax.tree.leaves(new), jax.tree.leaves(params))])
  dv, df = delta(vmap_params), delta(fast_params)
  assert np.linalg.norm(dv) > 0
  assert np.linalg.norm(dv - df) <= 1e-4 * np.linalg.norm(dv)


@pytest.mark.parametrize('spec, method, overrides, variant', [
    ('grogu_descent:T=5,w=10', 'grogu_descent', {'temperature': 5.0, 'w_h': 10.0, 'w_s': 10.0},
     'T=5,w=10'),
    ('grogu:T=1,w=0.5', 'grogu', {'temperature': 1.0, 'w_h': 0.5, 'w_s': 0.5}, 'T=1,w=0.5'),
    ('npo_descent', 'npo_descent', {}, 'beta=0.1'),
    ('gradasc', 'gradasc', {}, ''),
])
def test_parse_run_and_variant_names(spec, method, overrides, variant):
  assert plan.parse_spec(spec) == (method, overrides)
  [planned] = plan.runs(lm_config.get_config(), entries=[spec])
  assert planned.name == method and planned.variant == variant


@pytest.mark.parametrize('spec, match', [('sgd', 'Unknown unlearning method'),
                                         ('grogu:T5', 'key=value'),
                                         ('npo:gamma=1', 'Unknown hyper'),
                                         ('graddiff', "now 'gradasc_descent'"),
                                         ('salun', 'classifiers only')])
def test_parse_run_rejects_bad_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    if spec == 'salun':
      unlearn.get_method(spec)
    else:
      plan.parse_spec(spec)


def test_paired_batches_cycle_forget_and_draw_retain():
  batches = list(unlearn.paired_batches(6, 100, 3, epochs=2, seed=0))
  assert len(batches) == 4
  for epoch in (batches[:2], batches[2:]):
    assert sorted(np.concatenate([f for f, _ in epoch]).tolist()) == list(range(6))
  assert all(len(r) == 3 and r.max() < 100 for _, r in batches)


def test_batch_indices_cover_each_epoch_and_batch_width_rounds_up():
  epoch = [train.batch_indices(50, 4, step, seed=0) for step in range(12, 24)]  # epoch 1
  assert len(set(np.concatenate(epoch).tolist())) == 48
  np.testing.assert_array_equal(epoch[3], train.batch_indices(50, 4, 15, seed=0))
  assert not np.array_equal(epoch[0], train.batch_indices(50, 4, 0, seed=0))
  assert train.batch_width(np.array([33, 64])) == 64
  assert train.batch_width(np.array([65, 2])) == 96


def test_cutting_right_padding_keeps_the_answer_nll():
  """Fine-tuning cuts each batch to its longest row: the loss must not depend on the cut."""
  apply_fn, params = _tiny_lm()
  batch = _batch()
  wide = {k: np.pad(v, [(0, 0), (0, 3)]) for k, v in batch.items()}
  nll = lambda b: losses.answer_nll(apply_fn(params, b['tokens']), b['tokens'], b['loss_mask'])
  # The padded program may order the attention's and the matmuls' reductions differently
  # (1 layer x 8 stages + norm + head, <= 32 terms): an NLL moves by at most twice the logits'
  # first-order bound, plus its own float32 roundings.
  zmax = float(jnp.abs(apply_fn(params, batch['tokens'])).max())
  delta = tolerances.logits_bound(tolerances.reordered_sum(32), 8 + 2, zmax)
  assert_within(nll(wide), nll(batch), 2 * delta + _nll_tol(apply_fn(params, batch['tokens'])))


def test_unlearn_rejects_an_empty_forget_split():
  apply_fn, params = _tiny_lm()
  empty = {'tokens': np.zeros((0, 5), np.int32), 'loss_mask': np.zeros((0, 5), np.float32)}
  with pytest.raises(ValueError, match='forget split is empty'):
    unlearn.unlearn(apply_fn, params, empty, _batch(), lm_config.get_config('smoke').unlearn,
                    'npo_descent', seed=0)


def test_unlearn_checks_its_hyperparameters_as_the_command_line_does():
  """The public LM loop refuses what config.unlearn would (a ZeroDivisionError before)."""
  apply_fn, params = _tiny_lm()
  for key, value, allowed in (('batch_size', 0, 'use a whole number >= 1'),
                              ('epochs', 0, 'use a whole number >= 1'),
                              ('lr', -1.0, 'use a number > 0'),
                              ('optimizer', 'adam', 'choose one of')):
    hp = lm_config.get_config('smoke').unlearn
    hp[key] = value
    with pytest.raises(ValueError, match=f'hp.{key}={value!r} is not allowed: {allowed}'):
      unlearn.unlearn(apply_fn, params, _batch(), _batch(), hp, 'npo_descent', seed=0)


def test_evaluator_rejects_unencodable_answers():
  model = CausalLM(LMConfig(vocab_size=264, num_layers=1, d_model=16, num_heads=2,
                            num_kv_heads=1, d_ff=32, max_len=64))
  item = {'question': 'Who?', 'answer': None, 'paraphrased_answer': 'x',
          'perturbed_answer': ['y'], 'author': 'a'}
  with pytest.raises(ValueError, match='answer must be a string'):
    evaluate.Evaluator(model, ByteTokenizer(), {'forget': [item]}, 'Q: {question}\nA: ')
  with pytest.raises(ValueError, match='forget split is empty'):
    evaluate.Evaluator(model, ByteTokenizer(), {'forget': [], 'retain': [item]}, '{question}')


def _rows():
  rows = []
  for method, variant, seeds in [('original', '', 1), ('retrain', '', 1), ('grogu', 'T=5,w=10', 2)]:
    for seed in range(seeds):
      rows.append({'method': method, 'variant': variant, 'seed': seed, 'forget_es': 0.5 + seed,
                   'forget_prob': 0.2, 'forget_rouge': 0.3, 'model_utility': 0.4,
                   'forget_quality': 0.05})
  return rows


def test_report_layout(tmp_path):
  table = report.write_report(_rows(), str(tmp_path), title='t', samples=[{'question': 'q'}])
  lines = table.splitlines()
  assert lines[4].startswith('| Method | Variant | Seeds | Forget ES')
  assert lines[6].startswith('| original |') and lines[7].startswith('| retrain |')
  assert '| grogu | T=5,w=10 | 2 | 1.000 ± 0.500 | 0.200 ± 0.000 |' in table
  assert json.loads((tmp_path / 'results.json').read_text()) == {'meta': {}, 'rows': _rows()}
  assert sorted(os.listdir(tmp_path)) == ['generations.json', 'results.json', 'results.md']


def test_report_refuses_incomplete_rows(tmp_path):
  rows = _rows()
  del rows[2]['forget_quality']
  with pytest.raises(ValueError, match='forget_quality'):
    report.write_report(rows, str(tmp_path), title='t')
  assert os.listdir(tmp_path) == []


def _smoke(**overrides):
  config = lm_config.get_config('smoke')
  for key, value in overrides.items():
    section, name = key.split('.') if '.' in key else (None, key)
    (config[section] if section else config)[name] = value
  return config


@pytest.mark.parametrize('overrides, error, match', [
    ({'model.max_len': 24}, ValueError, 'needs .* tokens'),
    ({'data.source': 'tofu', 'data.data_dir': '/nonexistent'}, FileNotFoundError, 'TOFU'),
    ({'mode': 'train'}, ValueError, 'config.mode'),
    ({'data.source': 'hub'}, ValueError, 'authors'),
])
def test_bad_input_fails_before_writing(tmp_path, overrides, error, match):
  with pytest.raises(error, match=match):
    entry.run(_smoke(**overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / 'results.json')
  assert not os.path.exists(tmp_path / 'models')


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """One smoke reproduce run (fine-tuning included) shared by the tests below."""
  workdir = tmp_path_factory.mktemp('lm_smoke')
  return workdir, entry.run(_smoke(), str(workdir))


def test_smoke_rows_equal_the_committed_pre_refactor_rows(smoke_run):
  helpers.check_rows('lm', smoke_run[1])


def test_smoke_reproduce_rows_and_files(smoke_run):
  workdir, rows = smoke_run
  saved = json.loads((workdir / 'results.json').read_text())['rows']
  assert saved == rows
  assert [(r['method'], r['variant']) for r in rows] == [
      ('original', ''), ('retrain', ''), ('gradasc', ''), ('npo_descent', 'beta=0.1'),
      ('grogu_descent', 'T=5,w=10')]
  for row in rows:
    for key in ('forget_es', 'forget_prob', 'forget_rouge', 'model_utility', 'forget_quality'):
      assert 0.0 <= row[key] <= 1.0, (row['method'], key, row[key])
  assert rows[1]['forget_quality'] == 1.0
  for row in rows[2:]:  # the smoke unlearning moves the model: forget answers less likely
    assert row['forget_prob'] < rows[0]['forget_prob'], (row['method'], row['forget_prob'])
  for row in rows:  # the authors data has holdout authors: membership attacks and privleak
    assert 0.0 <= row['mia_min_k'] <= 1.0 and 0.0 <= row['mia_loss'] <= 1.0
    assert np.isfinite(row['privleak'])
  assert rows[1]['privleak'] == 0.0
  for row in rows:  # open-unlearning's files per evaluated model, agreeing with the rows
    ou = ou_files.run_directory(str(workdir), row['method'], row['variant'], row['seed'])
    summary = json.loads(open(os.path.join(ou, 'TOFU_SUMMARY.json')).read())
    assert (os.path.isfile(os.path.join(ou, 'TOFU_EVAL.json'))
            and summary['forget_quality'] == row['forget_quality']
            and summary['privleak'] == row['privleak']), (ou, summary)
  samples = json.loads((workdir / 'generations.json').read_text())
  assert {'question', 'answer', 'original', 'retrain', 'grogu_descent T=5,w=10'} <= set(samples[0])


def test_finetuned_checkpoint_is_reused(smoke_run):
  workdir, _ = smoke_run
  [original] = (workdir / 'models').glob('original-*')
  steps = sorted(os.listdir(original))
  mtime = os.path.getmtime(original / 'model.json')
  assert entry.run(_smoke(mode='train_original'), str(workdir)) is None
  assert os.path.getmtime(original / 'model.json') == mtime
  assert sorted(os.listdir(original)) == steps
  assert len(list((workdir / 'models').iterdir())) == 2  # original and retrain only


def _smoke_model(workdir):
  """The smoke run's original model (reloaded from its checkpoint), splits and config."""
  config = _smoke()
  tokenizer = ByteTokenizer()
  splits = protocol.load_splits(config.data)
  model = setup.make_model(config, tokenizer)
  params = protocol.finetuned(config, str(workdir), 'original', model, tokenizer, splits)
  return config, tokenizer, splits, model, params


@pytest.mark.parametrize('batch_size', [5, 64])
def test_evaluator_chunking_matches_one_split_at_a_time(smoke_run, batch_size):
  """Stacked splits in chunks of any size score like one item at a time."""
  config, tokenizer, splits, model, params = _smoke_model(smoke_run[0])
  eval_splits = protocol.eval_splits(splits, config)
  stacked = evaluate.Evaluator(model, tokenizer, eval_splits, config.data.template, batch_size)
  result = stacked.evaluate(params, np.ones(len(eval_splits['forget'])))
  for name in ('forget', 'world_facts'):
    alone = evaluate.Evaluator(model, tokenizer, {'forget': eval_splits[name]},
                               config.data.template, batch_size=1)
    nll, preds, targets, _ = alone.teacher_forced(params)
    reference = alone._split_metrics('forget', nll, preds, targets,
                                     alone.generate(params)['forget'])
    got = result['splits'][name]
    assert got['generations'] == reference['generations']
    for key in ('rouge', 'es'):
      assert got[key] == pytest.approx(reference[key], abs=1e-6)
    if name == 'forget':  # world_facts compares the plain answer, not the paraphrase
      # Another batch layout moves each logit by at most delta, so each length-normalised
      # NLL by 2 delta; a truth ratio exp(nll_c - mean nll_w) then moves by exp(4 delta) - 1
      # relatively, and a probability exp(-nll) by exp(2 delta) - 1 (TOFU's normalised one,
      # a ratio of such sums, by exp(4 delta) - 1).
      delta = _nll_shift(model, params, eval_splits['forget'], tokenizer, config)
      ratio_rtol = np.expm1(4 * delta)
      np.testing.assert_allclose(got['truth_ratios'], reference['truth_ratios'],
                                 rtol=ratio_rtol, atol=0)
      assert got['prob'] == pytest.approx(reference['prob'], rel=ratio_rtol, abs=0)


def _nll_shift(model, params, split, tokenizer, config):
  """The logit bound of two batch layouts (tests/tolerances.py: lm_logits_delta) on this
  split's logits."""
  encoded = protocol.encode(tokenizer, split, config)
  logits = model.apply({'params': params}, encoded['tokens'])
  return tolerances.lm_logits_delta(model.config, float(np.abs(np.asarray(logits)).max()))


def test_evaluator_scores_match_the_training_loss(smoke_run):
  """The evaluator's answer NLL equals the fine-tuning objective's per-example NLL."""
  config, tokenizer, splits, model, params = _smoke_model(smoke_run[0])
  evaluator = evaluate.Evaluator(model, tokenizer, {'forget': splits['forget']},
                                 config.data.template, config.eval.batch_size)
  nll, _, _, _ = evaluator.teacher_forced(params)
  encoded = protocol.encode(tokenizer, splits['forget'], config)
  expected = losses.answer_nll(model.apply({'params': params}, encoded['tokens']),
                               encoded['tokens'], encoded['loss_mask'])
  # Two batch layouts: each logit within delta, a length-normalised NLL within 2 delta (plus
  # its own roundings, tests/tolerances.py: nll_bound).
  logits = model.apply({'params': params}, encoded['tokens'])
  delta = tolerances.lm_logits_delta(model.config, float(np.abs(np.asarray(logits)).max()))
  assert_within(nll[evaluator.rows['forget', 'answer']], expected,
                2 * delta + tolerances.nll_bound(logits, model.config.vocab_size,
                                                 model.config.max_len))


NOTEBOOK = os.path.join(os.path.dirname(__file__), '..', 'colab', 'llm_unlearning.ipynb')


def test_llm_notebook_runs_on_smoke_settings(smoke_run, tmp_path, monkeypatch):
  """Executes colab/llm_unlearning.ipynb on the smoke settings with a kernel from this venv.

  It starts from a copy of the smoke run's fine-tuned checkpoints (same settings), so its
  fine-tuning cell exercises the reuse path and the test pays only for unlearning.
  """
  import nbformat  # pylint: disable=g-import-not-at-top
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'work'
  shutil.copytree(smoke_run[0] / 'models', workdir / 'models')
  monkeypatch.setenv('CURE_JAX_SMOKE', '1')
  monkeypatch.setenv('CURE_JAX_WORKDIR', str(workdir))
  # The install cell must be a no-op here: an unreachable source would fail if it ran.
  monkeypatch.setenv('CURE_JAX_SOURCE', str(tmp_path / 'no-such-package'))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}})
  client.execute()

  rows = json.loads((workdir / 'results.json').read_text())['rows']
  assert [r['method'] for r in rows] == ['original', 'retrain', 'gradasc_descent', 'npo_descent',
                                            'grogu_descent']
  table_output = json.dumps(notebook.cells[-3].outputs)
  assert 'Forget Quality' in table_output and 'T=5,w=10' in table_output
  generations_output = json.dumps(notebook.cells[-1].outputs)
  assert 'True answer' in generations_output and 'grogu_descent T=5,w=10' in generations_output
  errors = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs
            if o.get('output_type') == 'error']
  assert not errors


# ---- the committed fixture: every LM method's update, from the code before the one registry

FIXTURE_RUNS = [(m, 1, 'fast', None) for m in (
    'gradasc', 'gradasc_descent', 'npo_descent', 'simnpo_descent', 'undial_descent',
    'ghr_descent', 'gsr_descent', 'grogu_descent')] + [
        ('grogu_descent', 1, 'vmap', None), ('ghr_descent', 1, 'fast', (2, 5)),
        ('npo_descent', 2, 'fast', None), ('grogu_descent', 2, 'fast', None)]


@pytest.fixture(scope='module')
def fixture_lm():
  vocab = 11
  model = CausalLM(LMConfig(vocab_size=vocab, num_layers=1, d_model=16, num_heads=2,
                            num_kv_heads=1, d_ff=32, max_len=12))
  params = model.init(jax.random.key(0), jnp.zeros((1, 10), jnp.int32))['params']
  rng = np.random.default_rng(0)

  def data(n):
    return {'tokens': rng.integers(0, vocab, (n, 10)).astype(np.int32),
            'loss_mask': (rng.random((n, 10)) < 0.6).astype(np.float32)}
  forget, retain = data(8), data(16)
  return (lambda p, t: model.apply({'params': p}, t)), params, forget, retain


@pytest.mark.parametrize('method, accum, impl, forget_ids', FIXTURE_RUNS)
def test_unlearning_matches_the_committed_fixture(fixture_lm, method, accum, impl, forget_ids):
  """Four AdamW steps (two epochs of batch 4) of each method; the fixture was recorded by the
  LM runner before the registries merged (the retain term now joins the forget loss in one
  objective, which moves the parameters by ~1e-7 relative: within the tolerance)."""
  apply_fn, params, forget, retain = fixture_lm
  hp = ml_collections.FrozenConfigDict(dict(
      hparams.DEFAULTS, lr=1e-2, epochs=2, batch_size=4, grad_accum=accum, optimizer='adamw',
      warmup_fraction=0.1, weight_decay=0.0, grogu_impl=impl, log_every=100, temperature=5.0,
      retain_weight=0.7))
  new = unlearn.unlearn(apply_fn, params, forget, retain, hp, method, seed=3,
                        mesh=sharding.make_mesh(jax.devices()[:1]), forget_ids=forget_ids)
  flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
  # Four steps; the longest reductions: GROGU's inner products over every parameter.
  before, after = flat(params), flat(new)
  helpers.check_fixture('lm_unlearning', f'{method}|{accum}|{impl}|{forget_ids}', before,
                        after, 4, max(before.size, 4 * forget['tokens'].shape[1]))
