"""TOFU from local files, and encoding of QA items into LM training / scoring arrays.

TOFU ("Task of Fictitious Unlearning", Maini et al. 2024) is published as ``locuslab/TOFU``
on the Hugging Face hub. :func:`load_tofu` reads a local copy of its files, each either JSON
lines (``name.json`` / ``name.jsonl``; a JSON array also works) or ``name.parquet``:

- required: ``forget{p}``, ``retain{100-p}``, ``forget{p}_perturbed``, ``retain_perturbed``,
  ``real_authors_perturbed``, ``world_facts_perturbed`` (``p`` = 01, 05 or 10);
- optional: ``full`` (the fine-tuning set, and author ids from its order) and
  ``holdout{p}`` (an empty ``holdout`` split when absent).

Items come back in the schema of :mod:`cure_jax.data.authors`. Fields a split file lacks
(``paraphrased_answer``, ``perturbed_answer``) are filled from the ``*_perturbed`` files by
question; retain questions outside ``retain_perturbed`` keep ``paraphrased_answer=None`` and
``perturbed_answer=[]`` and are left out of ``retain_eval``.
"""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cure_jax.data.authors import MIN_FORGET_AUTHORS

DEFAULT_TEMPLATE = 'Question: {question}\nAnswer: '
_TOFU_QA_PER_AUTHOR = 20
_TOFU_SOURCE = 'TOFU is published as locuslab/TOFU on the Hugging Face hub'


def _find_file(data_dir, name):
  for ext in ('.json', '.jsonl', '.parquet'):
    path = os.path.join(data_dir, name + ext)
    if os.path.isfile(path):
      return path
  return None


def read_records(path):
  """List of dict rows of a JSON-lines, JSON-array or Parquet file."""
  if path.endswith('.parquet'):
    try:
      return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
      raise ValueError(f'{path} is not a readable parquet file ({e}); download it again.') from e
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ValueError(f'{path} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 4]!r}); '
                     'TOFU files are UTF-8 JSON: download it again.') from e
  if text.lstrip().startswith('['):
    try:
      return json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not a valid JSON array ({e}); download it again.') from e
  records = []
  for line_no, line in enumerate(text.splitlines(), 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{line_no} is not valid JSON ({e}); expected one JSON object '
                         'per line.') from e
  return records


def _load(data_dir, name, required=True):
  path = _find_file(data_dir, name)
  if path is None:
    if not required:
      return None
    raise FileNotFoundError(
        f'TOFU split {name!r} not found: no {name}.json, {name}.jsonl or {name}.parquet in '
        f'{data_dir!r}. {_TOFU_SOURCE}; download its files into that directory.')
  records = read_records(path)
  for row, record in enumerate(records):
    for field in ('question', 'answer'):
      if not isinstance(record.get(field), str):
        raise ValueError(f'{path} row {row}: field {field!r} must be a string, got '
                         f'{record.get(field)!r}.')
  return records


def _item(record, author, extra=None):
  """A TOFU-schema item; missing fields come from ``extra`` (a *_perturbed record) or are empty."""
  extra = extra or {}
  paraphrase = record.get('paraphrased_answer') or extra.get('paraphrased_answer')
  perturbed = record.get('perturbed_answer')
  if perturbed is None or len(perturbed) == 0:
    perturbed = extra.get('perturbed_answer')
  return {'question': record['question'], 'answer': record['answer'],
          'paraphrased_answer': paraphrase,
          'perturbed_answer': [str(a) for a in perturbed] if perturbed is not None else [],
          'author': author}


def _by_question(records):
  table = {}
  for record in records:
    table.setdefault(record['question'], record)
  return table


def _author_namer(full):
  """``author_of(split, i, record)``: the author id of row ``i`` of file ``split``.

  TOFU's files do not name authors, so ids count blocks of 20 questions: by the question's
  position in ``full`` when ``full`` holds it (``'tofu_author_{i:03d}'``), else by the row's
  position in its own file (``'{split}_author_{i:03d}'``).
  """
  full_authors = {}
  for i, record in enumerate(full or []):
    full_authors.setdefault(record['question'], f'tofu_author_{i // _TOFU_QA_PER_AUTHOR:03d}')

  def author_of(split, i, record):
    return full_authors.get(record['question'], f'{split}_author_{i // _TOFU_QA_PER_AUTHOR:03d}')

  return author_of


