"""open-unlearning's TOFU result files for one evaluated model, and a retain model's logs.

locuslab/open-unlearning, the framework most LLM-unlearning papers report with, writes per
evaluated model ``TOFU_EVAL.json`` (every metric it computed, with per-item values) and
``TOFU_SUMMARY.json`` (one aggregate per top-level metric). :func:`write` writes both in
their key names and value layout, so their tools and scripts read our results; and
:func:`read_retain_logs` reads a retain model's ``TOFU_EVAL.json`` (their
``retain_logs_path``, our ``config.eval.retain_logs``) so forget quality and privleak can be
computed against a published retain model without retraining one.

``TOFU_EVAL.json`` (top-level keys sorted and indented by 4, as their ``save_logs`` does):

- ``<s>_Q_A_Prob``, ``forget_/retain_Q_A_PARA_Prob`` (paraphrased answer):
  ``{"agg_value", "value_by_index": {"<i>": {"prob", "avg_loss"}}}``; ``<s>_Q_A_PERT_Prob``
  the same with lists over the perturbed answers;
- ``ra_/wf_Q_A_Prob_normalised``: ``{"agg_value", "value_by_index": {"<i>": {"prob"}}}``;
- ``<s>_Q_A_ROUGE``: per item ``{"rouge1_recall", "rougeL_f1", "rougeL_recall", "input",
  "ground_truth", "generation"}``, ``agg_value`` the mean ROUGE-L recall;
- ``forget_truth_ratio``, ``retain_/ra_/wf_Truth_Ratio`` and ``extraction_strength``: per
  item ``{"score"}``;
- ``mia_min_k``, ``mia_loss``: ``{"forget": {"agg_value", "value_by_index"}, "holdout":
  {...}, "auc", "agg_value"}`` (only with a holdout split);
- ``forget_quality``, ``model_utility``, ``privleak``: ``{"agg_value"}`` only.

``<s>`` is ``forget``, ``retain``, ``ra`` (real authors) or ``wf`` (world facts); ``<i>`` is
an item's position in the evaluated split (TOFU's own index where the whole split is
evaluated; a subsampled retain / utility set, ``config.eval.retain_items`` /
``utility_items``, numbers its subsample). ``TOFU_SUMMARY.json`` holds the aggregates of
their default TOFU metrics plus ``mia_min_k`` / ``mia_loss`` (their optional ones) when
computed. A value that is not finite is written as null (strict JSON; their aggregates skip
None).

Their TOFU metrics we do not compute, so never write: ``exact_memorization``,
``mia_min_k_plus_plus``, ``mia_zlib``, ``mia_gradnorm``, ``mia_reference``,
``forget_Q_A_gibberish``, ``forget_Q_A_PARA_ROUGE`` and ``forget_Q_A_PERT_ROUGE``.
"""
import dataclasses
import json
import math
import os

import numpy as np
from rouge_score import rouge_scorer

from cure_jax.infra.files import write_atomic
from cure_jax.metrics import tofu

EVAL_FILE = 'TOFU_EVAL.json'
SUMMARY_FILE = 'TOFU_SUMMARY.json'
# Our split names -> their metric-name prefixes.
PREFIXES = {'forget': 'forget', 'retain': 'retain', 'real_authors': 'ra', 'world_facts': 'wf'}
# Their top-level TOFU metrics (configs/eval/tofu.yaml there, the optional MIAs included):
# the ones TOFU_SUMMARY.json lists.
SUMMARY_METRICS = ('extraction_strength', 'forget_Q_A_Prob', 'forget_Q_A_ROUGE',
                   'forget_quality', 'forget_truth_ratio', 'mia_loss', 'mia_min_k',
                   'model_utility', 'privleak')
# What forget quality and privleak read from a retain model's TOFU_EVAL.json.
TRUTH_RATIO_KEY = 'forget_truth_ratio'
MIA_KEY = 'mia_min_k'


