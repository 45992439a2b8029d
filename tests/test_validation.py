"""Every bad input stops at start-up with one line naming the field, the value, what is allowed.

All cases go through ``cure_jax.infra.validation`` directly; a sample also through the real CLI in
a subprocess (exit code 1, one line on stderr, no traceback, nothing written).
"""
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from cure_jax import cli, entry
from cure_jax.infra import validation
from cure_jax.data import tofu
from cure_jax.lm import defaults as lm_config
import configs.digits as digits_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = 4

# (dotted key, value, fragment the one-line message must contain)
BAD_CLASSIFICATION = [
    ('train.batch_size', 0, "config.train.batch_size=0 is not allowed: use a whole number >= 1"),
    ('train.batch_size', -64, 'config.train.batch_size=-64'),
    ('train.batch_size', 6, 'use a multiple of 4, the number of devices'),
    ('train.eval_batch_size', 0, 'config.train.eval_batch_size=0'),
    ('unlearn.batch_size', 0, 'config.unlearn.batch_size=0'),
    ('unlearn.batch_size', 30, 'config.unlearn.batch_size=30 is not allowed: use a multiple of 4'),
    ('train.lr', -0.1, 'config.train.lr=-0.1 is not allowed: use a number > 0'),
    ('train.lr', 0.0, 'config.train.lr=0.0'),
    ('train.epochs', 0, 'config.train.epochs=0 is not allowed: use a whole number >= 1'),
    ('unlearn.lr', 0.0, 'config.unlearn.lr=0.0 is not allowed: use a number > 0'),
    ('unlearn.epochs', 0.0, 'config.unlearn.epochs=0.0 is not allowed: use a number > 0'),
    ('unlearn.temperature', -2.0,
     'config.unlearn.temperature=-2.0 is not allowed: use a number > 0'),
    ('unlearn.temperature', 0.0, 'config.unlearn.temperature=0.0'),
    ('unlearn.eps', -1e-12, 'config.unlearn.eps=-1e-12 is not allowed: use a number >= 0'),
    ('unlearn.w_h', -0.5, 'config.unlearn.w_h=-0.5 is not allowed: use a number >= 0'),
    ('unlearn.w_s', -1.0, 'config.unlearn.w_s=-1.0'),
    ('unlearn.retain_weight', -1.0, 'config.unlearn.retain_weight=-1.0'),
    ('unlearn.lur_w_f', -1.0, 'config.unlearn.lur_w_f=-1.0'),
    ('unlearn.retain_fraction', 0.0, 'config.unlearn.retain_fraction=0.0 is not allowed: use a '
                                     'fraction in (0, 1]'),
    ('unlearn.retain_fraction', 1.5, 'config.unlearn.retain_fraction=1.5'),
    ('unlearn.momentum', 1.0,
     'config.unlearn.momentum=1.0 is not allowed: use a fraction in [0, 1)'),
    ('unlearn.grogu_impl', 'turbo', "config.unlearn.grogu_impl='turbo'"),
    ('forget_classes', '1,1',
     "config.forget_classes='1,1' is not allowed: class(es) [1] given twice"),
    ('forget_classes', '-1', "config.forget_classes='-1' is not allowed: class indices are >= 0"),
    ('forget_classes', 'a', "config.forget_classes='a' is not allowed: 'a' is not a class index"),
    ('forget_classes', '1,x', "'x' is not a class index"),
    ('forget_classes', '', "config.forget_classes='' is not allowed: give at least one class"),
    ('forget_classes', ','.join(map(str, range(10))), 'forgets all 10 classes'),
    ('forget_classes', '10', 'Forget class(es) [10] out of range: allowed 0..9'),
    ('mode', 'train', "config.mode='train' is not allowed: choose one of ['train_original'"),
    ('model.name', 'vgg', "config.model.name='vgg': Unknown model 'vgg'"),
    ('model.dtype', 'float8', "config.model.dtype='float8'"),
    ('data.name', 'svhn', "config.data.name='svhn': Unknown dataset 'svhn'"),
    ('data.augment', 'mixup', "config.data.augment='mixup'"),
    ('unlearn.method', 'forgetit', "config.unlearn.method: Unknown unlearning method 'forgetit'"),
    ('reproduce.methods', ('ghr', 'forgetit'),
     "config.reproduce.methods (entry 'forgetit'): Unknown unlearning method 'forgetit'"),
    ('reproduce.methods', (), 'config.reproduce.methods=() is not allowed: list at least one'),
    ('seeds', 0, 'config.seeds=0 is not allowed: use a whole number >= 1'),
    ('task', 'vision', "config.task='vision'"),
    ('unlearn.overrides', {'ghr': {'foo': 1.0}},
     "config.unlearn.overrides.ghr.foo: unknown hyperparameter 'foo'; choose from"),
    ('unlearn.overrides', {'nomethod': {'lr': 1.0}},
     "config.unlearn.overrides.nomethod: Unknown unlearning method 'nomethod'"),
    ('unlearn.overrides', {'gsr': {'temperature': -2.0}},
     'config.unlearn.overrides.gsr.temperature=-2.0 is not allowed: use a number > 0'),
    ('unlearn.overrides', {'ghr': {'epochs': 0.0}}, 'config.unlearn.overrides.ghr.epochs=0.0'),
    ('claims.grogu_rivals', ('gsr', 'nope'),
     "config.claims.grogu_rivals (entry 'nope'): Unknown unlearning method 'nope'"),
    ('claims.retain_rivals', 'scrub', "config.claims.retain_rivals='scrub' is not allowed: give"),
    ('claims.cure_with_retain', 'cure', "config.claims.cure_with_retain: Unknown unlearning"),
    ('claims.margin', 0.0, 'config.claims.margin=0.0 is not allowed: use a number > 0'),
    ('claims.alpha', 1.5, 'config.claims.alpha=1.5 is not allowed: use a level between 0 and 1'),
]
# Keys another part of the project adds; validated when present.
BAD_OPTIONAL = [
    ('scenarios', '1;1', "config.scenarios='1;1' is not allowed: a scenario is listed twice"),
    ('scenarios', '1;a', "config.scenarios='1;a' is not allowed: 'a' is not a class index"),
    ('scenarios', '1;12', 'Forget class(es) [12] out of range'),
    ('model_seeds', '0,0', "config.model_seeds='0,0' is not allowed: give distinct"),
    ('model_seeds', 0, 'config.model_seeds=0 is not allowed: use a whole number >= 1'),
]
BAD_TUNE = [
    ('tune.lrs', (0.01, -0.1), 'config.tune.lrs=(0.01, -0.1) is not allowed: give a non-empty'),
    ('tune.temperatures', (), 'config.tune.temperatures=()'),
    ('tune.seeds', 0, 'config.tune.seeds=0'),
    ('tune.min_retain_acc', 1.5, 'config.tune.min_retain_acc=1.5 is not allowed: use a fraction'),
    ('tune.seed', -1, 'config.tune.seed=-1 is not allowed: use a whole number >= 0'),
    ('tune.model_seeds', 0, 'config.tune.model_seeds=0 is not allowed: use a whole number >= 1'),
    ('tune.trials', 1, "config.tune.trials=1 is not allowed: use 0 (the grid only) or at least"),
    ('tune.lr_max', 1e-6, 'config.tune.lr_min=1e-05 is not allowed: the caps'),
    ('tune.max_epochs', 0.5, 'config.tune.max_epochs=0.5 is not allowed: it must be >='),
    ('tune.epoch_ladder', (), 'config.tune.epoch_ladder=() is not allowed'),
    ('tune.grogu_weights', (1.5,), 'config.tune.grogu_weights=(1.5,) is not allowed: give'),
    # Tuning from a reported model (the smoke config reports model 0): refused, naming it.
    ('tune.seed', 0, 'config.tune.model_seeds=2 is not allowed: model seed(s) [0, 1] are '
                     'reported models'),
]
BAD_LM = [
    ('finetune.batch_size', 0, 'config.finetune.batch_size=0'),
    ('finetune.batch_size', 6, 'config.finetune.batch_size=6 is not allowed: use a multiple of'),
    ('finetune.lr', -3e-3, 'config.finetune.lr=-0.003'),
    ('finetune.epochs', 0, 'config.finetune.epochs=0'),
    ('unlearn.lr', 0.0, 'config.unlearn.lr=0.0'),
    ('unlearn.epochs', 0, 'config.unlearn.epochs=0'),
    ('unlearn.batch_size', 0, 'config.unlearn.batch_size=0'),
    ('unlearn.temperature', -1.0, 'config.unlearn.temperature=-1.0'),
    ('unlearn.eps', -1.0, 'config.unlearn.eps=-1.0'),
    ('unlearn.w_h', -1.0, 'config.unlearn.w_h=-1.0'),
    ('unlearn.retain_weight', -1.0, 'config.unlearn.retain_weight=-1.0'),
    ('unlearn.method', 'forgetit', "Unknown unlearning method 'forgetit'"),
    ('unlearn.optimizer', 'lion', "config.unlearn.optimizer='lion'"),
    # The entry is named once, and no other field (config.unlearn.method is not at fault).
    ('reproduce.runs', ('gradasc', 'nope'),
     "config.reproduce.runs entry 'nope': Unknown unlearning method 'nope'"),
    ('reproduce.runs', ('grogu:T=-5',), "entry 'grogu:T=-5': temperature=-5.0 is not allowed"),
    ('reproduce.runs', ('grogu:Q=5',), "Unknown hyper-parameter 'Q'"),
    ('model.d_model', 31, 'config.model.d_model=31 is not allowed: use a multiple of'),
    ('model.num_kv_heads', 3, 'config.model.num_kv_heads=3'),
    ('data.source', 'wiki', "config.data.source='wiki'"),
    ('data.source', 'tofu', "config.data.data_dir='' is not allowed: config.data.source='tofu'"),
    ('eval.batch_size', 0, 'config.eval.batch_size=0'),
    ('mode', 'tune', "config.mode='tune' is not allowed"),
    ('seeds', 0, 'config.seeds=0'),
]