def _forget_items(forget, forget_perturbed, author_of, forget_name):
  """The forget split's items, each joined with its ``*_perturbed`` record by question.

  Every forget item needs a paraphrased answer and perturbed answers: the truth ratio and
  forget quality are computed from them, so a missing one is an error, not a gap.
  """
  items = []
  for i, record in enumerate(forget):
    item = _item(record, author_of('forget', i, record), forget_perturbed.get(record['question']))
    if item['paraphrased_answer'] is None or not item['perturbed_answer']:
      raise ValueError(f'Forget question {record["question"]!r} has no paraphrased/perturbed '
                       f'answers in {forget_name} or {forget_name}_perturbed; the truth ratio '
                       'and forget quality need them. Use the matching TOFU files.')
    items.append(item)
  return items


def load_tofu(data_dir, forget_pct):
  """TOFU splits from ``data_dir`` as the dict of :func:`cure_jax.data.authors.make_splits`.

  Keys: ``forget``, ``retain``, ``retain_eval`` (retain items with perturbed answers),
  ``holdout``, ``full``, ``world_facts``, ``real_authors``. Authors are not named in TOFU's
  files: ``author`` is ``'tofu_author_{i:03d}'`` from the item's position in ``full`` (20
  questions per author), or ``'{split}_author_{i:03d}'`` from its position in its split file
  when ``full`` is absent; ``''`` for world facts and real authors.
  """
  if forget_pct not in MIN_FORGET_AUTHORS:
    raise ValueError(f'forget_pct={forget_pct!r}; TOFU has forget01, forget05 and forget10, so '
                     'use 1, 5 or 10.')
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'TOFU directory {data_dir!r} does not exist. {_TOFU_SOURCE}.')
  forget_name, retain_name = f'forget{forget_pct:02d}', f'retain{100 - forget_pct:02d}'
  forget = _load(data_dir, forget_name)
  retain = _load(data_dir, retain_name)
  forget_perturbed = _by_question(_load(data_dir, f'{forget_name}_perturbed'))
  retain_perturbed = _by_question(_load(data_dir, 'retain_perturbed'))
  world = _load(data_dir, 'world_facts_perturbed')
  real = _load(data_dir, 'real_authors_perturbed')
  for name, records in (('world_facts_perturbed', world), ('real_authors_perturbed', real)):
    if not records:  # model utility would silently be computed without it
      raise ValueError(f'{_find_file(data_dir, name)} holds no records; model utility needs '
                       'its questions: download it again.')
  full = _load(data_dir, 'full', required=False)
  holdout = _load(data_dir, f'holdout{forget_pct:02d}', required=False) or []
  if not forget:
    raise ValueError(f'TOFU split {forget_name!r} in {data_dir!r} is empty; the forget set needs '
                     'at least one item.')

  author_of = _author_namer(full)
  forget_items = _forget_items(forget, forget_perturbed, author_of, forget_name)
  retain_items = [_item(r, author_of('retain', i, r), retain_perturbed.get(r['question']))
                  for i, r in enumerate(retain)]
  if full is None:
    full_items = retain_items + forget_items
  else:
    enriched = {item['question']: item for item in retain_items + forget_items}
    full_items = [enriched.get(r['question']) or _item(r, author_of('full', i, r))
                  for i, r in enumerate(full)]
  return {
      'forget': forget_items,
      'retain': retain_items,
      'retain_eval': [item for item in retain_items
                      if item['perturbed_answer'] and item['paraphrased_answer'] is not None],
      'holdout': [_item(r, f'holdout_author_{i // _TOFU_QA_PER_AUTHOR:03d}')
                  for i, r in enumerate(holdout)],
      'full': full_items,
      'world_facts': [_item(r, '') for r in world],
      'real_authors': [_item(r, '') for r in real],
  }


def _encode_rows(tokenizer, prompts, answers, max_len, names):
  """Right-padded ``[bos] prompt answer eos`` rows; see :func:`encode_qa` for the layout."""
  n = len(prompts)
  tokens = np.full((n, max_len), tokenizer.pad_id, np.int32)
  loss_mask = np.zeros((n, max_len), np.float32)
  prompt_lengths = np.zeros(n, np.int32)
  answer_lengths = np.zeros(n, np.int32)
  bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  for row, (prompt, answer) in enumerate(zip(prompts, answers)):
    if not isinstance(answer, str):
      raise ValueError(f'{names[row]}: answer must be a string, got {answer!r}.')
    prompt_ids = bos + list(tokenizer.encode(prompt))
    answer_ids = list(tokenizer.encode(answer)) + [tokenizer.eos_id]
    needed = len(prompt_ids) + len(answer_ids)
    if needed > max_len:
      raise ValueError(f'{names[row]} needs {needed} tokens (prompt {len(prompt_ids)} + answer '
                       f'with eos {len(answer_ids)}) but max_len={max_len}; raise max_len or '
                       'shorten the item.')
    tokens[row, :needed] = prompt_ids + answer_ids
    # Position t predicts token t+1: the answer tokens are targets of t = P-1 .. P+A-2.
    loss_mask[row, len(prompt_ids) - 1:needed - 1] = 1.0
    prompt_lengths[row] = len(prompt_ids)
    answer_lengths[row] = len(answer_ids)
  return {'tokens': tokens, 'loss_mask': loss_mask, 'prompt_lengths': prompt_lengths,
          'answer_lengths': answer_lengths}


