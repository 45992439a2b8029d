"""TOFU evaluation of an LM: forget ES / QA prob / ROUGE / truth ratios, and model utility.

Every QA set is encoded once (answers, paraphrases, perturbed answers, prompts) and all
splits are stacked into one teacher-forced table and one prompt table of a common width.
:meth:`Evaluator.evaluate` then scores any parameters with full chunks of one shape: one
compiled scorer and one compiled generator serve every model of a run (original, retrain,
every method and seed), and no chunk is wasted on a split's padding rows.

Split roles (open-unlearning's TOFU): ``forget`` and ``retain`` compare against the
paraphrased answer, ``real_authors`` and ``world_facts`` against the plain answer and
report the option-normalised probability. Model utility is the harmonic mean of
{QA prob, ROUGE, truth ratio} on retain, real-authors and world-facts (those present).
A ``holdout`` split (authors never trained on) is only teacher-forced: its answers' token
NLLs against the forget answers' give the membership-inference AUCs (min-k% and LOSS) and,
against the retrain model's AUC, open-unlearning's ``privleak``.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cure_jax.data import tofu as tofu_data
from cure_jax.unlearning import losses
from cure_jax.metrics import privacy, tofu
from cure_jax.models import causal_lm

UTILITY_SPLITS = ('retain', 'real_authors', 'world_facts')
# Entries of an :meth:`Evaluator.evaluate` result that are per-item details, not scalars.
DETAIL_KEYS = ('splits', 'mia_items')
# Splits whose truth ratio compares the paraphrased answer (the others: the plain answer).
PARAPHRASE_SPLITS = ('forget', 'retain')
# Splits only scored teacher-forced (no perturbed answers, no generation): privacy attacks.
SCORE_ONLY_SPLITS = ('holdout',)
DEFAULT_MAX_NEW_TOKENS = 200  # open-unlearning's TOFU generation length


def _pad_rows(x, rows):
  pad = [(0, rows - len(x))] + [(0, 0)] * (x.ndim - 1)
  return np.pad(x, pad)


def _pad_width(x, width, value=0):
  return np.pad(x[:, :width], [(0, 0), (0, max(0, width - x.shape[1]))], constant_values=value)


def _used_width(loss_mask, multiple=16):
  """Columns up to the last answer token (+ the token it predicts), rounded up."""
  used = int(np.max(np.flatnonzero(loss_mask.any(0)), initial=0)) + 2
  return -(-used // multiple) * multiple


def _option_count(name, items, num_perturbed):
  """Perturbed answers scored per item of split ``name``: the fewest any item has, at most
  ``num_perturbed`` (0: no cap); a split with an item without any is an error."""
  num_options = min(len(item['perturbed_answer']) for item in items)
  if num_perturbed:
    num_options = min(num_options, int(num_perturbed))
  if num_options == 0:
    raise ValueError(f'Split {name!r} has items without perturbed answers; truth ratios '
                     'need them (use retain_eval for TOFU retain).')
  return num_options


@functools.partial(jax.jit, static_argnums=0)
def _score(model, params, tokens_BxL, loss_mask_BxL):
  """Per-example mean answer NLL, greedy predictions, targets and per-token NLLs."""
  logits, targets, mask = losses.next_token_view(
      model.apply({'params': params}, tokens_BxL), tokens_BxL, loss_mask_BxL)
  nll_BxT = losses.cross_entropy(logits, targets)
  return losses.sequence_mean(nll_BxT, mask), jnp.argmax(logits, -1), targets, nll_BxT


class Evaluator:
  """Encodes the evaluation splits once; :meth:`evaluate` scores any parameters."""

  def __init__(self, model, tokenizer, splits, template, batch_size=64,
               max_new_tokens=DEFAULT_MAX_NEW_TOKENS, max_len=None, num_perturbed=0):
    """``splits``: name -> list of TOFU-schema items (forget, retain, world_facts, holdout...).

    ``max_new_tokens``: greedy generation length (stops at EOS), capped by the context;
    ``max_len``: the longest encoded row (default: the model's context);
    ``num_perturbed``: perturbed answers scored per item for the truth ratio (0: all).
    """
    if not splits.get('forget'):
      raise ValueError('The forget split is empty: nothing to evaluate unlearning on.')
    if batch_size < 1:
      raise ValueError(f'config.eval.batch_size={batch_size} must be >= 1.')
    if max_new_tokens < 1:
      raise ValueError(f'config.eval.max_new_tokens={max_new_tokens} must be >= 1.')
    if tokenizer.vocab_size > model.config.vocab_size:
      raise ValueError(f'The tokenizer has {tokenizer.vocab_size} tokens but the model '
                       f'vocab_size={model.config.vocab_size}; use the checkpoint\'s own '
                       'tokenizer.')
    self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
    self.splits = {name: items for name, items in splits.items() if items}
    self.generated = [name for name in self.splits if name not in SCORE_ONLY_SPLITS]
    max_len = model.config.max_len if max_len is None else min(max_len, model.config.max_len)
    self._build_scoring_table(template, max_len, num_perturbed)
    self._plan_chunks()
    self._build_prompt_table(template, max_len, max_new_tokens)
    for table in (self.tokens, self.prompt_tokens):  # scored under jit, unchecked there
      causal_lm.check_token_ids(table, model.config.vocab_size, tokenizer.vocab_size)

  def _build_scoring_table(self, template, max_len, num_perturbed):
    """Stacks every split's encoded rows into one teacher-forced table of a common width.

    Sets ``tokens`` and ``loss_mask`` (the table), ``width``, ``rows`` ((split, kind) -> slice
    of the table; kinds answer / correct / wrong), ``num_options`` and ``answer_lengths``.
    """
    parts, self.rows, self.num_options, self.answer_lengths = [], {}, {}, {}
    start = 0
    for name, items in self.splits.items():
      for kind, enc in self._encode_split(name, items, template, max_len, num_perturbed).items():
        parts.append(enc)
        self.rows[name, kind] = slice(start, start + len(enc['tokens']))
        start += len(enc['tokens'])
    self.width = min(max_len, max(_used_width(p['loss_mask']) for p in parts))
    self.tokens = np.concatenate([_pad_width(p['tokens'], self.width, self.tokenizer.pad_id)
                                  for p in parts])
    self.loss_mask = np.concatenate([_pad_width(p['loss_mask'], self.width) for p in parts])
    scored = self.loss_mask[:, :-1].any(1)
    if not scored.all():
      name, kind = next(key for key, rows in self.rows.items()
                        if not scored[rows].all())
      raise ValueError(f'Split {name!r} has {kind} rows without answer tokens; every scored '
                       'item needs a non-empty answer (check the data).')

  def _encode_split(self, name, items, template, max_len, num_perturbed):
    """One split's encoded rows by kind, recording its answer lengths and option count.

    Every split has its ``answer`` rows; a split that is not score-only adds its perturbed
    answers (``wrong``) and, where the truth ratio compares paraphrases, ``correct`` rows.
    """
    if name not in SCORE_ONLY_SPLITS:
      self.num_options[name] = _option_count(name, items, num_perturbed)
    answer = tofu_data.encode_qa(self.tokenizer, items, max_len, template)
    self.answer_lengths[name] = answer['answer_lengths']
    if name in SCORE_ONLY_SPLITS:
      return {'answer': answer}
    # Equal option counts per item keep the wrong-answer NLLs an NxK array.
    options = [dict(item, perturbed_answer=item['perturbed_answer'][:self.num_options[name]])
               for item in items]
    encoded = {'answer': answer,
               'wrong': tofu_data.encode_answers(self.tokenizer, options, max_len,
                                                 'perturbed_answer', template)}
    if name in PARAPHRASE_SPLITS:  # elsewhere the correct answer is the scored answer
      encoded['correct'] = tofu_data.encode_qa(self.tokenizer, items, max_len, template,
                                               'paraphrased_answer')
    return encoded

  def _plan_chunks(self):
    """Groups the table's rows into ``chunks``: ``(row indices, width)`` pairs to score."""
    # Chunks of rows of similar length, each cut to its own width (a multiple of 32: a few
    # compiled shapes), so short rows (world facts, perturbed answers) skip most padding.
    used = np.array([_used_width(mask[None], 1) for mask in self.loss_mask])
    order = np.argsort(used, kind='stable')
    batch_size = self.batch_size
    self.chunks = [(order[i:i + batch_size],
                    min(self.width, -(-int(used[order[i:i + batch_size]].max()) // 32) * 32))
                   for i in range(0, len(order), batch_size)]

  def _build_prompt_table(self, template, max_len, max_new_tokens):
    """Stacks the generated splits' prompts into one table and fixes the generation length.

    Sets ``prompt_tokens`` / ``prompt_lengths`` (the table), ``prompt_width``, ``prompt_rows``
    (split -> slice of the table) and ``max_new_tokens`` (capped by the context).
    """
    prompts = {name: tofu_data.encode_prompts(self.tokenizer, self.splits[name], template)
               for name in self.generated}
    self.prompt_width = max(p['tokens'].shape[1] for p in prompts.values())
    self.prompt_rows, self.prompt_texts = {}, {}
    start = 0
    for name, p in prompts.items():
      self.prompt_rows[name] = slice(start, start + len(p['tokens']))
      start += len(p['tokens'])
      # The prompts as open-unlearning's ROUGE logs show them: decoded, special tokens dropped.
      self.prompt_texts[name] = [self.tokenizer.decode(row[:n])
                                 for row, n in zip(p['tokens'], p['prompt_lengths'])]
    self.prompt_tokens = np.concatenate([_pad_width(p['tokens'], self.prompt_width,
                                                    self.tokenizer.pad_id)
                                         for p in prompts.values()])
    self.prompt_lengths = np.concatenate([p['prompt_lengths'] for p in prompts.values()])
    self.max_new_tokens = min(int(max_new_tokens), max_len - self.prompt_width)
    if self.max_new_tokens < 1:
      raise ValueError(f'Prompts of {self.prompt_width} tokens leave no room to generate '
                       f'within model.max_len={max_len}; raise it.')

  def teacher_forced(self, params):
    """Per table row (numpy, table order): mean answer NLL, argmax predictions, targets and
    per-token NLLs (the last three ``N x (width-1)``, aligned with ``loss_mask[:, :-1]``)."""
    n, width = len(self.tokens), self.width - 1
    nll = np.zeros(n, np.float32)
    preds, targets = np.zeros((n, width), np.int32), np.zeros((n, width), np.int32)
    token_nll = np.zeros((n, width), np.float32)
    for rows, chunk_width in self.chunks:
      chunk_nll, chunk_preds, chunk_targets, chunk_token_nll = jax.device_get(_score(
          self.model, params, _pad_rows(self.tokens[rows, :chunk_width], self.batch_size),
          _pad_rows(self.loss_mask[rows, :chunk_width], self.batch_size)))
      nll[rows] = chunk_nll[:len(rows)]
      preds[rows, :chunk_width - 1] = chunk_preds[:len(rows)]
      targets[rows, :chunk_width - 1] = chunk_targets[:len(rows)]
      token_nll[rows, :chunk_width - 1] = chunk_token_nll[:len(rows)]
    return nll, preds, targets, token_nll

  def generate(self, params):
    """Greedy answers (decoded strings) to every split's questions: name -> list of str."""
    texts = []
    n = len(self.prompt_tokens)
    for start in range(0, n, self.batch_size):
      rows = slice(start, start + self.batch_size)
      count = len(self.prompt_tokens[rows])
      tokens = _pad_rows(self.prompt_tokens[rows], self.batch_size)
      lengths = _pad_rows(self.prompt_lengths[rows], self.batch_size)
      lengths[count:] = 1
      out = np.asarray(causal_lm.generate(self.model, params, tokens, lengths,
                                          self.max_new_tokens, self.tokenizer.eos_id,
                                          **self._vocab_limit()))
      for row in out[:count]:
        ends = np.flatnonzero(row == self.tokenizer.eos_id)
        texts.append(self.tokenizer.decode(row[:ends[0]] if ends.size else row).strip())
    return {name: texts[rows] for name, rows in self.prompt_rows.items()}

  def _vocab_limit(self):
    """A padded vocabulary (model's larger than the tokenizer's) must not generate its extra
    ids, which decode to no text; with equal sizes there is nothing to exclude."""
    if self.tokenizer.vocab_size < self.model.config.vocab_size:
      return {'vocab_limit': self.tokenizer.vocab_size}
    return {}

  def _split_metrics(self, name, nll, preds, targets, generations):
    answer, wrong = self.rows[name, 'answer'], self.rows[name, 'wrong']
    answer_nll = nll[answer]
    correct_nll = nll[self.rows[name, 'correct']] if name in PARAPHRASE_SPLITS else answer_nll
    wrong_nll = nll[wrong].reshape(-1, self.num_options[name])
    ratios = tofu.truth_ratio(correct_nll, wrong_nll)
    references = [item['answer'] for item in self.splits[name]]
    rouge = tofu.rouge_l_recall(generations, references)
    es = tofu.extraction_strength(preds[answer], targets[answer], self.loss_mask[answer, :-1])
    out = {
        'rouge': float(np.mean(rouge)),
        'es': float(np.mean(es)),
        'truth_ratios': ratios,
        'generations': generations,
        # Per item, for open-unlearning's TOFU_EVAL.json (cure_jax.lm.ou_files).
        'items': {'answer_nll': answer_nll, 'correct_nll': correct_nll, 'wrong_nll': wrong_nll,
                  'rouge': rouge, 'es': es, 'answers': references,
                  'inputs': self.prompt_texts[name]},
    }
    if name in PARAPHRASE_SPLITS:
      out['prob'] = float(np.mean(np.exp(-answer_nll)))
    else:  # open-unlearning normalises against the perturbed options on these sets
      out['prob'] = float(np.mean(tofu.normalised_probability(answer_nll, wrong_nll)))
    if name == 'forget':
      out['truth_ratio'] = tofu.forget_truth_ratio_score(ratios)
    else:
      out['truth_ratio'] = tofu.utility_truth_ratio_score(ratios)
    return out

  def privacy(self, token_nll):
    """Min-k% and LOSS membership-inference AUCs, forget vs holdout, and under
    ``'mia_items'`` each item's attack score (for TOFU_EVAL.json); {} without holdout."""
    if 'holdout' not in self.splits:
      return {}
    out, items = {}, {}
    for key, attack in (('mia_min_k', privacy.min_k_scores), ('mia_loss', privacy.loss_scores)):
      items[key] = {name: attack(token_nll[self.rows[name, 'answer']],
                                 self.loss_mask[self.rows[name, 'answer'], :-1])
                    for name in ('forget', 'holdout')}
      out[key] = privacy.mia_auc(items[key]['forget'], items[key]['holdout'])
    out['mia_items'] = items
    return out

  def evaluate(self, params, retrain_forget_ratios=None, retrain_mia_auc=None):
    """All splits; a flat dict of scalars plus per-split details under ``'splits'``.

    ``retrain_forget_ratios``: the retrain model's forget truth ratios, for forget quality
    (omitted when None, i.e. while evaluating the retrain model itself);
    ``retrain_mia_auc``: the retrain model's min-k% AUC, for ``privleak``. With a holdout
    split the result has ``mia_min_k`` and ``mia_loss`` (AUCs) and, given the reference,
    ``privleak``. Its :data:`DETAIL_KEYS` entries hold per-item values (``splits[name]
    ['items']``, ``mia_items``) from which :mod:`cure_jax.lm.ou_files` writes TOFU_EVAL.json.
    """
    params = jax.device_put(params)  # once, not once per chunk
    nll, preds, targets, token_nll = self.teacher_forced(params)
    generations = self.generate(params)
    per_split = {name: self._split_metrics(name, nll, preds, targets, generations[name])
                 for name in self.generated}
    forget = per_split['forget']
    components = [per_split[s][k] for s in UTILITY_SPLITS if s in per_split
                  for k in ('prob', 'rouge', 'truth_ratio')]
    if not components:
      raise ValueError(f'No utility split among {UTILITY_SPLITS} to compute model utility.')
    result = {
        'forget_es': forget['es'],
        'forget_prob': forget['prob'],
        'forget_rouge': forget['rouge'],
        'forget_truth_ratio': forget['truth_ratio'],
        'model_utility': tofu.harmonic_mean(components),
        'splits': per_split,
    }
    for s in UTILITY_SPLITS:
      if s in per_split:
        for k in ('prob', 'rouge', 'truth_ratio'):
          result[f'{s}_{k}'] = per_split[s][k]
    if retrain_forget_ratios is not None:
      result['forget_quality'] = tofu.forget_quality(forget['truth_ratios'],
                                                     retrain_forget_ratios)
    result.update(self.privacy(token_nll))
    if retrain_mia_auc is not None and 'mia_min_k' in result:
      result['privleak'] = privacy.privleak(result['mia_min_k'], retrain_mia_auc)
    return result
