"""scripts/publish_results.py: the docs' generated parts come from a workdir, the rest stays."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'scripts',
                      'publish_results.py')
GENERATED = """## toy: scenarios 1, K = 1 model seeds, 1 runs per method

Finetune sees no forget data (NEW note).

| Method | Runs | 1: retain | 1: forget |
|---|---|---|---|
| ghr | 1 | 0.900 ± 0.000 | 0.000 ± 0.000 |

Rest of the generated report.
"""


def _tree(tmp_path, status='ok'):
  root, work = tmp_path / 'root', tmp_path / 'work'
  (root / 'docs').mkdir(parents=True)
  (root / 'scripts').mkdir()
  work.mkdir()
  (root / 'README.md').write_text(
      'Intro.\n\nTest split. Finetune sees OLD note.\n\n| Method | Runs | old |\n|---|---|---|\n'
      '| ghr | 1 | 0.1 |\n\nAfter the table.\n')
  (root / 'docs' / 'results.md').write_text(
      '# Results\n\nHand-written head.\n\n## toy: scenarios OLD\n\nold tables\n\n'
      '## Notes on these numbers\n\nHand-written notes.\n')
  (work / 'results.md').write_text(GENERATED)
  (work / 'per_class_change_1.png').write_bytes(b'png')
  (work / 'claims.md').write_text('# toy: claims\n\n## Claim 1\n\nVerdict: holds\n')
  rows = [{'method': 'ghr', 'status': status}]
  (work / 'results.json').write_text(json.dumps(
      {'meta': {'config': {'data': {'name': 'toy'}}}, 'rows': rows}))
  script = root / 'scripts' / 'publish_results.py'
  script.write_text(open(SCRIPT).read())
  return root, work, script


def test_publish_replaces_generated_parts_only(tmp_path):
  root, work, script = _tree(tmp_path)
  subprocess.run([sys.executable, str(script), str(work)], check=True, capture_output=True)
  readme = (root / 'README.md').read_text()
  assert '| ghr | 1 | 0.900 ± 0.000 | 0.000 ± 0.000 |' in readme and '| old |' not in readme
  assert 'Test split. Finetune sees no forget data (NEW note).' in readme
  assert readme.startswith('Intro.') and readme.endswith('After the table.\n')
  doc = (root / 'docs' / 'results.md').read_text()
  assert 'Hand-written head.' in doc and 'Hand-written notes.' in doc and 'old tables' not in doc
  assert '[per_class_change_1](toy_per_class_change_1.png)' in doc
  assert (root / 'docs' / 'toy_per_class_change_1.png').read_bytes() == b'png'
  assert json.loads((root / 'docs' / 'results.json').read_text())['rows'][0]['method'] == 'ghr'
  claims = (root / 'docs' / 'claims.md').read_text()
  assert '<!-- claims:toy -->\n## toy: claims\n\n### Claim 1\n\nVerdict: holds\n' in claims


def test_publish_replaces_only_its_datasets_claims(tmp_path):
  root, work, script = _tree(tmp_path)
  (root / 'docs' / 'claims.md').write_text(
      '# Claims\n\n<!-- claims:other -->\nkept\n<!-- /claims:other -->\n\n'
      '<!-- claims:toy -->\nstale\n<!-- /claims:toy -->\n')
  subprocess.run([sys.executable, str(script), str(work)], check=True, capture_output=True)
  claims = (root / 'docs' / 'claims.md').read_text()
  assert 'kept' in claims and 'stale' not in claims and claims.count('<!-- claims:toy -->') == 1
  assert 'Verdict: holds' in claims


@pytest.mark.parametrize('status', [None, 'failed'])
def test_publish_refuses_rows_that_are_not_ok(tmp_path, status):
  root, work, script = _tree(tmp_path, status)
  result = subprocess.run([sys.executable, str(script), str(work)], capture_output=True,
                          text=True)
  assert result.returncode == 1 and 'not publishing' in result.stderr
  assert '| old |' in (root / 'README.md').read_text()


def test_another_dataset_goes_beside_the_main_one(tmp_path):
  """A dataset with a README results block: its own docs/results_<name>.* and the README
  block (Table 1 and the claims' verdicts); the main dataset's files are untouched."""
  root, work, script = _tree(tmp_path)
  readme = (root / 'README.md').read_text()
  (root / 'README.md').write_text(readme + '\n## Toy\n\n<!-- results:toy -->\nold block\n'
                                  '<!-- /results:toy -->\n\nAfter toy.\n')
  (root / 'docs' / 'results_toy.md').write_text('# Toy\n\nHand-written toy head.\n\n'
                                                 '## toy: scenarios OLD\n\nold\n')
  (work / 'claims.md').write_text('# toy: claims\n\n| Claim | Verdict (pooled) |\n|---|---|\n'
                                  '| 1. X | holds |\n\n## Claim 1\n')
  results_before = (root / 'docs' / 'results.md').read_text()
  subprocess.run([sys.executable, str(script), str(work)], check=True, capture_output=True)
  readme = (root / 'README.md').read_text()
  block = readme[readme.index('<!-- results:toy -->'):readme.index('<!-- /results:toy -->')]
  assert '| ghr | 1 | 0.900 ± 0.000 | 0.000 ± 0.000 |' in block and '| 1. X | holds |' in block
  assert 'old block' not in readme and readme.endswith('After toy.\n')
  assert '| ghr | 1 | 0.1 |' in readme   # the main dataset's table stays
  assert (root / 'docs' / 'results.md').read_text() == results_before
  doc = (root / 'docs' / 'results_toy.md').read_text()
  assert doc.startswith('# Toy\n\nHand-written toy head.\n\n## toy: scenarios 1') and 'OLD' not in doc
  assert json.loads((root / 'docs' / 'results_toy.json').read_text())['rows'][0]['method'] == 'ghr'


def test_an_lm_job_goes_to_its_docs_folder_and_readme_block(tmp_path):
  root, work, script = _tree(tmp_path)
  readme = (root / 'README.md').read_text()
  (root / 'README.md').write_text(readme + '\n<!-- results:smollm2 -->\nold\n'
                                  '<!-- /results:smollm2 -->\nAfter.\n')
  (work / 'claims.md').unlink()   # an LM job writes none
  (work / 'results.md').write_text(
      '## LLM (title)\n\nMean ± std over 3 forget sets × unlearning seeds (x).\n\n'
      '| Method | Variant | Runs | ES |\n|---|---|---|---|\n| rmu_descent | c=2 | 3 | 0.1 ± 0.0 |\n')
  (work / 'generations.json').write_text('[]')
  (work / 'results.json').write_text(json.dumps(
      {'meta': {'config': {'task': 'lm', 'model': {'pretrained': 'smollm2-135m-instruct'}}},
       'rows': [{'method': 'rmu_descent'}]}))
  subprocess.run([sys.executable, str(script), str(work)], check=True, capture_output=True)
  readme = (root / 'README.md').read_text()
  block = readme[readme.index('<!-- results:smollm2 -->'):readme.index('<!-- /results:smollm2 -->')]
  assert 'Mean ± std over 3 forget sets' in block and '| rmu_descent | c=2 | 3 |' in block
  assert 'old' not in block and readme.endswith('After.\n') and '| ghr | 1 | 0.1 |' in readme
  for name in ('results.json', 'results.md', 'generations.json'):
    assert (root / 'docs' / 'smollm2' / name).read_text() == (work / name).read_text()


def test_a_dataset_with_its_own_page_goes_there_without_a_readme_block(tmp_path):
  """docs/results_<name>.md marks a dataset as another one: its page and rows are written and
  the README (which shows only the main job) is left as it was."""
  root, work, script = _tree(tmp_path)
  readme_before = (root / 'README.md').read_text()
  (root / 'docs' / 'results_toy.md').write_text('# Toy\n\nHead.\n\n## toy: scenarios OLD\n')
  subprocess.run([sys.executable, str(script), str(work)], check=True, capture_output=True)
  assert (root / 'README.md').read_text() == readme_before
  doc = (root / 'docs' / 'results_toy.md').read_text()
  assert doc.startswith('# Toy\n\nHead.\n\n## toy: scenarios 1') and '| ghr | 1 | 0.900' in doc
  assert not (root / 'docs' / 'results.json').exists()


def _lm_work(work):
  (work / 'claims.md').unlink()
  (work / 'results.md').write_text(
      'Mean ± std over 3 forget sets.\n\n| Method | Variant | Runs |\n|---|---|---|\n'
      '| npo_descent | beta=0.1 | 3 |\n')
  (work / 'results.json').write_text(json.dumps(
      {'meta': {'config': {'task': 'lm', 'model': {'pretrained': 'smollm2-135m-instruct'}}},
       'rows': [{'method': 'npo_descent'}]}))


def test_an_lm_table_goes_to_docs_lm_when_the_readme_has_no_block(tmp_path):
  root, work, script = _tree(tmp_path)
  _lm_work(work)
  readme_before = (root / 'README.md').read_text()
  (root / 'docs' / 'lm.md').write_text('# LMs\n\n<!-- results:smollm2 -->\nold\n'
                                       '<!-- /results:smollm2 -->\nAfter.\n')
  subprocess.run([sys.executable, str(script), str(work)], check=True, capture_output=True)
  page = (root / 'docs' / 'lm.md').read_text()
  assert '| npo_descent | beta=0.1 | 3 |' in page and 'old' not in page
  assert page.endswith('After.\n') and (root / 'README.md').read_text() == readme_before


def test_an_lm_table_with_no_block_anywhere_is_refused(tmp_path):
  root, work, script = _tree(tmp_path)
  _lm_work(work)
  result = subprocess.run([sys.executable, str(script), str(work)], capture_output=True,
                          text=True)
  assert result.returncode == 1
  assert 'README.md or docs/lm.md has no <!-- results:smollm2 -->' in result.stderr
  assert not (root / 'docs' / 'smollm2').exists()   # nothing half-published


def test_claims_republish_from_published_rows(tmp_path):
  """scripts/publish_claims.py: a dataset's claims section and README block regenerated
  from rows with this checkout's rules; the other sections and the rest stay."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from scripts import publish_claims
  root = tmp_path / 'root'
  (root / 'docs').mkdir(parents=True)
  (root / 'README.md').write_text('head\n<!-- claims:digits -->\nold\n<!-- /claims:digits -->\n'
                                  'tail\n')
  (root / 'docs' / 'claims.md').write_text(
      '# top\n\n<!-- claims:digits -->\n## digits: old title\nold\n<!-- /claims:digits -->\n\n'
      '<!-- claims:other -->\nkept\n<!-- /claims:other -->\n')
  docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs')
  publish_claims.publish(os.path.join(docs, 'results.json'), 'digits', root=str(root))
  doc = (root / 'docs' / 'claims.md').read_text()
  assert '## digits: old title\n' in doc and 'Holm' in doc and '\nold\n' not in doc
  assert 'kept' in doc and doc.startswith('# top')
  assert '[forest plot](digits_claims_forest.png)' in doc
  assert (root / 'docs' / 'digits_claims_forest.png').read_bytes()[:4] == b'\x89PNG'
  readme = (root / 'README.md').read_text()
  assert readme.startswith('head\n') and readme.endswith('tail\n') and '| Claim | Verdict' in readme
  with pytest.raises(SystemExit, match='cannot read the rows'):
    publish_claims.publish(str(tmp_path / 'none.json'), 'digits', root=str(root))
