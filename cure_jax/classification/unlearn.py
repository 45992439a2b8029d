"""An unlearning run as one compiled program.

The forget set and the run's retain subset live on the device; batches are drawn inside the
program (a fresh seeded shuffle per pass, cycled, as the host pipeline did), and the steps
run in one ``lax.fori_loop`` whose trip count is a traced scalar. So one compiled program
serves every scenario (the forget mask, the data and the step count are inputs, the data
padded to a fixed size), every seed and every numeric hyperparameter
(:data:`cure_jax.unlearning.hparams.DYNAMIC`):
each method compiles once per sweep. Runs either call the program one after another or go
through it together, stacked and split over the mesh's ``seeds`` axis
(:func:`cure_jax.infra.sharding.over_models`; ``config.seed_parallel``: on a CPU the vmapped
convolutions of several parameter sets were ~12× slower than one, so sequential is the
default there).

BatchNorm stays in inference mode with the starting model's statistics, so examples never
interact and GROGU's per-example gradients are well defined.

A scheduled method (:mod:`cure_jax.unlearning.schedule`: SCRUB, SalUn with retain data)
runs its passes instead: each step's phase, pass and batch come from the step index, the
forget set size and the traced retain subset size, and a pass draws every example of its
set once in a fresh seeded order (:func:`cure_jax.classification.unlearn_batches.pass_batch`).
"""
import dataclasses
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cure_jax.classification import unlearn_batches
from cure_jax.infra import sharding
from cure_jax.unlearning import hparams as hparams_lib, methods, objectives, schedule
from cure_jax.unlearning import step as step_lib
from cure_jax.unlearning.batch import Batch, StepInputs

def total_steps(epochs, n_forget, batch_size, method=None, hp=None, n_retain=0):
  """Steps of a run: ``epochs`` passes over the forget set, or for a scheduled ``method``
  ``epochs`` of its epochs (``hp``: its hyperparameters; ``n_retain``: the retain subset)."""
  if method is not None and method.schedule:
    sizes = methods.batch_sizes(method, batch_size, n_forget, n_retain)
    lengths = schedule.pass_lengths(n_forget, n_retain, *sizes)
    return schedule.total_steps(method.schedule, hp, epochs, lengths)
  return max(1, math.ceil(epochs * n_forget / batch_size))


def pad_rows(x, size):
  """``x`` padded to ``size`` rows by repeating its first row (never selected: see below)."""
  x = np.asarray(x)
  if len(x) > size:
    raise ValueError(f'cannot pad {len(x)} rows to {size}')
  return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)]) if size > len(x) else x


def padded_size(n, batch_size):
  return max(batch_size, math.ceil(n / batch_size) * batch_size)


@dataclasses.dataclass
class RunData:
  """The device inputs of one scenario's runs (host numpy, padded)."""
  forget_x: Any     # uint8 [Np, H, W, C]
  forget_y: Any     # int32 [Np]
  n_forget: int
  retain_x: Any     # uint8 [R, Mp, H, W, C] (one seeded subset per run) or [R, B, ...] dummy
  retain_y: Any     # int32 [R, Mp]
  n_retain: int
  mask_K: Any       # bool [K]


@functools.lru_cache(maxsize=8)
def programs(model, mean, std, mesh):
  """The :class:`Programs` of one model, normalisation (tuples) and mesh: a second study in
  the same process (a rerun, a notebook cell run again) reuses its compiled programs."""
  return Programs(model, mean, std, mesh)