def _with(config, key, value):
  *parents, last = key.split('.')
  node = config
  for part in parents:
    node = node[part]
  with config.unlocked() if hasattr(config, 'unlocked') else _nothing():
    if isinstance(value, dict):
      node[last] = ml_collections.ConfigDict(value)
    elif last in node and node[last] is not None and type(value) is not type(node[last]):
      del node[last]  # a value of another type than the default (a config-file mistake)
      node[last] = value
    else:
      node[last] = value
  return config


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *args):
    return False


def _message(config):
  with pytest.raises(validation.ConfigError) as err:
    entry.validate(config, num_devices=DEVICES)
  return str(err.value)


@pytest.mark.parametrize('key,value,fragment', BAD_CLASSIFICATION + BAD_OPTIONAL)
def test_bad_classification_value_is_one_line_naming_it(key, value, fragment):
  config = _with(digits_config.get_config('smoke'), key, value)
  message = _message(config)
  assert fragment in message and '\n' not in message


@pytest.mark.parametrize('key,value,fragment', BAD_TUNE)
def test_bad_tune_grid_is_rejected_in_tune_mode_only(key, value, fragment):
  config = _with(digits_config.get_config('smoke'), key, value)
  entry.validate(config, num_devices=DEVICES)  # reproduce mode does not read the grid
  config.mode = 'tune'
  assert fragment in _message(config)