def _num(value):
  """A finite float, else None (strict JSON)."""
  value = float(value)
  return value if math.isfinite(value) else None


def _by_index(rows):
  return {str(i): row for i, row in enumerate(rows)}


def _metric(agg_value, rows=None):
  out = {'agg_value': _num(agg_value)}
  if rows is not None:
    out['value_by_index'] = _by_index(rows)
  return out


def _prob_rows(nll):
  """Their ``probability`` rows: ``prob = exp(-avg_loss)``, per item or per option list."""
  nll = np.asarray(nll, np.float64)
  if nll.ndim == 1:
    return [{'prob': _num(np.exp(-v)), 'avg_loss': _num(v)} for v in nll]
  return [{'prob': [_num(p) for p in np.exp(-row)], 'avg_loss': [_num(v) for v in row]}
          for row in nll]


def _rouge_rows(items, generations):
  scorer = rouge_scorer.RougeScorer(['rouge1', 'rougeL'], use_stemmer=True)
  rows = []
  for recall, text, reference, generation in zip(items['rouge'], items['inputs'],
                                                 items['answers'], generations):
    scores = scorer.score(reference, generation)
    rows.append({'rouge1_recall': _num(scores['rouge1'].recall),
                 'rougeL_f1': _num(scores['rougeL'].fmeasure), 'rougeL_recall': _num(recall),
                 'input': text, 'ground_truth': reference, 'generation': generation})
  return rows


def _split_logs(name, split):
  """The metrics of one split (forget, retain, real_authors or world_facts)."""
  prefix, items = PREFIXES[name], split['items']
  wrong = np.asarray(items['wrong_nll'], np.float64)
  answer_prob = np.exp(-np.asarray(items['answer_nll'], np.float64))
  logs = {f'{prefix}_Q_A_Prob': _metric(np.mean(answer_prob), _prob_rows(items['answer_nll'])),
          f'{prefix}_Q_A_PERT_Prob': _metric(np.mean(np.exp(-wrong)), _prob_rows(wrong)),
          f'{prefix}_Q_A_ROUGE': _metric(split['rouge'],
                                         _rouge_rows(items, split['generations']))}
  truth = _metric(split['truth_ratio'], [{'score': _num(r)} for r in split['truth_ratios']])
  if name == 'forget':
    logs['forget_truth_ratio'] = truth
    logs['extraction_strength'] = _metric(split['es'], [{'score': _num(s)} for s in items['es']])
  else:
    logs[f'{prefix}_Truth_Ratio'] = truth
  if name in ('forget', 'retain'):  # truth ratio against the paraphrased answer
    correct = items['correct_nll']
    logs[f'{prefix}_Q_A_PARA_Prob'] = _metric(np.mean(np.exp(-np.asarray(correct))),
                                              _prob_rows(correct))
  else:  # option-normalised probability (their probability_w_options)
    normalised = tofu.normalised_probability(items['answer_nll'], wrong)
    logs[f'{prefix}_Q_A_Prob_normalised'] = _metric(split['prob'],
                                                    [{'prob': _num(p)} for p in normalised])
  return logs


def _mia_logs(auc, scores):
  """Their ``mia_auc`` layout: each side's mean score and per-item scores, then the AUC."""
  out = {side: _metric(np.mean(scores[side]), [{'score': _num(s)} for s in scores[side]])
         for side in ('forget', 'holdout')}
  out['auc'] = out['agg_value'] = _num(auc)
  return out


