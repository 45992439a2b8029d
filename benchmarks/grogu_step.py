"""Time and peak memory of one jitted unlearning step: plain GHR vs GROGU (vmap, fast).

Usage::

  python benchmarks/grogu_step.py                 # ResNet-18 at 32 and 128, byte LM, SmolLM2
  python benchmarks/grogu_step.py --cases=resnet8:32 --repeats=5
  python benchmarks/grogu_step.py --cases=smollm2:8 --methods=ghr,fast

Every (model, batch, method) runs in a fresh subprocess so that its peak resident memory
(``ru_maxrss``, which includes the JAX runtime's fixed ~0.3-0.5 GB) is its own; on a GPU
the device's ``peak_bytes_in_use`` is reported as well. Times are the median of
``--repeats`` calls after ``--warmup`` calls (compile time separate), in wall-clock and in
process CPU time (the fairer figure on a machine shared with other jobs). The step is the
whole update: loss(es), direction and an SGD step on the parameters; teacher logits are
inputs, so no teacher forward is timed. The last printed line is one JSON object with
``time_ratio`` / ``mem_ratio`` (GROGU-fast over plain GHR, ResNet-18 at batch 128),
``lm_time_ratio`` / ``lm_mem_ratio`` (byte LM), ``smollm2_time_ratio`` /
``smollm2_mem_ratio`` and every case's figures. ``smollm2`` is SmolLM2-135M's shape (30
blocks, d 576, FFN 1536, 9 query / 3 KV heads, vocab 49152, tied) with random weights,
64 tokens per example.

With ``--phases`` (default on) the GROGU-fast child also times jitted prefixes of its step:
``forward`` (the recorded forward), ``pulls`` (+ the two activation-cotangent pulls),
``inner_products`` (+ per-example inner products) and ``weight_gradients`` (the rest: the
direction from saved inputs and combined cotangents, and the update); the plain GHR child
splits into ``forward`` and ``backward``. Each phase is the difference of two medians
(``phases`` in wall time, ``phases_cpu`` in process CPU time).
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ('ghr', 'vmap', 'fast')
# The LM of the project's default config (cure_jax/lm/defaults.py) with its byte tokenizer.
LM_SETTINGS = dict(vocab_size=264, num_layers=4, d_model=128, num_heads=4, num_kv_heads=4,
                   d_ff=384, max_len=192)
LM_LENGTH = 128
SMOLLM2_SETTINGS = dict(vocab_size=49152, num_layers=30, d_model=576, num_heads=9,
                        num_kv_heads=3, d_ff=1536, max_len=64, rope_base=100000.0,
                        tie_embeddings=True)
LM_SHAPES = {'lm': (LM_SETTINGS, LM_LENGTH), 'smollm2': (SMOLLM2_SETTINGS, 64)}
# The vmap reference holds two per-example gradients: 2 x 8 x 135 M floats for SmolLM2.
VMAP_SKIPPED = {'smollm2': 'per-example gradients of 135 M parameters'}
TEMPERATURE = {'lm': 5.0, 'smollm2': 5.0}
DEFAULT_TEMPERATURE = 12.0  # the paper's GSR temperature on CIFAR-10


def _random_params(shapes, key):
  """He-normal kernels and embeddings, unit scales, zero biases and BatchNorm means."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    name = str(getattr(path[-1], 'key', path[-1]))
    if name in ('scale', 'var'):
      out.append(jnp.ones(leaf.shape, leaf.dtype))
    elif name in ('bias', 'mean'):
      out.append(jnp.zeros(leaf.shape, leaf.dtype))
    else:
      fan_in = math.prod(leaf.shape[:-1]) if name == 'kernel' else leaf.shape[-1]
      out.append(jax.random.normal(k, leaf.shape, leaf.dtype) * math.sqrt(2.0 / fan_in))
  return jax.tree.unflatten(treedef, out)