@pytest.mark.parametrize('key,value,fragment', BAD_LM)
def test_bad_lm_value_is_one_line_naming_it(key, value, fragment):
  config = _with(lm_config.get_config('smoke'), key, value)
  message = _message(config)
  assert fragment in message and '\n' not in message


@pytest.mark.parametrize('name,arg', [('digits', None), ('digits', 'smoke'), ('cifar10', None),
                                      ('cifar100', None), ('imagenet', None), ('authors', None),
                                      ('authors', 'smoke')])
def test_shipped_configs_validate(name, arg):
  config = __import__(f'configs.{name}', fromlist=['get_config']).get_config(arg)
  entry.validate(config, num_devices=DEVICES)


@pytest.mark.parametrize('value,expected', [('1', (1,)), (' 3, 1', (1, 3)), (7, (7,)),
                                            ((2, 0), (0, 2))])
def test_good_forget_classes_parse(value, expected):
  assert validation.parse_classes(value, 10) == expected


def test_scenarios_parse_into_forget_class_sets():
  assert validation.parse_scenarios('1;3,4;8', 10) == ((1,), (3, 4), (8,))


def _file_workdir(tmp_path):
  path = tmp_path / 'results.txt'
  path.write_text('x')
  return str(path)


def _below_a_file(tmp_path):
  return os.path.join(_file_workdir(tmp_path), 'run')


def _unwritable(tmp_path):
  # /proc refuses new directories even for root (chmod does not stop root).
  return '/proc/cure_jax_no_such_dir/run'


@pytest.mark.parametrize('make,fragment', [(_file_workdir, 'it is a file'),
                                          (_below_a_file, 'it cannot be written'),
                                          (_unwritable, 'it cannot be written')])
def test_bad_workdir_is_rejected(tmp_path, make, fragment):
  workdir = make(tmp_path)
  with pytest.raises(validation.ConfigError, match=fragment) as err:
    validation.check_workdir(workdir)
  assert f'--workdir={workdir!r}' in str(err.value)


def test_writable_workdir_is_created(tmp_path):
  validation.check_workdir(str(tmp_path / 'a' / 'b'))
  assert (tmp_path / 'a' / 'b').is_dir() and not os.listdir(tmp_path / 'a' / 'b')


