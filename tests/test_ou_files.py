"""open-unlearning's TOFU_EVAL.json / TOFU_SUMMARY.json: our writer's keys and layout, reading
a retain model's logs, and forget quality / privleak against those logs computed as their
code computes them (scipy's KS test, scikit-learn's ROC AUC)."""
import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from cure_jax.infra.rules import ConfigError
from cure_jax.lm import defaults as lm_config
from cure_jax.lm import evaluate, ou_files, experiment, setup, protocol
from cure_jax.lm import validate as lm_validate
from cure_jax.text.tokenizer import ByteTokenizer

LN2 = math.log(2)


def _rounded(obj):
  """Floats rounded to 9 digits, so a hand-written expectation compares with ``==``."""
  if isinstance(obj, dict):
    return {k: _rounded(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_rounded(v) for v in obj]
  return round(obj, 9) if isinstance(obj, float) else obj


def _tiny_result():
  """An Evaluator.evaluate result by hand: two forget items, one real-authors item."""
  items = {'answer_nll': np.array([0.0, LN2]), 'correct_nll': np.array([LN2, 0.0]),
           'wrong_nll': np.array([[0.0, LN2], [LN2, LN2]]), 'rouge': np.array([1.0, 0.0]),
           'es': np.array([1.0, 0.5]), 'answers': ['the cat sat', 'blue sky'],
           'inputs': ['Q: a\nA: ', 'Q: b\nA: ']}
  forget = {'rouge': 0.5, 'es': 0.75, 'prob': 0.75, 'truth_ratio': 0.5,
            'truth_ratios': np.array([0.5, 2.0]), 'generations': ['the cat sat', 'red car'],
            'items': items}
  ra_items = {'answer_nll': np.array([0.0]), 'correct_nll': np.array([0.0]),
              'wrong_nll': np.array([[0.0, 0.0]]), 'rouge': np.array([1.0]),
              'es': np.array([1.0]), 'answers': ['Paris'], 'inputs': ['Q: c\nA: ']}
  ra = {'rouge': 1.0, 'es': 1.0, 'prob': 1 / 3, 'truth_ratio': 0.0,
        'truth_ratios': np.array([1.0]), 'generations': ['Paris'], 'items': ra_items}
  return {'forget_prob': 0.75, 'model_utility': 0.25, 'forget_quality': 0.5,
          'mia_min_k': 0.75, 'privleak': -50.0,
          'splits': {'forget': forget, 'real_authors': ra},
          'mia_items': {'mia_min_k': {'forget': np.array([1.0, 2.0]),
                                      'holdout': np.array([3.0])}}}


def _prob(prob, loss):
  return {'prob': prob, 'avg_loss': loss}


def _rouge(r1, f1, rl, text, truth, generation):
  return {'rouge1_recall': r1, 'rougeL_f1': f1, 'rougeL_recall': rl, 'input': text,
          'ground_truth': truth, 'generation': generation}


EXPECTED = {
    'extraction_strength': {'agg_value': 0.75,
                            'value_by_index': {'0': {'score': 1.0}, '1': {'score': 0.5}}},
    'forget_Q_A_PARA_Prob': {'agg_value': 0.75, 'value_by_index': {
        '0': _prob(0.5, LN2), '1': _prob(1.0, 0.0)}},
    'forget_Q_A_PERT_Prob': {'agg_value': 0.625, 'value_by_index': {
        '0': _prob([1.0, 0.5], [0.0, LN2]), '1': _prob([0.5, 0.5], [LN2, LN2])}},
    'forget_Q_A_Prob': {'agg_value': 0.75, 'value_by_index': {
        '0': _prob(1.0, 0.0), '1': _prob(0.5, LN2)}},
    'forget_Q_A_ROUGE': {'agg_value': 0.5, 'value_by_index': {
        '0': _rouge(1.0, 1.0, 1.0, 'Q: a\nA: ', 'the cat sat', 'the cat sat'),
        '1': _rouge(0.0, 0.0, 0.0, 'Q: b\nA: ', 'blue sky', 'red car')}},
    'forget_quality': {'agg_value': 0.5},
    'forget_truth_ratio': {'agg_value': 0.5,
                           'value_by_index': {'0': {'score': 0.5}, '1': {'score': 2.0}}},
    'mia_min_k': {'forget': {'agg_value': 1.5, 'value_by_index': {'0': {'score': 1.0},
                                                                  '1': {'score': 2.0}}},
                  'holdout': {'agg_value': 3.0, 'value_by_index': {'0': {'score': 3.0}}},
                  'auc': 0.75, 'agg_value': 0.75},
    'model_utility': {'agg_value': 0.25},
    'privleak': {'agg_value': -50.0},
    'ra_Q_A_PERT_Prob': {'agg_value': 1.0,
                         'value_by_index': {'0': _prob([1.0, 1.0], [0.0, 0.0])}},
    'ra_Q_A_Prob': {'agg_value': 1.0, 'value_by_index': {'0': _prob(1.0, 0.0)}},
    'ra_Q_A_Prob_normalised': {'agg_value': 1 / 3, 'value_by_index': {'0': {'prob': 1 / 3}}},
    'ra_Q_A_ROUGE': {'agg_value': 1.0, 'value_by_index': {
        '0': _rouge(1.0, 1.0, 1.0, 'Q: c\nA: ', 'Paris', 'Paris')}},
    'ra_Truth_Ratio': {'agg_value': 0.0, 'value_by_index': {'0': {'score': 1.0}}},
}
EXPECTED_SUMMARY = {'extraction_strength': 0.75, 'forget_Q_A_Prob': 0.75,
                    'forget_Q_A_ROUGE': 0.5, 'forget_quality': 0.5, 'forget_truth_ratio': 0.5,
                    'mia_min_k': 0.75, 'model_utility': 0.25, 'privleak': -50.0}


def test_writer_has_open_unlearnings_keys_and_layout(tmp_path):
  ou_files.write(str(tmp_path), _tiny_result())
  text = (tmp_path / 'TOFU_EVAL.json').read_text()
  logs = json.loads(text)
  assert list(logs) == sorted(EXPECTED)   # their save_logs sorts the metrics
  assert _rounded(logs) == _rounded(EXPECTED)
  assert text.startswith('{\n    "extraction_strength": {\n        "agg_value"')  # indent 4
  summary = json.loads((tmp_path / 'TOFU_SUMMARY.json').read_text())
  assert _rounded(summary) == _rounded(EXPECTED_SUMMARY)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['TOFU_EVAL.json', 'TOFU_SUMMARY.json']


def test_undefined_values_are_null_and_left_out_of_the_summary():
  result = _tiny_result()
  del result['forget_quality'], result['privleak']
  result['splits']['forget']['items']['answer_nll'] = np.array([0.0, np.inf])
  logs = ou_files.eval_logs(result)
  assert logs['forget_quality'] == {'agg_value': None}   # as their ks_test without a reference
  assert 'privleak' not in logs
  assert logs['forget_Q_A_Prob']['value_by_index']['1'] == {'prob': 0.0, 'avg_loss': None}
  assert 'forget_quality' not in ou_files.summary(logs)


def _their_logs(truth_ratios, auc):
  """A retain model's TOFU_EVAL.json as open-unlearning writes it (a few items, with other
  metrics beside the two we read)."""
  return {
      'forget_Q_A_Prob': {'agg_value': 0.1, 'value_by_index': {
          '0': {'prob': 0.1, 'avg_loss': 2.3}}},
      'forget_quality': {'agg_value': None},
      'forget_truth_ratio': {'agg_value': 0.6, 'value_by_index': {
          str(i): {'score': r} for i, r in enumerate(truth_ratios)}},
      'mia_min_k': {'forget': {'agg_value': 2.0, 'value_by_index': {'0': {'score': 2.0}}},
                    'holdout': {'agg_value': 2.1, 'value_by_index': {'0': {'score': 2.1}}},
                    'auc': auc, 'agg_value': auc},
      'privleak': {'agg_value': 0.0},
  }


def _write(tmp_path, obj, name='TOFU_EVAL.json'):
  path = tmp_path / name
  path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=4))
  return str(path)


