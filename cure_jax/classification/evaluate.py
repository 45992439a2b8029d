"""Paper-style classification evaluation, SalUn's MIA-efficacy and the margins KLOM
compares (docs/methods.md).

Evaluation sets are held as uint8 arrays and normalised on the device, in fixed-size chunks,
so the logits and input-gradient programs compile once for every model, method and
scenario of a sweep.
"""
import base64
from concurrent import futures
import dataclasses
import functools
import json
import math
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from cure_jax.data.sources import SubsetSource
from cure_jax.infra import files, fingerprint, sharding
from cure_jax.unlearning import losses
from cure_jax.metrics import klom, mia

KLOM_MAX_EXAMPLES = 2000   # per set: the 99th percentile still rests on 20 examples
_SVC_POOL = futures.ThreadPoolExecutor(1, thread_name_prefix='mia-svc')
KLOM_SETS = ('forget', 'retain', 'val')
MARGINS_DIR = 'margins'    # WORKDIR/margins/<key>.json, one file per evaluated model


class NonFiniteOutputs(FloatingPointError):
  """A model with finite parameters whose outputs overflow: an outcome of its run (it
  diverged), not an error of the evaluation."""


def materialize(source):
  """``(images uint8 [N,H,W,C], labels int32 [N])`` of a random-access source."""
  if hasattr(source, 'images') and hasattr(source, 'labels'):
    return np.asarray(source.images), np.asarray(source.labels, np.int32)
  images = np.stack([np.asarray(source[i]['image'], np.uint8) for i in range(len(source))])
  return images, np.asarray(source.labels, np.int32)


def class_metrics(logits, labels, forget_classes, num_classes):
  """Overall / retain / forget / per-class accuracy and forget-class prediction counts.

  An accuracy over no examples (a class absent from the split) is NaN; the report writes
  it as null with a note.
  """
  preds = np.argmax(logits, axis=-1)
  correct = preds == labels
  is_forget = np.isin(labels, forget_classes)
  mean = lambda x: float(x.mean()) if x.size else float('nan')
  return {
      'overall_acc': mean(correct),
      'retain_acc': mean(correct[~is_forget]),
      'forget_acc': mean(correct[is_forget]),
      'per_class_acc': [mean(correct[labels == k]) for k in range(num_classes)],
      'forget_pred_counts': np.bincount(preds[is_forget], minlength=num_classes).tolist(),
  }


def relative_change(per_class, reference):
  """Per-class ``(acc − acc_ref)/acc_ref`` (a fraction); absolute difference where
  ``acc_ref`` is 0, NaN where either is undefined."""
  a, r = np.asarray(per_class, np.float64), np.asarray(reference, np.float64)
  safe = np.where(r > 0, r, 1.0)
  return np.where(r > 0, (a - r) / safe, a - r).tolist()


@functools.lru_cache(maxsize=8)
def _compiled(model, mean, std, mesh):
  """The jitted logits and input-gradient functions of one model, normalisation and mesh,
  shared by every evaluator (a rerun in the same process does not compile them again)."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  norm = lambda x: (x.astype(jnp.float32) / 255.0 - mean) / std
  sharded = sharding.batch_sharded(mesh)
  repl = sharding.replicated(mesh)

  def logits(variables, x):
    return model.apply(variables, norm(x), train=False)

  def input_grads(variables, x, y):
    def loss(z):
      return jnp.sum(losses.cross_entropy(model.apply(variables, z, train=False), y))
    return jax.grad(loss)(norm(x))
  return (jax.jit(logits, in_shardings=(repl, sharded)),
          jax.jit(input_grads, in_shardings=(repl, sharded, sharded)))


class Evaluator:
  """Evaluates variables on one split, against the retrain model's accuracy and gradients."""

  def __init__(self, model, data, source, mesh, batch_size):
    sharding.check_batch_size(batch_size, mesh, 'config.train.eval_batch_size')
    self.data, self.mesh, self.batch_size = data, mesh, batch_size
    self.num_classes = data.num_classes
    self.x, self.y = materialize(source)
    self._logits, self._grads = _compiled(model, tuple(np.ravel(data.mean)),
                                          tuple(np.ravel(data.std)), mesh)

  def _chunks(self, fn, variables, *arrays):
    n, b = len(arrays[0]), self.batch_size
    out = []
    for i in range(math.ceil(n / b)):
      part = [a[i * b:(i + 1) * b] for a in arrays]
      k = len(part[0])
      part = [np.concatenate([p, np.repeat(p[-1:], b - k, axis=0)]) if k < b else p
              for p in part]
      out.append(np.asarray(fn(variables, *sharding.shard_batch(part, self.mesh)))[:k])
    return np.concatenate(out)

  def logits(self, variables, x=None):
    """Logits of ``x`` (default: the evaluation split); :class:`NonFiniteOutputs` when any
    is not finite."""
    out = self._chunks(self._logits, variables, self.x if x is None else x)
    if not np.all(np.isfinite(out)):
      raise NonFiniteOutputs('logits non-finite although the parameters are finite '
                             '(the outputs overflow)')
    return out

  def input_grads(self, variables):
    return self._chunks(self._grads, variables, self.x, self.y)

  def reference(self, retrain_variables, forget_classes):
    """What every run of a (scenario, model seed) is compared with."""
    metrics = class_metrics(self.logits(retrain_variables), self.y, forget_classes,
                            self.num_classes)
    return {'per_class_acc': metrics['per_class_acc'],
            'input_grads': self.input_grads(retrain_variables)}

  def evaluate(self, variables, forget_classes, mia_sets=None, reference=None,
               klom_sets=None, defer=False):
    """Accuracies, prediction counts and, given them, MIA-efficacy, the comparison
    with the retrain model (``per_class_change`` as a fraction, ``input_grad_dist``) and
    the margins of the KLOM examples (``klom_margins``, :class:`KlomSets`).

    ``mia_sets``: ``(member_x, member_y, forget_x, forget_y)`` training examples.
    ``defer``: return MIA-efficacy as a ``concurrent.futures.Future`` (its SVC fit, seconds
    on one core, then runs beside the caller's next work; :func:`resolve` waits for it).
    """
    variables = sharding.replicate(variables, self.mesh)
    logits = self.logits(variables)
    out = class_metrics(logits, self.y, forget_classes, self.num_classes)
    svc = None
    if mia_sets is not None:
      member_x, member_y, forget_x, forget_y = mia_sets
      keep = ~np.isin(self.y, forget_classes)
      p_non = mia.true_label_probs(logits[keep], self.y[keep])
      p_mem = mia.true_label_probs(self.logits(variables, member_x), member_y)
      p_fgt = mia.true_label_probs(self.logits(variables, forget_x), forget_y)
      # The SVC fit (seconds, one core, without the GIL) overlaps the device work below.
      svc = _SVC_POOL.submit(mia.mia_efficacy, p_mem, p_non, p_fgt)
    if klom_sets is not None:
      out['klom_margins'] = {name: klom.margins(self.logits(variables, x), y) if len(y)
                             else np.zeros(0) for name, (x, y) in klom_sets.arrays.items()}
    if reference is not None:
      out['per_class_change'] = relative_change(out['per_class_acc'],
                                                reference['per_class_acc'])
      diff = (self.input_grads(variables) - reference['input_grads']).reshape(len(self.y), -1)
      out['input_grad_dist'] = float(np.linalg.norm(diff, axis=1).mean())
    if svc is not None:
      out['mia_efficacy'] = svc if defer else svc.result()
    return out


