"""Verdicts that survive a reviewer: one-sided tests, equivalence, Holm, the pairs that would
decide.

Each comparison is a set of paired differences ``d_i`` claimed ``> 0``. Three one-sided
Student-t tests on them, with ``d̄``, ``s`` (ddof 1) and ``n``:

- superiority, H0 ``d ≤ 0``: ``p = P(T_{n−1} ≥ d̄ / (s/√n))``;
- inferiority, H0 ``d ≥ 0``: ``p = P(T_{n−1} ≤ d̄ / (s/√n))``;
- equivalence within ``±margin`` (two one-sided tests, TOST): ``p = max(P(T ≥ (d̄ + margin)
  / (s/√n)), P(T ≤ (d̄ − margin) / (s/√n)))``.

A claim made of several comparisons (parts) holds when every part is superior (an
intersection-union test: its p-value is the largest part's, no correction inside the claim),
is equivalent when every part is, and does not hold when any part is inferior (a union:
Bonferroni over its parts). Across the claims of one family each of the three kinds of
hypothesis is Holm-corrected (:func:`holm`), so the chance of any false 'holds' (or 'does not
hold', or 'equivalent') in the family stays under ``alpha``. The verdict is 'equivalent',
'holds' or 'does not hold', in that order of precedence (a difference shown to lie inside the
margin is practically none, whichever side of 0 it is on), when its adjusted p-value is at
most ``alpha``; otherwise 'inconclusive' together with the pairs that would decide it
(:func:`needed`).
"""
import math

import numpy as np
from scipy import stats

ALPHA = 0.05
SUPERIOR, INFERIOR, EQUIVALENT = 'superior', 'inferior', 'equivalent'
KINDS = (SUPERIOR, INFERIOR, EQUIVALENT)
MAX_PAIRS = 10 ** 6   # beyond this, "more than a million pairs"


def _moments(diffs):
  d = np.asarray(diffs, float)
  if d.size < 2:
    return d.size, float(d.mean()) if d.size else float('nan'), float('nan')
  return d.size, float(d.mean()), float(d.std(ddof=1))


def _tail(t, df, upper):
  if not np.isfinite(t):
    return 0.0 if (t > 0) == upper else 1.0
  return float(stats.t.sf(t, df) if upper else stats.t.cdf(t, df))


def p_values(diffs, margin):
  """``{superior, inferior, equivalent: p}`` of paired differences (nan with < 2 pairs).

  A zero spread with a nonzero mean decides at once (p 0 or 1); all differences exactly 0
  are equivalent (p 0 for equivalence, 1 for either direction)."""
  n, mean, sd = _moments(diffs)
  if n < 2:
    return {k: float('nan') for k in KINDS}
  se = sd / math.sqrt(n)
  if se == 0:
    return {SUPERIOR: 0.0 if mean > 0 else 1.0, INFERIOR: 0.0 if mean < 0 else 1.0,
            EQUIVALENT: 0.0 if abs(mean) < margin else 1.0}
  return {SUPERIOR: _tail(mean / se, n - 1, True),
          INFERIOR: _tail(mean / se, n - 1, False),
          EQUIVALENT: max(_tail((mean + margin) / se, n - 1, True),
                          _tail((mean - margin) / se, n - 1, False))}


def combine(parts):
  """A claim's p-values from its parts' (each ``p_values``): superiority and equivalence
  need every part (the largest p), inferiority any part (Bonferroni over the parts)."""
  if not parts:
    return {k: float('nan') for k in KINDS}
  get = lambda k: [p[k] for p in parts]
  return {SUPERIOR: max(get(SUPERIOR)), EQUIVALENT: max(get(EQUIVALENT)),
          INFERIOR: min(1.0, len(parts) * min(get(INFERIOR)))}


def holm(p):
  """Holm's step-down adjusted p-values of ``p`` (a list; nan stays nan and does not count
  towards the family's size)."""
  p = np.asarray(p, float)
  out = np.full(p.shape, np.nan)
  idx = [i for i in np.argsort(p, kind='stable') if np.isfinite(p[i])]
  m, running = len(idx), 0.0
  for rank, i in enumerate(idx):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out.tolist()


def adjust(claims_p):
  """Holm per kind across a family: ``claims_p`` a list of ``{kind: p}``; returns the same
  shape, adjusted."""
  adjusted = {k: holm([c[k] for c in claims_p]) for k in KINDS}
  return [{k: adjusted[k][i] for k in KINDS} for i in range(len(claims_p))]


def decide(adjusted, alpha=ALPHA):
  """'equivalent' | 'holds' | 'does not hold' | 'inconclusive' from adjusted p-values, in
  that order: a difference shown to lie inside the margin is practically none, whichever
  side of 0 it falls."""
  for kind, verdict in ((EQUIVALENT, 'equivalent'), (SUPERIOR, 'holds'),
                        (INFERIOR, 'does not hold')):
    if np.isfinite(adjusted[kind]) and adjusted[kind] <= alpha:
      return verdict
  return 'inconclusive'


def _n_for(effect, sd, alpha, start):
  """The smallest n ≥ ``start`` with ``t_{1−alpha, n−1} · sd / √n < effect`` (None when the
  effect is not positive; :data:`MAX_PAIRS` + 1 when more than that would be needed)."""
  if not effect > 0:
    return None
  if sd == 0:
    return max(start, 2)
  approx = (stats.norm.ppf(1 - alpha) * sd / effect) ** 2
  if approx > MAX_PAIRS:
    return MAX_PAIRS + 1
  n = max(2, start, math.ceil(approx))
  while stats.t.ppf(1 - alpha, n - 1) * sd / math.sqrt(n) >= effect:
    n = max(n + 1, math.ceil(n * 1.05))
    if n > MAX_PAIRS:
      return MAX_PAIRS + 1
  return n


def needed(diffs, margin, alpha):
  """``{kind: (n, n_upper) or None}``: the pairs at which each kind of test would reject at
  one-sided level ``alpha`` if the mean difference stayed what it is, with the observed
  spread ``s`` and with its upper 95 % confidence bound ``s · sqrt((n−1) / χ²_{0.025, n−1})``
  (None where the observed mean points the other way, or lies on or outside the margin for
  equivalence; all None with fewer than 2 pairs)."""
  n, mean, sd = _moments(diffs)
  if n < 2 or not np.isfinite(sd):
    return {k: None for k in KINDS}
  sd_upper = sd * math.sqrt((n - 1) / stats.chi2.ppf(0.025, n - 1))
  effects = {SUPERIOR: mean, INFERIOR: -mean, EQUIVALENT: margin - abs(mean)}
  out = {}
  for kind, effect in effects.items():
    low, high = _n_for(effect, sd, alpha, n), _n_for(effect, sd_upper, alpha, n)
    out[kind] = None if low is None else (low, high)
  return out
