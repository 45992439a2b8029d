"""Where an LM job writes its unlearned models (``config.export``), and the rules that keep
it from destroying anything it did not write.

Each run × seed goes to ``<out>/exports/<method>[-<variant>]-seed<s>[-<dtype>]`` (a Hugging
Face directory) or the same name with ``.gguf`` (``<dtype>`` only when not float32, so exports
of other dtypes or formats sit beside each other). Before writing, an *owner mark*
``exports/.<name>.cure-jax`` is written beside the target: a path with a mark was written (or
was being written) by cure-jax and may be replaced by a rerun; a path without one is the
user's and is refused at start-up, in one line, unless ``config.export.overwrite=True``.
:func:`cure_jax.weights.export.save` writes into a temporary sibling ``.<name>.tmp-*`` and renames
it into place; a run killed in between leaves that sibling, which the next run removes.
"""
import glob
import json
import os
import shutil

from absl import logging

from cure_jax.infra.rules import ConfigError

_MARK = '.cure-jax'


def forget_set_dir(config, workdir, k):
  """Where forget set ``k``'s outputs go: the workdir itself for a one-set job."""
  return workdir if config.data.forget_sets == 1 else os.path.join(workdir, f'forget_set{k}')


def target(config, out, run, seed):
  """The absolute path the export of ``run`` with ``seed`` goes to under ``out``."""
  e = config.export
  parts = [run.name, run.variant.replace(',', '_'), f'seed{seed}',
           '' if e.dtype == 'float32' else e.dtype]
  name = '-'.join(p for p in parts if p) + ('.gguf' if e.format == 'gguf' else '')
  return os.path.abspath(os.path.join(out, 'exports', name))


def _mark(path):
  directory, name = os.path.split(path)
  return os.path.join(directory, f'.{name}{_MARK}')


def owned(path):
  """Whether ``path`` carries cure-jax's owner mark."""
  return os.path.isfile(_mark(path))


def _remove(path):
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


def check_targets(config, workdir, runs):
  """At start-up, before any model loads: every export target that exists must be
  cure-jax's own (or ``config.export.overwrite``); temporaries of killed exports are
  removed. Raises :class:`ConfigError` naming the first foreign path."""
  if not config.export.format:
    return
  for k in range(config.data.forget_sets):
    out = forget_set_dir(config, workdir, k)
    for stale in sorted(glob.glob(os.path.join(out, 'exports', '.*.tmp-*'))):
      logging.warning('%s: left by an export that was killed; removed', stale)
      _remove(stale)
    for run in runs:
      for seed in range(config.seeds):
        path = target(config, out, run, seed)
        if os.path.lexists(path) and not owned(path) and not config.export.overwrite:
          raise ConfigError(
              f'config.export.format={config.export.format!r}: {path} already exists and was '
              'not written by cure-jax; move it away, or set --config.export.overwrite=True '
              'to replace it.')


def write(config, out, lm, params, run, seed, unit):
  """Writes ``params`` to the run's target (replacing only what :func:`check_targets`
  allowed); returns the path relative to ``out``, which the row names."""
  from cure_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  path = target(config, out, run, seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if os.path.lexists(path):
    if not (owned(path) or config.export.overwrite):  # appeared since start-up
      raise ValueError(f'{path} appeared while the job ran and was not written by cure-jax; '
                       'nothing was replaced.')
    _remove(path)
  with open(_mark(path), 'w', encoding='utf-8') as f:
    json.dump({'unit': unit, 'format': config.export.format, 'dtype': config.export.dtype}, f)
  pretrained.save(lm.checkpoint, path, config.export.format, params=params,
                  dtype=config.export.dtype)
  logging.info('%s %s seed %d: unlearned model written to %s', run.name, run.variant, seed,
               path)
  return os.path.relpath(path, out)


def written(row, config, out, run, seed):
  """Whether ``row`` (a finished run's) names the export ``config`` asks for, and it is
  there, cure-jax's own."""
  path = target(config, out, run, seed)
  return (row.get('export') == os.path.relpath(path, out) and os.path.lexists(path)
          and owned(path))
