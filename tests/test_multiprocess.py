"""Two local JAX processes (coordinator on 127.0.0.1, gloo CPU collectives) run the sharded LM
fine-tuning step and the classification training step; results equal one process's."""
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from cure_jax.infra import sharding

from tests import sharded_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_PROCESSES = 2
TIMEOUT_S = 150


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_workers(tmp_path):
  port, out = _free_port(), str(tmp_path / 'result.npz')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  procs, logs = [], []
  for i in range(NUM_PROCESSES):
    log = open(tmp_path / f'worker{i}.log', 'w')  # pylint: disable=consider-using-with
    logs.append(log)
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'tests.multiprocess_worker', str(i), str(NUM_PROCESSES),
         str(port), out], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs, logs, out


def _wait_workers(tmp_path, procs, logs, out):
  deadline = time.time() + TIMEOUT_S
  try:
    for p in procs:
      p.wait(timeout=max(1, deadline - time.time()))
  except subprocess.TimeoutExpired:
    pass
  finally:
    for p in procs:  # terminate, then kill, only the workers started here
      if p.poll() is None:
        p.terminate()
        try:
          p.wait(timeout=5)
        except subprocess.TimeoutExpired:
          p.kill()
          p.wait()
    for log in logs:
      log.close()
  codes = [p.returncode for p in procs]
  if codes != [0] * NUM_PROCESSES:
    text = '\n'.join((tmp_path / f'worker{i}.log').read_text()[-3000:]
                     for i in range(NUM_PROCESSES))
    raise AssertionError(f'workers exited with {codes}:\n{text}')
  return dict(np.load(out))


def _flat(tree):
  leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def test_two_processes_equal_one(tmp_path):
  workers = _start_workers(tmp_path)
  one = jax.devices()[:1]  # the single-process reference, computed while the workers run
  params, opt_state, losses = sharded_steps.run_lm(sharding.make_mesh(devices=one), 'fsdp')
  state, metrics = sharded_steps.run_classifier(sharding.make_mesh(one))
  want = _flat({'lm_params': params, 'lm_mu': opt_state[0].mu, 'lm_losses': losses,
                'cls_params': state.params, 'cls_batch_stats': state.batch_stats,
                'cls_loss': metrics['loss']})
  got = _wait_workers(tmp_path, *workers)
  assert sorted(got) == sorted(want)
  # The processes split each step's batch reductions (LM: 8 x 12 tokens, AdamW; classifier:
  # 8 images of 8 x 8, SGD momentum) over their devices: sharded_steps' reordering bounds
  # of its 2 steps (4.6e-5 and 2.4e-4), where a missing all-reduce moves results by O(1).
  for key, w in want.items():
    rtol = sharded_steps.LM_RTOL if key.startswith("['lm_") else sharded_steps.CLASSIFIER_RTOL
    sharded_steps.assert_close(got[key], w, rtol, key)
  start = _flat({'p': sharded_steps.lm_params()})
  assert not np.allclose(got["['lm_params']['embed_tokens']['embedding']"],
                         start["['p']['embed_tokens']['embedding']"])
