"""The LLM concept-unlearning runner behind ``experiments.main`` (``config.task == 'lm'``).

Modes: ``train_original`` / ``train_retrain`` fine-tune (or reuse) one LM;
``unlearn`` runs ``config.unlearn.method`` for every seed; ``reproduce`` runs every entry
of ``config.reproduce.runs``. Both of the latter fine-tune (or reuse) the original and
retrain models, evaluate them, and write ``results.json`` / ``results.md`` /
``generations.json`` into the workdir.

The model is either the small byte-level LM trained from scratch (``config.model.pretrained
= ''``) or a pretrained checkpoint (:mod:`cure_jax.lm.setup` loads it, its tokenizer and its
chat prompt), fine-tuned on the authors like TOFU; already fine-tuned original / retrain
checkpoints (``config.model.original`` / ``.retrain``) skip that fine-tuning.

Fine-tuned models live in ``checkpoints/<kind>-<fingerprint>`` (same settings: reused; other
settings: trained anew beside). Each finished (method, variant, seed) run is appended to
``runs.jsonl`` (:class:`cure_jax.sweep.SweepLog`), so a killed ``reproduce`` rerun skips it.
Hyperparameter precedence: :mod:`cure_jax.lm.config`.
"""
import dataclasses
import math
import os
import time

from absl import logging

from cure_jax import fingerprint, sweep
from cure_jax.data import authors, tofu as tofu_data
from cure_jax.lm import evaluate, finetune, report, setup, unlearn

MODES = ('train_original', 'train_retrain', 'unlearn', 'reproduce')
# Short names accepted in config.reproduce.runs ("grogu:T=5,w=10").
_ALIASES = {'T': ('temperature',), 'w': ('w_h', 'w_s'), 'beta': None}
_HPARAMS = ('alpha', 'temperature', 'w_h', 'w_s', 'eps', 'npo_beta', 'simnpo_beta',
            'simnpo_delta', 'simnpo_gamma', 'undial_beta')


def load_splits(data_cfg):
  """The TOFU split dict from the embedded generator or a local TOFU copy."""
  if data_cfg.source == 'authors':
    items = authors.generate_authors(data_cfg.num_authors, data_cfg.qa_per_author, data_cfg.seed)
    splits = authors.make_splits(items, data_cfg.forget_pct)
  elif data_cfg.source == 'tofu':
    if not data_cfg.data_dir:
      raise ValueError("config.data.source='tofu' needs config.data.data_dir (a local copy of "
                       'locuslab/TOFU from the Hugging Face hub).')
    splits = tofu_data.load_tofu(data_cfg.data_dir, data_cfg.forget_pct)
  else:
    raise ValueError(f"config.data.source={data_cfg.source!r}; use 'authors' or 'tofu'.")
  if not splits['forget']:
    raise ValueError(f'The forget split is empty (forget_pct={data_cfg.forget_pct}); '
                     'nothing to unlearn.')
  return splits


make_model = setup.make_model  # the byte-level LM of config.model (kept for callers)


def parse_run(spec):
  """``'grogu:T=5,w=10'`` -> ``('grogu', {'temperature': 5.0, 'w_h': 10.0, 'w_s': 10.0})``."""
  method, _, settings = spec.partition(':')
  method = method.strip()
  unlearn.get_method(method)
  overrides = {}
  for setting in filter(None, (s.strip() for s in settings.split(','))):
    key, sep, value = setting.partition('=')
    if not sep:
      raise ValueError(f'Bad setting {setting!r} in run {spec!r}; write key=value.')
    keys = _ALIASES.get(key.strip()) or (key.strip(),)
    for k in keys:
      if k not in _HPARAMS:
        raise ValueError(f'Unknown hyper-parameter {key!r} in run {spec!r}; use T, w or one '
                         f'of {_HPARAMS}.')
      overrides[k] = float(value)
  return method, overrides


def _hparams(ucfg, overrides):
  hp = {k: float(ucfg[k]) for k in _HPARAMS}
  hp.update(overrides)
  return hp