def _build(model_name, batch):
  """``(apply_fn, params, inputs, per_example_loss(kind, logits), example_loss)``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cure_jax.unlearning import losses  # pylint: disable=g-import-not-at-top
  temperature = TEMPERATURE.get(model_name, DEFAULT_TEMPERATURE)
  key_params, key_inputs, key_teacher = jax.random.split(jax.random.key(0), 3)
  if model_name in LM_SHAPES:
    from cure_jax.models.causal_lm import CausalLM, LMConfig  # pylint: disable=g-import-not-at-top
    settings, length = LM_SHAPES[model_name]
    model = CausalLM(LMConfig(**settings))
    vocab = settings['vocab_size']
    inputs = jax.random.randint(key_inputs, (batch, length), 0, vocab)
    variables = _random_params(jax.eval_shape(model.init, key_params, inputs), key_params)
    apply_fn = lambda p, x: model.apply({'params': p}, x)
    teacher = jax.random.normal(key_teacher, (batch, length, vocab))
    # Loss on the second half (the "answer"); the forget class of a token is the next token.
    answer = jnp.broadcast_to(jnp.arange(length) >= length // 2, (batch, length))
    mask = jax.nn.one_hot(jnp.roll(inputs, -1, axis=1), vocab, dtype=bool)
    answer = answer.astype(jnp.float32)
  else:
    from cure_jax.models import get_model  # pylint: disable=g-import-not-at-top
    model = get_model(model_name, 10)
    inputs = jax.random.normal(key_inputs, (batch, 32, 32, 3))
    variables = _random_params(jax.eval_shape(lambda k: model.init(k, inputs, train=False),
                                              key_params), key_params)
    state = variables['batch_stats']
    apply_fn = lambda p, x: model.apply({'params': p, 'batch_stats': state}, x, train=False)
    teacher = jax.random.normal(key_teacher, (batch, 10))
    mask = jnp.broadcast_to(jax.nn.one_hot(1, 10, dtype=bool), (batch, 10))
    answer = jnp.ones((batch, 1))

  def token_loss(kind, logits, teacher_, mask_):
    if kind == 'h':
      return losses.ghr(logits, teacher_, mask_)
    return losses.gsr(logits, teacher_, mask_, temperature)

  def batch_loss(kind, logits, teacher_=teacher, mask_=mask, answer_=answer):
    per_token = token_loss(kind, logits, teacher_, mask_)
    if per_token.ndim == 1:
      return per_token
    return jnp.sum(per_token * answer_, -1) / jnp.sum(answer_, -1)

  examples = dict(x=inputs, t=teacher, m=mask, a=answer)

  def example_loss(kind, p, ex):
    logits = apply_fn(p, ex['x'][None])
    return batch_loss(kind, logits, ex['t'][None], ex['m'][None], ex['a'][None])[0]

  return apply_fn, variables['params'], inputs, batch_loss, example_loss, examples


def _make_step(method, apply_fn, inputs, batch_loss, example_loss, examples, lr=1e-4):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cure_jax.unlearning import grogu
  from cure_jax.unlearning.grogu import fast as grogu_fast  # pylint: disable=g-import-not-at-top
  weights = dict(eps=1e-8, w_h=0.5, w_s=0.5)
  if method == 'ghr':
    def direction(p):
      return jax.grad(lambda q: jnp.mean(batch_loss('h', apply_fn(q, inputs))))(p)
  elif method == 'vmap':
    def direction(p):
      return grogu.grogu_direction(lambda q, ex: example_loss('h', q, ex),
                                   lambda q, ex: example_loss('s', q, ex), p, examples,
                                   **weights)
  elif method == 'fast':
    def direction(p):
      return grogu_fast.grogu_direction_fast(
          apply_fn, p, inputs, lambda z: batch_loss('h', z), lambda z: batch_loss('s', z),
          **weights)[0]
  else:
    raise ValueError(f'Unknown method {method!r}; use one of {METHODS}.')

  @jax.jit
  def step(p):
    return jax.tree.map(lambda w, g: w - lr * g, p, direction(p))

  return step


def _phase_prefixes(method, apply_fn, inputs, batch_loss):
  """Jitted prefixes of a step, ``[(phase name, fn(params))]``, each ending one phase later."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from cure_jax.unlearning.grogu import fast as grogu_fast  # pylint: disable=g-import-not-at-top
  forward = lambda p: jnp.sum(apply_fn(p, inputs))
  if method != 'fast':
    return [('forward', jax.jit(forward))]
  weights = dict(w_h=0.5, w_s=0.5)
  losses_ = (lambda z: batch_loss('h', z), lambda z: batch_loss('s', z))

  def pulls(p):
    cots = grogu_fast.cotangents_of_calls(apply_fn, p, inputs, *losses_, **weights)[3]
    return [jnp.sum(h) + jnp.sum(s) for h, s in cots]

  def inner(p):
    logits, calls, saved, cots, _ = grogu_fast.cotangents_of_calls(apply_fn, p, inputs,
                                                                   *losses_, **weights)
    return grogu_fast.per_example_plans(calls, saved, cots, p, logits.shape[0])[0]
  return [('forward', jax.jit(forward)), ('pulls', jax.jit(pulls)),
          ('inner_products', jax.jit(inner))]