def test_reads_a_retain_models_logs(tmp_path):
  path = _write(tmp_path, _their_logs([0.25, 1.5, 0.8], 0.4375))
  logs = ou_files.read_retain_logs(path)
  np.testing.assert_array_equal(logs.truth_ratios, [0.25, 1.5, 0.8])
  assert logs.mia_auc == 0.4375 and logs.path == path
  assert ou_files.read_retain_logs(path, need_mia=False).mia_auc is None


def _smoke_evaluator():
  config = lm_config.get_config('smoke')
  tokenizer = ByteTokenizer()
  splits = protocol.eval_splits(protocol.load_splits(config.data), config)
  model = setup.make_model(config, tokenizer)
  evaluator = evaluate.Evaluator(model, tokenizer, splits, config.data.template,
                                 config.eval.batch_size, max_new_tokens=4,
                                 max_len=config.model.max_len)
  init = lambda seed: model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params']
  return evaluator, init(0), init(1)


def test_forget_quality_and_privleak_against_logs_equal_their_formulas(tmp_path):
  """A retain model's written logs, read back, give the unlearned model's forget quality and
  privleak exactly as against the retain model in memory, and as their code computes them."""
  evaluator, retain_params, params = _smoke_evaluator()
  retain = evaluator.evaluate(retain_params)
  ou_files.write(str(tmp_path / 'retain'), retain)
  logs = ou_files.read_retain_logs(str(tmp_path / 'retain' / 'TOFU_EVAL.json'))
  result = evaluator.evaluate(params, logs.truth_ratios, logs.mia_auc)
  direct = evaluator.evaluate(params, retain['splits']['forget']['truth_ratios'],
                              retain['mia_min_k'])
  assert result['forget_quality'] == direct['forget_quality']
  assert result['privleak'] == direct['privleak']

  ou_files.write(str(tmp_path / 'unlearned'), result)
  ours = json.loads((tmp_path / 'unlearned' / 'TOFU_EVAL.json').read_text())
  theirs = json.loads((tmp_path / 'retain' / 'TOFU_EVAL.json').read_text())
  scores = lambda logs, key: [v['score'] for v in logs[key]['value_by_index'].values()]
  pvalue = stats.ks_2samp(scores(ours, 'forget_truth_ratio'),
                          scores(theirs, 'forget_truth_ratio')).pvalue
  assert ours['forget_quality']['agg_value'] == pytest.approx(pvalue, rel=1e-12)
  for logs in (ours, theirs):   # their mia_auc: forget labelled 0, holdout 1
    mia = logs['mia_min_k']
    sides = [mia[side]['value_by_index'].values() for side in ('forget', 'holdout')]
    labels = [0] * len(sides[0]) + [1] * len(sides[1])
    auc = roc_auc_score(labels, [v['score'] for side in sides for v in side])
    assert mia['agg_value'] == pytest.approx(auc, rel=1e-12)
  score, ref = 1 - ours['mia_min_k']['agg_value'], 1 - theirs['mia_min_k']['agg_value']
  assert ours['privleak']['agg_value'] == pytest.approx((score - ref) / (ref + 1e-10) * 100)
  _check_their_aggregates(ours, result)


