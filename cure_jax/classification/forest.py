"""A forest plot of the claims (claims.md): per claim one panel, per comparison and scenario
the mean paired difference a − b with its 95 % interval, 0 and the equivalence margin marked.

A comparison's pooled line is drawn dark, its scenarios' lighter beneath it; the panel's title
gives the claim's pooled verdict (Holm-corrected, :mod:`cure_jax.classification.claims`).
Accuracies are drawn in points (× 100), claim 4's total-variation distance as it is.
"""
import numpy as np

from cure_jax.classification import plots

FILENAME = 'claims_forest.png'
ROW_IN = 0.17        # inches per drawn interval


def _lines(claim):
  """``[(label, mean, lo, hi, pooled)]`` of one claim, comparison by comparison."""
  out = []
  for part in claim['parts']:
    for e in part['entries'][-1:] + part['entries'][:-1]:   # pooled first, at the top
      pooled = e['scenario'] == 'pooled'
      label = f'{e["a"]} − {e["b"]}' if pooled else f'    scenario {e["scenario"]}'
      out.append((label, e['diff'], e['lo'], e['hi'], pooled))
  return out


def plot_claims(result, path, title):
  """Writes the forest plot of ``claims.claims(...)``'s ``result`` to ``path``; returns the
  path, or None when no claim was evaluated."""
  done = [c for c in result if c['parts']]
  if not done:
    return None
  plt = plots._pyplot()  # pylint: disable=protected-access
  sizes = [len(_lines(c)) + 2 for c in done]
  fig, axes = plt.subplots(len(done), 1, figsize=(8.5, ROW_IN * sum(sizes) + 1.0),
                           gridspec_kw={'height_ratios': sizes}, squeeze=False)
  for ax, claim in zip(axes[:, 0], done):
    scale = 1.0 if claim['number'] == 4 else 100.0
    margin = claim['parts'][0]['margin'] * scale
    lines = _lines(claim)
    y = np.arange(len(lines))[::-1]
    ax.axvspan(-margin, margin, color='0.9', zorder=0)
    ax.axvline(0.0, color='0.4', lw=0.8, zorder=1)
    for yi, (_, mean, lo, hi, pooled) in zip(y, lines):
      if not np.isfinite(mean):
        continue
      color = 'black' if pooled else 'tab:blue'
      if np.isfinite(lo):
        ax.plot([lo * scale, hi * scale], [yi, yi], color=color, lw=1.6 if pooled else 1.0)
      ax.plot([mean * scale], [yi], 'o' if pooled else '.', color=color, ms=4)
    ax.set_yticks(y, [l[0] for l in lines], fontsize=6)
    ax.set_ylim(-1, len(lines))
    unit = 'TV distance' if claim['number'] == 4 else 'retain-accuracy points'
    ax.set_xlabel(f'a − b ({unit}; grey: ±margin)', fontsize=7)
    ax.tick_params(axis='x', labelsize=7)
    ax.set_title(f'Claim {claim["number"]}: {claim["title"]} — {claim["verdict"]}',
                 fontsize=8, loc='left')
  fig.suptitle(title, fontsize=9)
  plots._save(fig, path)  # pylint: disable=protected-access
  return path
