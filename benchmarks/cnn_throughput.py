r"""cnn_small's throughput on this machine: the library's layers against the stock flax ones, in
one run.

  .venv/bin/python -m benchmarks.cnn_throughput [--repeats=30] [--methods=ghr,gsr,grogu,...]

Three jitted programs of the Fashion-MNIST protocol, each timed for the library's
``cnn_small`` (:mod:`cure_jax.models.layers`: pooling with a cheap backward, the grey first
convolution as shifted multiply-adds) and for the same network with the stock layers
(``nn.max_pool``, ``lax.conv_general_dilated``: the model before these layers), on the same
variables and random 28 x 28 images:

- training: the protocol's SGD-momentum step (:func:`cure_jax.classification.train.make_train_step`),
  batch 128, BatchNorm in training mode;
- unlearning: one step of each method through :func:`cure_jax.make_unlearning_step`, batch
  128 forget and retain examples, the teacher the starting model (its forward is timed);
- evaluation: eval-mode logits at the protocol's evaluation batch (500).

Each figure is the median of ``--repeats`` calls after two warm-up calls. Floating-point
operations per call come from XLA's cost analysis of the compiled program; the machine's
peak is cores x clock x FLOP per cycle (64 with AVX-512, 32 with AVX2 + FMA: two fused
multiply-add units per core assumed), read from /proc/cpuinfo, so the fraction of peak is
an estimate. With PyTorch installed, the same network's training step in PyTorch (all
cores) is timed beside them. The last line is one JSON object with every figure.
"""
import argparse
import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import cure_jax
from cure_jax import models
from cure_jax.classification import train
from cure_jax.infra import host, sharding, train_state

METHODS = ('ghr', 'gsr', 'grogu', 'gradasc', 'randlabel', 'undial', 'ghr_descent',
           'grogu_descent', 'scrub')
TRAIN_BATCH, EVAL_BATCH = 128, 500


class StockSmallCNN(nn.Module):
  """cnn_small with flax's stock pooling and convolution (the same parameter tree)."""

  @nn.compact
  def __call__(self, x, train=False):  # pylint: disable=redefined-outer-name
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding='SAME', use_bias=False)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5)
    for i, width in enumerate((8, 16)):
      x = nn.relu(norm(name=f'bn{i + 1}')(conv(width, name=f'conv{i + 1}')(x)))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(64, name='hidden')(x.reshape(x.shape[0], -1)))
    return nn.Dense(10, name='head')(x)


def machine():
  """This machine (:func:`cure_jax.infra.host.describe`), its clock (GHz, /proc/cpuinfo) and
  the assumed fp32 peak (GFLOP/s)."""
  info = host.describe()
  flags = set(info['vector_isa'] or ())
  per_cycle = 64 if 'avx512f' in flags else 32 if {'avx2', 'fma'} <= flags else 8
  mhz = 0.0
  if os.path.exists('/proc/cpuinfo'):
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      mhz = next((float(line.split(':', 1)[1]) for line in f if line.startswith('cpu MHz')), 0.0)
  ghz, cores = mhz / 1000, info['cpu_count']
  return dict(cpu=info['cpu'], cores=cores, ghz=round(ghz, 2), flop_per_cycle=per_cycle,
              peak_gflops=round(cores * ghz * per_cycle, 1), jax=jax.__version__,
              backend=jax.default_backend())


def median_call(fn, args, repeats, chain=True):
  """``(median seconds, flops)`` of the jitted ``fn(*args)`` after two warm-up calls; with
  ``chain`` it returns its next arguments (a step whose state is donated)."""
  flops = (fn.lower(*args).compile().cost_analysis() or {}).get('flops')
  times = []
  for i in range(repeats + 2):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    if i >= 2:
      times.append(time.perf_counter() - start)
    if chain:
      args = (out,)
  return float(np.median(times)), flops


def _train(model, variables, images, labels, repeats):
  cfg = ml_collections.ConfigDict(dict(lr=0.05, momentum=0.9, nesterov=False,
                                       weight_decay=5e-4, warmup_fraction=0.0))
  mesh = sharding.make_mesh(jax.devices()[:1])
  variables = jax.tree.map(jnp.copy, variables)  # the step donates its state
  state = sharding.replicate(train_state.create(variables, train.make_optimizer(cfg)), mesh)
  step = train.make_train_step(model, cfg, mesh)
  batch = sharding.shard_batch({'image': images, 'label': labels}, mesh)
  fn = jax.jit(lambda s: step(s, batch, np.int32(1000))[0], donate_argnums=0)
  return median_call(fn, (state,), repeats)