def _check_their_aggregates(logs, result):
  """Their truth_ratio and hm_aggregate recomputed from the written per-item values give
  our aggregates: the files carry what their code reads, where it reads it."""
  para = logs['forget_Q_A_PARA_Prob']['value_by_index']
  pert = logs['forget_Q_A_PERT_Prob']['value_by_index']
  ratios = [np.exp(-np.mean(pert[i]['avg_loss'])) / (np.exp(-para[i]['avg_loss']) + 1e-10)
            for i in para]
  np.testing.assert_allclose(ratios, [v['score'] for v in
                                      logs['forget_truth_ratio']['value_by_index'].values()])
  parts = [logs[f'{s}_{m}']['agg_value'] for s in ('retain', 'ra', 'wf')
           for m in ('Q_A_Prob' if s == 'retain' else 'Q_A_Prob_normalised', 'Q_A_ROUGE',
                     'Truth_Ratio')]
  assert stats.hmean(parts) == pytest.approx(result['model_utility'])
  summary = ou_files.summary(logs)
  for theirs, ours in (('forget_Q_A_Prob', 'forget_prob'), ('forget_Q_A_ROUGE', 'forget_rouge'),
                       ('extraction_strength', 'forget_es'),
                       ('forget_truth_ratio', 'forget_truth_ratio'),
                       ('mia_min_k', 'mia_min_k'), ('mia_loss', 'mia_loss')):
    assert summary[theirs] == pytest.approx(result[ours]), theirs


