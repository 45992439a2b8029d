r"""Regenerates a dataset's section of docs/claims.md, its forest plot
(``docs/<name>_claims_forest.png``) and the README's ``<!-- claims:<name> -->`` block, if it
has one, from published rows, with the claims' rules of this checkout
(``cure_jax/classification/claims.py``): what a change of those rules says about rows already
published, without rerunning the job.

  .venv/bin/python scripts/publish_claims.py docs/results.json digits
  .venv/bin/python scripts/publish_claims.py docs/results_paper.json.gz digits_paper

What the claims compare comes from the rows' own config (``meta.config.claims``) where it has
one, otherwise from the defaults (``cure_jax/classification/defaults.py``).
"""
import gzip
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cure_jax.classification import claims, claims_text, defaults, forest  # noqa: E402
from scripts import publish_results  # noqa: E402


def _rows(path):
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rt', encoding='utf-8') as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    sys.exit(f'error: cannot read the rows in {path} ({e}); give a results.json(.gz).')
  if 'rows' not in data or 'meta' not in data:
    sys.exit(f'error: {path} has no rows/meta: give a results.json written by the main job.')
  return data


def publish(rows_path, name, root=publish_results.ROOT):
  data = _rows(rows_path)
  config = data['meta'].get('config', {})
  spec_config = defaults.classification_config().claims
  spec_config.update(config.get('claims', {}))
  spec = claims.Spec.from_config(spec_config)
  threshold = config['reproduce']['forget_threshold']
  title = _title(root, name) or name
  plot = f'{name}_claims_forest.png'
  result = claims.claims(data['rows'], threshold, spec)
  drawn = forest.plot_claims(result, os.path.join(root, 'docs', plot), title)
  with tempfile.TemporaryDirectory() as work:
    with open(os.path.join(work, 'claims.md'), 'w', encoding='utf-8') as f:
      f.write(claims_text.claims_markdown(data['rows'], threshold, title, spec,
                                          forest=plot if drawn else None, result=result))
    publish_results._publish_claims(work, root, name)  # pylint: disable=protected-access
    readme_path = os.path.join(root, 'README.md')
    readme = open(readme_path, encoding='utf-8').read()
    if f'<!-- claims:{name} -->' in readme:
      readme = publish_results._block(  # pylint: disable=protected-access
          readme, f'claims:{name}', publish_results._claims_summary(work), 'README.md')
      open(readme_path, 'w', encoding='utf-8').write(readme)
  print(f'claims of {len(data["rows"])} rows from {rows_path} published as {name}')


def _title(root, name):
  """The title the section had (its ``## <title>`` line inside the markers), or None."""
  path = os.path.join(root, 'docs', 'claims.md')
  if not os.path.exists(path):
    return None
  doc = open(path, encoding='utf-8').read()
  begin = f'<!-- claims:{name} -->'
  if begin not in doc:
    return None
  first = doc[doc.index(begin) + len(begin):].lstrip('\n').split('\n', 1)[0]
  return first[3:].strip() if first.startswith('## ') else None


if __name__ == '__main__':
  if len(sys.argv) != 3:
    sys.exit('usage: scripts/publish_claims.py ROWS_JSON NAME')
  publish(sys.argv[1], sys.argv[2])
