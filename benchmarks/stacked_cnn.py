r"""A probe for many small models per program: cnn_small's training step for M models stacked
in one program as patches + batched matrix products (no grouped convolutions), against
today's one-model flax step, in one run.

  .venv/bin/python -m benchmarks.stacked_cnn [--models=8] [--batch=128] [--repeats=7]

The stacked forward is the flax model's (3 x 3 SAME convolutions without bias as a patches
tensor [M, B, H, W, 9C] times the kernels reshaped [M, 9C, O]; BatchNorm on the batch's
statistics; 2 x 2 max-pooling as a reshape and a max; the dense layers as batched products);
the script checks model 0's logits against flax's before timing. SGD with momentum 0.9 and
weight decay, as the protocol trains. Prints the medians after one compiling call and the
summed images per second of each.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cure_jax import models


def _patches(x_MxBxHxWxC):
  """The 3 x 3 neighbourhoods of every position, ordered (dy, dx, channel) as a flax kernel
  [3, 3, C, O] flattens."""
  h, w = x_MxBxHxWxC.shape[2:4]
  xp = jnp.pad(x_MxBxHxWxC, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([xp[:, :, dy:dy + h, dx:dx + w] for dy in range(3)
                          for dx in range(3)], axis=-1)


def _batch_norm(y, scale_MxO, bias_MxO, eps=1e-5):
  """Flax's training-mode BatchNorm (fast variance: E[y^2] - E[y]^2) per model."""
  mean = jnp.mean(y, axis=(1, 2, 3), keepdims=True)
  var = jnp.maximum(0.0, jnp.mean(y * y, axis=(1, 2, 3), keepdims=True) - mean * mean)
  return ((y - mean) * jax.lax.rsqrt(var + eps) * scale_MxO[:, None, None, None]
          + bias_MxO[:, None, None, None])


def stacked_logits(params, x_MxBxHxWxC):
  x = x_MxBxHxWxC
  for i in (1, 2):
    kernel = params[f'conv{i}']['kernel']
    y = jnp.einsum('mbhwk,mko->mbhwo', _patches(x),
                   kernel.reshape(kernel.shape[0], -1, kernel.shape[-1]))
    y = jax.nn.relu(_batch_norm(y, params[f'bn{i}']['scale'], params[f'bn{i}']['bias']))
    m, b, h, w, o = y.shape
    x = y.reshape(m, b, h // 2, 2, w // 2, 2, o).max(axis=(3, 5))
  x = x.reshape(x.shape[0], x.shape[1], -1)
  dense = lambda v, layer: (jnp.einsum('mbd,mdh->mbh', v, params[layer]['kernel'])
                            + params[layer]['bias'][:, None])
  return dense(jax.nn.relu(dense(x, 'hidden')), 'head')


def _median_seconds(fn, state, repeats):
  state = fn(*state)
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state = fn(*state)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--models', type=int, default=8)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=7)
  args = parser.parse_args()
  m, b = args.models, args.batch
  model = models.get_model('cnn_small', 10)
  variables = [model.init(k, jnp.zeros((1, 28, 28, 1)), train=False)
               for k in jax.random.split(jax.random.key(0), m)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *[v['params'] for v in variables])
  x = jax.random.normal(jax.random.key(1), (m, b, 28, 28, 1))
  y = jax.random.randint(jax.random.key(2), (m, b), 0, 10)
  want, _ = model.apply(variables[0], x[0], train=True, mutable=['batch_stats'])
  err = float(jnp.abs(stacked_logits(stacked, x)[0] - want).max())
  print(f'model 0: stacked logits within {err:.2g} of flax (largest |logit| '
        f'{float(jnp.abs(want).max()):.3g})')
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.05, momentum=0.9))
  ce = optax.softmax_cross_entropy_with_integer_labels

  @jax.jit
  def stacked_step(p, o):
    grads = jax.grad(lambda q: jnp.sum(jnp.mean(ce(stacked_logits(q, x), y), axis=1)))(p)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o

  @jax.jit
  def flax_step(p, stats, o):
    def loss(q):
      z, new = model.apply({'params': q, 'batch_stats': stats}, x[0], train=True,
                           mutable=['batch_stats'])
      return jnp.mean(ce(z, y[0])), new['batch_stats']
    grads, stats = jax.grad(loss, has_aux=True)(p)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), stats, o

  one = variables[0]
  t_one = _median_seconds(flax_step, (one['params'], one['batch_stats'],
                                      tx.init(one['params'])), args.repeats)
  t_all = _median_seconds(stacked_step, (stacked, tx.init(stacked)), args.repeats)
  print(f'flax, one model:  {t_one * 1e3:.1f} ms/step, {b / t_one:,.0f} images/s')
  print(f'stacked, {m} models: {t_all * 1e3:.1f} ms/step, {m * b / t_all:,.0f} images/s '
        f'({(m * b / t_all) / (b / t_one):.2f}x)')


if __name__ == '__main__':
  main()
