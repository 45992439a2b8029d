"""Identities of trained models and sweeps, and the run metadata stored with results.

A model's *fingerprint* hashes everything that determines its parameters (data, split seed,
model, training hyperparameters, training seed, forget classes of a retrain model, the
version of the training code) and nothing that cannot change them (logging and checkpoint
cadence, evaluation batch size). Models are cached under their fingerprint, so a change of
any setting trains a new model beside the old one instead of silently reusing it.
"""
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess

import jax

# Bump when a change of the training code changes what a given config trains.
TRAIN_CODE_VERSION = 2
# Training settings that cannot change the trained parameters.
_TRAIN_COSMETIC = ('log_every', 'checkpoint_every', 'eval_batch_size')


def digest(obj, length=16):
  """Short SHA-256 of a JSON-serialisable object (keys sorted)."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def model_settings(config, kind, seed, forget_classes):
  """Everything that determines the ``kind`` model trained with ``seed``."""
  data = config.data.to_dict()
  data.pop('data_dir', None)  # where the files live, not what they hold
  train = {k: v for k, v in config.train.to_dict().items() if k not in _TRAIN_COSMETIC}
  return {'kind': kind, 'data': data, 'model': config.model.to_dict(), 'train': train,
          'seed': int(seed),
          'forget_classes': [int(c) for c in forget_classes] if kind == 'retrain' else [],
          'train_code_version': TRAIN_CODE_VERSION}


_FINETUNE_COSMETIC = ('log_every', 'checkpoint_every')


def lm_model_settings(config, kind, architecture, template, items):
  """Everything that determines the fine-tuned LM ``kind`` (``task='lm'``).

  ``architecture``: the resolved model config (a pretrained checkpoint's wins over
  ``config.model``); ``template``: the resolved prompt; ``items``: the fine-tuning QA items
  (their digest covers the generated or loaded data and, for retrain, the forget split).
  """
  data = config.data.to_dict()
  data.pop('data_dir', None)  # where the files live; the items digest covers what they hold
  model = {k: v for k, v in config.model.to_dict().items()
           if k not in ('sharding', 'original', 'retrain')}  # placement, other models
  finetune = {k: v for k, v in config.finetune.to_dict().items()
              if k not in _FINETUNE_COSMETIC}
  settings = {'kind': kind, 'data': data, 'model': model, 'architecture': architecture,
              'template': template, 'items': digest(items, 32), 'finetune': finetune,
              'seed': int(config.seed), 'train_code_version': TRAIN_CODE_VERSION}
  return json.loads(json.dumps(settings, sort_keys=True, default=str))  # as stored on disk


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
  """Library/JAX versions, git commit, backend and devices, the config of the run, the
  settings of every model it used (``model_infos``: their ``model.json`` records), the keys
  set on the command line, and the task's ``extra`` fields."""
  import flax
  devices = jax.devices()
  return {'cure_jax': library_version(), 'git_commit': git_commit(), 'jax': jax.__version__,
          'flax': flax.__version__, 'python': platform.python_version(),
          'backend': jax.default_backend(), 'device_count': len(devices),
          'device_kind': devices[0].device_kind, 'process_count': jax.process_count(),
          'config': json.loads(config.to_json_best_effort()),
          'models': {i['fingerprint']: i['settings'] for i in model_infos if i},
          'cli_keys': sorted(cli_keys), **extra}
