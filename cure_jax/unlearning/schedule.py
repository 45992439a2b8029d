"""Per-epoch schedules: a method that runs its peer's passes over the forget and retain sets.

Most methods take one step per forget batch (and, with retain data, one retain batch beside
it). A *scheduled* method instead runs, every epoch, its :class:`Phase` list in order: each
phase is one pass over the forget set or over the retain subset, with its own direction,
optionally only during the first ``hp[first_epochs]`` epochs (SCRUB's max passes). One run
is still a flat sequence of steps: :func:`locate` maps a step index to (epoch, phase,
batch-within-pass, pass index) inside the compiled program, from the data sizes and the
batch sizes (traced scalars, no host table), and :func:`total_steps` counts the steps of
``epochs`` epochs on the host. Step ``s``'s direction is its phase's (:func:`phased`).
"""
import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

FORGET, RETAIN = 'forget', 'retain'


@dataclasses.dataclass(frozen=True)
class Phase:
  data: str                           # FORGET or RETAIN: the set one pass covers once
  direction: Callable                 # StepInputs -> (value, direction), on that set's batch
  first_epochs: Optional[str] = None  # hp key: the pass runs in the first hp[key] epochs only


def check(phases):
  """One clear line for a schedule the mapping cannot serve."""
  if any(p.data not in (FORGET, RETAIN) for p in phases):
    raise ValueError(f'schedule phases read {FORGET!r} or {RETAIN!r} data, got '
                     f'{[p.data for p in phases]}.')
  # An epoch without steps would make the epoch of a step undefined (and the run endless).
  if all(p.first_epochs is not None for p in phases):
    raise ValueError('a schedule needs one phase that runs every epoch (first_epochs=None).')


def phased(phases):
  """The direction of a scheduled method: its phase ``inputs.phase``'s direction.

  A traced phase selects it inside the program (``lax.switch``); a Python int, for a program
  compiled per phase, calls that phase's direction alone: on XLA's CPU backend a gradient's
  convolutions inside a switch branch ran with a generic kernel, 4.7x slower (cnn_small,
  docs/benchmarks.md)."""
  def direction(inputs):
    if isinstance(inputs.phase, int):
      return phases[inputs.phase].direction(inputs)
    branches = [lambda p, d=ph.direction: d(dataclasses.replace(inputs, params=p))
                for ph in phases]
    return jax.lax.switch(inputs.phase, branches, inputs.params)
  return direction


def pass_lengths(n_forget, n_retain, forget_batch, retain_batch):
  """Steps of one pass over each set: ``ceil(size / batch size)`` (ints or traced)."""
  return {FORGET: -(-n_forget // forget_batch), RETAIN: -(-n_retain // retain_batch)}


def total_steps(phases, hp, epochs, lengths):
  """Steps of ``epochs`` epochs (host ints): the whole epochs, then the fraction of the next
  epoch's steps rounded up; at least 1."""
  whole = math.floor(epochs)
  limits = [math.inf if p.first_epochs is None else int(getattr(hp, p.first_epochs))
            for p in phases]
  before = sum(lengths[p.data] * min(whole, k) for p, k in zip(phases, limits))
  last = sum(lengths[p.data] for p, k in zip(phases, limits) if whole < k)
  return max(1, int(before + math.ceil((epochs - whole) * last)))


def host_phases(phases, hp, steps, lengths):
  """The phase of each of ``steps`` steps (a host int array; ``lengths``: host ints): what
  :func:`locate` computes inside the program, for a host loop that calls one program per
  phase. Every epoch runs its phases' passes in order, a limited phase only in the first
  ``hp[first_epochs]`` epochs."""
  out, epoch = [], 0
  while len(out) < steps:
    for i, p in enumerate(phases):
      if p.first_epochs is None or epoch < int(getattr(hp, p.first_epochs)):
        out.extend([i] * int(lengths[p.data]))
    epoch += 1
  return np.asarray(out[:steps], np.int32)


class Position(NamedTuple):
  epoch: jax.Array    # 0-based epoch of the step
  phase: jax.Array    # index into the schedule
  batch: jax.Array    # batch of the step within its pass
  passes: jax.Array   # 0-based index of this pass among the passes over the phase's data


def locate(step, phases, hp, lengths):
  """The :class:`Position` of ``step`` (int32 scalars; everything may be traced).

  ``T(e) = Σ_p L_p · min(e, K_p)``, the steps before epoch ``e`` (``L_p`` the pass length,
  ``K_p`` the phase's epoch limit), is concave, so it is the minimum of its pieces' lines
  through each breakpoint ``c ∈ {0} ∪ {K_p}``, and the step's epoch is the largest epoch any
  line keeps at or below ``step``. Limits are capped at ``step // always + 1``, an epoch
  past the step's (every epoch holds the always-run passes), so that no product leaves int32.
  """
  step = jnp.asarray(step, jnp.int32)
  size = [jnp.asarray(lengths[p.data], jnp.int32) for p in phases]
  always = sum(s for p, s in zip(phases, size) if p.first_epochs is None)
  cap = step // jnp.maximum(always, 1) + 1
  capped = lambda key: jnp.minimum(jnp.asarray(getattr(hp, key), jnp.float32),
                                   cap.astype(jnp.float32)).astype(jnp.int32)
  limit = [None if p.first_epochs is None else capped(p.first_epochs) for p in phases]
  runs = lambda e, k: True if k is None else e < k
  before = lambda e: sum(s * (e if k is None else jnp.minimum(e, k)) for s, k in zip(size, limit))
  epoch = jnp.int32(0)
  for c in [jnp.int32(0)] + [k for k in limit if k is not None]:
    per_epoch = sum(jnp.where(runs(c, k), s, 0) for s, k in zip(size, limit))
    epoch = jnp.maximum(epoch, c + (step - before(c)) // jnp.maximum(per_epoch, 1))
  offset = step - before(epoch)
  starts, end, phase = [], jnp.int32(0), jnp.int32(0)
  for s, k in zip(size, limit):
    starts.append(end)
    end = end + jnp.where(runs(epoch, k), s, 0)
    phase = phase + (end <= offset).astype(jnp.int32)
  passes = [sum(epoch if k is None else jnp.minimum(epoch, k)
                for q, k in zip(phases, limit) if q.data == p.data)
            + sum(jnp.where(runs(epoch, k), 1, 0)
                  for q, k in zip(phases[:i], limit) if q.data == p.data)
            for i, p in enumerate(phases)]
  pick = lambda values: jnp.stack([jnp.asarray(v, jnp.int32) for v in values])[phase]
  return Position(epoch, phase, offset - pick(starts), pick(passes))
