import importlib
import os
import subprocess
import sys

import pytest

from cure_jax import entry

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
  entry.validate(config)
  assert config.forget_classes


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
