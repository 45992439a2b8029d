"""The package's folders form layers and every import goes down (docs/layout.md): the command
line over the tasks over the unlearning core over what everything shares. An import back up
(say infra reading the registry) would make two folders import each other."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'cure_jax'
# Lower rank = higher layer; a module may import its own folder or a folder of higher rank.
RANKS = {'__init__': 0, 'cli': 0, 'entry': 1, 'classification': 2, 'lm': 2, 'unlearning': 3,
         'weights': 4, 'data': 5, 'models': 5, 'metrics': 5, 'text': 5, 'infra': 6}


def _folder(module):
  """``cure_jax.infra.rules`` -> ``'infra'``; ``cure_jax.entry`` -> ``'entry'``."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else '__init__'


def _imports(path):
  """Every cure_jax module ``path`` imports, at the top or inside a function."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('cure_jax'):
      if node.module == 'cure_jax':
        yield from (f'cure_jax.{alias.name}' for alias in node.names)
      else:
        yield node.module
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith('cure_jax'))


def _modules():
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    yield '.'.join(parts[:-1] if parts[-1] == '__init__' else parts), path


def test_every_folder_has_a_layer():
  assert {_folder(m) for m, _ in _modules()} == set(RANKS)


@pytest.mark.parametrize('module, path', list(_modules()), ids=[m for m, _ in _modules()])
def test_imports_go_down(module, path):
  here = _folder(module)
  up = [target for target in _imports(path)
        if _folder(target) != here and RANKS[_folder(target)] <= RANKS[here]]
  assert not up, f'{module} imports {up}: a layer may import only the layers below it'


def test_the_entry_point_reaches_the_tasks_through_its_table():
  from cure_jax import entry
  for parts in entry.TASKS.values():
    for target in parts.values():
      assert RANKS[_folder(target)] > RANKS['entry'], target
