r"""Copies a main-job workdir's generated results into the docs and the README.

  .venv/bin/python -m experiments.main --config=configs/digits.py --workdir=runs/digits
  .venv/bin/python scripts/publish_results.py runs/digits

- ``docs/results.json`` <- ``WORKDIR/results.json`` (the raw rows behind every table);
- ``docs/<dataset>_*.png`` <- the workdir's per-scenario plots;
- ``docs/results.md``: the generated part (from ``## <dataset>: scenarios`` to
  ``## Notes on these numbers``) <- ``WORKDIR/results.md``; the hand-written notes, the
  benchmark and the cross-configuration sections stay as they are (update them by hand);
- ``README.md``: the Table 1 block and its "Finetune sees ..." note <- the workdir's;
- another dataset (``docs/results_<dataset>.md`` exists, or the README has a
  ``<!-- results:<dataset> -->`` block): its rows and report go to
  ``docs/results_<dataset>.json`` / ``.md`` and the README block, if there is one, gets its
  Table 1 and the claims' verdicts; the main dataset's README ``<!-- claims:<dataset> -->``
  block, if there is one, gets its verdicts;
- ``docs/claims.md``: the dataset's section (between ``<!-- claims:<dataset> -->`` markers,
  added if absent; the other datasets' sections stay) <- ``WORKDIR/claims.md``.
Refuses a workdir whose results.json is missing or holds a row that is neither ok nor
diverged.

An LM job's workdir (``task='lm'``, e.g. ``configs/authors_smollm2.py``) publishes to
``docs/<name>/`` (results.json, results.md, generations.json; ``<name>``: the checkpoint's
name up to its first '-', ``smollm2`` for ``smollm2-135m-instruct``) and the
``<!-- results:<name> -->`` block of the README or, where the README has none, of
``docs/lm.md`` (its table and the line above it saying what the numbers are over).
"""
import glob
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTES = '## Notes on these numbers'
CLAIMS_LEAD = "The paper's claims on these rows ([docs/claims.md](docs/claims.md)):"
CLAIMS_HEAD = (
    '# The paper\'s claims, tested\n\n'
    'Generated from the published rows by `scripts/publish_results.py` (the main job writes '
    '`claims.md` beside `results.md`; `cure_jax/classification/claims.py` has the rules; '
    '`scripts/publish_claims.py ROWS NAME` regenerates a section from published rows). One '
    'section per dataset.\n')


def _table1(md):
  start = md.index('| Method | Runs')
  return md[start:md.index('\n\n', start)]


def _block(text, tag, content, where):
  """``text`` with what lies between ``<!-- tag -->`` and ``<!-- /tag -->`` replaced."""
  begin, end = f'<!-- {tag} -->', f'<!-- /{tag} -->'
  if begin not in text or end not in text:
    sys.exit(f'error: {where} has no {begin} ... {end} block to replace; add one where the '
             'generated text belongs.')
  return text[:text.index(begin) + len(begin)] + '\n' + content + '\n' + text[text.index(end):]


def _claims_summary(workdir):
  md = open(os.path.join(workdir, 'claims.md')).read()
  start = md.index('| Claim | Verdict')
  end = md.find('\n\n', start)
  return md[start:end if end >= 0 else len(md)]


def _load(workdir):
  rows_path = os.path.join(workdir, 'results.json')
  if not os.path.exists(rows_path):
    sys.exit(f'error: {rows_path} does not exist: run the main job into {workdir} first.')
  for name in ('results.md', 'claims.md'):
    if not os.path.exists(os.path.join(workdir, name)):
      sys.exit(f'error: {os.path.join(workdir, name)} does not exist: rerun the main job into '
               f'{workdir}.')
  data = json.load(open(rows_path))
  # A diverged run is an outcome (the tables count it); anything else is not a finished row.
  bad = [r for r in data['rows'] if r.get('status') not in ('ok', 'diverged')]
  if bad:
    sys.exit(f'error: {len(bad)} rows of {rows_path} are not ok (first: {bad[0]["method"]}, '
             f'status {bad[0].get("status")}); not publishing.')
  return rows_path, data


def _copy_plots(workdir, root, dataset, generated):
  plots = sorted(glob.glob(os.path.join(workdir, '*.png')))
  names = {os.path.basename(p): f'{dataset}_{os.path.basename(p)}' for p in plots}
  for name, target in names.items():
    generated = generated.replace(f']({name})', f']({target})')
    shutil.copyfile(os.path.join(workdir, name), os.path.join(root, 'docs', target))
  if names:
    generated += '\n\nPlots of the same run: ' + ', '.join(
        f'[{name[:-4]}]({target})' for name, target in names.items()) + '.'
  return generated, len(plots)


