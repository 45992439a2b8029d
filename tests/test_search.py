"""The tuning search (search.py): ladders, one-rung moves to a bracketed choice, caps and the
budget, on a synthetic validation score with a known optimum."""
import math

import ml_collections
import pytest

from cure_jax.classification import search, tuning


def _tune(**kw):
  t = ml_collections.ConfigDict(dict(
      lrs=(0.01, 0.03), epochs=(1.0, 2.0), temperatures=(2.0, 4.0), grogu_weights=(0.5,),
      lr_min=1e-4, lr_max=1.0, max_epochs=30.0, epoch_ladder=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0,
                                                              30.0),
      temperature_ladder=(1.0, 2.0, 4.0, 8.0, 12.0, 16.0),
      grogu_weight_ladder=(0.1, 0.25, 0.5, 0.75, 0.9)))
  t.update(kw)
  return t


def test_lr_ladder_continues_the_grid_geometrically_to_its_caps():
  assert search.lr_ladder((0.001, 0.01, 0.1), 1e-5, 1.0) == (1e-5, 1e-4, 0.001, 0.01, 0.1, 1.0)
  ladder = search.lr_ladder((0.001, 0.003, 0.01, 0.03, 0.1), 1e-4, 1.0)
  assert ladder == (1e-4, 0.000316, 0.001, 0.003, 0.01, 0.03, 0.1, 0.316, 1.0)
  assert ladder[1] == pytest.approx(0.001 / math.sqrt(math.sqrt(100)), rel=1e-2)
  space = search.space(_tune(), ('lr', 'epochs', 'temperature', 'w_h'))
  assert space.ladders['epochs'][-1] == 30.0 and space.ladders['w_h'] == (0.1, 0.25, 0.5, 0.75,
                                                                          0.9)
  assert search.space(_tune(max_epochs=10.0), ('epochs',)).ladders['epochs'][-1] == 10.0


def _run_search(space, start, optimum, budget):
  """The tuning loop of tuning._search with a synthetic score peaked at ``optimum``."""
  def score(trial):
    d = sum((math.log(trial[k]) - math.log(v)) ** 2 for k, v in optimum.items())
    return {'retain_acc': 1.0 - d, 'forget_acc': 0.0, 'min_retain_acc': 1.0}
  tried, scored = [], []
  queue = list(start)
  while len(tried) < budget:
    trial = queue.pop(0) if queue else search.next_trial(
        space, tuning.select(scored, 0.0), tried)
    if trial is None:
      break
    tried.append(trial)
    scored.append((trial, score(trial)))
  return tuning.select(scored, 0.0), tried


def _start():
  return [{'lr': lr, 'epochs': e} for lr in (0.01, 0.03) for e in (1.0, 2.0)]


def test_search_walks_to_a_bracketed_optimum_beyond_the_grid():
  space = search.space(_tune(), ('lr', 'epochs'))
  best, tried = _run_search(space, _start(), {'lr': 0.27, 'epochs': 20.0}, budget=40)
  assert best['epochs'] == 20.0 and best['lr'] == pytest.approx(0.27, rel=0.01)
  assert search.position(space, best, tried) == []            # bracketed in both
  assert len({tuple(sorted(t.items())) for t in tried}) == len(tried)   # never twice
  again = _run_search(space, _start(), {'lr': 0.27, 'epochs': 20.0}, budget=40)
  assert again == (best, tried)                               # deterministic: resumable


def test_a_choice_at_a_cap_and_one_cut_by_the_budget_are_marked():
  space = search.space(_tune(max_epochs=10.0), ('lr', 'epochs'))
  best, tried = _run_search(space, _start(), {'lr': 0.02, 'epochs': 100.0}, budget=40)
  assert best['epochs'] == 10.0 and 'epochs max (cap)' in search.position(space, best, tried)
  # Trial 5 moves lr up (lr first; 0.03 beat 0.01), trial 6 the epochs: then the budget ends.
  best, tried = _run_search(space, _start(), {'lr': 0.02, 'epochs': 100.0}, budget=6)
  assert len(tried) == 6 and tried[4]['lr'] == 0.09 and best == {'lr': 0.03, 'epochs': 5.0}
  assert search.position(space, best, tried) == ['epochs max (edge)']


def test_grogu_searches_its_weight_and_the_run_gets_w_s():
  from cure_jax.unlearning import plan
  from tests.test_protocol import tiny_config
  config = tiny_config()
  config.reproduce.methods = ('grogu', 'ghr')
  runs = {r.name: r for r in plan.runs(config)}
  assert search.dims_of(runs['grogu']) == ('lr', 'epochs', 'temperature', 'w_h')
  assert search.dims_of(runs['ghr']) == ('lr', 'epochs')
  run = tuning.with_trial(runs['grogu'], {'lr': 0.1, 'epochs': 2.0, 'w_h': 0.75})
  assert (run.hparams.w_h, run.hparams.w_s, run.hparams.lr) == (0.75, 0.25, 0.1)
