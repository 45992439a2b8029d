"""The CLI end to end on a smoke sweep (one run serves every check on its outputs: the report,
the console, the log file), and the console: one line per phase, warnings, the table; the
rest in WORKDIR/log.txt."""
import io
import json
import logging as std_logging
import os
import re
import subprocess
import sys

import pytest
from absl import logging

from cure_jax.infra import console, progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ('--config.model_seeds=1', "--config.reproduce.methods=('ghr','grogu')",
         '--config.unlearn.temperature=3.0', '--config.train.epochs=1',
         '--config.train.log_every=5', '--config.train.checkpoint_every=10')


def _main(workdir, *flags):
  return subprocess.run([sys.executable, '-m', 'experiments.main',
                         '--config=configs/digits.py:smoke', f'--workdir={workdir}', *SMALL,
                         *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def quiet_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('console')
  return workdir, _main(workdir)


def test_cli_smoke_run_writes_the_complete_report(quiet_run):
  workdir, result = quiet_run
  assert result.returncode == 0, result.stderr[-3000:]
  doc = json.loads((workdir / 'results.json').read_text())
  rows = doc['rows']
  assert [(r['method'], r['scenario']) for r in rows] == (
      [(m, s) for s in ('1', '3') for m in ('original', 'retrain')]
      + [(m, s) for m in ('ghr', 'grogu') for s in ('1', '3') for _ in range(2)])
  for row in rows:
    assert {'scenario', 'model_seed', 'seed', 'method', 'hparams', 'retain_acc', 'forget_acc',
            'overall_acc', 'mia_efficacy', 'time_s', 'model_fingerprint', 'status'} <= set(row)
  runs = [r for r in rows if r['setting'] != 'reference']
  assert runs[0]['per_class_change'] and runs[0]['input_grad_dist'] >= 0
  # The typed temperature beats digits.py's per-method override (GROGU's T = 2 there).
  assert {r['hparams']['temperature'] for r in runs if r['method'] == 'grogu'} == {3.0}
  assert 'unlearn.temperature' in doc['meta']['cli_keys']
  table = (workdir / 'results.md').read_text()
  grogu_line = re.compile(r'^\| (\*\*)?grogu(\*\*)? \| 2 \|', re.M)
  assert grogu_line.search(table) and grogu_line.search(result.stdout)
  assert '1: retain | 1: forget | 3: retain | 3: forget' in result.stdout


def test_default_console_is_one_line_per_phase_and_the_table(quiet_run):
  workdir, result = quiet_run
  assert result.returncode == 0, result.stderr[-3000:]
  err = result.stderr.splitlines()
  # start line, loading, original, one retrain per scenario (2), two methods (each phase
  # may add a start line)
  assert 7 <= len(err) <= 13, result.stderr
  assert err[0].startswith('cure-jax classification reproduce (digits)')
  assert any(line.startswith('loaded digits') for line in err)
  assert any(re.match(r'train original .*done, \d+ steps in', line) for line in err)
  assert any(re.match(r'train retrain .*done, \d+ steps in', line) for line in err)
  assert any(line.startswith('ghr') for line in err)
  for noise in ('orbax', 'checkpoint_manager', 'Event loop is closed', 'tensorstore', 'I1', 'W1'):
    assert noise not in result.stderr
  assert re.search(r'^\| (\*\*)?ghr(\*\*)? \|', result.stdout, re.M)  # the final table


def test_log_file_has_the_detail(quiet_run):
  workdir, _ = quiet_run
  text = (workdir / 'log.txt').read_text()
  assert re.search(r'progress.py:\d+\] train original seed 0 step 5/\d+ accuracy=', text)
  assert 'loaded digits' in text and 'ghr' in text
  assert 'orbax' not in text.lower()  # orbax's INFO chatter is dropped from the file too


def test_verbosity_flag_restores_every_log_line(quiet_run):
  workdir, _ = quiet_run  # models are cached: this run restores them from checkpoints
  result = _main(workdir, '--verbosity=0', '--config.mode=train_original')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'checkpoint_manager.py' in result.stderr  # orbax's INFO lines are back
  assert re.search(r'^I\d{4} .*checkpointing.py:\d+\] checkpoint .* restored and verified',
                   result.stderr, re.M)


class _Stream(io.StringIO):

  def __init__(self, tty):
    super().__init__()
    self.tty = tty

  def isatty(self):
    return self.tty


def _record(msg, level=std_logging.INFO, console_kind=None, pathname='/x/cure_jax/classification/train.py'):
  record = std_logging.LogRecord('absl', level, pathname, 1, msg, (), None)
  if console_kind is not None:
    record.console = console_kind
  return record


@pytest.mark.parametrize('tty', [True, False])
def test_console_handler_shows_phases_and_warnings_only(tty):
  stream = _Stream(tty)
  handler = console.ConsoleHandler(stream)
  handler.emit(_record('step 5 loss=1.0'))                          # detail: log file only
  handler.emit(_record('train 3/10', console_kind='update'))
  handler.emit(_record('train 6/10', console_kind='update'))
  handler.emit(_record('train done', console_kind='line'))
  handler.emit(_record('slow path\nlong details', std_logging.WARNING))
  handler.emit(_record('Task exception: Event loop is closed', std_logging.ERROR))
  handler.emit(_record('already reported', std_logging.ERROR, console_kind=False))
  if tty:  # progress redrawn in place, then overwritten by the phase's line
    expected = ('\r\x1b[Ktrain 3/10\r\x1b[Ktrain 6/10\r\x1b[Ktrain done\n'
                'warning: slow path (more in log.txt)\n')
  else:     # no updates within a minute of the last line
    expected = 'train done\nwarning: slow path (more in log.txt)\n'
  assert stream.getvalue() == expected


def test_non_tty_shows_an_update_after_a_quiet_minute(monkeypatch):
  stream = _Stream(False)
  handler = console.ConsoleHandler(stream)
  clock = [1000.0]
  monkeypatch.setattr(console.time, 'time', lambda: clock[0])
  handler.last_update = clock[0]
  handler.emit(_record('a 1/9', console_kind='update'))
  clock[0] += 61
  handler.emit(_record('a 5/9', console_kind='update'))
  handler.emit(_record('a 6/9', console_kind='update'))
  assert stream.getvalue() == 'a 5/9\n'


@pytest.mark.parametrize('pathname,level,kept', [
    ('/site-packages/orbax/checkpoint/checkpoint_manager.py', std_logging.INFO, False),
    ('/site-packages/orbax/checkpoint/checkpoint_manager.py', std_logging.WARNING, True),
    ('/work/cure_jax/infra/progress.py', std_logging.INFO, True),
])
def test_third_party_filter_drops_orbax_info_only(pathname, level, kept):
  record = _record('m', level, pathname=pathname)
  assert console.ThirdPartyInfoFilter().filter(record) is kept


def test_setup_writes_log_file_and_progress_reaches_it(tmp_path):
  handlers = console.setup(str(tmp_path))
  stream = _Stream(False)
  handlers[1].setStream(stream)
  try:
    prog = progress.Progress('phase x', total_steps=4, every=2)
    for step in range(4):
      prog.add(step, {'loss': 0.5})
    logging.info('detail only')
  finally:
    console.teardown(handlers)
  text = (tmp_path / 'log.txt').read_text()
  assert 'phase x step 2/4 loss=0.5000' in text and 'detail only' in text
  assert re.fullmatch(r'phase x: done, 4 steps in \d+s \([\d.]+ steps/s\), loss=0\.5000\n',
                      stream.getvalue())