def _publish_lm(workdir, root, data):
  """An LM job: its table into its block (README or docs/lm.md), then its files into
  docs/<name>/ (nothing is copied when there is no block to take the table)."""
  cfg = data['meta'].get('config', {})
  name = os.path.basename(str(cfg.get('model', {}).get('pretrained') or 'bytelm'))
  name = name.split('-')[0].lower()
  md = open(os.path.join(workdir, 'results.md')).read()
  start = md.index('Mean ± std')
  end = md.find('\n\n', md.index('| Method | Variant'))
  page = 'README.md'
  if f'<!-- results:{name} -->' not in open(os.path.join(root, page)).read():
    page = os.path.join('docs', 'lm.md')
  path = os.path.join(root, page)
  text = open(path).read() if os.path.exists(path) else ''
  text = _block(text, f'results:{name}', md[start:end if end >= 0 else len(md)].strip(),
                'README.md' if page == 'README.md' else 'README.md or docs/lm.md')
  target = os.path.join(root, 'docs', name)
  os.makedirs(target, exist_ok=True)
  for file in ('results.json', 'results.md', 'generations.json'):
    if os.path.exists(os.path.join(workdir, file)):
      shutil.copyfile(os.path.join(workdir, file), os.path.join(target, file))
  open(path, 'w').write(text)
  print(f'published {len(data["rows"])} LM rows from {workdir} to docs/{name}/ and {page}')


def publish(workdir, root=ROOT):
  rows_path = os.path.join(workdir, 'results.json')
  if os.path.exists(rows_path):
    data = json.load(open(rows_path))
    if data.get('meta', {}).get('config', {}).get('task') == 'lm':
      return _publish_lm(workdir, root, data)
  rows_path, data = _load(workdir)
  dataset = data['meta']['config']['data']['name']
  generated = open(os.path.join(workdir, 'results.md')).read().strip()
  generated, n_plots = _copy_plots(workdir, root, dataset, generated)
  readme_path = os.path.join(root, 'README.md')
  readme = open(readme_path).read()
  in_readme = f'<!-- results:{dataset} -->' in readme
  if in_readme or os.path.exists(os.path.join(root, 'docs', f'results_{dataset}.md')):
    _publish_beside(root, dataset, rows_path, generated)
    if in_readme:
      readme = _block(readme, f'results:{dataset}', _table1(generated) + '\n\n' + CLAIMS_LEAD
                      + '\n\n' + _claims_summary(workdir), 'README.md')
  else:
    readme = _publish_main(root, dataset, rows_path, generated, readme, workdir)
  open(readme_path, 'w').write(readme)
  _publish_claims(workdir, root, dataset)
  print(f'published {len(data["rows"])} rows and {n_plots} plots from {workdir}')


def _publish_main(root, dataset, rows_path, generated, readme, workdir):
  """The main job's dataset: docs/results.json, the generated part of docs/results.md, and
  the README's Table 1, its note and (if marked) its claims block."""
  shutil.copyfile(rows_path, os.path.join(root, 'docs', 'results.json'))
  doc_path = os.path.join(root, 'docs', 'results.md')
  doc = open(doc_path).read()
  start = doc.index(f'## {dataset}: scenarios')
  doc = doc[:start] + generated + '\n\n' + doc[doc.index(NOTES):]
  open(doc_path, 'w').write(doc)
  readme = readme.replace(_table1(readme), _table1(generated))
  note = next(l for l in generated.splitlines() if l.startswith('Finetune sees'))
  old_note = next(l for l in readme.splitlines() if 'Finetune sees' in l)
  readme = readme.replace(old_note, old_note[:old_note.index('Finetune sees')] + note)
  if f'<!-- claims:{dataset} -->' in readme:
    readme = _block(readme, f'claims:{dataset}', _claims_summary(workdir), 'README.md')
  return readme


def _publish_beside(root, dataset, rows_path, generated):
  """Another dataset: docs/results_<dataset>.json and docs/results_<dataset>.md (its
  hand-written head, up to the generated ``## <dataset>: scenarios``, stays)."""
  shutil.copyfile(rows_path, os.path.join(root, 'docs', f'results_{dataset}.json'))
  doc_path = os.path.join(root, 'docs', f'results_{dataset}.md')
  head = f'# {dataset} results\n\n'
  if os.path.exists(doc_path):
    doc = open(doc_path).read()
    marker = f'## {dataset}: scenarios'
    head = doc[:doc.index(marker)] if marker in doc else head
  open(doc_path, 'w').write(head + generated + '\n')


def _publish_claims(workdir, root, dataset):
  """The dataset's section of docs/claims.md <- WORKDIR/claims.md (headings one level down)."""
  source = os.path.join(workdir, 'claims.md')
  if not os.path.exists(source):
    sys.exit(f'error: {source} does not exist: rerun the main job into {workdir} (claims.md '
             'is written with results.md).')
  body = '\n'.join('#' + line if line.startswith('#') else line
                    for line in open(source).read().strip().splitlines())
  # The forest plot, copied with the workdir's plots as <dataset>_claims_forest.png.
  body = body.replace('](claims_forest.png)', f']({dataset}_claims_forest.png)')
  begin, end = f'<!-- claims:{dataset} -->', f'<!-- /claims:{dataset} -->'
  path = os.path.join(root, 'docs', 'claims.md')
  doc = open(path).read() if os.path.exists(path) else CLAIMS_HEAD
  section = f'{begin}\n{body}\n{end}'
  if begin in doc:
    doc = doc[:doc.index(begin)] + section + doc[doc.index(end) + len(end):]
  else:
    doc = doc.rstrip('\n') + '\n\n' + section + '\n'
  open(path, 'w').write(doc)


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: scripts/publish_results.py WORKDIR')
  publish(sys.argv[1])
