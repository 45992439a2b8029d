"""Which examples each step of an unlearning run reads, drawn inside the compiled program.

A run's forget and retain streams reshuffle every pass over their set with a seeded
permutation (:func:`cycled_batch`); a scheduled method (SCRUB, SalUn with retain data) reads
passes, each in a fresh seeded order (:func:`pass_batch`). The permutations are carried from
step to step in a small cache (:func:`perm_cache`), so each is sorted once per epoch rather
than at every step; the indices are the same either way.
"""
import jax
import jax.numpy as jnp

from cure_jax.unlearning import schedule

_SHUFFLE_STREAM = 1 << 20   # fold_in tag of the forget shuffles (steps use their index)
_RETAIN_STREAM = 1 << 21



def _epoch_perm(key, epoch, n, size):
  """A uniform permutation of ``0..n-1`` (``n`` traced) in the first ``n`` of ``size`` slots."""
  u = jax.random.uniform(jax.random.fold_in(key, epoch), (size,))
  return jnp.argsort(jnp.where(jnp.arange(size) < n, u, 2.0)).astype(jnp.int32)


def perm_cache(size):
  """An empty cache of a stream's permutations: one slot per parity of the epoch (a batch
  reads two consecutive epochs at most), so each epoch's permutation is sorted once, not at
  every step (two sorts of the whole set cost more than a small model's step)."""
  return jnp.full((2,), -1, jnp.int32), jnp.zeros((2, size), jnp.int32)


def _cached_perm(cache, key, epoch, n, size):
  """``(_epoch_perm(key, epoch, n, size), cache)``, sorted only when the cache lacks it."""
  epochs, perms = cache
  slot = epoch % 2
  perm = jax.lax.cond(epochs[slot] == epoch, lambda: perms[slot],
                      lambda: _epoch_perm(key, epoch, n, size))
  return perm, (epochs.at[slot].set(epoch), perms.at[slot].set(perm))


def cycled_batch_cached(key, step, n, size, batch_size, cache):
  """``(indices, cache)`` of batch ``step`` of a stream that reshuffles every pass over
  ``n`` examples (:func:`cycled_batch`), its permutations kept in ``cache``
  (:func:`perm_cache`)."""
  pos = step * batch_size + jnp.arange(batch_size)
  epoch0 = (step * batch_size) // n
  idx, epoch = pos % n, pos // n
  first, cache = _cached_perm(cache, key, epoch0, n, size)
  second, cache = _cached_perm(cache, key, epoch0 + 1, n, size)
  return jnp.where(epoch == epoch0, first[idx], second[idx]), cache


def cycled_batch(key, step, n, size, batch_size):
  """Indices of batch ``step`` of a stream that reshuffles every pass over ``n`` examples.

  Requires ``batch_size <= n`` (a batch spans at most two passes)."""
  return cycled_batch_cached(key, step, n, size, batch_size, perm_cache(size))[0]


def pass_batch_cached(key, index, batch, n, size, batch_size, cache):
  """``(indices, cache)`` of :func:`pass_batch`, its permutations kept in ``cache``."""
  pos = (batch * batch_size + jnp.arange(batch_size)) % n
  perm, cache = _cached_perm(cache, key, index, n, size)
  return perm[pos], cache


def pass_batch(key, index, batch, n, size, batch_size):
  """Indices of batch ``batch`` of pass ``index`` over ``n`` examples, each pass in a fresh
  seeded order. A pass's last batch is topped up from the start of the same order (the batch
  shape is fixed, where a torch DataLoader's last batch is smaller); pass 0's batches are
  :func:`cycled_batch`'s first ones."""
  return pass_batch_cached(key, index, batch, n, size, batch_size, perm_cache(size))[0]


def draw(method, step, key, n, size, m, retain_size, batches, hp, caches):
  """``(forget indices, retain indices, phase, caches)`` of step ``step``: one batch of each
  stream the method reads (None: it reads none), or for a scheduled method, the batches of
  the step's pass in either stream (its phase reads one of them). ``batches``: the (forget,
  retain) batch sizes (:func:`cure_jax.unlearning.methods.batch_sizes`); ``caches``: the two
  streams' :func:`perm_cache`, carried from step to step."""
  f_key = jax.random.fold_in(key, _SHUFFLE_STREAM)
  r_key = jax.random.fold_in(key, _RETAIN_STREAM)
  (bf, br), (f_cache, r_cache) = batches, caches
  if method.schedule:
    at = schedule.locate(step, method.schedule, hp, schedule.pass_lengths(n, m, bf, br))
    f_idx, f_cache = pass_batch_cached(f_key, at.passes, at.batch, n, size, bf, f_cache)
    r_idx, r_cache = pass_batch_cached(r_key, at.passes, at.batch, m, retain_size, br, r_cache)
    return f_idx, r_idx, at.phase, (f_cache, r_cache)
  f_idx = r_idx = None
  if method.uses_forget:
    f_idx, f_cache = cycled_batch_cached(f_key, step, n, size, bf, f_cache)
  if method.uses_retain:
    r_idx, r_cache = cycled_batch_cached(r_key, step, m, retain_size, br, r_cache)
  return f_idx, r_idx, 0, (f_cache, r_cache)
