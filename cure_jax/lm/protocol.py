"""What an LM run is made of: the QA splits, the original and retrain models (fine-tuned
here or named checkpoints, cached by fingerprint), the evaluation items and the forget
author names."""

from absl import logging

from cure_jax.data import authors, refusals, tofu as tofu_data
from cure_jax.infra import fingerprint, trainer
from cure_jax.lm import train, setup
from cure_jax.weights import pretrained


def load_splits(data_cfg, forget_set=0):
  """The TOFU split dict from the embedded generator (forget set ``forget_set``) or a local
  TOFU copy."""
  if data_cfg.source == 'authors':
    items = authors.generate_authors(data_cfg.num_authors, data_cfg.qa_per_author, data_cfg.seed)
    splits = authors.make_splits(items, data_cfg.forget_pct, forget_set)
    if forget_set:   # names the retrain model's set (set 0 keeps the fingerprints it had)
      splits['forget_set'] = forget_set
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


def encode(tokenizer, items, config, template=None):
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
  checkpoint, or the one fine-tuned here (:func:`cure_jax.infra.trainer.model_dir`)."""
  if config.model[kind]:
    settings = {'kind': kind, 'checkpoint': config.model[kind], 'dtype': config.model.dtype,
                'max_len': config.model.max_len,
                'weights_digest': pretrained.weights_digest(config.model[kind])}
    return {'fingerprint': fingerprint.model_fingerprint(settings), 'settings': settings,
            'directory': None}
  architecture = lm.model.config.to_dict()
  weights = pretrained.weights_digest(config.model.pretrained) if config.model.pretrained else ''
  settings = fingerprint.lm_model_settings(config, kind, architecture, lm.template,
                                           train_sets(splits, config)[kind], weights)
  if kind == 'retrain' and splits.get('forget_set'):
    settings['forget_set'] = splits['forget_set']   # another set's retrain, not a changed one
  fp = fingerprint.model_fingerprint(settings)
  return {'fingerprint': fp, 'settings': settings,
          'directory': trainer.model_dir(config, workdir, settings)}


def finetuned(config, workdir, kind, model, tokenizer, splits, lm=None):
  """The ``kind`` model's parameters: the named fine-tuned checkpoint, or fine-tuned here
  (from the pretrained parameters, or a random initialisation) and checkpointed."""
  lm = lm or setup.LoadedModel(model, None, tokenizer, config.data.template)
  info = model_info(config, workdir, kind, lm, splits)
  if config.model[kind]:
    logging.info('%s model: the fine-tuned checkpoint %s', kind, config.model[kind])
    return setup.load_params(config, config.model[kind], model)
  items = train_sets(splits, config)[kind]
  return train.finetune(model, encode(tokenizer, items, config, lm.template),
                        config.finetune, config.seed, info['directory'], info['settings'],
                        name=f'finetune {kind}', init_params=lm.params,
                        mode=config.model.sharding)


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


def forget_ids(config, tokenizer, splits):
  """The token ids masked at every answer position for ``forget_mask='author_names'``.

  Every token of each forget author's name, encoded alone and after a space (a BPE
  tokenizer encodes a name inside a sentence with its leading space); whitespace-only
  tokens are left out. None for ``'answer_token'``.
  """
  if config.unlearn.forget_mask == 'answer_token':
    return None
  ids = set()
  for name in sorted({item['author'] for item in splits['forget']}):
    ids.update(tokenizer.encode(name))
    ids.update(tokenizer.encode(' ' + name))
  return tuple(sorted(i for i in ids if tokenizer.decode([i]).strip()))


def alternates(tokenizer, items, config, template, kind):
  """The forget ``items`` with their preferred answers for DPO (``kind='perturbed'``: each
  item's perturbed answers) or IdkDPO (``'idk'``: every refusal of
  :func:`cure_jax.data.refusals.load_refusals`), encoded ``tokens`` / ``loss_mask`` ``[N, A,
  L]`` with ``A`` options per item (for perturbed answers, the fewest any item has)."""
  if kind == 'idk':
    options = refusals.load_refusals(config.unlearn.idk_path)
    rows = [dict(item, alternates=options) for item in items]
  else:
    count = min(len(item.get('perturbed_answer') or []) for item in items)
    if count == 0:
      raise ValueError('DPO prefers a perturbed answer, but a forget item has none; use '
                       'idkdpo (refusals) or items with perturbed answers.')
    rows = [dict(item, alternates=list(item['perturbed_answer'][:count])) for item in items]
  encoded = train.trim(tofu_data.encode_answers(tokenizer, rows, config.model.max_len,
                                                'alternates', template))
  n = len(rows)
  return {k: encoded[k].reshape((n, -1) + encoded[k].shape[1:]) for k in ('tokens', 'loss_mask')}
