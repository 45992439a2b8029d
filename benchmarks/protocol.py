r"""The protocol's wall time split into load / train / compile / unlearn / evaluate.

  .venv/bin/python -m benchmarks.protocol --config=configs/digits.py --workdir=/tmp/bench

Runs ``config.mode`` (reproduce by default) exactly as ``experiments.main`` does, from the
workdir's state (an empty workdir: everything trained and run; a finished one: nothing to
do), then prints the phase split, the per-method compile and run time and the load average
(the 2-core development machine is shared: say the load with every number).
"""
import json
import os
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/digits.py', 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Work directory (models, runs, results).')
_REFERENCE = flags.DEFINE_string(
    'reference', None, 'A published results.json (e.g. docs/results.json): check that this '
    "run's mean retain/forget accuracy per method and scenario lies within its mean ± "
    '(2·std + 0.01).')
flags.mark_flags_as_required(['workdir'])


def check_table(reference, workdir):
  """The reproduction check of the workdir's results.json against a ``reference`` one: the
  band per (scenario, method, metric), the runs identical to the reference's, and whether
  the two machines compute the same bits (:mod:`cure_jax.infra.host`)."""
  from cure_jax.classification import tables
  from cure_jax.infra import host
  with open(os.path.join(workdir, 'results.json')) as f:
    doc = json.load(f)
  results = tables.reproduction_check(reference['rows'], doc['rows'])
  bad = [r for r in results if not r[-1]]
  same, shared = tables.identical_rows(reference['rows'], doc['rows'])
  lines = [f'reproduction check against the reference: {len(results) - len(bad)} of '
           f'{len(results)} (scenario, method, metric) means within mean ± (2·std + 0.01); '
           f'{same} of {shared} shared runs identical to the reference\'s',
           host.compare(reference.get('meta', {}), doc.get('meta', {}))]
  for scenario, method, key, mean, std, got, _ in bad:
    lines.append(f'  OUTSIDE: scenario {scenario} {method} {key}: published {mean:.3f} ± '
                 f'{std:.3f}, rerun {got:.3f}')
  return '\n'.join(lines)


def _load_reference(path):
  """The --reference file, read before the (long) run: a missing or unreadable one stops it."""
  try:
    with open(path) as f:
      doc = json.load(f)
  except (OSError, ValueError) as e:
    doc, why = None, e
  else:
    why = None if isinstance(doc, dict) and isinstance(doc.get('rows'), list) else 'no rows'
  if why is not None:
    raise SystemExit(f'error: --reference={path} is not a readable results.json ({why}); pass '
                     'a published one, e.g. docs/results.json.')
  return doc


def split_table(timings, wall):
  lines = ['| phase | seconds | share |', '|---|---|---|']
  for phase in ('load', 'train', 'compile', 'unlearn', 'evaluate'):
    lines.append(f'| {phase} | {timings.get(phase, 0.0):.1f} | '
                 f'{100 * timings.get(phase, 0.0) / wall:.0f} % |')
  other = wall - sum(timings.values())
  lines.append(f'| other (start-up, reports, plots) | {other:.1f} | {100 * other / wall:.0f} % |')
  lines.append(f'| **total wall** | **{wall:.1f}** | |')
  return '\n'.join(lines)


def method_table(rows):
  lines = ['| method | runs | compile s | run s (mean) | run / retrain training |',
           '|---|---|---|---|---|']
  for m in dict.fromkeys(r['method'] for r in rows if r['setting'] != 'reference'):
    mine = [r for r in rows if r['method'] == m]
    ratio = [r['time_ratio'] for r in mine if r.get('time_ratio') is not None]
    lines.append(f'| {m} | {len(mine)} | {sum(r["compile_s"] or 0 for r in mine):.1f} | '
                 f'{sum(r["time_s"] for r in mine) / len(mine):.2f} | '
                 f'{(sum(ratio) / len(ratio)) if ratio else float("nan"):.3f} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  reference = _load_reference(_REFERENCE.value) if _REFERENCE.value else None
  from cure_jax.classification import protocol
  from cure_jax import entry
  captured = {}
  real = protocol.build_study   # what the task's execute calls, after entry.run's checks

  def keep(*args, **kwargs):
    captured['study'] = real(*args, **kwargs)
    return captured['study']
  protocol.build_study = keep
  load_before = os.getloadavg()
  start, cpu0 = time.perf_counter(), os.times()
  rows = entry.run(_CONFIG.value, _WORKDIR.value)
  wall = time.perf_counter() - start
  cpu1 = os.times()
  cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
  load_after = os.getloadavg()
  print(split_table(captured['study'].timings, wall))
  print()
  print(method_table(rows))
  print(f'\nload average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/'
        f'{load_before[2]:.1f}, after {load_after[0]:.1f}/{load_after[1]:.1f}/'
        f'{load_after[2]:.1f}; {os.cpu_count()} CPUs; process CPU time {cpu:.0f} s')
  if reference is not None:
    print(check_table(reference, _WORKDIR.value))


if __name__ == '__main__':
  app.run(main)