def effective_runs(config, cli_keys=frozenset()):
  """``[(method, variant, hp, record)]`` of ``config.mode``: ``hp`` the objective's settings,
  ``record`` every effective unlearning hyperparameter (stored as the rows' ``hparams``).

  Precedence (documented in :mod:`cure_jax.lm.config`): a run spec's setting beats
  ``config.unlearn``; a ``--config.unlearn.<key>`` given on the command line beats a spec
  from the config file (``--config.reproduce.runs`` given on the command line is itself a
  command-line value and wins). Runs that end up identical are run once.
  """
  specs = ([(config.unlearn.method, {})] if config.mode == 'unlearn'
           else [parse_run(spec) for spec in config.reproduce.runs])
  runs_from_cli = 'reproduce.runs' in cli_keys
  out, seen = [], set()
  for method, spec in specs:
    kept = {}
    for key, value in spec.items():
      if f'unlearn.{key}' in cli_keys and not runs_from_cli:
        logging.warning('%s: --config.unlearn.%s=%s from the command line wins over %s=%s of '
                        'a config.reproduce.runs entry', method, key, config.unlearn[key], key,
                        value)
        continue
      kept[key] = value
    hp = _hparams(config.unlearn, kept)
    variant = unlearn.variant_name(method, hp)
    record = {k: (list(v) if isinstance(v, tuple) else v)
              for k, v in sorted(config.unlearn.to_dict().items())
              if k not in ('method', 'log_every')}
    record.update(hp)
    ident = (method, variant, fingerprint.digest(record))
    if ident in seen:
      logging.warning('%s %s: the same effective settings as an earlier run; run once',
                      method, variant)
      continue
    seen.add(ident)
    out.append((method, variant, hp, record))
  return out


def _encode(tokenizer, items, config, template=None):
  template = config.data.template if template is None else template
  return tofu_data.encode_qa(tokenizer, items, config.model.max_len, template)


def train_sets(splits, config):
  """Fine-tuning items of the original and retrain models.

  A model trained from scratch knows no world facts; ``data.train_utility_sets`` adds the
  real-authors / world-facts QA to both training sets, standing in for pre-training
  knowledge that model utility then checks is kept.
  """
  extra = splits['real_authors'] + splits['world_facts'] if config.data.train_utility_sets else []
  return {'original': splits['full'] + extra, 'retrain': splits['retain'] + extra}


def model_info(config, workdir, kind, lm, splits):
  """``{'fingerprint', 'settings', 'directory'}`` of the ``kind`` model: a named fine-tuned
  checkpoint, or the one fine-tuned here under ``checkpoints/<fingerprint>``."""
  if config.model[kind]:
    settings = {'kind': kind, 'checkpoint': config.model[kind], 'dtype': config.model.dtype,
                'max_len': config.model.max_len}
    return {'fingerprint': fingerprint.model_fingerprint(settings), 'settings': settings,
            'directory': None}
  architecture = dataclasses.asdict(lm.model.config)
  settings = fingerprint.lm_model_settings(config, kind, architecture, lm.template,
                                           train_sets(splits, config)[kind])
  fp = fingerprint.model_fingerprint(settings)
  return {'fingerprint': fp, 'settings': settings,
          'directory': os.path.join(fingerprint.cache_root(config, workdir, 'checkpoints'), fp)}


def finetuned(config, workdir, kind, model, tokenizer, splits, lm=None):
  """The ``kind`` model's parameters: the named fine-tuned checkpoint, or fine-tuned here
  (from the pretrained parameters, or a random initialisation) and checkpointed."""
  lm = lm or setup.LoadedModel(model, None, tokenizer, config.data.template)
  info = model_info(config, workdir, kind, lm, splits)
  if config.model[kind]:
    logging.info('%s model: the fine-tuned checkpoint %s', kind, config.model[kind])
    return setup.load_params(config, config.model[kind], model)
  items = train_sets(splits, config)[kind]
  return finetune.finetune(model, _encode(tokenizer, items, config, lm.template),
                           config.finetune, config.seed, info['directory'], info['settings'],
                           name=f'finetune {kind}', init_params=lm.params,
                           place=setup.placement(config))


def _evenly(items, count):
  """``count`` evenly spaced items (all of them when count is 0 or too large)."""
  if not count or len(items) <= count:
    return list(items)
  stride = len(items) / count
  return [items[int(i * stride)] for i in range(count)]


def eval_splits(splits, config):
  """Evaluation items; retain_eval (and, if asked, the utility sets) subsampled evenly."""
  return {'forget': splits['forget'],
          'retain': _evenly(splits['retain_eval'], config.eval.retain_items),
          'real_authors': _evenly(splits['real_authors'], config.eval.utility_items),
          'world_facts': _evenly(splits['world_facts'], config.eval.utility_items),
          'holdout': splits.get('holdout', [])}


