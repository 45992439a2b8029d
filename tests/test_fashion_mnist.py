"""configs/fashion_mnist.py end to end on IDX files the test writes (CI has no real data):
the small CNN trains, every scenario is unlearned, and GROGU takes its fast path."""
import json

import numpy as np

from cure_jax import entry
from cure_jax.unlearning import directions
from tests.test_data_idx import write_family

import configs.fashion_mnist as fashion_config


def test_smoke_config_runs_the_protocol_on_written_idx_files(tmp_path, monkeypatch):
  data_dir = tmp_path / 'fashion'
  write_family(str(data_dir), n_train=160, n_test=80, size=28)
  config = fashion_config.get_config('smoke')
  config.data.data_dir = str(data_dir)
  config.reproduce.methods = ('ghr', 'grogu', 'scrub')

  def no_vmap(inputs):
    raise AssertionError('GROGU fell back to per-example vmap on cnn_small')
  monkeypatch.setattr(directions, '_grogu_vmap', no_vmap)
  rows = entry.run(config, str(tmp_path / 'work'))
  runs = [r for r in rows if r['setting'] != 'reference']
  assert sorted({(r['scenario'], r['method']) for r in runs}) == [
      (s, m) for s in ('1', '6') for m in ('ghr', 'grogu', 'scrub')]
  assert all(r['status'] == 'ok' for r in runs) and len(runs) == 2 * 3 * 2
  doc = json.loads((tmp_path / 'work' / 'results.json').read_text())
  assert doc['meta']['config']['model']['name'] == 'cnn_small'
  for r in runs:  # 8 of the 80 written test images a class: accuracies are counts of 4 or 8
    assert np.isclose(r['forget_acc'] * 4, round(r['forget_acc'] * 4))


def test_paper_and_default_variants_name_their_model():
  assert fashion_config.get_config().model.name == 'cnn_small'
  paper = fashion_config.get_config('paper')
  assert (paper.model.name, paper.model_seeds, paper.seeds) == ('resnet18_cifar', 30, 30)