class Programs:
  """Compiled unlearning programs of one model and mesh, cached per method and shapes
  (:func:`programs` keeps one per model, normalisation and mesh for the whole process)."""

  def __init__(self, model, mean, std, mesh):
    self.model, self.mesh = model, mesh
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.cache = {}

  def normalize(self, x_u8):
    return (x_u8.astype(jnp.float32) / 255.0 - self.mean) / self.std

  def _constrain(self, x):
    n = sharding.data_size(self.mesh)
    if n > 1 and x.shape[0] % n == 0:
      return jax.lax.with_sharding_constraint(
          x, sharding.batch_sharded(sharding.traced_mesh(self.mesh)))
    return x

  def _parts(self, method, static, batches, phase=None):
    """``(prologue, body)`` of one run: the prologue computes what stays fixed (teacher
    logits, AGE targets) and the initial carry; ``body(step, carry, ...)`` is one step.
    ``batches``: (the run's batch size, the forget and the retain batch sizes); ``phase``:
    a scheduled method's step for that phase only (else the step's own, traced)."""
    tx, update = step_lib.build_update(method, static)
    model, (b, *stream_batches) = self.model, batches

    def applier(variables):
      def apply(params, images):
        return model.apply({'params': params, 'batch_stats': variables['batch_stats']}, images,
                           train=False)
      return apply

    def prologue(variables, forget_x, forget_y, n, retain_x, mask_K):
      apply, size = applier(variables), forget_x.shape[0]
      teacher_logits = targets_K = None
      if method.needs_teacher or method.needs_target:
        chunks = forget_x.reshape(-1, b, *forget_x.shape[1:])
        teacher_logits = jax.lax.map(
            lambda x: apply(variables['params'], self.normalize(x)), chunks)
        teacher_logits = teacher_logits.reshape(size, -1)
      if method.needs_target:
        targets_K = objectives.age_targets(teacher_logits, forget_y, jnp.arange(size) < n, mask_K)
      params = variables['params']
      caches = (unlearn_batches.perm_cache(size), unlearn_batches.perm_cache(retain_x.shape[0]))
      return (teacher_logits, targets_K), (params, tx.init(params), jnp.int32(-1), caches)

    def body(step, carry, variables, aux, consts, forget_x, forget_y, n, retain_x, retain_y, m,
             mask_K, key, dyn):
      hp = hparams_lib.HParams(static, dyn)
      key = jax.random.wrap_key_data(key)
      apply, size = applier(variables), forget_x.shape[0]
      teacher_logits, targets_K = consts
      params, opt_state, bad, caches = carry
      f_batch = r_batch = None
      f_idx, r_idx, drawn, caches = unlearn_batches.draw(method, step, key, n, size, m,
                                                         retain_x.shape[0], stream_batches, hp,
                                                         caches)
      if method.uses_forget:
        label = forget_y[f_idx]
        f_batch = Batch(
            inputs=self._constrain(self.normalize(forget_x[f_idx])), label=label,
            teacher_logits=None if teacher_logits is None else teacher_logits[f_idx],
            forget_mask=jnp.broadcast_to(mask_K, (f_idx.shape[0], mask_K.shape[0])),
            target=None if targets_K is None else targets_K[label])
      if method.uses_retain:
        r_batch = Batch(self._constrain(self.normalize(retain_x[r_idx])), retain_y[r_idx])
      if f_batch is None:  # methods read the batch size / mask from the forget batch
        f_batch = Batch(inputs=r_batch.inputs, label=r_batch.label,
                        forget_mask=jnp.broadcast_to(mask_K, (r_idx.shape[0], mask_K.shape[0])))
      rng = jax.random.fold_in(key, step)
      inputs = StepInputs(apply, params, f_batch, r_batch, rng, hp, self.mesh, step=step,
                          aux=aux, phase=drawn if phase is None else phase)
      params, opt_state, value = update(inputs, opt_state)
      bad = jnp.where((bad < 0) & ~jnp.isfinite(value), step, bad)
      return params, opt_state, bad, caches
    return prologue, body

  def run_fn(self, method, static, batches):
    """``run(variables, aux, forget_x, forget_y, n, retain_x, retain_y, m, mask, key, hp,
    steps) -> (params, first_bad_step)``: a whole run, the steps in one ``fori_loop``."""
    prologue, body = self._parts(method, static, batches)

    def run(variables, aux, forget_x, forget_y, n, retain_x, retain_y, m, mask_K, key, dyn,
            steps):
      consts, carry = prologue(variables, forget_x, forget_y, n, retain_x, mask_K)
      step = lambda i, c: body(i, c, variables, aux, consts, forget_x, forget_y, n, retain_x,
                               retain_y, m, mask_K, key, dyn)
      params, _, bad, _ = jax.lax.fori_loop(0, steps, step, carry)
      return params, bad
    return run

  def stepwise_fns(self, method, static, batches, phase=None):
    """The same run as two programs, ``start(*args) -> (consts, carry)`` and
    ``step(i, carry, consts, *args) -> carry``, for a host loop over the steps (on a CPU,
    XLA ran the loop body ~10× slower inside a ``while`` than as a program of its own);
    ``phase``: the step of that phase of a scheduled method (see :meth:`_parts`)."""
    prologue, body = self._parts(method, static, batches, phase)

    def start(variables, aux, forget_x, forget_y, n, retain_x, retain_y, m, mask_K, key, dyn,
              steps):
      return prologue(variables, forget_x, forget_y, n, retain_x, mask_K)

    def step(i, carry, consts, variables, aux, forget_x, forget_y, n, retain_x, retain_y, m,
             mask_K, key, dyn, steps):
      return body(i, carry, variables, aux, consts, forget_x, forget_y, n, retain_x, retain_y,
                  m, mask_K, key, dyn)
    return start, step

  def compiled(self, method, static, batches, vmapped, args, fused=True):
    """The AOT-compiled program(s) for these argument shapes, and the compile seconds.

    ``fused``: one program ``run(*args)``; else the ``(start, step)`` pair of
    :meth:`stepwise_fns` behind one callable with the same signature."""
    shapes = jax.tree.map(
        lambda x: (np.shape(x), (x.dtype if hasattr(x, 'dtype') else np.asarray(x).dtype).str),
        args)
    key = (method, tuple(sorted(static.items())), batches, vmapped, fused, str(shapes))
    if key in self.cache:
      return self.cache[key], 0.0
    # Runs differ in start model, aux, retain subset and key; they share the rest.
    axes = (0, 0, None, None, None, 0, 0, None, None, 0, None, None)
    begin = time.perf_counter()
    if fused:
      fn = self.run_fn(method, static, batches)
      over = sharding.over_models(fn, axes, self.mesh) if vmapped else fn
      program = jax.jit(over).lower(*args).compile()
    else:
      program = self._host_loop(method, static, batches, vmapped, args, axes)
    self.cache[key] = program
    return program, time.perf_counter() - begin

  def _host_loop(self, method, static, batches, vmapped, args, axes):
    """The ``(start, step)`` programs behind one callable: a scheduled method gets a step
    program per phase, and the host calls each step's (:func:`schedule.host_phases`)."""
    start, _ = self.stepwise_fns(method, static, batches)
    phases = range(len(method.schedule)) if method.schedule else [None]
    steps = [self.stepwise_fns(method, static, batches, k)[1] for k in phases]
    if vmapped:
      start = sharding.over_models(start, axes, self.mesh)
      steps = [sharding.over_models(s, (None, 0, 0) + axes, self.mesh) for s in steps]
    start_c = jax.jit(start).lower(*args).compile()
    consts, carry = start_c(*args)   # concrete: the steps are lowered for their shardings
    steps_c = [jax.jit(s).lower(np.int32(0), carry, consts, *args).compile() for s in steps]
    # Several CPU devices: wait for each step, because many queued steps whose all-reduces
    # interleave on XLA's CPU thread pool hit its 40 s rendezvous timeout on a loaded
    # machine (seen with 2 host devices).
    sync = self.mesh.devices.size > 1

    def program(*a):
      n, m, dyn, total = int(a[4]), int(a[7]), jax.device_get(a[10]), int(a[-1])
      if method.schedule:
        hp = hparams_lib.HParams(static, dyn)
        lengths = schedule.pass_lengths(n, m, *batches[1:])
        which = schedule.host_phases(method.schedule, hp, total, lengths)
      else:
        which = np.zeros(total, np.int32)
      consts, carry = start_c(*a)
      for i in range(total):
        carry = steps_c[which[i]](np.int32(i), carry, consts, *a)
        if sync:
          jax.block_until_ready(carry)
      return carry[0], carry[2]
    return program

  def prepare_fn(self, method):
    """Jitted ``method.prepare`` over the exact (unpadded) forget set."""
    key = ('prepare', method.prepare)
    if key not in self.cache:
      model, normalize = self.model, self.normalize

      def prep(variables, x, y, mask_K, rng, dyn, static):
        rng = jax.random.wrap_key_data(rng)
        def apply(params, images):
          return model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                             images, train=False)
        images = normalize(x)
        teacher = apply(variables['params'], images)
        batch = Batch(inputs=images, label=y, teacher_logits=teacher,
                              forget_mask=jnp.broadcast_to(mask_K, teacher.shape))
        return method.prepare(apply, variables['params'], batch, rng,
                              hparams_lib.HParams(dict(static), dyn))
      self.cache[key] = jax.jit(prep, static_argnums=6)
    return self.cache[key]


