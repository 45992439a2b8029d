"""One of two processes that train the same tiny model in a shared model cache at once
(tests/test_locks.py).

Usage: ``python -m tests.locks_worker CACHE BARRIER_DIR NAME [DIE_AT_STEP]``. Creates
``BARRIER_DIR/NAME`` once JAX is up and waits for the other process's file, so both call
``trainer.fit`` within milliseconds. Prints ``steps=[...]`` (the steps this process ran) and
``w=[...]`` (the final parameters). With ``DIE_AT_STEP`` the process that trains from step 0
kills itself (SIGKILL) after that step, as a crash would; one that resumes does not.
"""
import os
import signal
import sys
import time

import jax.numpy as jnp
import numpy as np
import optax

from absl import logging

from cure_jax.infra import sharding, train_state, trainer

TOTAL_STEPS = 12
STEP_SECONDS = 0.2  # slow enough that the other process surely finds the model in training


def main(cache, barrier, name, die_at=None):
  logging.set_verbosity(logging.INFO)  # the "waiting for" line is an INFO record
  tx = optax.sgd(0.1)
  state = train_state.start({'params': {'w': jnp.zeros(3)}, 'batch_stats': {}}, tx,
                            sharding.make_mesh())
  ran = []

  def step_fn(state, step, batch):
    ran.append(step)
    time.sleep(STEP_SECONDS)
    grads = {'w': state.params['w'] - batch}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {'loss': jnp.sum(grads['w'] ** 2)}

  def on_step(step):
    if die_at is not None and step == die_at and ran[0] == 0:  # the first trainer only
      os.kill(os.getpid(), signal.SIGKILL)

  settings = {'kind': 'original', 'test': 'locks'}
  directory = os.path.join(cache, trainer.fingerprint.model_fingerprint(settings))
  open(os.path.join(barrier, name), 'w').close()
  while len(os.listdir(barrier)) < 2:
    time.sleep(0.01)
  state = trainer.fit(state, step_fn, lambda start: iter(np.float32(i) for i in range(
      start, TOTAL_STEPS)), TOTAL_STEPS, directory, settings, name=name, log_every=100,
                      checkpoint_every=3, on_step=on_step)
  print(f'steps={ran}', flush=True)
  print(f'w={np.asarray(state.params["w"]).tolist()}', flush=True)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
