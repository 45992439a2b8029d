"""One of N local JAX processes (2 CPU devices each) for tests/test_multiprocess.py.

Usage: ``python -m tests.multiprocess_worker PROCESS_ID NUM_PROCESSES PORT OUT.npz``.
Runs the sharded LM fine-tuning steps (FSDP over all processes' devices) and the classifier
training step of :mod:`tests.sharded_steps`; process 0 writes the gathered results.
"""
import os
import sys
import time

_START = time.time()


def _log(what):
  print(f'[{time.time() - _START:6.1f}s] {what}', flush=True)


def main(process_id, num_processes, port, out):
  # Before JAX starts its backend: 2 CPU devices per process, gloo collectives across them.
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', 2)
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=num_processes, process_id=process_id,
                             coordinator_bind_address=f'127.0.0.1:{port}',
                             initialization_timeout=60, heartbeat_timeout_seconds=30,
                             shutdown_timeout_seconds=30)
  _log('distributed initialised')
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from cure_jax.infra import sharding  # pylint: disable=g-import-not-at-top
  from tests import sharded_steps  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 2 * num_processes, jax.devices()

  mesh = sharding.make_mesh(fsdp=2)  # FSDP within a process, data parallel across processes
  params, opt_state, losses = sharded_steps.run_lm(mesh, 'fsdp')
  _log('LM steps done')
  kernel = params['layers_0']['mlp']['up_proj']['kernel']
  assert not kernel.is_fully_addressable and kernel.sharding.spec[1] == 'fsdp'
  state, metrics = sharded_steps.run_classifier(sharding.make_mesh())
  _log('classifier steps done')
  result = multihost_utils.process_allgather(
      {'lm_params': params, 'lm_mu': opt_state[0].mu, 'lm_losses': losses,
       'cls_params': state.params, 'cls_batch_stats': state.batch_stats,
       'cls_loss': metrics['loss']}, tiled=True)
  if process_id == 0:
    leaves, _ = jax.tree_util.tree_flatten_with_path(result)
    np.savez(out, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
  _log('results gathered')
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