def _bad_files(tmp_path):
  logs = _their_logs([0.5, 1.0], 0.5)
  no_mia = {k: v for k, v in logs.items() if k != 'mia_min_k'}
  no_ratio = {k: v for k, v in logs.items() if k != 'forget_truth_ratio'}
  nan_ratio = json.loads(json.dumps(logs))
  nan_ratio['forget_truth_ratio']['value_by_index']['1']['score'] = None
  return [
      (str(tmp_path / 'absent.json'), True, 'no such file'),
      (_write(tmp_path, '{"forget_truth_ratio": ', 'cut.json'), True, 'is not JSON'),
      (_write(tmp_path, [1, 2], 'list.json'), True, 'lacks a JSON object'),
      (_write(tmp_path, no_ratio, 'no_ratio.json'), False, 'lacks "forget_truth_ratio"'),
      (_write(tmp_path, nan_ratio, 'nan.json'), False, r'score at indices \[\'1\'\]'),
      (_write(tmp_path, no_mia, 'no_mia.json'), True, 'lacks "mia_min_k"'),
  ]


def test_bad_retain_logs_are_one_line_naming_the_file(tmp_path):
  for path, need_mia, fragment in _bad_files(tmp_path):
    with pytest.raises(ValueError, match=fragment) as error:
      ou_files.read_retain_logs(path, need_mia)
    assert '\n' not in str(error.value) and path in str(error.value)
  no_mia = _bad_files(tmp_path)[-1][0]
  ou_files.read_retain_logs(no_mia, need_mia=False)   # no holdout: privleak not computed


def test_config_check_and_run_check_of_retain_logs(tmp_path):
  config = lm_config.get_config('smoke')
  config.eval.retain_logs = str(tmp_path / 'absent.json')
  with pytest.raises(ConfigError, match='config.eval.retain_logs=.*absent.json.*no such file'):
    lm_validate.validate(config, 1)
  config.eval.retain_logs = [p for p, _, f in _bad_files(tmp_path) if 'mia_min_k' in f][0]
  lm_validate.validate(config, 1)   # the min-k AUC is needed only with a holdout split
  with_holdout = types.SimpleNamespace(splits={'forget': [{}], 'holdout': [{}]})
  with pytest.raises(ValueError, match='lacks "mia_min_k"'):
    experiment._retain_logs(config, with_holdout)
  logs = experiment._retain_logs(config, types.SimpleNamespace(splits={'forget': [{}, {}]}))
  np.testing.assert_array_equal(logs.truth_ratios, [0.5, 1.0])


def test_run_directory_names_follow_the_exports():
  assert ou_files.run_directory('w', 'grogu_descent', 'T=5,w=10', 0).endswith(
      'ou/grogu_descent-T=5_w=10-seed0')
  assert ou_files.run_directory('w', 'retrain', '', 3).endswith('ou/retrain-seed3')
