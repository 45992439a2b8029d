"""Which forget and retain items each LM unlearning step reads (index batches).

Two streams: :func:`paired_batches` (this loop's own: each epoch's last partial batch
dropped) and :func:`stream_batches` (Hugging Face Trainer's micro-batch stream,
open-unlearning's recipe); both pair every forget item with a uniformly random retain item,
as open-unlearning's TOFU data does.
"""
import numpy as np

from cure_jax.lm import train


def paired_batches(num_forget, num_retain, batch_size, epochs, seed):
  """Index batches ``(forget_idx, retain_idx)``: the forget set is shuffled every epoch and
  each forget item is paired with a uniformly random retain item (open-unlearning's TOFU);
  the last partial batch of an epoch is dropped (``drop_last=True``)."""
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(num_forget)
    for start in range(0, num_forget - batch_size + 1, batch_size):
      yield order[start:start + batch_size], rng.integers(0, num_retain, batch_size)


def stream_batches(num_forget, num_retain, micro, grad_accum, epochs, seed):
  """Index batches as Hugging Face Trainer 4.45 draws them (``drop_last=False``): every
  epoch a new order cut into micro-batches of ``micro`` (``dataloader_drop_last=False``),
  each forget item paired with a random retain item, and every ``grad_accum`` consecutive
  micro-batches one step, counted across epoch ends (``total_batched_samples``), so a batch
  may span two epochs; the run stops after ``epochs × (micro-batches per epoch //
  grad_accum)`` steps (``max_steps``), leaving the rest of the last epoch unread."""
  rng = np.random.default_rng(seed)

  def micro_batches():
    for _ in range(epochs):
      order = rng.permutation(num_forget)
      for start in range(0, num_forget, micro):
        idx = order[start:start + micro]
        yield idx, rng.integers(0, num_retain, len(idx))

  stream = micro_batches()
  for _ in range(train.stream_steps(num_forget, micro, grad_accum, epochs)):
    group = [next(stream) for _ in range(grad_accum)]
    yield tuple(np.concatenate(part) for part in zip(*group))


def batch_size_for(cfg, num_forget, num_devices):
  """The effective unlearning batch: at most the forget set, whole micro-batches per device."""
  grad_accum = int(cfg.grad_accum)
  batch_size = min(cfg.batch_size, num_forget)
  batch_size -= batch_size % (num_devices * grad_accum)
  if batch_size == 0:
    raise ValueError(f'{num_forget} forget items cannot fill one batch of {grad_accum} '
                     f'micro-batches on the {num_devices} devices; use fewer devices, '
                     'a smaller config.unlearn.grad_accum or more forget data.')
  return batch_size