FORGET_MASKS = ('answer_token', 'author_names')


def forget_ids(config, tokenizer, splits):
  """The token ids masked at every answer position for ``forget_mask='author_names'``.

  Every token of each forget author's name, encoded alone and after a space (a BPE
  tokenizer encodes a name inside a sentence with its leading space); whitespace-only
  tokens are left out. None for ``'answer_token'``.
  """
  mode = config.unlearn.forget_mask
  if mode not in FORGET_MASKS:
    raise ValueError(f'config.unlearn.forget_mask={mode!r}; use one of {FORGET_MASKS}.')
  if mode == 'answer_token':
    return None
  if config.data.source != 'authors':
    raise ValueError("config.unlearn.forget_mask='author_names' needs the authors' names, "
                     f"which config.data.source={config.data.source!r} does not give (TOFU's "
                     "files do not name authors); use 'answer_token'.")
  ids = set()
  for name in sorted({item['author'] for item in splits['forget']}):
    ids.update(tokenizer.encode(name))
    ids.update(tokenizer.encode(' ' + name))
  return tuple(sorted(i for i in ids if tokenizer.decode([i]).strip()))


def _row(method, variant, seed, result, seconds, extra):
  row = {'method': method, 'variant': variant, 'seed': seed, 'seconds': round(seconds, 1)}
  undefined = []
  for k, v in result.items():
    if k == 'splits':
      continue
    row[k] = float(v) if math.isfinite(float(v)) else None  # strict JSON: null, not NaN
    if row[k] is None:
      undefined.append(k)
  if undefined:
    row['note'] = f'undefined (not finite): {", ".join(undefined)}'
    logging.warning('%s %s seed %d: %s', method, variant, seed, row['note'])
  row.update(extra)
  return row


def sweep_key(config, fingerprints):
  """Digest of every setting that changes the rows; the unit ids carry the method, its
  hyperparameters and the seed."""
  cfg = config.to_dict()
  for section, key in (('finetune', 'log_every'), ('finetune', 'checkpoint_every'),
                       ('unlearn', 'log_every'), ('unlearn', 'method'), ('reproduce', 'runs'),
                       (None, 'mode'), (None, 'seeds'), (None, 'model_cache')):
    (cfg[section] if section else cfg).pop(key, None)
  cfg['data'].pop('data_dir', None)
  return fingerprint.digest({'config': cfg, 'models': fingerprints,
                             'code': fingerprint.TRAIN_CODE_VERSION})


def _meta(config, infos, cli_keys):
  meta = fingerprint.run_metadata(config)
  meta['models'] = {i['fingerprint']: i['settings'] for i in infos.values()}
  meta['cli_keys'] = sorted(cli_keys)
  return meta


