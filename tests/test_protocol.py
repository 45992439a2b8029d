"""The protocol end to end on a tiny sweep: rows, determinism, resumption, strict outputs."""
import json
import math
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from cure_jax.classification import unlearn, evaluate, protocol, report, tables, tuning
from cure_jax.data.digits import load_digits
from cure_jax import entry
from cure_jax.infra import files
from cure_jax.unlearning import plan
from cure_jax.metrics import klom
from tests import helpers

TIMING = ('time_s', 'compile_s', 'time_ratio')
ROW_KEYS = {'scenario', 'model_seed', 'seed', 'method', 'hparams', 'retain_acc', 'forget_acc',
            'overall_acc', 'mia_efficacy', 'time_s', 'compile_s', 'time_ratio',
            'model_fingerprint', 'status'}


def tiny_config():
  config = helpers.smoke_config()
  config.scenarios = '1;3'
  config.model_seeds = 1
  config.seeds = 2
  config.reproduce.methods = ('ghr', 'finetune')
  # The learning rates the committed rows were recorded with (the tuned ones change).
  config.unlearn.overrides.ghr.lr = config.unlearn.overrides.finetune.lr = 0.003
  return config


def _strip(rows):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope='module')
def first(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('first')
  unlearn.programs.cache_clear()  # its rows report their compile: none cached before
  rows = entry.run(tiny_config(), str(workdir))
  return workdir, rows


def test_rows_equal_the_committed_pre_refactor_rows(first):
  helpers.check_rows('classification', first[1])


def test_rows_carry_the_protocol_fields(first):
  workdir, rows = first
  doc = json.loads((workdir / 'results.json').read_text())
  assert doc['rows'] == rows
  assert {'cure_jax', 'jax', 'flax', 'backend', 'device_count', 'config', 'models',
          'git_commit'} <= set(doc['meta'])
  runs = [r for r in rows if r['setting'] != 'reference']
  assert [(r['scenario'], r['method'], r['model_seed'], r['seed']) for r in runs] == [
      (s, m, 0, i) for m in ('ghr', 'finetune') for s in ('1', '3') for i in (0, 1)]
  for r in rows:
    assert ROW_KEYS <= set(r)
  for r in runs:
    assert r['status'] == 'ok' and r['hparams']['epochs'] == 1.0 and r['time_s'] > 0
    assert r['time_ratio'] == pytest.approx(r['time_s'] / next(
        x['time_s'] for x in rows if x['method'] == 'retrain' and x['scenario'] == r['scenario']))
    fps = r['model_fingerprint']
    assert sorted(os.listdir(workdir / 'models')) == sorted(
        {x['model_fingerprint'].get('original') or x['model_fingerprint']['retrain']
         for x in rows if x['setting'] == 'reference'})
    assert fps['original'].startswith('original-') and fps['retrain'].startswith('retrain-')
    assert 0.0 <= r['mia_efficacy'] <= 1.0
  # The per-scenario retrain models differ; the original is shared.
  assert len({r['model_fingerprint']['retrain'] for r in runs}) == 2
  assert len({r['model_fingerprint']['original'] for r in runs}) == 1
  assert sum(r['compile_s'] > 0 for r in runs if r['method'] == 'ghr') == 1
  for r in runs:  # the smoke unlearning moves the model: GHR lowers the forget accuracy
    original = next(x for x in rows if x['method'] == 'original' and x['scenario'] == r['scenario'])
    if r['method'] == 'ghr':
      assert r['forget_acc'] < original['forget_acc'], r


def test_killed_sweep_resumes_to_the_uninterrupted_rows(first, tmp_path, monkeypatch):
  # Every unit is recomputed here from the cached models (three by the killed sweep, five by
  # the resumed one), so this also checks that the same config gives the same rows.
  workdir, rows = first
  shutil.copytree(workdir / 'models', tmp_path / 'models')
  real, calls = protocol.run_unit, []

  def dies_after_three(*args, **kwargs):
    if len(calls) == 3:
      raise KeyboardInterrupt('killed')
    calls.append(args[1:3])
    return real(*args, **kwargs)
  monkeypatch.setattr(protocol, 'run_unit', dies_after_three)
  with pytest.raises(KeyboardInterrupt):
    entry.run(tiny_config(), str(tmp_path))
  assert not (tmp_path / 'results.json').exists()
  calls.clear()
  monkeypatch.setattr(protocol, 'run_unit',
                      lambda *a, **k: (calls.append(a[1:3]), real(*a, **k))[1])
  resumed = entry.run(tiny_config(), str(tmp_path))
  assert len(calls) == 8 - 3          # only the units the killed sweep had not finished
  assert _strip(resumed) == _strip(rows)
  # A method re-tuned in unlearn.overrides reruns alone; the other method's rows are kept.
  retuned = tiny_config()
  retuned.unlearn.overrides.finetune.lr = 0.01
  calls.clear()
  again = entry.run(retuned, str(tmp_path))
  assert [run.name for run, _ in calls] == ['finetune'] * 4
  assert not (tmp_path / 'runs.jsonl.stale').exists()
  ghr = lambda rs: [r for r in _strip(rs) if r['method'] == 'ghr']
  assert ghr(again) == ghr(rows) and len(ghr(rows)) == 4
  # A changed config starts afresh: the old log is set aside.
  changed = tiny_config()
  changed.unlearn.retain_weight = 0.5
  changed.reproduce.methods = ('ghr',)
  calls.clear()
  entry.run(changed, str(tmp_path))
  assert len(calls) == 4 and (tmp_path / 'runs.jsonl.stale').exists()


@pytest.mark.parametrize('umask', [0o022, 0o077])
def test_reports_are_strict_json_written_with_the_users_umask(tmp_path, umask):
  rows = [protocol.json_safe({'scenario': '1', 'method': 'ghr', 'setting': 'forget',
                              'status': 'ok', 'retain_acc': 0.5, 'forget_acc': float('nan'),
                              'per_class_acc': [np.float32(0.5), float('nan')],
                              'model_seed': np.int64(0)})]
  assert rows[0]['forget_acc'] is None and rows[0]['per_class_acc'] == [0.5, None]
  old = os.umask(umask)
  try:
    files.write_atomic(str(tmp_path / 'results.json'), files.to_json({'rows': rows}))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / 'results.json').st_mode) == 0o666 & ~umask
  text = (tmp_path / 'results.json').read_text()
  json.loads(text, parse_constant=lambda c: pytest.fail(f'bare {c} in results.json'))
  with pytest.raises(ValueError):
    files.to_json({'x': float('nan')})


