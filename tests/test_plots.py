import numpy as np
import pytest
from PIL import Image

from cure_jax.classification import plots

METHODS = ['original', 'gradasc', 'ghr', 'gsr', 'grogu', 'salun', 'scrub', 'delete',
           'grogu_descent', 'lur']


def _rows(num_classes, forget, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for method in METHODS + ['retrain']:
    for _ in range(2):
      counts = rng.multinomial(50, rng.dirichlet(np.full(num_classes, 0.1)))
      counts[forget] = 0 if method == 'retrain' else counts[forget]
      change = rng.normal(0, 0.1, num_classes)
      change[num_classes - 1] = np.nan   # a class without test images (report: None -> NaN)
      rows.append({'method': method, 'per_class_change': change.tolist(),
                   'forget_pred_counts': counts.tolist()})
  return rows


@pytest.mark.parametrize('num_classes,forget,expected', [
    (10, [1], ['per_class_change_s.png', 'prediction_counts_s.png']),
    (100, [16, 54], ['per_class_change_s.png', 'per_class_change_relevant_s.png',
                     'prediction_counts_s.png']),
    (1000, [108, 547, 892], ['per_class_change_s.png', 'per_class_change_relevant_s.png',
                             'prediction_counts_s.png'])])
def test_scenario_plots_have_bounded_size_at_any_class_count(tmp_path, num_classes, forget,
                                                             expected):
  names = [f'n{k:04d}' for k in range(num_classes)]
  paths = plots.write_scenario_plots(_rows(num_classes, forget), names, forget, str(tmp_path),
                                     's')
  assert sorted(p.split('/')[-1] for p in paths) == sorted(expected)
  for path in paths:
    width, height = Image.open(path).size
    assert 400 <= width <= plots.MAX_WIDTH_IN * plots.DPI
    assert 250 <= height <= plots.MAX_HEIGHT_IN * plots.DPI


def test_relevant_and_general_classes_by_hand():
  counts = np.array([0, 9, 3, 3, 0, 7, 1])
  assert plots.relevant_classes(counts, forget_classes=[1], n=3) == [5, 2, 3]
  change = np.array([[0.0, 5.0, 0.1, -2.0, 0.0, 0.3, 1.0],
                     [0.0, -5.0, 0.1, 2.0, 0.0, -0.3, 0.0]])
  # variances: class 1 (forget) largest, then 3, then 6, then 5
  assert plots.general_classes(change, forget_classes=[1], n=3) == [3, 5, 6]