def run(config, workdir, cli_keys=frozenset()):
  """Runs ``config.mode``; returns the result rows (unlearn / reproduce) or None.

  ``cli_keys``: dotted config keys given on the command line (precedence:
  :mod:`cure_jax.lm.config`).
  """
  cli_keys = frozenset(cli_keys)
  if config.mode not in MODES:
    raise ValueError(f'config.mode={config.mode!r}; choose one of {MODES}.')
  start = time.time()
  setup.check(config)
  splits = load_splits(config.data)
  lm = setup.load_model(config)
  model, tokenizer = lm.model, lm.tokenizer
  if config.mode in ('train_original', 'train_retrain'):
    os.makedirs(workdir, exist_ok=True)
    finetuned(config, workdir, config.mode.split('_')[1], model, tokenizer, splits, lm)
    return None

  runs = effective_runs(config, cli_keys)
  # Encode before any training: an answer too long for the context fails in seconds.
  forget = finetune.trim(_encode(tokenizer, splits['forget'], config, lm.template))
  retain = finetune.trim(_encode(tokenizer, splits['retain'], config, lm.template))
  names = forget_ids(config, tokenizer, splits)
  evaluator = evaluate.Evaluator(model, tokenizer, eval_splits(splits, config), lm.template,
                                 config.eval.batch_size, config.eval.max_new_tokens,
                                 config.model.max_len, config.eval.num_perturbed)
  os.makedirs(workdir, exist_ok=True)
  infos = {kind: model_info(config, workdir, kind, lm, splits) for kind in ('original', 'retrain')}
  fps = {kind: info['fingerprint'] for kind, info in infos.items()}
  params = {kind: finetuned(config, workdir, kind, model, tokenizer, splits, lm)
            for kind in ('original', 'retrain')}
  finetune_seconds = time.time() - start
  logging.info('fine-tuning done after %.0fs', finetune_seconds)

  t = time.time()
  reference_hp = {k: v for k, v in config.finetune.to_dict().items()
                  if k not in ('log_every', 'checkpoint_every')}
  extra = {'model_fingerprint': fps, 'hparams': reference_hp}
  retrain_result = evaluator.evaluate(params['retrain'])
  reference = retrain_result['splits']['forget']['truth_ratios']
  retrain_auc = retrain_result.get('mia_min_k')
  retrain_result['forget_quality'] = 1.0  # KS test of a sample against itself
  if retrain_auc is not None:
    retrain_result['privleak'] = 0.0  # relative to itself
  rows = [_row('retrain', '', config.seed, retrain_result, time.time() - t, extra)]
  t = time.time()
  original_result = evaluator.evaluate(params['original'], reference, retrain_auc)
  rows.insert(0, _row('original', '', config.seed, original_result, time.time() - t, extra))
  shown = min(config.eval.num_samples, len(splits['forget']))
  samples = [{'question': item['question'], 'answer': item['answer'],
              'original': original_result['splits']['forget']['generations'][i],
              'retrain': retrain_result['splits']['forget']['generations'][i]}
             for i, item in enumerate(splits['forget'][:shown])]

  reference_eval_seconds = time.time() - start - finetune_seconds
  log = sweep.SweepLog(os.path.join(workdir, 'runs.jsonl'), sweep_key(config, fps))
  # One compiled step per method (seeds reuse it); the evaluator's compiled scorer and
  # generator serve every model.
  unlearn_seconds = eval_seconds = 0.0
  apply_fn = lambda p, tokens: model.apply({'params': p}, tokens)
  for method, variant, hp, record in runs:
    logging.info('%s %s: effective hyperparameters %s', method, variant, record)
    if names:
      hp = dict(hp, forget_ids=names)
    for seed in range(config.seeds):
      unit = f'{method}|{variant}|{fingerprint.digest(record)}|seed={seed}'
      done = log.get(unit)
      if done is None:
        t = time.time()
        new_params = unlearn.unlearn(apply_fn, params['original'], forget, retain,
                                     config.unlearn, method, hp, seed,
                                     place=setup.placement(config))
        t_eval = time.time()
        result = evaluator.evaluate(new_params, reference, retrain_auc)
        unlearn_seconds += t_eval - t
        eval_seconds += time.time() - t_eval
        row = _row(method, variant, seed, result, time.time() - t,
                   {'model_fingerprint': fps, 'hparams': record})
        done = {'row': row, 'generations': result['splits']['forget']['generations'][:shown]}
        log.add(unit, done)
      else:
        logging.info('%s %s seed %d: finished earlier (%s)', method, variant, seed, log.path)
      rows.append(done['row'])
      logging.info('%s %s seed %d: %s', method, variant, seed,
                   {k: round(v, 3) for k, v in done['row'].items() if isinstance(v, float)})
      if seed == 0:
        label = f'{method} {variant}'.strip()
        for sample, generation in zip(samples, done['generations']):
          sample[label] = generation

  forget_authors = len({item['author'] for item in splits['forget']})
  title = (f'LLM concept unlearning ({config.data.source}, '
           f'{config.model.pretrained or "byte-level LM"}, '
           f'split forget{config.data.forget_pct:02d} ({forget_authors} forget authors), '
           f'forget mask {config.unlearn.forget_mask})')
  table = report.write_report(rows, workdir, samples=samples, title=title,
                              meta=_meta(config, infos, cli_keys))
  logging.info('%s mode finished in %.0fs: fine-tuning (or loading) %.0fs, reference '
               'evaluations %.0fs, unlearning %.0fs, evaluations of unlearned models %.0fs',
               config.mode, time.time() - start, finetune_seconds, reference_eval_seconds,
               unlearn_seconds, eval_seconds)
  print(table)
  print(f'Full report: {os.path.join(workdir, "results.md")}', flush=True)
  return rows
