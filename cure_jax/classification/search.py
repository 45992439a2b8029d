"""The tuning search: the same trial budget for every method, a starting grid, then steps along
each searched dimension until the choice is bracketed in every one, or sits at its cap.

Dimensions: the learning rate and the epochs for every method, the temperature for a method
with one of its own, and GROGU's weight ``w_h`` (with ``w_s = 1 − w_h``) for the GROGU family.
Each has a *ladder* of allowed values whose ends are its caps (:func:`space`): the learning
rates continue ``config.tune.lrs`` geometrically down to ``tune.lr_min`` and up to
``tune.lr_max``; epochs, temperatures and weights take their ladders from the config (epochs
up to ``tune.max_epochs``, one cap for every method).

After the starting design (:func:`cure_jax.classification.tuning.trials`) each further trial
moves the current choice one rung along one dimension, with the others held: first where the
choice is the largest or smallest value tried in that dimension (an *edge*: the grid did not
bracket it) and the ladder goes on, in the order lr, epochs, temperature, weight; once every
dimension is bracketed or capped, its untried neighbours (a local check of the optimum). The
search stops when the budget (``config.tune.trials``, the same for every method) is spent or
no untried neighbour is left. Deterministic given the scores, so a resumed tuning repeats it.
"""
import dataclasses
import math

DIMS = ('lr', 'epochs', 'temperature', 'w_h')


@dataclasses.dataclass(frozen=True)
class Space:
  """A method's searched dimensions: ``ladders[dim]`` sorted, its ends the caps."""
  ladders: dict


def _round(x):
  return float(f'{x:.3g}')


def lr_ladder(lrs, lr_min, lr_max):
  """``lrs`` continued geometrically (the ratio of its two outermost values per step) down
  to ``lr_min`` and up to ``lr_max``, three significant digits."""
  values = sorted(float(v) for v in lrs)
  ratio = (values[-1] / values[0]) ** (1 / (len(values) - 1)) if len(values) > 1 else 3.0
  ratio = ratio if ratio > 1.0 + 1e-9 else 3.0
  low, high = [], []
  x = values[0] / ratio
  while x >= lr_min * (1 - 1e-9):
    low.insert(0, _round(x))
    x /= ratio
  x = values[-1] * ratio
  while x <= lr_max * (1 + 1e-9):
    high.append(_round(x))
    x *= ratio
  return tuple(low + values + high)


def _ladder(start, rungs, low=-math.inf, high=math.inf):
  return tuple(sorted({float(v) for v in (*start, *rungs) if low <= float(v) <= high}))


def dims_of(run):
  """The searched dimensions of ``run``'s method: lr and epochs, and the temperature and
  GROGU's weight where the method has them as its own (not fixed by its name, as grogu_t1
  fixes T = 1)."""
  fixed = dict(run.method.defaults)
  return ('lr', 'epochs') + tuple(d for d in ('temperature', 'w_h')
                                  if d in run.method.own_hparams and d not in fixed)


def space(tune, dims):
  """The :class:`Space` of ``dims`` from ``config.tune``."""
  ladders = {
      'lr': lr_ladder(tune.lrs, tune.lr_min, tune.lr_max),
      'epochs': _ladder(tune.epochs, tune.epoch_ladder, high=tune.max_epochs),
      'temperature': _ladder(tune.temperatures, tune.temperature_ladder),
      'w_h': _ladder(tune.grogu_weights, tune.grogu_weight_ladder, 0.0, 1.0),
  }
  return Space({d: ladders[d] for d in dims})


def _key(trial):
  return tuple(sorted((k, float(v)) for k, v in trial.items()))


def _moves(space, best, tried):
  """``(edge moves, neighbour moves)``: one-rung moves of ``best``, untried."""
  seen = {_key(t) for t in tried}
  edges, neighbours = [], []
  for dim, ladder in space.ladders.items():
    i = ladder.index(float(best[dim]))
    values = [float(t[dim]) for t in tried if dim in t]
    for j, at_edge in ((i + 1, best[dim] >= max(values)), (i - 1, best[dim] <= min(values))):
      if not 0 <= j < len(ladder):
        continue
      move = dict(best, **{dim: ladder[j]})
      if _key(move) in seen:
        continue
      (edges if at_edge else neighbours).append(move)
  return edges, neighbours


def next_trial(space, best, tried):
  """The next trial after ``tried`` (every trial so far) given the current choice ``best``,
  or None when no untried move is left."""
  edges, neighbours = _moves(space, best, tried)
  return (edges or neighbours or [None])[0]


def position(space, choice, tried):
  """Per dimension where ``choice`` sits: ``'<dim> max (cap)'`` at a ladder's end,
  ``'<dim> max (edge)'`` at the end of the values tried but not of the ladder (the budget ran
  out before it was bracketed); bracketed dimensions are not listed."""
  out = []
  for dim, ladder in space.ladders.items():
    if dim not in choice or len(ladder) < 2:
      continue
    values = [float(t[dim]) for t in tried if dim in t]
    value = float(choice[dim])
    for side, end, extreme in (('max', ladder[-1], max(values)), ('min', ladder[0], min(values))):
      if value == end:
        out.append(f'{dim} {side} (cap)')
      elif value == extreme:
        out.append(f'{dim} {side} (edge)')
  return out
