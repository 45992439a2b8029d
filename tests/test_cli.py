import importlib
import json
import os
import re
import subprocess
import sys

import pytest

from cure_jax.infra import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(workdir, *flags, config='configs/digits.py:smoke'):
  return subprocess.run([sys.executable, '-m', 'experiments.main', f'--config={config}',
                         f'--workdir={workdir}', *flags], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)


@pytest.mark.parametrize('name,arg', [('digits', None), ('digits', 'smoke'), ('cifar10', None),
                                      ('cifar100', None), ('imagenet', None)])
def test_every_config_loads_and_validates(name, arg):
  module = importlib.import_module(f'configs.{name}')
  assert module.__doc__ and 'python -m experiments.main' in module.__doc__
  config = module.get_config(arg)
  validation.validate(config)
  assert config.forget_classes


def test_cli_smoke_run_writes_the_complete_report(tmp_path):
  result = _main(tmp_path, "--config.reproduce.methods=('ghr','grogu')",
                 '--config.model_seeds=1', '--config.unlearn.temperature=3.0')
  assert result.returncode == 0, result.stderr[-3000:]
  doc = json.loads((tmp_path / 'results.json').read_text())
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
  table = (tmp_path / 'results.md').read_text()
  grogu_line = re.compile(r'^\| (\*\*)?grogu(\*\*)? \| 2 \|', re.M)
  assert grogu_line.search(table) and grogu_line.search(result.stdout)
  assert '1: retain | 1: forget | 3: retain | 3: forget' in result.stdout


@pytest.mark.parametrize('flag,message', [
    ('--config.forget_classes=10', 'Forget class(es) [10] out of range: allowed 0..9'),
    ('--config.unlearn.method=forgetit', "Unknown unlearning method 'forgetit'"),
    ('--config.model.name=vgg', "Unknown model 'vgg'"),
    ('--config.data.name=svhn', "Unknown dataset 'svhn'"),
])
def test_cli_bad_input_stops_with_one_clear_message(tmp_path, flag, message):
  result = _main(tmp_path, '--config.mode=unlearn', flag)
  assert result.returncode == 1
  assert message in result.stderr
  assert not (tmp_path / 'results.json').exists()


def test_cli_missing_cifar_data_says_how_to_prepare(tmp_path):
  result = _main(tmp_path, f'--config.data.data_dir={tmp_path}/nothing',
                 '--config.mode=train_original', config='configs/cifar10.py')
  assert result.returncode == 1
  assert 'cifar' in result.stderr.lower() and 'download' in result.stderr.lower()