def resolve(rows):
  """Replaces each deferred MIA-efficacy (a ``Future`` from ``evaluate(defer=True)``) in
  ``rows`` (dicts, changed in place) by its value; returns ``rows``."""
  for row in rows:
    value = row.get('mia_efficacy')
    if isinstance(value, futures.Future):
      value = value.result()
      row['mia_efficacy'] = value if math.isfinite(value) else None
  return rows


def mia_sets(retain_source, forget_source, size):
  """SalUn's members (the first ``size`` retain training examples) and the forget set."""
  member_x, member_y = materialize(retain_source)
  forget_x, forget_y = materialize(forget_source)
  return member_x[:size], member_y[:size], forget_x, forget_y


@dataclasses.dataclass(frozen=True)
class KlomSets:
  """The examples whose margins KLOM compares in one scenario, chosen as Georgiev et al. do:
  training examples of the forget classes (what was unlearned), training examples of the
  other classes (what was kept) and validation examples (never trained on)."""
  arrays: dict            # set name -> (uint8 images, int32 labels)
  digest: str             # of the chosen examples: every file of a comparison must agree


def _subsample(n, limit, seed):
  if n <= limit:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def klom_sets(forget, retain, val, label, limit=KLOM_MAX_EXAMPLES):
  """:class:`KlomSets` of scenario ``label``: ``forget`` and ``retain`` are the scenario's
  training sources, ``val`` the validation source; each set a fixed seeded subsample of at
  most ``limit`` examples (seeded by the scenario label, so every model of the scenario is
  evaluated on the same ones)."""
  seed = zlib.crc32(label.encode())
  arrays, chosen = {}, {}
  for i, (name, source) in enumerate((('forget', forget), ('retain', retain), ('val', val))):
    chosen[name] = _subsample(len(source), limit, [seed, i])
    arrays[name] = materialize(SubsetSource(source, chosen[name]))
  digest = fingerprint.digest({k: v.tolist() for k, v in chosen.items()})
  return KlomSets(arrays, digest)


def margins_key(row):
  """A model's margins file name, from its result row: what determines the model (its
  method, hyperparameters, seed and starting models) and the scenario's examples."""
  return fingerprint.digest({k: row.get(k) for k in (
      'scenario', 'method', 'hparams', 'model_seed', 'seed', 'model_fingerprint')})


def save_margins(directory, row, margins, sets_digest):
  """Writes ``{set: margins}`` of the model of ``row`` (float32, base64) atomically."""
  record = {'row': {k: row.get(k) for k in ('scenario', 'method', 'model_seed', 'seed')},
            'sets': sets_digest,
            'margins': {k: base64.b64encode(np.asarray(v, '<f4').tobytes()).decode()
                        for k, v in margins.items()}}
  files.write_atomic(os.path.join(directory, margins_key(row) + '.json'),
                     files.to_json(record))


def keep_margins(directory, sets, row, metrics):
  """Pops the KLOM margins out of ``metrics`` (they are no row field) and, when the study
  keeps margins (``directory`` set), writes them under the model's ``row`` before the row is
  logged: a resumed sweep finds them beside the logged unit. ``sets``: the scenario's
  :class:`KlomSets`."""
  margins = metrics.pop('klom_margins', None)
  if margins is not None and directory:
    save_margins(directory, row, margins, sets.digest)


def load_margins(directory, row):
  """``(sets digest, {set: float32 margins})`` of the model of ``row``; None if not
  recorded (a run logged before KLOM was)."""
  path = os.path.join(directory, margins_key(row) + '.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    record = json.load(f)
  return record['sets'], {k: np.frombuffer(base64.b64decode(v), '<f4')
                          for k, v in record['margins'].items()}
