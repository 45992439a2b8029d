"""The LM runner's config-keyed model cache, strict results.json with metadata, resumable
``reproduce`` sweeps and hyperparameter precedence (tiny byte-level LM smoke config)."""
import json
import os
import shutil

import pytest

from cure_jax.lm import defaults as lm_config
from cure_jax import entry
from cure_jax.unlearning import plan
from cure_jax.lm import train, report, experiment

RUNS = ('gradasc', 'grogu_descent:T=5,w=10')


def _smoke(**overrides):
  config = lm_config.get_config('smoke')
  config.reproduce.runs = RUNS
  for key, value in overrides.items():
    section, name = key.split('.') if '.' in key else (None, key)
    (config[section] if section else config)[name] = value
  return config


def _strict(text):
  def refuse(name):
    raise ValueError(f'bare {name} in results.json')
  return json.loads(text, parse_constant=refuse)


def _no_fine_tuning(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('a model was fine-tuned again')
  monkeypatch.setattr(train, 'batch_indices', fail)


def _unlearning_calls(monkeypatch):
  """The methods unlearned from here on (experiment.unlearn.unlearn wrapped)."""
  calls, real = [], experiment.unlearn.unlearn
  def counted(*args, **kwargs):
    calls.append(args[5])
    return real(*args, **kwargs)
  monkeypatch.setattr(experiment.unlearn, 'unlearn', counted)
  return calls


def _timeless(rows):
  return [{k: v for k, v in r.items() if k != 'seconds'} for r in rows]


def _models(workdir):
  return sorted(p.name for p in (workdir / 'models').iterdir())


@pytest.fixture(scope='module')
def first(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('lm_cache')
  return workdir, entry.run(_smoke(), str(workdir))


@pytest.fixture
def copy(first, tmp_path):
  """A private copy of the first run's workdir (tests change it)."""
  workdir = tmp_path / 'work'
  shutil.copytree(first[0], workdir)
  return workdir


def test_rows_record_models_and_hparams_in_strict_json(first):
  workdir, rows = first
  saved = _strict((workdir / 'results.json').read_text())
  assert saved['rows'] == rows
  models = _models(workdir)
  assert [m.split('-')[0] for m in models] == ['original', 'retrain']
  fps = {m.split('-')[0]: m for m in models}
  meta = saved['meta']
  assert set(meta['models']) == set(models) and meta['cli_keys'] == []
  assert {'cure_jax', 'git_commit', 'jax', 'flax', 'backend', 'device_count'} <= set(meta)
  assert meta['config']['reproduce']['runs'] == list(RUNS)
  assert meta['models'][fps['retrain']]['kind'] == 'retrain'
  config = _smoke()
  for row in rows:
    assert row['model_fingerprint'] == fps
  assert rows[0]['hparams']['lr'] == config.finetune.lr
  grogu = rows[-1]['hparams']
  assert (rows[-1]['method'], grogu['temperature'], grogu['w_h'], grogu['w_s']) == (
      'grogu_descent', 5.0, 10.0, 10.0)
  assert grogu['lr'] == config.unlearn.lr
  assert grogu['retain_weight'] == config.unlearn.retain_weight
  assert rows[-2]['hparams']['temperature'] == config.unlearn.temperature


def test_same_settings_reuse_models_and_finished_runs(first, copy, monkeypatch, capsys):
  _no_fine_tuning(monkeypatch)
  calls = _unlearning_calls(monkeypatch)
  rows = entry.run(_smoke(), str(copy))
  assert calls == [] and _models(copy) == _models(first[0])
  assert rows == [first[1][0] | {'seconds': rows[0]['seconds']},
                  first[1][1] | {'seconds': rows[1]['seconds']}] + first[1][2:]
  out = capsys.readouterr().out
  assert '| Method | Variant | Seeds |' in out and '| grogu_descent | T=5,w=10 | 1 |' in out
  assert 'results.md' in out


@pytest.mark.parametrize('cut', ['last_line', 'mid_line'])
def test_killed_sweep_resumes_to_the_same_rows(first, copy, monkeypatch, cut):
  path = copy / 'runs.jsonl'
  lines = path.read_text().splitlines(keepends=True)
  assert len(lines) == 1 + len(RUNS)  # the sweep key, then one line per finished unit
  kept = lines[:-1] + ([lines[-1][:len(lines[-1]) // 2]] if cut == 'mid_line' else [])
  path.write_text(''.join(kept))
  _no_fine_tuning(monkeypatch)
  calls = _unlearning_calls(monkeypatch)
  rows = entry.run(_smoke(), str(copy))
  assert calls == ['grogu_descent']
  assert _timeless(rows) == _timeless(first[1])
  assert _timeless(_strict((copy / 'results.json').read_text())['rows']) == _timeless(first[1])
  assert [json.loads(line) for line in path.read_text().splitlines()][1:][-1]['unit'].startswith(
      'grogu_descent|T=5,w=10|')


def test_changed_config_starts_the_sweep_afresh_with_the_same_models(copy, monkeypatch):
  _no_fine_tuning(monkeypatch)  # evaluation settings do not change the fine-tuned models
  calls = _unlearning_calls(monkeypatch)
  rows = entry.run(_smoke(**{'eval.retain_items': 3, 'reproduce.runs': ('gradasc',)}), str(copy))
  assert calls == ['gradasc']
  assert os.path.exists(copy / 'runs.jsonl.stale')
  assert [r['method'] for r in rows] == ['original', 'retrain', 'gradasc']


def test_cosmetic_settings_reuse_the_model(first, copy, monkeypatch):
  _no_fine_tuning(monkeypatch)
  config = _smoke(**{'mode': 'train_original', 'finetune.log_every': 1,
                     'finetune.checkpoint_every': 1, 'eval.batch_size': 8})
  assert entry.run(config, str(copy)) is None
  assert _models(copy) == _models(first[0])


def test_changed_lr_trains_a_new_model_beside_the_old(first, copy):
  [old] = [m for m in _models(copy) if m.startswith('original-')]
  before = (copy / 'models' / old / 'model.json').read_text()
  assert entry.run(_smoke(**{'mode': 'train_original', 'finetune.lr': 1e-3}), str(copy)) is None
  new = [m for m in _models(copy) if m.startswith('original-') and m != old]
  assert len(new) == 1 and len(_models(copy)) == 3
  assert (copy / 'models' / old / 'model.json').read_text() == before
  settings = [json.loads((copy / 'models' / m / 'model.json').read_text())['settings']
              for m in (old, new[0])]
  assert settings[1]['finetune'].pop('lr') == 1e-3 and settings[0]['finetune'].pop('lr') != 1e-3
  assert settings[0] == settings[1]  # nothing else differs


@pytest.mark.parametrize('mode, cli_keys, expected', [
    # A spec beats config.unlearn (w_h=3, temperature=8 from the config file).
    ('reproduce', (), [('grogu', 'T=1,w=0.5', 1.0), ('grogu', 'T=5,w=0.5', 5.0),
                       ('npo_descent', 'beta=0.1', 8.0)]),
    # --config.unlearn.temperature beats the file's specs; identical runs are run once.
    ('reproduce', ('unlearn.temperature',), [('grogu', 'T=8,w=0.5', 8.0),
                                             ('npo_descent', 'beta=0.1', 8.0)]),
    # --config.reproduce.runs is a command-line value too: its specs win.
    ('reproduce', ('unlearn.temperature', 'reproduce.runs'),
     [('grogu', 'T=1,w=0.5', 1.0), ('grogu', 'T=5,w=0.5', 5.0),
      ('npo_descent', 'beta=0.1', 8.0)]),
    ('unlearn', ('unlearn.temperature',), [('grogu', 'T=8,w_h=3,w_s=0.5', 8.0)]),
])
def test_hyperparameter_precedence(mode, cli_keys, expected):
  config = _smoke(**{'mode': mode, 'unlearn.method': 'grogu', 'unlearn.temperature': 8.0,
                     'unlearn.w_h': 3.0})
  config.reproduce.runs = ('grogu:T=1,w=0.5', 'grogu:T=5,w=0.5', 'npo_descent')
  runs = plan.runs(config, frozenset(cli_keys))
  assert [(r.name, r.variant, r.record['temperature']) for r in runs] == expected
  for r in runs:
    assert r.record['lr'] == config.unlearn.lr


def test_undefined_metric_is_null_with_a_note(tmp_path):
  row = experiment._row('npo', 'beta=0.1', 0, {'forget_es': 0.5, 'forget_prob': 0.2,
                                               'forget_rouge': 0.3, 'model_utility': float('nan'),
                                               'forget_quality': float('inf')}, 1.0, {})
  assert row['model_utility'] is None and row['forget_quality'] is None
  assert 'model_utility' in row['note'] and 'forget_quality' in row['note']
  table = report.write_report([row], str(tmp_path), title='t', meta={'k': 1})
  assert '| npo | beta=0.1 | 1 | 0.500 | 0.200 | 0.300 | – | – |' in table
  assert _strict((tmp_path / 'results.json').read_text()) == {'meta': {'k': 1}, 'rows': [row]}


def test_model_cache_shared_with_another_workdir(first, tmp_path, monkeypatch):
  """A second workdir (e.g. the author-names forget mask) reuses the fine-tuned models
  through config.model_cache; its sweep starts afresh, the models do not."""
  _no_fine_tuning(monkeypatch)
  shared = tmp_path / 'cache'
  shutil.copytree(first[0] / 'models', shared)
  other = tmp_path / 'names'
  rows = entry.run(_smoke(**{'model_cache': str(shared), 'unlearn.forget_mask': 'author_names',
                             'reproduce.runs': ('ghr_descent',)}), str(other))
  assert [r['method'] for r in rows] == ['original', 'retrain', 'ghr_descent']
  assert rows[0]['model_fingerprint'] == first[1][0]['model_fingerprint']
  assert not (other / 'models').exists()