def _median_time(fn, arg, warmup, repeats):
  import jax  # pylint: disable=g-import-not-at-top
  times, cpu_times = [], []
  for i in range(warmup + repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(arg))
    if i >= warmup:
      times.append(time.perf_counter() - start)
      cpu_times.append(time.process_time() - cpu_start)
  return times, cpu_times


def run_child(spec, warmup, repeats, phases):
  """One case in this process; prints its JSON figures."""
  import jax  # pylint: disable=g-import-not-at-top
  model_name, batch, method = spec.split(':')
  apply_fn, params, inputs, batch_loss, example_loss, examples = _build(model_name, int(batch))
  step = _make_step(method, apply_fn, inputs, batch_loss, example_loss, examples)
  rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  start = time.perf_counter()
  jax.block_until_ready(step(params))
  compile_s = time.perf_counter() - start
  times, cpu_times = _median_time(step, params, warmup, repeats)
  # Peaks before the phase prefixes run (their compilations would add to the process peak).
  stats = jax.devices()[0].memory_stats() or {}
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  split, split_cpu = {}, {}
  if phases and method in ('ghr', 'fast'):
    done = done_cpu = 0.0
    for name, fn in _phase_prefixes(method, apply_fn, inputs, batch_loss):
      jax.block_until_ready(fn(params))  # compile
      upto, upto_cpu = map(statistics.median, _median_time(fn, params, warmup, repeats))
      split[name], done = round(upto - done, 4), upto
      split_cpu[name], done_cpu = round(upto_cpu - done_cpu, 4), upto_cpu
    last = 'weight_gradients' if method == 'fast' else 'backward'
    split[last] = round(statistics.median(times) - done, 4)
    split_cpu[last] = round(statistics.median(cpu_times) - done_cpu, 4)
  print(json.dumps(dict(
      model=model_name, batch=int(batch), method=method, time_s=statistics.median(times),
      times_s=times, cpu_time_s=statistics.median(cpu_times), first_call_s=compile_s,
      peak_rss_bytes=peak_rss, setup_rss_bytes=rss_setup,
      device_peak_bytes=stats.get('peak_bytes_in_use'), device=jax.devices()[0].device_kind,
      phases_s=split, phases_cpu_s=split_cpu)))


def _run_case(spec, args):
  cmd = [sys.executable, os.path.abspath(__file__), f'--child={spec}',
         f'--warmup={args.warmup}', f'--repeats={args.repeats}',
         f'--phases={args.phases}']
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), env.get('PYTHONPATH')]))
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  if proc.returncode != 0:
    return dict(zip(('model', 'batch', 'method'), spec.split(':')),
                error=(proc.stderr.strip().splitlines() or ['exit %d' % proc.returncode])[-1])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory(case):
  return case.get('device_peak_bytes') or case.get('peak_rss_bytes')