def eval_logs(result):
  """TOFU_EVAL.json's content from an :meth:`cure_jax.lm.evaluate.Evaluator.evaluate` result.

  ``forget_quality`` is ``{"agg_value": null}`` when the result has none (no reference),
  as their ks_test writes it; privleak and the MIAs appear only with a holdout split.
  """
  logs = {}
  for name, split in result['splits'].items():
    logs.update(_split_logs(name, split))
  logs['model_utility'] = _metric(result['model_utility'])
  logs['forget_quality'] = {'agg_value': (_num(result['forget_quality'])
                                          if 'forget_quality' in result else None)}
  for key, scores in result.get('mia_items', {}).items():
    logs[key] = _mia_logs(result[key], scores)
  if 'privleak' in result:
    logs['privleak'] = _metric(result['privleak'])
  return dict(sorted(logs.items()))


def summary(logs):
  """TOFU_SUMMARY.json's content: each top-level metric's aggregate, None ones left out."""
  return {key: value['agg_value'] for key, value in sorted(logs.items())
          if key in SUMMARY_METRICS and value.get('agg_value') is not None}


def _dumps(obj):
  return json.dumps(obj, indent=4, allow_nan=False)


def write(directory, result):
  """Writes ``directory``/TOFU_EVAL.json then TOFU_SUMMARY.json, each whole or not at all."""
  logs = eval_logs(result)
  write_atomic(os.path.join(directory, EVAL_FILE), _dumps(logs))
  write_atomic(os.path.join(directory, SUMMARY_FILE), _dumps(summary(logs)))


def run_directory(workdir, method, variant, seed):
  """WORKDIR/ou/<method>[-<variant>]-seed<s>: one model's files (the exports' naming)."""
  name = '-'.join(p for p in (method, variant.replace(',', '_'), f'seed{seed}') if p)
  return os.path.join(workdir, 'ou', name)


@dataclasses.dataclass
class RetainLogs:
  """What forget quality and privleak need from a retain model's TOFU_EVAL.json."""
  path: str
  truth_ratios: np.ndarray   # its forget truth ratios (the KS test's reference sample)
  mia_auc: float             # its min-k% AUC (privleak's reference); None if not needed


def _missing(path, what):
  return ValueError(f'config.eval.retain_logs={path!r} lacks {what}; it must be a retain '
                    "model's TOFU_EVAL.json as open-unlearning writes it.")


def _load(path):
  if not os.path.isfile(path):
    raise ValueError(f'config.eval.retain_logs={path!r}: no such file; give the path of a '
                     "retain model's TOFU_EVAL.json.")
  try:
    with open(path, encoding='utf-8') as f:
      logs = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'config.eval.retain_logs={path!r} is not JSON ({e}); give a retain '
                     "model's TOFU_EVAL.json.") from None
  if not isinstance(logs, dict):
    raise _missing(path, 'a JSON object of metrics')
  return logs


def _finite(value):
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def read_retain_logs(path, need_mia=True):
  """The retain model's forget truth ratios and, when ``need_mia`` (a holdout split is
  evaluated, so privleak is computed), its min-k% AUC; a bad file is one ValueError line."""
  logs = _load(path)
  by_index = logs.get(TRUTH_RATIO_KEY, {})
  by_index = by_index.get('value_by_index') if isinstance(by_index, dict) else None
  if not isinstance(by_index, dict) or not by_index:
    raise _missing(path, f'"{TRUTH_RATIO_KEY}": {{"value_by_index": ...}} (per-item forget '
                         'truth ratios, for forget quality)')
  scores = [v.get('score') if isinstance(v, dict) else None for v in by_index.values()]
  bad = [i for i, s in zip(by_index, scores) if not _finite(s)]
  if bad:
    raise _missing(path, f'a finite "{TRUTH_RATIO_KEY}" score at indices {bad[:5]}')
  auc = None
  if need_mia:
    entry = logs.get(MIA_KEY)
    auc = entry.get('agg_value') if isinstance(entry, dict) else None
    if not _finite(auc) or not 0 <= auc <= 1:
      raise _missing(path, f'"{MIA_KEY}": {{"agg_value": <AUC in [0, 1]>}} (the min-k% '
                           'membership AUC, for privleak)')
  return RetainLogs(path, np.asarray(scores, np.float64), auc)
