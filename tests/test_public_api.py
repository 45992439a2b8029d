"""The public API the README, docs/api.md and docs/lm.md show is real: every name their Python
blocks import from cure_jax or read off ``cure_jax.`` exists as an attribute (no lazy
``__getattr__``), and ``__version__`` is the version in pyproject.toml."""
import ast
import importlib
import importlib.util
import os
import re
import tomllib

import pytest

import cure_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(page):
  with open(os.path.join(ROOT, page)) as f:
    return re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)


def _names(tree):
  """``(module, name)`` for each ``from cure_jax... import name`` and each ``cure_jax.name``
  attribute read."""
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('cure_jax'):
      for alias in node.names:
        yield node.module, alias.name
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id == 'cure_jax'):
      yield 'cure_jax', node.attr


@pytest.mark.parametrize('page', ['README.md', 'docs/api.md', 'docs/lm.md'])
def test_every_name_the_docs_use_is_importable(page):
  blocks = _python_blocks(page)
  assert blocks, f'{page} has no python blocks'
  found = [pair for block in blocks for pair in _names(ast.parse(block))]
  if page != 'docs/lm.md':
    assert ('cure_jax', 'make_unlearning_step') in found
  for module, name in found:
    owner = importlib.import_module(module)
    assert name in vars(owner) or importlib.util.find_spec(f'{module}.{name}'), (module, name)
    # A top-level name is a real attribute, visible to IDEs and type checkers.
    if module == 'cure_jax':
      assert name in cure_jax.__all__ and name in vars(cure_jax), name


def test_version_is_the_installed_distributions():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    assert cure_jax.__version__ == tomllib.load(f)['project']['version']


def test_the_public_step_is_typed():
  hints = cure_jax.make_unlearning_step.__annotations__
  assert {'apply_fn', 'method', 'teacher', 'forget_mask', 'return'} <= set(hints)
  assert hints['return'] is cure_jax.UnlearningStep


def test_the_documented_functions_are_annotated():
  """Every function the README and docs/api.md call states its argument and return types."""
  from cure_jax.weights import pretrained
  functions = [cure_jax.losses.ghr, cure_jax.losses.gsr, cure_jax.losses.undial,
               cure_jax.grogu.grogu_direction, cure_jax.UnlearningStep.init,
               cure_jax.UnlearningStep.total_steps, pretrained.load, pretrained.save]
  for fn in functions:
    hints = fn.__annotations__
    names = [n for n in fn.__code__.co_varnames[:fn.__code__.co_argcount
                                                + fn.__code__.co_kwonlyargcount]
             if n != 'self']
    assert 'return' in hints and set(names) <= set(hints), (fn.__qualname__, names, hints)
  assert 'step' in cure_jax.UnlearningStep.__annotations__