def _unlearn(model, variables, method, images, labels, repeats):
  apply_fn = lambda p, x: model.apply({'params': p, 'batch_stats': variables['batch_stats']},
                                      x, train=False)
  forget = {'inputs': images, 'labels': labels}
  retain = {'inputs': images[::-1], 'labels': labels[::-1]}
  data_sizes = (6000, 18000) if method == 'scrub' else None
  unl = cure_jax.make_unlearning_step(apply_fn, method, teacher=None, forget_mask=[6],
                                      data_sizes=data_sizes)
  state = unl.init(jax.tree.map(jnp.copy, variables['params']), forget_data=forget)
  key = jax.random.key(0)
  step = jax.jit(lambda s: unl.step(s, forget, retain, key)[0])
  return median_call(step, (state,), repeats)


def _evaluate(model, variables, images, repeats):
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return median_call(logits, (variables, images), repeats, chain=False)


def _torch_train(repeats):
  """The same network's training step in PyTorch (SGD-momentum, BatchNorm training), or None."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count())
  net = torch.nn.Sequential(
      torch.nn.Conv2d(1, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
      torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, padding=1, bias=False),
      torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
      torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
  opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  x, y = torch.randn(TRAIN_BATCH, 1, 28, 28), torch.randint(0, 10, (TRAIN_BATCH,))
  times = []
  for i in range(repeats + 2):
    start = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    if i >= 2:
      times.append(time.perf_counter() - start)
  return dict(step_s=float(np.median(times)), threads=torch.get_num_threads(),
              version=torch.__version__)


def _row(name, seconds, flops, images, peak):
  gflops = flops / seconds / 1e9 if flops else None
  return dict(name=name, ms=seconds * 1e3, images_per_s=images / seconds, gflops=gflops,
              peak_fraction=gflops / peak if gflops and peak else None)


def run(args):
  info = machine()
  rng = np.random.default_rng(0)
  images = rng.normal(size=(EVAL_BATCH, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 10, EVAL_BATCH).astype(np.int32)
  ours = models.get_model('cnn_small', 10)
  variables = train_state.init_variables(ours, jax.random.key(0), (28, 28, 1))
  rows = []
  for tag, model in (('library', ours), ('stock', StockSmallCNN())):
    seconds, flops = _train(model, variables, images[:TRAIN_BATCH], labels[:TRAIN_BATCH],
                            args.repeats)
    rows.append(dict(_row('train', seconds, flops, TRAIN_BATCH, info['peak_gflops']),
                     layers=tag))
    seconds, flops = _evaluate(model, variables, jnp.asarray(images), args.repeats)
    rows.append(dict(_row('evaluate', seconds, flops, EVAL_BATCH, info['peak_gflops']),
                     layers=tag))
    for method in args.methods.split(','):
      seconds, flops = _unlearn(model, variables, method, jnp.asarray(images[:TRAIN_BATCH]),
                                jnp.asarray(labels[:TRAIN_BATCH]), args.repeats)
      rows.append(dict(_row(f'unlearn {method}', seconds, flops, TRAIN_BATCH,
                            info['peak_gflops']), layers=tag))
      print(f'{tag:8s} {rows[-1]["name"]:22s} {rows[-1]["ms"]:7.2f} ms', flush=True)
  stock = {r['name']: r for r in rows if r['layers'] == 'stock'}
  print(f'\n{info["cpu"]}, {info["cores"]} cores at {info["ghz"]} GHz, assumed fp32 peak '
        f'{info["peak_gflops"]} GFLOP/s; jax {info["jax"]} ({info["backend"]})')
  print(f'{"program":22s} {"ms":>8s} {"images/s":>10s} {"GFLOP/s":>8s} {"peak":>6s} '
        f'{"stock ms":>9s} {"speed-up":>9s}')
  for r in (r for r in rows if r['layers'] == 'library'):
    s = stock[r['name']]
    gf = f'{r["gflops"]:8.1f}' if r['gflops'] else f'{"–":>8s}'
    pk = f'{100 * r["peak_fraction"]:5.1f}%' if r['peak_fraction'] else f'{"–":>6s}'
    print(f'{r["name"]:22s} {r["ms"]:8.2f} {r["images_per_s"]:10,.0f} {gf} {pk} '
          f'{s["ms"]:9.2f} {s["ms"] / r["ms"]:8.2f}x')
  torch_row = None if args.no_torch else _torch_train(args.repeats)
  if torch_row:
    print(f'PyTorch {torch_row["version"]} training step ({torch_row["threads"]} threads): '
          f'{torch_row["step_s"] * 1e3:.2f} ms, {TRAIN_BATCH / torch_row["step_s"]:,.0f} '
          'images/s')
  print(json.dumps(dict(machine=info, load_average=os.getloadavg(), rows=rows,
                        torch=torch_row)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=30)
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--no-torch', action='store_true', help='skip the PyTorch step')
  run(parser.parse_args())


if __name__ == '__main__':
  main()