def _describe(index, item):
  return f'item {index} (question {item.get("question")!r:.80})'


def _prompt(template, index, item):
  if not isinstance(item.get('question'), str):
    raise ValueError(f'{_describe(index, item)}: question must be a str.')
  return template.format(question=item['question'])


def encode_qa(tokenizer, items, max_len, template=DEFAULT_TEMPLATE, answer_key='answer'):
  """Teacher-forcing arrays for QA items, one row per item.

  Row layout: ``[bos] + encode(template.format(question=q)) + encode(answer) + [eos]``,
  right-padded with ``pad_id`` (``bos`` only if the tokenizer has one). Prompt and answer are
  encoded separately so the answer's tokens do not depend on the prompt.

  Convention: logits at position ``t`` predict ``tokens[:, t + 1]``. ``loss_mask[:, t] = 1``
  exactly when ``tokens[:, t + 1]`` is an answer token (the answer's tokens and the final eos),
  i.e. for ``t`` in ``[P - 1, P + A - 1)`` with ``P = prompt_lengths``, ``A = answer_lengths``.
  The per-token NLL is therefore ``CE(logits[:, :-1], tokens[:, 1:]) * loss_mask[:, :-1]``;
  the last column of ``loss_mask`` is always 0.

  Returns:
    dict of numpy arrays: ``tokens`` int32 NxL, ``loss_mask`` float32 NxL,
    ``prompt_lengths`` int32 N (tokens before the first answer token, bos included) and
    ``answer_lengths`` int32 N (answer tokens + eos = ``loss_mask.sum(1)``).
  """
  items = list(items)
  if max_len < 2:
    raise ValueError(f'max_len={max_len} must be >= 2.')
  prompts = [_prompt(template, i, item) for i, item in enumerate(items)]
  answers = [item[answer_key] for item in items]
  names = [_describe(i, item) for i, item in enumerate(items)]
  return _encode_rows(tokenizer, prompts, answers, max_len, names)


def encode_answers(tokenizer, items, max_len, answer_key='perturbed_answer',
                   template=DEFAULT_TEMPLATE):
  """Scores alternative answers: one :func:`encode_qa` row per (item, option).

  ``item[answer_key]`` is a string (one option, e.g. ``'paraphrased_answer'``) or a list of
  strings (e.g. ``'perturbed_answer'``). Besides the :func:`encode_qa` arrays, returns
  ``item_index`` (int32, the item of each row) and ``option_index`` (int32, the option's
  position in its list), rows ordered item by item.
  """
  items = list(items)
  prompts, answers, names, item_index, option_index = [], [], [], [], []
  for i, item in enumerate(items):
    options = item.get(answer_key)
    if isinstance(options, str):
      options = [options]
    if not options:
      raise ValueError(f'{_describe(i, item)} has no {answer_key!r} options to score; drop it '
                       "(e.g. use the 'retain_eval' split) or supply them.")
    prompt = _prompt(template, i, item)
    for j, option in enumerate(options):
      prompts.append(prompt)
      answers.append(option)
      names.append(f'{_describe(i, item)} option {j}')
      item_index.append(i)
      option_index.append(j)
  encoded = _encode_rows(tokenizer, prompts, answers, max_len, names)
  encoded['item_index'] = np.asarray(item_index, np.int32)
  encoded['option_index'] = np.asarray(option_index, np.int32)
  return encoded


def encode_prompts(tokenizer, items, template=DEFAULT_TEMPLATE, width=None):
  """Right-padded prompts for :func:`cure_jax.models.causal_lm.generate`.

  Returns ``{'tokens': int32 NxW, 'prompt_lengths': int32 N}`` with the same prompt tokens
  as :func:`encode_qa` (bos included); ``W`` = the longest prompt, or ``width`` if given.
  """
  bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  rows = [bos + list(tokenizer.encode(_prompt(template, i, item)))
          for i, item in enumerate(items)]
  longest = max((len(r) for r in rows), default=0)
  width = longest if width is None else width
  if longest > width:
    raise ValueError(f'The longest prompt has {longest} tokens but width={width}.')
  tokens = np.full((len(rows), width), tokenizer.pad_id, np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  return {'tokens': tokens, 'prompt_lengths': np.asarray([len(r) for r in rows], np.int32)}