def fused_loop():
  """One program per run (the steps in a ``fori_loop``) except on a CPU, where a host loop
  over a compiled step was ~10× faster (docs/results.md)."""
  return jax.default_backend() != 'cpu'


def run_group(programs, run, data, starts, keys, vmapped):
  """Runs ``run`` (:class:`cure_jax.unlearning.plan.Run`) from each start model in ``starts``.

  ``data``: :class:`RunData`; ``keys``: one PRNG key (uint32 key data) per run.
  Returns ``(params_list, first_bad_steps, seconds_per_run, compile_s)``; compile time is
  measured apart and not included in the run time.
  """
  method, hp = run.method, run.hparams
  static, dyn = hparams_lib.split(hp)
  b = int(hp.batch_size)
  batches = (b, *methods.batch_sizes(method, b, data.n_forget, data.n_retain))
  steps = np.int32(total_steps(hp.epochs, data.n_forget, b, method, hp, data.n_retain))
  repl = sharding.replicated(programs.mesh)
  put = lambda t: jax.device_put(t, repl)
  compile_s = 0.0
  auxes = [None] * len(starts)
  prep_s = 0.0
  if method.prepare is not None:
    prep = programs.prepare_fn(method)
    x, y = data.forget_x[:data.n_forget], data.forget_y[:data.n_forget]
    t0 = time.perf_counter()
    auxes = [jax.block_until_ready(prep(put(v), put(x), put(y), put(data.mask_K),
                                        put(k), put(dyn),
                                        tuple(sorted(static.items()))))
             for v, k in zip(starts, keys)]
    prep_s = time.perf_counter() - t0   # includes its compile on a new shape
  shared = (put(data.forget_x), put(data.forget_y), np.int32(data.n_forget))
  tail = (np.int32(data.n_retain), put(data.mask_K))
  results, bads, run_s = [], [], []
  if vmapped:  # the runs stacked (split over the mesh's seeds axis, if it has one)
    stack = lambda trees: sharding.stack_models(list(trees), programs.mesh)
    args = (stack(starts), stack(auxes) if auxes[0] is not None else None, *shared,
            stack(data.retain_x), stack(data.retain_y), *tail, stack(keys), put(dyn), steps)
    prog, compile_s = programs.compiled(method, static, batches, True, args, fused_loop())
    t0 = time.perf_counter()
    params, bad = jax.block_until_ready(prog(*args))
    seconds = (time.perf_counter() - t0 + prep_s) / len(starts)
    params, bad = jax.device_get((params, bad))
    for i in range(len(starts)):
      results.append(jax.tree.map(lambda x: x[i], params))
    return results, list(np.asarray(bad)[:len(starts)]), [seconds] * len(starts), compile_s
  for i, (v, aux, k) in enumerate(zip(starts, auxes, keys)):
    args = (put(v), aux, *shared, put(data.retain_x[i]), put(data.retain_y[i]), *tail,
            put(k), put(dyn), steps)
    prog, c = programs.compiled(method, static, batches, False, args, fused_loop())
    compile_s += c
    t0 = time.perf_counter()
    params, bad = jax.block_until_ready(prog(*args))
    run_s.append(time.perf_counter() - t0 + prep_s / len(starts))
    params, bad = jax.device_get((params, bad))
    results.append(params)
    bads.append(int(bad))
  return results, bads, run_s, compile_s
