r"""Times one jitted training step (SGD + momentum, BatchNorm in train mode) per model.

  .venv/bin/python benchmarks/train_step.py [--batch=128] [--repeats=5] [--models=...]
      [--shape=28,28,1]   # one input shape for every model instead of its own

Each model runs in a fresh subprocess so that its peak RSS is its own. Prints a table and, as
the last line, a JSON object with the per-model median step time (s) and peak RSS (MB).
"""
import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {'resnet8': (8, 8, 1), 'cnn_small': (28, 28, 1), 'resnet18_cifar': (32, 32, 3),
         'resnet50': (224, 224, 3)}


def measure(name, batch, repeats, shape=None):
  import jax
  import numpy as np
  import ml_collections
  from cure_jax import models
  from cure_jax.classification import train
  from cure_jax.infra import sharding, train_state
  shape = tuple(shape or CASES[name])
  model = models.get_model(name, 1000 if name == 'resnet50' else 10)
  cfg = ml_collections.ConfigDict(dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
                                       warmup_fraction=0.0))
  tx = train.make_optimizer(cfg)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = sharding.replicate(train_state.create(
      train_state.init_variables(model, jax.random.key(0), shape), tx), mesh)
  step = train.make_train_step(model, cfg, mesh)
  rng = np.random.default_rng(0)
  batch = sharding.shard_batch({'image': rng.normal(size=(batch, *shape)).astype(np.float32),
                                'label': rng.integers(0, 10, batch).astype(np.int32)}, mesh)
  times = []
  for i in range(repeats + 1):
    start = time.perf_counter()
    state, metrics = step(state, batch, np.int32(1000))
    jax.block_until_ready(metrics['loss'])
    if i:  # the first call compiles
      times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--models', default=','.join(CASES))
  parser.add_argument('--shape', default='', help='H,W,C for every model')
  parser.add_argument('--child', default='')
  args = parser.parse_args()
  if args.child:
    shape = tuple(int(v) for v in args.shape.split(',')) if args.shape else None
    seconds = measure(args.child, args.batch, args.repeats, shape)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'model': args.child, 'shape': shape or CASES[args.child],
                      'step_s': seconds, 'peak_rss_mb': peak_mb}))
    return
  results = []
  for name in args.models.split(','):
    out = subprocess.run([sys.executable, __file__, f'--child={name}', f'--batch={args.batch}',
                          f'--repeats={args.repeats}', f'--shape={args.shape}'],
                         capture_output=True, text=True,
                         check=True)
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps(results[-1]), flush=True)
  print(f'{"model":16s} {"input":>12s} {"step (s)":>9s} {"peak RSS (MB)":>14s}')
  for r in results:
    print(f'{r["model"]:16s} {"x".join(map(str, r["shape"])):>12s} '
          f'{r["step_s"]:9.3f} {r["peak_rss_mb"]:14.0f}')
  print(json.dumps({'batch': args.batch, 'results': results}))


if __name__ == '__main__':
  main()