@pytest.mark.parametrize('text,value', [('True', True), ('false', False), ('None', None),
                                        ('3', 3), ('0.5', 0.5), ("('a', 'b')", ('a', 'b')),
                                        ('ghr', 'ghr')])
def test_cli_literal_values(text, value):
  assert cli.literal(text) == value and type(cli.literal(text)) is type(value)


# ---- through the real command line -------------------------------------------------------

def _main(workdir, *flags):
  return subprocess.run([sys.executable, '-m', 'experiments.main',
                         '--config=configs/digits.py:smoke', f'--workdir={workdir}', *flags],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


CLI_CASES = [
    (('--config.train.batch_size=0',), 'config.train.batch_size=0 is not allowed'),
    (('--config.forget_classes=a',), "'a' is not a class index"),
    (('--config.unlearn.temperature=-2',), 'config.unlearn.temperature=-2.0 is not allowed'),
    (('--config.unlearn.overrides.ghr.foo=1',),
     "--config.unlearn.overrides.ghr.foo: unknown config key 'foo'; config.unlearn.overrides.ghr "
     "has ['epochs', 'lr']"),
    (('--config.train.nothing=3',), "--config.train.nothing: unknown config key 'nothing'"),
    (('--config.train.batch_size=abc',), "invalid literal for int() with base 10: 'abc'"),
    (("--config.reproduce.methods=('ghr','forgetit')",), "Unknown unlearning method 'forgetit'"),
    # seed_parallel parses (True/None); the run then stops at the next bad value.
    (('--config.seed_parallel=True', '--config.train.lr=-1'), 'config.train.lr=-1.0'),
    (('--config.seed_parallel=None', '--config.unlearn.eps=-1'), 'config.unlearn.eps=-1.0'),
    (('--config.seed_parallel=maybe',), "config.seed_parallel='maybe' is not allowed"),
]


@pytest.mark.parametrize('flags,fragment', CLI_CASES)
def test_cli_bad_input_is_one_line_and_exit_1(tmp_path, flags, fragment):
  result = _main(tmp_path / 'run', '--config.mode=unlearn', *flags)
  assert result.returncode == 1, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  assert fragment in lines[0] and 'Traceback' not in result.stderr
  assert not (tmp_path / 'run' / 'models').exists()


def test_cli_workdir_that_is_a_file(tmp_path):
  workdir = _file_workdir(tmp_path)
  result = _main(workdir)
  assert result.returncode == 1
  assert result.stderr.strip() == (f"error: --workdir={workdir!r} is not allowed: it is a file; "
                                   'give a directory (new or existing).')


# ---- data files (TOFU) -------------------------------------------------------------------

def _tofu_dir(tmp_path):
  rows = [{'question': f'Q{i}?', 'answer': f'A{i}.', 'paraphrased_answer': f'P{i}.',
           'perturbed_answer': [f'W{i}.'], 'paraphrased_question': f'Q{i}?'} for i in range(40)]
  names = ['forget01', 'retain99', 'forget01_perturbed', 'retain_perturbed',
           'world_facts_perturbed', 'real_authors_perturbed']
  for name in names:
    with open(tmp_path / f'{name}.jsonl', 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)
  return tmp_path


def test_tofu_non_utf8_file_is_named(tmp_path):
  data_dir = _tofu_dir(tmp_path)
  path = data_dir / 'retain99.jsonl'
  path.write_bytes(path.read_bytes()[:50] + b'\xff\xfe' + path.read_bytes()[50:])
  with pytest.raises(ValueError, match='retain99.jsonl is not UTF-8 text \\(byte 50'):
    tofu.load_tofu(str(data_dir), 1)


@pytest.mark.parametrize('name', ['world_facts_perturbed', 'real_authors_perturbed'])
def test_tofu_empty_utility_file_is_an_error(tmp_path, name):
  data_dir = _tofu_dir(tmp_path)
  (data_dir / f'{name}.jsonl').write_text('\n')
  with pytest.raises(ValueError, match=f'{name}.jsonl holds no records'):
    tofu.load_tofu(str(data_dir), 1)


def test_tofu_broken_json_array_is_named(tmp_path):
  data_dir = _tofu_dir(tmp_path)
  os.remove(data_dir / 'retain99.jsonl')
  (data_dir / 'retain99.json').write_text('[{"question": "Q", "answer": "A"},')
  with pytest.raises(ValueError, match='retain99.json is not a valid JSON array'):
    tofu.load_tofu(str(data_dir), 1)


PLACEHOLDER_CONFIG = '''
from ml_collections import config_dict
import configs.digits as digits


def get_config(arg=None):
  config = digits.get_config('smoke')
  config.seed_parallel = config_dict.placeholder(bool)  # a typed default that may be None
  return config
'''


@pytest.mark.parametrize('value,fragment', [
    ('True', 'config.train.lr=-1.0 is not allowed'),
    ('None', 'config.train.lr=-1.0 is not allowed'),
    ('maybe', "--config.seed_parallel='maybe' is not allowed"),
])
def test_cli_seed_parallel_with_a_placeholder_default(tmp_path, value, fragment):
  path = tmp_path / 'placeholder_config.py'
  path.write_text(PLACEHOLDER_CONFIG)
  result = subprocess.run([sys.executable, '-m', 'experiments.main', f'--config={path}',
                           f'--workdir={tmp_path / "run"}', f'--config.seed_parallel={value}',
                           '--config.train.lr=-1'], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().startswith('error: ') and fragment in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_seed_parallel_default_is_a_typed_placeholder():
  """config.seed_parallel is True, False or None; ml_collections itself refuses the rest."""
  from cure_jax.classification import defaults
  config = defaults.classification_config()
  assert config.seed_parallel is None
  for value in (True, False, None):
    config.seed_parallel = value
    assert config.seed_parallel is value
  with pytest.raises(TypeError, match='seed_parallel'):
    config.seed_parallel = 'yes'


@pytest.mark.parametrize('get_config', [lambda: digits_config.get_config('smoke'),
                                        lambda: lm_config.get_config('smoke')])
def test_model_cache_that_is_a_file_is_rejected(tmp_path, get_config):
  config = get_config()
  config.model_cache = str(tmp_path / 'file')
  (tmp_path / 'file').write_text('x')
  with pytest.raises(validation.ConfigError,
                     match="config.model_cache=.* is not allowed: it is a file"):
    entry.validate(config)


def test_library_entry_points_validate_like_the_cli(tmp_path):
  """The notebooks call protocol.make_study, plan.runs and the tasks' run directly: a bad
  value stops there with the CLI's message, before anything is written."""
  from cure_jax.classification import experiment, protocol
  from cure_jax.unlearning import plan
  from cure_jax.lm import experiment as lm_run
  config = digits_config.get_config('smoke')
  config.unlearn.lr = -0.1
  message = r'config.unlearn.lr=-0.1 is not allowed: use a number > 0'
  for call in (lambda: protocol.make_study(config, str(tmp_path)), lambda: plan.runs(config),
               lambda: experiment.run(config, str(tmp_path))):
    with pytest.raises(validation.ConfigError, match=message):
      call()
  lm = lm_config.get_config('smoke')
  lm.finetune.epochs = 0
  with pytest.raises(validation.ConfigError, match='config.finetune.epochs=0'):
    lm_run.run(lm, str(tmp_path))
  assert os.listdir(tmp_path) == []
  config.unlearn.lr = 0.1   # the corrected config passes
  entry.validate(config, str(tmp_path))


def test_each_entry_point_checks_the_config_once(tmp_path, monkeypatch):
  """entry.run and the tasks' run check the whole config once (no memo of checked configs)
  and hand it on as checked: the task's field check runs once per call."""
  from cure_jax.classification import experiment
  from cure_jax.classification import validate as cls_validate
  calls = []
  real = cls_validate.validate
  monkeypatch.setattr(cls_validate, 'validate', lambda *a: calls.append(1) or real(*a))
  monkeypatch.setattr(experiment, 'train_only', lambda *a: 'trained')
  config = digits_config.get_config('smoke')
  config.mode = 'train_original'
  assert entry.run(config, str(tmp_path)) == 'trained' and len(calls) == 1
  assert experiment.run(config, str(tmp_path)) == 'trained' and len(calls) == 2
  assert not [name for name in vars(validation) if name.startswith('_PASSED')]


@pytest.mark.parametrize('kwargs, fragment', [
    ({'max_len': 0}, 'max_len=0 is not allowed: use a whole number >= 1'),
    ({'max_len': 2.5}, 'max_len=2.5 is not allowed'),
    ({'dtype': 'float16'}, "dtype='float16' is not allowed: choose one of"),
    ({'sharding_mode': 'zero3'}, "sharding_mode='zero3' is not allowed"),
    ({'min_shard_size': -1}, 'min_shard_size=-1 is not allowed'),
])
def test_pretrained_load_checks_its_arguments_first(kwargs, fragment, tmp_path):
  from cure_jax.weights import pretrained
  with pytest.raises(validation.ConfigError, match=fragment):
    pretrained.load(str(tmp_path / 'not-read'), **kwargs)   # refused before any file is read