def _ratio(results, model, batch, key):
  get = {(r['model'], r['batch'], r['method']): r for r in results if 'error' not in r}
  fast, plain = get.get((model, batch, 'fast')), get.get((model, batch, 'ghr'))
  if not (fast and plain):
    return None
  return round(key(fast) / key(plain), 3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cases',
                      default='resnet18_cifar:32,resnet18_cifar:128,lm:16,smollm2:8',
                      help='comma-separated model:batch (models: resnet8, resnet18_cifar, lm, '
                           'smollm2)')
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--vmap_max_batch', type=int, default=32,
                      help='skip the vmap reference above this batch for ResNet-18 (it holds '
                           'two 45 MB gradients per example)')
  parser.add_argument('--phases', type=int, default=1,
                      help='1: also time the phases of the plain and GROGU-fast steps')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    run_child(args.child, args.warmup, args.repeats, args.phases)
    return
  results = []
  print(f'{"model":16s}{"batch":>6s}{"method":>8s}{"step s":>9s}{"x ghr":>7s}{"cpu s":>9s}'
        f'{"x ghr":>7s}{"peak GB":>9s}{"x ghr":>7s}{"1st call s":>11s}')
  for case in args.cases.split(','):
    model, batch = case.split(':')
    plain = None
    for method in args.methods.split(','):
      if method == 'vmap' and model in VMAP_SKIPPED:
        results.append(dict(model=model, batch=int(batch), method=method,
                            skipped=VMAP_SKIPPED[model]))
        print(f'{model:16s}{batch:>6s}{method:>8s}   skipped ({VMAP_SKIPPED[model]})')
        continue
      if method == 'vmap' and model == 'resnet18_cifar' and int(batch) > args.vmap_max_batch:
        results.append(dict(model=model, batch=int(batch), method=method,
                            skipped=f'batch > --vmap_max_batch={args.vmap_max_batch}'))
        print(f'{model:16s}{batch:>6s}{method:>8s}   skipped (--vmap_max_batch)')
        continue
      r = _run_case(f'{model}:{batch}:{method}', args)
      results.append(r)
      if 'error' in r:
        print(f'{model:16s}{batch:>6s}{method:>8s}   failed: {r["error"]}')
        continue
      plain = r if method == 'ghr' else plain
      rel = lambda key: f'{key(r) / key(plain):7.2f}' if plain else ' ' * 7
      print(f'{model:16s}{batch:>6s}{method:>8s}{r["time_s"]:9.3f}{rel(lambda c: c["time_s"])}'
            f'{r["cpu_time_s"]:9.3f}{rel(lambda c: c["cpu_time_s"])}'
            f'{_memory(r) / 1e9:9.2f}{rel(_memory)}{r["first_call_s"]:11.1f}', flush=True)
  batches = dict(c.split(':') for c in args.cases.split(','))
  lm_batch, smol_batch = int(batches.get('lm', 0)), int(batches.get('smollm2', 0))
  summary = dict(
      time_ratio=_ratio(results, 'resnet18_cifar', 128, lambda r: r['time_s']),
      mem_ratio=_ratio(results, 'resnet18_cifar', 128, _memory),
      cpu_time_ratio=_ratio(results, 'resnet18_cifar', 128, lambda r: r['cpu_time_s']),
      lm_time_ratio=_ratio(results, 'lm', lm_batch, lambda r: r['time_s']),
      lm_mem_ratio=_ratio(results, 'lm', lm_batch, _memory),
      lm_cpu_time_ratio=_ratio(results, 'lm', lm_batch, lambda r: r['cpu_time_s']),
      smollm2_time_ratio=_ratio(results, 'smollm2', smol_batch, lambda r: r['time_s']),
      smollm2_mem_ratio=_ratio(results, 'smollm2', smol_batch, _memory),
      phases={f"{r['model']}:{r['batch']}:{r['method']}": r['phases_s'] for r in results
              if r.get('phases_s')},
      phases_cpu={f"{r['model']}:{r['batch']}:{r['method']}": r['phases_cpu_s']
                  for r in results if r.get('phases_cpu_s')},
      memory='device peak_bytes_in_use' if any(r.get('device_peak_bytes') for r in results)
      else 'peak RSS of a fresh process per case (includes the JAX runtime)',
      cases=results)
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