def test_accuracy_of_a_class_absent_from_the_split_is_undefined_not_zero():
  logits = np.eye(3)[[0, 1, 1]]
  m = evaluate.class_metrics(logits, np.array([0, 1, 1]), [2], 3)
  assert math.isnan(m['forget_acc']) and math.isnan(m['per_class_acc'][2])
  assert m['retain_acc'] == 1.0


def _row(scenario, method, setting, retain, forget, seed=0):
  return {'scenario': scenario, 'method': method, 'setting': setting, 'status': 'ok',
          'seed': seed, 'retain_acc': retain, 'forget_acc': forget, 'overall_acc': retain}


def test_best_method_per_scenario_follows_the_threshold_rule():
  rows = [_row('1', 'a', 'forget', 0.99, 0.02), _row('1', 'b', 'forget', 0.90, 0.0),
          _row('1', 'c', 'forget', 0.95, 0.002), _row('1', 'd', 'retain', 0.97, 0.0),
          _row('3', 'a', 'forget', 0.93, 0.0), _row('3', 'b', 'forget', 0.91, 0.0),
          _row('3', 'c', 'forget', 0.99, 0.01), _row('3', 'd', 'retain', 0.5, 0.5),
          _row('1', 'original', 'reference', 1.0, 1.0), _row('3', 'original', 'reference',
                                                             1.0, 1.0)]
  best = tables.best_methods(rows, 0.003)
  assert best == {('1', 'forget'): 'c', ('1', 'retain'): 'd', ('3', 'forget'): 'a'}
  assert tables.best_methods(rows, 0.0)[('1', 'forget')] == 'b'
  text = tables.table1(rows, 0.003)
  line = next(l for l in text.splitlines() if l.startswith('| c |'))
  assert line.count('**') == 4      # bold in scenario 1 only
  assert '| 1: retain | 1: forget | 3: retain | 3: forget |' in text


def test_finetune_sits_with_forget_data_only_methods_with_a_note():
  rows = [_row('1', 'ghr', 'forget', 0.9, 0.0), _row('1', 'finetune', 'forget', 0.99, 1.0),
          _row('1', 'ghr_descent', 'retain', 0.95, 0.0)]
  text = tables.table3(rows, '1', 0.0)
  lines = text.splitlines()
  forget_at = lines.index(next(l for l in lines if 'Forget data only' in l))
  retain_at = lines.index(next(l for l in lines if 'With retain data' in l))
  assert forget_at < next(i for i, l in enumerate(lines) if l.startswith('| finetune')) < retain_at
  assert tables.FINETUNE_NOTE in text


