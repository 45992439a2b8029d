"""The protocol's K models of a kind, trained one after another or together.

With ``config.seed_parallel`` (default: on GPU/TPU, not on a CPU) the K original models, each
scenario's K retrain models and a method's runs each go through one program, the models
stacked and split over the ``seeds`` axis of a ``(seeds, data)`` mesh
(:func:`cure_jax.infra.sharding.make_seeds_mesh`: ``config.seed_devices`` device groups, each
splitting one model's batch over ``data``), at most ``config.models_per_device`` per group at
a time. A model trained together is the same cache entry as one trained alone
(:mod:`cure_jax.infra.group_fit`).
"""
import dataclasses
from typing import Any

import jax

from cure_jax.classification import train
from cure_jax.infra import console, sharding, trainer


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model's variables and its ``model.json`` record (:mod:`cure_jax.infra.trainer`)."""
  variables: Any
  info: dict

  @property
  def fingerprint(self):
    return self.info.get('fingerprint')

  @property
  def train_s(self):
    """Training seconds without compilation (for a model trained in a group, the group's
    divided by its models); None when it was resumed (not comparable)."""
    return self.info.get('train_s')


def resolve_seed_parallel(value):
  """``config.seed_parallel``: None = together on GPU/TPU, one by one on CPU."""
  return jax.default_backend() != 'cpu' if value is None else bool(value)


def seeds_mesh(config):
  """The ``(seeds, data)`` mesh of models trained and unlearned together, or None when they
  run one after another (``config.seed_parallel``)."""
  if not resolve_seed_parallel(config.seed_parallel):
    return None
  return sharding.make_seeds_mesh(config.seed_devices)


def seed_groups(items, mesh, per_device):
  """``items`` (model seeds, runs) in the groups that run as one program each: one by one
  without a seeds ``mesh``, else ``per_device`` models per device group at a time (0: all
  at once)."""
  if mesh is None:
    return [[x] for x in items]
  size = per_device * sharding.seeds_size(mesh) if per_device else len(items)
  return [list(items[i:i + size]) for i in range(0, len(items), max(size, 1))]


def train_models(config, workdir, kind, data, model, mesh, group_mesh, seeds, timings,
                 classes, label=None):
  """The ``kind`` models of ``seeds`` (:class:`Trained`, in order), in the groups of
  :func:`seed_groups`; ``label`` names the scenario in the progress lines."""
  out = []
  for group in seed_groups(seeds, group_mesh, config.models_per_device):
    many = 's' if len(group) > 1 else ''
    where = f'scenario {label}, ' if label is not None else ''
    console.phase('training %s model%s (%sseed%s %s)', kind, many, where, many,
                  ','.join(map(str, group)))
    with timings.phase('train'):
      variables = train.train_classifiers(config, workdir, kind, data, model, mesh, classes,
                                          group, group_mesh)
    out += [Trained(v, trainer.read_info(train.checkpoint_dir(workdir, config, kind, classes,
                                                               s, data)))
            for v, s in zip(variables, group)]
  return out
