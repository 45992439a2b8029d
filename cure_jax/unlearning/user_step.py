"""A jitted unlearning step for the user's own Flax model: :func:`make_unlearning_step`.

The classification runner and the LM loop build their per-step update with
:func:`cure_jax.unlearning.step.build_update` too, so a step taken here and one taken there
are the same computation.

Example (any ``apply_fn(params, inputs) -> logits``; classes 3 and 7 to forget)::

  unl = cure_jax.make_unlearning_step(apply_fn, 'grogu_descent', teacher=None,
                                      forget_mask=[3, 7], hparams={'lr': 0.01}, mesh=mesh)
  state = unl.init(params)                   # teacher=None: ``params`` is the frozen teacher
  for forget_batch, retain_batch in batches:  # dicts {'inputs': x, 'labels': y} or (x, y)
    state, metrics = unl.step(state, forget_batch, retain_batch, jax.random.key(step))
  params = state['params']
"""
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from cure_jax.infra import rules, sharding
from cure_jax.unlearning import hparams as hparams_lib, methods, objectives, schedule
from cure_jax.unlearning import step as step_lib
from cure_jax.unlearning.batch import Batch, StepInputs


def resolve_hparams(method, hparams):
  """:data:`~cure_jax.unlearning.hparams.DEFAULTS`, updated by ``hparams`` (each value
  checked as the command line checks it), then the values ``method``'s name fixes: the one
  resolver (:func:`cure_jax.unlearning.hparams.resolve`) with the step's field names."""
  given = dict(hparams.to_dict() if isinstance(hparams, ml_collections.ConfigDict)
               else (hparams or {}))
  return hparams_lib.resolve(method, hparams_lib.DEFAULTS, given, lambda key: f'hparams[{key!r}]')


def _as_batch(batch, what):
  """A user batch, ``{'inputs', 'labels'[, 'teacher_logits']}`` or ``(inputs, labels)``."""
  if isinstance(batch, Batch):
    return batch, None
  if isinstance(batch, (tuple, list)) and len(batch) == 2:
    return Batch(inputs=batch[0], label=batch[1]), None
  if isinstance(batch, dict) and 'inputs' in batch and 'labels' in batch:
    return Batch(inputs=batch['inputs'], label=batch['labels'],
                 teacher_logits=batch.get('teacher_logits')), batch
  raise ValueError(f"{what}: expected a dict with 'inputs' and 'labels' or an "
                   f'(inputs, labels) pair, got {type(batch).__name__}.')


def _logits_only(apply_fn):
  """``apply_fn`` checked, when traced, to return one logits array (not Flax's
  ``(logits, updates)`` of a mutable apply)."""
  if not callable(apply_fn):
    raise ValueError(f'apply_fn must be a function (params, inputs) -> logits, got '
                     f'{type(apply_fn).__name__}.')

  def apply(params, inputs):
    out = apply_fn(params, inputs)
    if isinstance(out, (tuple, list, dict)):
      raise ValueError(
          f'apply_fn returned a {type(out).__name__}, not a logits array: unlearning needs '
          'apply_fn(params, inputs) -> logits. For a BatchNorm model apply it in inference '
          "mode without mutable collections, e.g. model.apply({'params': p, 'batch_stats': "
          "stats}, x, train=False), and return only the logits.")
    if getattr(out, 'ndim', 0) < 2:
      raise ValueError(f'apply_fn returned shape {getattr(out, "shape", None)}; logits must '
                       'be BxK (classifier) or BxTxV (per token).')
    return out
  return apply


def check_params(params):
  """Refuses Flax variables with BatchNorm statistics given as ``params``: the gradient
  would train the running statistics (they turn NaN)."""
  if isinstance(params, dict) and 'batch_stats' in params:
    raise ValueError(
        "params holds a 'batch_stats' collection: unlearning would train BatchNorm's running "
        "statistics by gradient. Pass variables['params'] as params and keep the statistics "
        "frozen in apply_fn: lambda p, x: model.apply({'params': p, 'batch_stats': "
        "variables['batch_stats']}, x, train=False).")


def _data_sizes(method, name, sizes):
  """``(forget examples, retain examples)`` a scheduled method maps its steps with."""
  if not method.schedule:
    return None
  if (not isinstance(sizes, (tuple, list)) or len(sizes) != 2
      or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in sizes)):
    raise ValueError(f'method {name!r} runs passes over the forget and retain sets '
                     '(docs/methods.md): give data_sizes=(forget examples, retain examples), '
                     f'got {sizes!r}.')
  return tuple(int(v) for v in sizes)