def test_reproduction_check_uses_the_published_band():
  published = [_row('1', 'a', 'forget', 0.90, 0.0, seed=0), _row('1', 'a', 'forget', 0.94, 0.0,
                                                                seed=1)]
  # mean 0.92, std 0.02: band ± 0.05
  near = [_row('1', 'a', 'forget', 0.965, 0.005)]
  far = [_row('1', 'a', 'forget', 0.975, 0.02)]
  assert all(ok for *_, ok in tables.reproduction_check(published, near))
  check = {k: ok for _, _, k, _, _, _, ok in tables.reproduction_check(published, far)}
  assert check == {'retain_acc': False, 'forget_acc': False}


@pytest.mark.parametrize('min_retain, expected', [(0.0, 'collapse'), (0.3, 'gentle')])
def test_tune_rule_skips_collapsed_trials(min_retain, expected):
  """The paper's rule picks the forget-0 trial; with a collapse floor a trial whose worst run
  destroyed the model is not eligible and the lowest forget acc among the rest wins."""
  scored = [('collapse', {'retain_acc': 0.17, 'forget_acc': 0.0, 'min_retain_acc': 0.11}),
            ('gentle', {'retain_acc': 0.86, 'forget_acc': 0.67, 'min_retain_acc': 0.61}),
            ('gentler', {'retain_acc': 0.95, 'forget_acc': 0.83, 'min_retain_acc': 0.93})]
  assert tuning.select(scored, 0.0, min_retain) == expected


def test_tune_rule_falls_back_when_every_trial_collapsed():
  scored = [('a', {'retain_acc': 0.15, 'forget_acc': 0.0, 'min_retain_acc': 0.11}),
            ('b', {'retain_acc': 0.20, 'forget_acc': 0.0, 'min_retain_acc': 0.12})]
  assert tuning.select(scored, 0.0, 0.3) == 'b'


def test_every_method_gets_the_same_trials_and_searches_its_temperature_inside_them():
  config = tiny_config()
  config.tune.lrs, config.tune.epochs, config.tune.temperatures = (0.01, 0.03), (1, 2), (2, 8)
  config.reproduce.methods = ('ghr', 'gsr', 'grogu_t1')
  runs = {r.name: r for r in plan.runs(config)}
  trials = {name: [t for t, _ in tuning.trials(config, run)] for name, run in runs.items()}
  assert {len(t) for t in trials.values()} == {4}
  assert trials['ghr'] == [{'lr': lr, 'epochs': e} for lr in (0.01, 0.03) for e in (1.0, 2.0)]
  # Latin assignment: (lr i, epochs j) takes temperature (i + j) mod 2.
  assert [t['temperature'] for t in trials['gsr']] == [2.0, 8.0, 8.0, 2.0]
  assert 'temperature' not in trials['grogu_t1'][0]  # T = 1 is fixed by its name
  for name, run in runs.items():
    for trial, trial_run in tuning.trials(config, run):
      assert trial_run.hparams.lr == trial['lr'] and trial_run.hparams.epochs == trial['epochs']


def test_tune_scores_on_validation_and_records_its_rule(first):
  workdir = first[0]
  config = tiny_config()
  config.mode = 'tune'
  config.tune.update(lrs=(0.003, 0.03), epochs=(1,), temperatures=(2.0, 4.0), seeds=1,
                     model_seeds=1, trials=0)   # the grid only
  config.reproduce.methods = ('ghr', 'gsr')
  choices = entry.run(config, str(workdir))
  doc = json.loads((workdir / 'tune.json').read_text())
  # Its own models and keys: no tuning run shares a start, seed or batch order with a
  # reported one (the reported run 0 starts from model 0 with key 0).
  assert doc['rule']['model_seeds'] == [1000] and doc['rule']['reported_model_seeds'] == [0]
  lines = (workdir / 'tune.jsonl').read_text().splitlines()[1:]
  tuned = [row for line in lines if line for row in json.loads(line)['rows']]
  assert tuned and {(r['model_seed'], r['seed']) for r in tuned} == {(1000, 1000)}
  assert doc['choices'] == choices and set(choices) == {'ghr', 'gsr'}
  assert doc['rule']['trials_per_method'] == 2 and doc['rule']['split'] == 'val'
  assert doc['rule']['dataset'] == 'digits'
  assert doc['rule']['forget_threshold'] == config.reproduce.forget_threshold
  for name in ('ghr', 'gsr'):
    assert len([t for t in doc['trials'] if t['method'] == name]) == 2
  assert {t['temperature'] for t in doc['trials'] if t['method'] == 'gsr'} == {2.0, 4.0}
  assert choices['gsr'] in [{k: t[k] for k in ('lr', 'epochs', 'temperature')}
                            for t in doc['trials'] if t['method'] == 'gsr']
  table = (workdir / 'tune.md').read_text()
  assert 'the same 2 trials for every method' in table
  assert "from the original models [1000] (tuning's own: the reported runs use [0]" in table
  for name in ('ghr', 'gsr'):
    line = next(l for l in table.splitlines() if l.startswith(f'| {name} |'))
    assert f'lr {choices[name]["lr"]:g}, epochs 1' in line
    assert sum(int(v) for v in line.split('|')[-3].split('/')) == 2   # ok / diverged / collapsed


