"""SIGKILL the real CLI during training, during a checkpoint write and during a sweep; the
rerun must end with exactly the parameters / results of an uninterrupted run."""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ('--config.mode=reproduce', '--config.model_seeds=1', '--config.scenarios=1',
         '--config.seeds=1', "--config.reproduce.methods=('ghr','gradasc')",
         '--config.train.epochs=1', '--config.train.checkpoint_every=5',
         '--config.train.log_every=5', '--config.seed_parallel=False')
# Timings and provenance differ between runs; every metric must not.
VOLATILE = re.compile(r'(^tim(e|ing)|_s$|seconds|ratio|timestamp|date|created|host|pid|resumed)')
TRAIN_ONLY = '--config.mode=train_original'


def _command(workdir, *extra):
  return [sys.executable, '-m', 'experiments.main', '--config=configs/digits.py:smoke',
          f'--workdir={workdir}', *FLAGS, *extra]


def _run(workdir, *extra):
  result = subprocess.run(_command(workdir, *extra), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _run_and_kill(workdir, condition, *extra, poll_s=0.002):
  """Starts the CLI and SIGKILLs it as soon as ``condition()`` holds; True if it did."""
  with open(os.path.join(workdir, 'killed_run.out'), 'w') as out:
    proc = subprocess.Popen(_command(workdir, *extra), cwd=ROOT, stdout=out, stderr=out)
    try:
      while proc.poll() is None:
        if condition():
          proc.send_signal(signal.SIGKILL)
          proc.wait()
          return True
        time.sleep(poll_s)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return False


def _model_dirs(workdir, kind='original'):
  return sorted(glob.glob(os.path.join(workdir, '**', f'{kind}*', ''), recursive=True))


def _steps(model_dir):
  return sorted(int(n) for n in os.listdir(model_dir) if n.isdigit())


def _final_state(workdir):
  """Leaves of the last checkpoint of the original model, read back with orbax."""
  (model_dir,) = [d for d in _model_dirs(workdir) if _steps(d)]
  step = _steps(model_dir)[-1]
  state = ocp.StandardCheckpointer().restore(os.path.join(model_dir, str(step), 'default'))
  return step, jax.tree_util.tree_flatten_with_path(state)[0]


def _assert_same_parameters(workdir, reference):
  step, leaves = _final_state(workdir)
  ref_step, ref_leaves = _final_state(reference)
  assert step == ref_step and len(leaves) == len(ref_leaves) > 10
  for (path, x), (ref_path, y) in zip(leaves, ref_leaves):
    assert path == ref_path
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def _stable(obj):
  if isinstance(obj, dict):
    return {k: _stable(v) for k, v in obj.items() if not VOLATILE.search(k)}
  if isinstance(obj, list):
    return [_stable(v) for v in obj]
  return obj


def _results(workdir):
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    return _stable(json.load(f))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  _run(workdir)
  return workdir


def _has_finished_step(workdir, step):
  return any(os.path.isdir(os.path.join(d, str(step))) for d in _model_dirs(workdir))


def _has_tmp_checkpoint(workdir):
  for d in _model_dirs(workdir):
    try:
      if any('orbax-checkpoint-tmp' in n for n in os.listdir(d)):
        return True
    except FileNotFoundError:
      pass
  return False


def test_kills_during_a_checkpoint_write_and_during_training_then_rerun(tmp_path, reference):
  workdir = str(tmp_path)
  # 1: killed while orbax writes a checkpoint (its temporary directory exists).
  assert _run_and_kill(workdir, lambda: _has_tmp_checkpoint(workdir), TRAIN_ONLY,
                       poll_s=0.0005), 'no checkpoint write was caught in progress'
  # 2: the rerun, killed between checkpoints once step 10 is saved.
  assert _run_and_kill(workdir, lambda: _has_finished_step(workdir, 10), TRAIN_ONLY), \
      'the training finished before the kill'
  (model_dir,) = _model_dirs(workdir)
  assert 10 <= max(_steps(model_dir)) < _steps(_model_dirs(reference)[0])[-1]
  # 3: the second rerun finishes: bit-identical to the uninterrupted run.
  _run(workdir, TRAIN_ONLY)
  _assert_same_parameters(workdir, reference)


def test_kill_during_reproduce_then_rerun_equals_uninterrupted(tmp_path, reference):
  workdir = str(tmp_path)
  # The trained models are reused (same config key), so the kill lands in the sweep.
  shutil.copytree(os.path.join(reference, 'models'), os.path.join(workdir, 'models'))
  log = os.path.join(workdir, 'runs.jsonl')

  def one_unit_done():
    try:
      with open(log, encoding='utf-8') as f:
        return sum(1 for line in f if line.endswith('\n')) >= 2  # header + one unit
    except FileNotFoundError:
      return False

  assert _run_and_kill(workdir, one_unit_done), 'the sweep finished before the kill'
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  _run(workdir)
  assert _results(workdir) == _results(reference)


def test_corrupt_checkpoint_through_the_cli_is_one_line(tmp_path, reference):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  (model_dir,) = [d for d in _model_dirs(workdir) if _steps(d)]
  step_dir = os.path.join(model_dir, str(_steps(model_dir)[-1]))
  data = max((f for f in glob.glob(os.path.join(step_dir, '**', 'd', '*'), recursive=True)
              if os.path.isfile(f)), key=os.path.getsize)
  with open(data, 'r+b') as f:  # 16 flipped bytes, as a failing disk or copy would leave
    f.seek(os.path.getsize(data) // 2)
    raw = f.read(16)
    f.seek(os.path.getsize(data) // 2)
    f.write(bytes(b ^ 0xFF for b in raw))
  result = subprocess.run(_command(workdir, '--config.mode=train_original'), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and step_dir in errors[0] and 'corrupt' in errors[0], result.stderr
  for noise in ('Traceback', 'Event loop is closed', "'driver'", 'TensorStore'):
    assert noise not in result.stderr
