"""The machine a result was computed on, as far as it decides the arithmetic.

XLA's CPU backend and the kernel libraries it calls (YNNPACK, XNNPACK, Eigen) pick their
kernels at run time from the processor: a matrix product is summed in another order, with or
without fused multiply-add, on one CPU than on another. On our AVX2 machine a capped
``--xla_cpu_max_isa=AVX`` changes a plain matrix product's bits; 40 training steps of a small
CNN under the qemu emulator set to Intel Haswell and to AMD EPYC-Milan (the same vector flags)
gave different bits, so the libraries read more than the flags. Over hundreds of training
steps that changes every model: two 2-core machines gave different rows for the same config,
while reruns on one machine agree bit for bit (docs/results.md).

So a rerun can be expected to reproduce published rows bit for bit only in the same
*arithmetic class*: the same backend, device kind and count, JAX version and, on a CPU, the
same processor model, vector instruction sets and core count (the thread split of a
reduction). Elsewhere it agrees only statistically (``tables.reproduction_check``).
"""
import os
import platform

# Instruction-set flags (Linux /proc/cpuinfo spelling) that select different kernels.
VECTOR_FLAGS = (
    # x86-64
    'sse4_1', 'sse4_2', 'avx', 'f16c', 'fma', 'avx2', 'avx_vnni', 'avx_vnni_int8',
    'avx_ne_convert', 'avx512f', 'avx512dq', 'avx512cd', 'avx512bw', 'avx512vl',
    'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'avx512vbmi', 'amx_tile', 'amx_bf16',
    'amx_int8',
    # AArch64
    'asimd', 'asimdhp', 'asimddp', 'sve', 'sve2', 'bf16', 'i8mm', 'sme')


def parse_cpuinfo(text):
  """``(model name, sorted vector flags)`` from the text of /proc/cpuinfo (x86 ``flags``
  or AArch64 ``Features`` lines; the first processor's), ``(None, None)`` if it has none."""
  name, flags = None, None
  for line in text.splitlines():
    key, _, value = line.partition(':')
    key = key.strip().lower()
    if key in ('model name', 'cpu model') and name is None:
      name = value.strip() or None
    elif key in ('flags', 'features') and flags is None:
      have = set(value.split())
      flags = sorted(f for f in VECTOR_FLAGS if f in have)
  return name, flags


def describe(cpuinfo_path='/proc/cpuinfo'):
  """This machine: ``{'machine', 'cpu', 'vector_isa', 'cpu_count'}`` (``cpu`` and
  ``vector_isa`` None where the OS does not say, e.g. outside Linux)."""
  name, flags = None, None
  try:
    with open(cpuinfo_path, encoding='utf-8', errors='replace') as f:
      name, flags = parse_cpuinfo(f.read())
  except OSError:
    pass
  return {'machine': platform.machine(), 'cpu': name or platform.processor() or None,
          'vector_isa': flags, 'cpu_count': os.cpu_count()}


def arithmetic_class(meta):
  """What must match for bit-identical rows, from a results.json ``meta``; None when the
  meta does not record it (rows written before the host was recorded)."""
  host = meta.get('host')
  if not host or not meta.get('backend'):
    return None
  cls = {'backend': meta['backend'], 'device_kind': meta.get('device_kind'),
         'device_count': meta.get('device_count'), 'jax': meta.get('jax')}
  if meta['backend'] == 'cpu':
    if host.get('vector_isa') is None:
      return None
    cls.update(machine=host.get('machine'), cpu=host.get('cpu'),
               vector_isa=tuple(host['vector_isa']), cpu_count=host.get('cpu_count'))
  return cls


def compare(reference_meta, meta):
  """One line: can this run be expected to reproduce the reference's rows bit for bit?"""
  ref, mine = arithmetic_class(reference_meta), arithmetic_class(meta)
  if ref is None or mine is None:
    which = 'the reference' if ref is None else 'this run'
    return (f'arithmetic: {which} does not record its machine, so whether the rows can '
            'agree bit for bit is unknown; expect agreement within the band.')
  if ref == mine:
    return (f'arithmetic: same class as the reference ({_label(mine)}): the rows should '
            'agree bit for bit.')
  diff = sorted(k for k in ref.keys() | mine.keys() if ref.get(k) != mine.get(k))
  return (f'arithmetic: another class than the reference (differs in {", ".join(diff)}; '
          f'reference {_label(ref)}; this run {_label(mine)}): the models may differ, '
          'expect agreement within the band only.')


def _label(cls):
  if cls['backend'] != 'cpu':
    return f'{cls["backend"]} {cls["device_kind"]} ×{cls["device_count"]}, jax {cls["jax"]}'
  isa = '+'.join(cls['vector_isa']) or 'no vector flags'
  return f'{cls["cpu"]}, {cls["machine"]} {isa}, {cls["cpu_count"]} cores, jax {cls["jax"]}'