def test_tune_searches_past_the_grid_within_the_same_budget(first):
  """Past the grid every method gets the same number of trials: one-rung moves of its
  choice (search.py), recorded and shown as such."""
  workdir = first[0]
  config = tiny_config()
  config.mode = 'tune'
  config.tune.update(lrs=(0.003,), epochs=(1,), temperatures=(2.0,), seeds=1, model_seeds=1,
                     trials=3)
  config.reproduce.methods = ('ghr', 'gsr')
  choices = entry.run(config, str(workdir / 'search'))
  doc = json.loads((workdir / 'search' / 'tune.json').read_text())
  for name in ('ghr', 'gsr'):
    mine = [t for t in doc['trials'] if t['method'] == name]
    assert len(mine) == 3 and mine[0]['lr'] == 0.003 and mine[0]['epochs'] == 1.0
    settings = {tuple(sorted((k, t[k]) for k in ('lr', 'epochs', 'temperature') if k in t))
                for t in mine}
    assert len(settings) == 3                                   # three different trials
  gsr = [t for t in doc['trials'] if t['method'] == 'gsr']
  assert gsr[1]['lr'] > 0.003 and gsr[1]['epochs'] == 1.0      # the first move: lr up
  assert doc['rule']['trials_per_method'] == 3 and 'ladders' in doc['rule']
  table = (workdir / 'search' / 'tune.md').read_text()
  assert 'one-rung moves' in table and 'not bracketed in some dimension' in table
  assert set(choices) == {'ghr', 'gsr'}


def test_tune_markdown_names_methods_without_a_choice():
  doc = {'rule': {'trials_per_method': 2, 'lrs': [0.1, 1.0], 'epochs': [1], 'temperatures': [2],
                  'runs_per_scenario': 1, 'scenarios': ['1'], 'model_seeds': [0],
                  'forget_threshold': 0.0, 'min_retain_acc': 0.3, 'seconds': 3.0},
         'choices': {'ghr': {'lr': 0.1, 'epochs': 1.0}},
         'trials': [{'method': 'ghr', 'lr': 0.1, 'epochs': 1.0, 'status': 'ok',
                     'retain_acc': 0.9, 'forget_acc': 0.0, 'min_retain_acc': 0.85},
                    {'method': 'ghr', 'lr': 1.0, 'epochs': 1.0, 'status': 'ok',
                     'retain_acc': 0.2, 'forget_acc': 0.0, 'min_retain_acc': 0.1},
                    {'method': 'gradasc', 'lr': 0.1, 'epochs': 1.0, 'status': 'diverged'},
                    {'method': 'gradasc', 'lr': 1.0, 'epochs': 1.0, 'status': 'diverged'}]}
  text = tuning.markdown(doc, ['ghr', 'gradasc'], 'toy')
  assert '| ghr | lr 0.1, epochs 1 | 0.900 | 0.000 | yes | 1 / 0 / 1 | lr min |' in text
  assert '| gradasc | – (every trial diverged) | – | – | – | 0 / 2 / 0 | – |' in text
  assert '1 of 1 choices sit on an edge of the grid' in text


def test_grid_edges_name_the_dimensions_a_choice_did_not_bracket():
  rule = {'lrs': [0.01, 0.1, 0.001], 'epochs': [1, 10], 'temperatures': [2.0, 4.0, 8.0]}
  assert tuning.grid_edges({'lr': 0.1, 'epochs': 10.0, 'temperature': 4.0}, rule) == [
      'lr max', 'epochs max']
  assert tuning.grid_edges({'lr': 0.001, 'epochs': 1.0, 'temperature': 2.0}, rule) == [
      'lr min', 'epochs min', 'temperature min']
  assert tuning.grid_edges({'lr': 0.01, 'epochs': 1.0}, dict(rule, epochs=[1])) == []