class UnlearningStep:
  """What :func:`make_unlearning_step` returns: ``init`` and the jitted ``step``."""

  # (state, forget_batch, retain_batch=None, rng=None) -> (state, metrics), jitted.
  step: Callable[..., tuple[dict, dict]]

  def __init__(self, apply_fn, name, teacher, forget_mask, hparams, optimizer, mesh,
               data_sizes=None):
    self.apply_fn, self.name, self.mesh = _logits_only(apply_fn), name, mesh
    self.method = methods.for_task(name, lm=False, field='method')
    self.hparams = resolve_hparams(self.method, hparams)
    self.data_sizes = _data_sizes(self.method, name, data_sizes)
    self.static, self._dyn = hparams_lib.split(self.hparams)
    self.tx, self._update = step_lib.build_update(self.method, self.static, optimizer)
    self._teacher = teacher
    if isinstance(teacher, str) and teacher != 'batch':
      raise ValueError(f"teacher={teacher!r}: use None (the params given to init), a params "
                       "pytree, a function inputs -> logits, or 'batch'.")
    self._rule = forget_mask if callable(forget_mask) else None
    if self._rule is None:
      ids = np.asarray(forget_mask)
      if ids.dtype != np.bool_ and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)
                                    or ids.size == 0 or ids.min() < 0):
        raise ValueError(f'forget_mask={forget_mask!r}: give class ids (non-negative ints), '
                         'a bool [K] mask, or a function batch -> mask broadcastable to logits.')
      self._classes = ids
    elif self.method.classifier_only:
      raise ValueError(f'method {name!r} relabels to non-forget classes and needs class ids '
                       'as forget_mask, not a per-token rule.')
    self.step = jax.jit(self._step)

  # ---- teacher, mask ------------------------------------------------------------------------

  def _teacher_logits(self, state, inputs, batch_dict):
    t = self._teacher
    if isinstance(t, str):   # 'batch'
      if batch_dict is None or batch_dict.get('teacher_logits') is None:
        raise ValueError("teacher='batch': the forget batch needs a 'teacher_logits' entry.")
      return batch_dict['teacher_logits']
    if callable(t):
      return jax.lax.stop_gradient(t(inputs))
    return jax.lax.stop_gradient(self.apply_fn(state['teacher'], inputs))

  def _mask(self, batch_dict, batch, logits_shape):
    if self._rule is not None:
      return jnp.asarray(self._rule(batch_dict if batch_dict is not None else
                                    {'inputs': batch.inputs, 'labels': batch.label}), bool)
    k = logits_shape[-1]
    ids = self._classes
    if ids.dtype == np.bool_:
      if ids.shape != (k,):
        raise ValueError(f'forget_mask: bool mask of shape {ids.shape} for {k} classes; '
                         f'give shape ({k},).')
      mask_K = ids
    else:
      if ids.max() >= k:
        raise ValueError(f'forget_mask: class id {int(ids.max())} >= the model\'s {k} classes.')
      mask_K = np.isin(np.arange(k), ids)
    note = methods.no_op_note(self.name, self.hparams['temperature'], k, int(np.sum(mask_K)))
    if note:   # at trace time: once per compiled shape
      logging.warning('%s', note)
    return jnp.broadcast_to(jnp.asarray(mask_K), (*logits_shape[:-1], k))

  def _constrain(self, x):
    if self.mesh is not None and self.mesh.devices.size > 1 \
        and x.shape[0] % self.mesh.devices.size == 0:
      return jax.lax.with_sharding_constraint(x, sharding.batch_sharded(self.mesh))
    return x

  def _full_forget(self, state, forget_data):
    batch, batch_dict = _as_batch(forget_data, 'forget_data')
    teacher = self._teacher_logits(state, batch.inputs, batch_dict)
    mask = self._mask(batch_dict, batch, teacher.shape)
    return Batch(inputs=batch.inputs, label=batch.label, teacher_logits=teacher,
                 forget_mask=mask)

  # ---- public API ---------------------------------------------------------------------------

  def init(self, params: Any, forget_data: Any = None, rng: Optional[jax.Array] = None) -> dict:
    """The step's state: ``{'params', 'opt_state', 'step', 'hparams', 'teacher', 'aux',
    'targets'}``. ``forget_data`` (the whole forget set, a batch as for ``step``) is needed
    by methods with a ``prepare`` (SalUn's saliency mask, SCRUB's teacher) and by AGE."""
    check_params(params)
    teacher = None
    needs_set = self.method.prepare is not None or self.method.needs_target
    if not (self.method.needs_teacher or needs_set):
      pass   # the method never reads a teacher: keep no second copy of the params
    elif self._teacher is None:
      teacher = params
    elif not callable(self._teacher) and not isinstance(self._teacher, str):
      check_params(self._teacher)
      teacher = self._teacher
    state = {'params': params, 'opt_state': self.tx.init(params), 'step': jnp.int32(0),
             'hparams': {k: jnp.float32(v) for k, v in self._dyn.items()},
             'teacher': teacher, 'aux': None, 'targets': None}
    if needs_set and forget_data is None:
      raise ValueError(f'method {self.name!r} needs the whole forget set: call '
                       'init(params, forget_data=...).')
    if not needs_set:
      return state
    rng = jax.random.key(0) if rng is None else rng
    aux, targets = jax.jit(self._prepare)(state, forget_data, rng)
    return dict(state, aux=aux, targets=targets)

  def _prepare(self, state, forget_data, rng):
    """``(aux, targets)`` from the whole forget set, in one program."""
    full = self._full_forget(state, forget_data)
    aux = targets = None
    if self.method.prepare is not None:
      aux = self.method.prepare(self.apply_fn, state['params'], full, rng,
                                hparams_lib.HParams(self.static, state['hparams']))
    if self.method.needs_target:
      n = full.label.shape[0]
      targets = objectives.age_targets(full.teacher_logits, full.label, jnp.ones(n, bool),
                                         full.forget_mask[0])
    return aux, targets

  def _lengths(self, forget_batch_size, retain_batch_size=None):
    if not self.method.schedule:
      raise ValueError(f'method {self.name!r} takes one step per forget batch; only a '
                       'scheduled method (SCRUB, salun_descent) has passes.')
    rules.check('forget_batch_size', forget_batch_size, rules.positive_int)
    if retain_batch_size is not None:
      rules.check('retain_batch_size', retain_batch_size, rules.positive_int)
    return schedule.pass_lengths(*self.data_sizes, forget_batch_size,
                                 retain_batch_size or forget_batch_size)

  def batch_sizes(self, batch_size: int) -> tuple[int, int]:
    """``(forget, retain)`` batch sizes for this method's loaders: those its name fixes
    (SCRUB: its code's 512 and 256, each capped at ``data_sizes``), else ``batch_size``
    for both."""
    rules.check('batch_size', batch_size, rules.positive_int)   # as config.unlearn's
    n, m = self.data_sizes if self.data_sizes else (math.inf, math.inf)
    return methods.batch_sizes(self.method, batch_size, n, m)

  def data_at(self, step: int, forget_batch_size: int,
              retain_batch_size: Optional[int] = None) -> str:
    """Which set step ``step`` of a scheduled method reads, ``'forget'`` or ``'retain'``
    (a loader advances only that stream; the step takes both batches and uses that one),
    with the hyperparameters given to :func:`make_unlearning_step`."""
    rules.check('step', step, rules.nonnegative_int)
    lengths = self._lengths(forget_batch_size, retain_batch_size)
    at = schedule.locate(step, self.method.schedule, self.hparams, lengths)
    return self.method.schedule[int(at.phase)].data

  def total_steps(self, epochs: float, forget_batch_size: int,
                  retain_batch_size: Optional[int] = None) -> int:
    """Steps of ``epochs`` epochs of a scheduled method (its passes; fractions allowed)."""
    rules.check('epochs', epochs, rules.positive)   # as config.unlearn.epochs
    lengths = self._lengths(forget_batch_size, retain_batch_size)
    return schedule.total_steps(self.method.schedule, self.hparams, epochs, lengths)

  def _phase(self, state, f, r):
    """The step's phase in the method's schedule, from its step index (0: unscheduled)."""
    if not self.method.schedule:
      return 0
    hp = hparams_lib.HParams(self.static, state['hparams'])   # the state's traced values
    lengths = self._lengths(f.inputs.shape[0], r.inputs.shape[0])
    return schedule.locate(state['step'], self.method.schedule, hp, lengths).phase

  def _step(self, state: dict, forget_batch: Any, retain_batch: Any = None,
            rng: Optional[jax.Array] = None) -> tuple[dict, dict]:
    method = self.method
    rng = jax.random.key(0) if rng is None else rng
    hp = hparams_lib.HParams(self.static, state['hparams'])
    f = r = f_dict = None
    if method.uses_forget:
      if forget_batch is None:
        raise ValueError(f'method {self.name!r} needs a forget batch.')
      f, f_dict = _as_batch(forget_batch, 'forget_batch')
    if method.uses_retain:
      if retain_batch is None:
        raise ValueError(f'method {self.name!r} trains on retain data: pass a retain_batch.')
      r, _ = _as_batch(retain_batch, 'retain_batch')
      r = Batch(self._constrain(r.inputs), r.label)
    base = f if f is not None else r   # methods read the batch size / mask from this batch
    teacher = None
    if method.needs_teacher and f is not None:
      teacher = self._teacher_logits(state, base.inputs, f_dict)
    shape = (teacher.shape if teacher is not None else
             jax.eval_shape(self.apply_fn, state['params'], base.inputs).shape)
    mask = self._mask(f_dict, base, shape)
    target = state['targets'][base.label] if method.needs_target else None
    f = Batch(inputs=self._constrain(base.inputs), label=base.label,
                      teacher_logits=teacher, forget_mask=mask, target=target)
    inputs = StepInputs(self.apply_fn, state['params'], f, r, rng, hp, self.mesh,
                        step=state['step'], aux=state['aux'], phase=self._phase(state, f, r))
    params, opt_state, value = self._update(inputs, state['opt_state'])
    state = dict(state, params=params, opt_state=opt_state, step=state['step'] + 1)
    # The loss is the one before the update: an update that overflows shows in the params.
    finite = jnp.isfinite(value) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    return state, {'loss': value, 'finite': finite}


