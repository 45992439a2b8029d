"""Paper-style classification evaluation and SalUn's MIA-efficacy (docs/methods.md).

Evaluation sets are held as uint8 arrays and normalised on the device, in fixed-size chunks,
so the logits and input-gradient programs compile once for every model, method and
scenario of a sweep.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cure_jax.infra import sharding
from cure_jax.unlearning import losses
from cure_jax.metrics import mia


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
    return self._chunks(self._logits, variables, self.x if x is None else x)

  def input_grads(self, variables):
    return self._chunks(self._grads, variables, self.x, self.y)

  def reference(self, retrain_variables, forget_classes):
    """What every run of a (scenario, model seed) is compared with."""
    metrics = class_metrics(self.logits(retrain_variables), self.y, forget_classes,
                            self.num_classes)
    return {'per_class_acc': metrics['per_class_acc'],
            'input_grads': self.input_grads(retrain_variables)}

  def evaluate(self, variables, forget_classes, mia_sets=None, reference=None):
    """Accuracies, prediction counts and, given them, MIA-efficacy and the comparison
    with the retrain model (``per_class_change`` as a fraction, ``input_grad_dist``).

    ``mia_sets``: ``(member_x, member_y, forget_x, forget_y)`` training examples.
    """
    variables = sharding.replicate(variables, self.mesh)
    logits = self.logits(variables)
    out = class_metrics(logits, self.y, forget_classes, self.num_classes)
    if mia_sets is not None:
      member_x, member_y, forget_x, forget_y = mia_sets
      keep = ~np.isin(self.y, forget_classes)
      p_non = mia.true_label_probs(logits[keep], self.y[keep])
      p_mem = mia.true_label_probs(self.logits(variables, member_x), member_y)
      p_fgt = mia.true_label_probs(self.logits(variables, forget_x), forget_y)
      out['mia_efficacy'] = mia.mia_efficacy(p_mem, p_non, p_fgt)
    if reference is not None:
      out['per_class_change'] = relative_change(out['per_class_acc'],
                                                reference['per_class_acc'])
      diff = (self.input_grads(variables) - reference['input_grads']).reshape(len(self.y), -1)
      out['input_grad_dist'] = float(np.linalg.norm(diff, axis=1).mean())
    return out


def mia_sets(retain_source, forget_source, size):
  """SalUn's members (the first ``size`` retain training examples) and the forget set."""
  member_x, member_y = materialize(retain_source)
  forget_x, forget_y = materialize(forget_source)
  return member_x[:size], member_y[:size], forget_x, forget_y