def test_a_retuned_method_replaces_its_trials_in_place(tmp_path):
  rule = {'dataset': 'toy', 'trials_per_method': 1, 'lrs': [0.1], 'epochs': [1],
          'temperatures': [2],
          'runs_per_scenario': 1, 'scenarios': ['1'], 'model_seeds': [0],
          'forget_threshold': 0.0, 'min_retain_acc': 0.3, 'seconds': 3.0}
  trial = lambda name, retain: {'method': name, 'lr': 0.1, 'epochs': 1.0, 'status': 'ok',
                                'retain_acc': retain, 'forget_acc': 0.0,
                                'min_retain_acc': retain}
  doc = {'rule': rule, 'choices': {'ghr': {'lr': 0.1, 'epochs': 1.0},
                                   'scrub': {'lr': 0.1, 'epochs': 1.0}},
         'trials': [trial('ghr', 0.9), trial('scrub', 0.5), trial('gsr', 0.8)]}
  update = {'rule': dict(rule, seconds=7.0), 'choices': {'scrub': {'lr': 0.1, 'epochs': 1.0}},
            'trials': [trial('scrub', 0.7)]}
  merged = tuning.merge(doc, update, 'after a fix')
  assert [(t['method'], t['retain_acc']) for t in merged['trials']] == [
      ('ghr', 0.9), ('scrub', 0.7), ('gsr', 0.8)]
  assert merged['retuned'] == [{'methods': ['scrub'], 'why': 'after a fix', 'seconds': 7.0}]
  text = tuning.markdown(merged, ['ghr', 'scrub', 'gsr'], 'toy')
  assert 'Re-tuned alone by the same rule (7 s): scrub, after a fix' in text
  assert '| scrub | lr 0.1, epochs 1 | 0.700 |' in text
  with pytest.raises(ValueError, match='another rule .lrs differ'):
    tuning.merge(doc, dict(update, rule=dict(rule, lrs=[0.2])), 'x')
  # The script: the log and its table rewritten, one line for a bad input.
  (tmp_path / 't.json').write_text(json.dumps(doc))
  (tmp_path / 'u.json').write_text(json.dumps(update))
  script = os.path.join(os.path.dirname(__file__), '..', 'scripts', 'merge_tuning.py')
  ok = subprocess.run([sys.executable, script, str(tmp_path / 't.json'),
                       str(tmp_path / 'u.json'), 'after a fix'], capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr
  assert json.loads((tmp_path / 't.json').read_text()) == merged
  assert (tmp_path / 't.md').read_text() == text
  bad = subprocess.run([sys.executable, script, str(tmp_path / 't.json'),
                        str(tmp_path / 'missing.json'), 'x'], capture_output=True, text=True)
  assert bad.returncode == 1 and bad.stderr.count('\n') == 1 and 'missing.json' in bad.stderr


def test_a_run_whose_outputs_overflow_is_diverged_not_an_error(first, monkeypatch):
  """Finite parameters whose logits overflow (a collapsed GradAsc model did this in tuning)
  are an outcome of the run, reported as diverged; the sweep goes on."""
  run_group = unlearn.run_group

  def huge(*args, **kwargs):
    params, bads, seconds, compile_s = run_group(*args, **kwargs)
    # Every head weight and bias at 3e38 (finite): their sums overflow to inf.
    head = lambda p: {**p, 'head': {k: np.full_like(v, 3e38) for k, v in p['head'].items()}}
    return [head(p) for p in params], bads, seconds, compile_s
  monkeypatch.setattr(unlearn, 'run_group', huge)
  config = tiny_config()
  config.reproduce.methods = ('ghr',)
  config.unlearn.overrides.ghr.lr = 0.02   # another sweep unit than the committed rows
  rows = entry.run(config, str(first[0] / 'overflow'))
  runs = [r for r in rows if r['method'] == 'ghr']
  assert runs and all(r['status'] == 'diverged' and 'logits non-finite' in r.get('note', r['status'])
                      for r in runs)
  assert all(r['status'] == 'ok' for r in rows if r['setting'] == 'reference')


# ---- KLOM in results.json and Table 3 (cure_jax/metrics/klom.py; tests/test_klom.py) ----

def test_results_json_carries_klom_per_scenario_and_method(first):
  workdir, rows = first
  doc = json.loads((workdir / 'results.json').read_text())
  assert doc['rows'] == rows and not any('klom' in k for r in rows for k in r)
  section = doc['klom']
  assert section['definition']['bins'] == 20 and section['definition']['percentiles'] == [95, 99]
  groups = {(g['scenario'], g['method']): g for g in section['groups']}
  assert set(groups) == {(s, m) for s in ('1', '3') for m in ('original', 'ghr', 'finetune')}
  assert (groups['1', 'ghr']['n_models'], groups['1', 'ghr']['n_retrain']) == (2, 1)
  directory = workdir / evaluate.MARGINS_DIR
  for (scenario, method), group in groups.items():
    of = lambda m: [evaluate.load_margins(directory, r)[1] for r in rows
                    if r['method'] == m and r['scenario'] == scenario]
    mine, retrain = of(method), of('retrain')
    for k in evaluate.KLOM_SETS:
      values = klom.klom(np.stack([m[k] for m in mine]), np.stack([m[k] for m in retrain]))
      assert group[k] == pytest.approx(klom.summary(values)), (scenario, method, k)
      assert group[k]['n'] == len(retrain[0][k]) > 0
  # Forget / retain: the training examples of class 1 / the others (digits: retain capped).
  train_y = np.asarray(load_digits().train.labels)
  ghr = groups['1', 'ghr']
  assert (ghr['forget']['n'], ghr['retain']['n']) == (
      np.sum(train_y == 1), min(np.sum(train_y != 1), evaluate.KLOM_MAX_EXAMPLES))


def test_table3_shows_the_klom_columns(first):
  workdir, _ = first
  doc = json.loads((workdir / 'results.json').read_text())
  text = (workdir / 'results.md').read_text()
  assert 'KL(unlearned ‖ retrain)' in text
  table1, rest = text.split('### Scenario 1: Table 3 layout')
  table3 = rest.split('### Scenario 3: Table 3 layout')[0]
  assert 'KLOM' not in table1.split('### Table 1')[1].split('\n\n')[1]   # Table 1 as it was
  assert '| KLOM forget | KLOM retain | KLOM val |' in table3
  for g in doc['klom']['groups']:
    if g['scenario'] != '1':
      continue
    line = next(l for l in table3.splitlines() if l.startswith(f'| {g["method"]} '))
    assert line.rstrip(' |').endswith(' | '.join(f'{g[k]["p95"]:.3f}'
                                                 for k in evaluate.KLOM_SETS)), line
  retrain = next(l for l in table3.splitlines() if l.startswith('| retrain '))
  assert retrain.endswith('| – | – | – |')


def test_resumed_sweep_keeps_the_klom(first, monkeypatch):
  """A rerun finds every unit in the log and the margins beside it: nothing is run again,
  the KLOM section is the same; a lost margins file is named, not guessed."""
  workdir, rows = first
  before = json.loads((workdir / 'results.json').read_text())['klom']
  monkeypatch.setattr(protocol, 'run_unit', lambda *a: pytest.fail('a unit was run again'))
  entry.run(tiny_config(), str(workdir))
  assert json.loads((workdir / 'results.json').read_text())['klom'] == before
  run = next(r for r in rows if r['method'] == 'ghr')
  lost = workdir / evaluate.MARGINS_DIR / (evaluate.margins_key(run) + '.json')
  os.rename(lost, str(lost) + '.away')
  try:
    groups = report.klom_section(rows, str(workdir))['groups']
  finally:
    os.rename(str(lost) + '.away', lost)
  ghr = next(g for g in groups if g['method'] == 'ghr' and g['scenario'] == run['scenario'])
  assert ghr['forget'] is None and ghr['note'] == 'margins of 1 of 2 models not recorded'


@pytest.mark.parametrize('section,key,value,match', [
    ('unlearn', 'batch_size', 4096, 'config.unlearn.batch_size=4096 exceeds the .* forget '
                                    'examples of scenario 1'),
    ('train', 'batch_size', 2048, 'config.train.batch_size=2048 exceeds the .* examples of '
                                  'the training set')])
def test_a_batch_larger_than_its_set_is_refused_before_any_model_trains(tmp_path, section,
                                                                         key, value, match):
  """(The unlearning batch was checked only once the models had trained.)"""
  config = tiny_config()
  config[section][key] = value
  with pytest.raises(ValueError, match=match):
    entry.run(config, str(tmp_path))
  assert not (tmp_path / 'models').exists()