def make_unlearning_step(apply_fn: Callable, method: str, *, teacher: Any, forget_mask: Any,
                         hparams: Any = None, optimizer: Optional[optax.GradientTransformation]
                         = None, mesh: Any = None, data_sizes: Any = None) -> UnlearningStep:
  """A jitted unlearning step of registry method ``method`` for any Flax model.

  Args:
    apply_fn: ``(params, inputs) -> logits`` (``BxK`` for a classifier, ``BxTxV`` per token),
      deterministic (BatchNorm frozen, no dropout).
    method: a name of :data:`cure_jax.unlearning.methods.REGISTRY` (``'grogu'``, ``'ghr_descent'``, ...).
    teacher: the frozen original model whose logits GHR/GSR/GROGU/UNDIAL/DELETE/SCRUB read:
      ``None`` = the params given to ``init``; a params pytree (applied with ``apply_fn``);
      a function ``inputs -> logits``; or ``'batch'``: each forget batch carries precomputed
      ``'teacher_logits'``.
    forget_mask: class ids (``[3, 7]``) or a bool ``[K]`` mask for a classifier; or a
      function ``batch -> bool mask`` broadcastable to the logits (per-token rule for
      ``BxTxV`` logits; ``batch`` is the forget batch dict). With ``BxTxV`` logits the
      losses are means over every position, and GROGU projects per-sequence gradients
      (each sequence's per-token losses averaged).
    hparams: dict or ConfigDict overriding :data:`cure_jax.unlearning.hparams.DEFAULTS`;
      numeric values live in ``state['hparams']`` (changing them does not recompile),
      ``momentum`` and ``grogu_impl`` are compiled in.
    optimizer: an optax transformation used instead of ``SGD(lr, momentum)``; its own
      learning rate applies and ``hparams['lr']`` is ignored. Add no weight decay for SalUn.
    mesh: the device mesh; batches are constrained to its ``'data'`` axis, and the jitted
      step takes every other sharding from its inputs.
    data_sizes: ``(forget examples, retain examples)``, required by a method with passes
      (``scrub``, ``salun_descent``: every epoch a pass over each set, docs/methods.md).
      Its step maps ``state['step']`` to its pass from these sizes and the batches'
      sizes, takes both batches and uses the one its pass reads; ``u.data_at(step,
      forget_batch_size, retain_batch_size)`` says which (advance only that loader),
      ``u.total_steps(epochs, ...)`` counts the steps of ``epochs`` epochs and
      ``u.batch_sizes(batch_size)`` gives the loaders' sizes (SCRUB's name fixes them).

  Returns:
    an :class:`UnlearningStep` ``u``: ``state = u.init(params, forget_data=None, rng=None)``,
    ``state, metrics = u.step(state, forget_batch, retain_batch, rng)`` (jitted; batches
    are ``{'inputs', 'labels'}`` dicts or ``(inputs, labels)`` pairs; ``metrics``:
    ``loss`` (before the update) and ``finite``: the loss and every updated parameter are
    finite). Every hyperparameter, batch size and epoch count is checked by the rules the
    command line applies (one ``ValueError`` line).
  """
  return UnlearningStep(apply_fn, method, teacher, forget_mask, hparams, optimizer, mesh,
                        data_sizes)
