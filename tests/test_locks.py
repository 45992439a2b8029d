"""One run per workdir, one trainer per model (cure_jax.infra.locks), with real processes:
two that need one model at once train it once; a second run on a workdir stops with one line
naming the first; a killed holder leaves no stale lock."""
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from cure_jax.infra import locks, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 60


def _python(*args, **kwargs):
  return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def _two_workers(tmp_path, die_at=None):
  """Both workers train the same tiny model in one cache, released together by a barrier;
  ``die_at``: the worker that wins the model's lock kills itself after that step."""
  cache, barrier = tmp_path / 'cache', tmp_path / 'barrier'
  barrier.mkdir()
  extra = [] if die_at is None else [str(die_at)]
  procs = {name: _python('-m', 'tests.locks_worker', str(cache), str(barrier), name, *extra)
           for name in ('A', 'B')}
  out = {}
  try:
    for name, proc in procs.items():
      out[name] = proc.communicate(timeout=TIMEOUT_S)[0]
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return procs, out, cache


def _ran(text):
  match = re.search(r'^steps=\[([\d, ]*)\]$', text, re.M)
  return None if match is None else [int(s) for s in match.group(1).split(',') if s.strip()]


def _weights(text):
  return re.search(r'^w=(\[.*\])$', text, re.M).group(1)


def _model_dirs(cache):
  return list(cache.iterdir())  # the cache holds one entry per model, nothing else


def test_two_processes_needing_one_model_train_it_once(tmp_path):
  procs, out, cache = _two_workers(tmp_path)
  assert [p.returncode for p in procs.values()] == [0, 0], out
  ran = {name: _ran(text) for name, text in out.items()}
  trained = [name for name in ran if ran[name]]
  assert len(trained) == 1, ran                        # one process trained, once
  waiter = 'B' if trained == ['A'] else 'A'
  assert ran[trained[0]] == list(range(12)) and ran[waiter] == []
  assert f'waiting for pid {procs[trained[0]].pid} (host {socket.gethostname()}) training' \
      in out[waiter]
  assert 'finished, reused from' in out[waiter]
  assert _weights(out['A']) == _weights(out['B'])      # the waiter got the trained model
  [model] = _model_dirs(cache)
  assert trainer.read_info(model)['train_s'] > 0       # written by the one that trained
  assert sorted(p.name for p in model.iterdir()) == [locks.LOCK_NAME, '12', '9',
                                                     trainer.INFO_NAME]
  assert (model / locks.LOCK_NAME).read_text() == ''   # released: no holder named


def test_a_holder_killed_mid_training_leaves_its_checkpoint_to_the_waiter(tmp_path):
  procs, out, cache = _two_workers(tmp_path, die_at=4)
  codes = {name: p.returncode for name, p in procs.items()}
  dead = [name for name in codes if codes[name] == -signal.SIGKILL]
  assert len(dead) == 1 and sorted(codes.values()) == [-signal.SIGKILL, 0], out
  waiter = 'B' if dead == ['A'] else 'A'
  assert f'waiting for pid {procs[dead[0]].pid} ' in out[waiter]
  assert 'resuming from step 3' in out[waiter]
  assert _ran(out[waiter]) == list(range(3, 12))      # resumed from the dead one's step 3
  [model] = _model_dirs(cache)
  assert trainer.read_info(model)['steps'] == 12


HOLD = ('import sys, time\n'
        'from cure_jax.infra import locks\n'
        'with locks.workdir_lock(sys.argv[1]):\n'
        '  print("held", flush=True)\n'
        '  time.sleep(float(sys.argv[2]))\n')


@pytest.fixture
def held_workdir(tmp_path):
  """A workdir whose lock another process holds (for at most a minute)."""
  workdir = tmp_path / 'work'
  workdir.mkdir()
  proc = _python('-c', HOLD, str(workdir), '60')
  assert proc.stdout.readline().strip() == 'held'
  yield workdir, proc
  proc.kill()
  proc.wait()
  proc.stdout.close()


def test_cli_on_a_workdir_in_use_stops_at_once_with_one_line(held_workdir):
  workdir, holder = held_workdir
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=configs/digits.py:smoke',
       f'--workdir={workdir}'], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert result.returncode == 1
  assert result.stderr == (f'error: workdir {workdir} is in use by pid {holder.pid} (host '
                           f'{socket.gethostname()}); wait for it or use another --workdir\n')
  assert not (workdir / 'log.txt').exists()  # nothing written into the holder's workdir


def test_entry_run_on_a_workdir_in_use_raises_in_use_error(held_workdir):
  from configs import digits
  from cure_jax import entry
  workdir, holder = held_workdir
  with pytest.raises(locks.InUseError, match=rf'in use by pid {holder.pid} \(host '):
    entry.run(digits.get_config('smoke'), str(workdir))


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  proc = _python('-c', HOLD, str(tmp_path), '60')
  assert proc.stdout.readline().strip() == 'held'
  with pytest.raises(locks.InUseError, match=f'pid {proc.pid} '):
    with locks.workdir_lock(str(tmp_path)):
      pass
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stdout.close()
  start = time.monotonic()
  with locks.workdir_lock(str(tmp_path)):  # free at once: the OS released it
    text = (tmp_path / locks.LOCK_NAME).read_text()
  assert time.monotonic() - start < 1
  assert text == f'{os.getpid()} {socket.gethostname()}\n'
  assert (tmp_path / locks.LOCK_NAME).read_text() == ''  # no holder named after


def _is_locked(path):
  """Whether some open file description holds ``path``'s lock (ours included: flock locks
  belong to open files, so a fresh one conflicts with this process's own)."""
  with open(path) as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(f, fcntl.LOCK_UN)
    return False


def test_a_process_takes_its_own_lock_again_without_waiting(tmp_path):
  path = tmp_path / locks.LOCK_NAME
  with locks.workdir_lock(str(tmp_path)):
    with locks.workdir_lock(str(tmp_path) + '/'):  # the same workdir, spelled apart
      assert _is_locked(path)
    assert _is_locked(path)  # still held after the nested release
  assert not _is_locked(path)


def test_model_lock_is_a_file_in_the_model_directory(tmp_path):
  with locks.model_lock(str(tmp_path / 'original-abc') + '/'):
    assert _is_locked(tmp_path / 'original-abc' / locks.LOCK_NAME)
    text = (tmp_path / 'original-abc' / locks.LOCK_NAME).read_text()
  assert text == f'{os.getpid()} {socket.gethostname()}\n'
  assert os.listdir(tmp_path) == ['original-abc']
