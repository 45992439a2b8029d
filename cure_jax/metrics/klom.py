"""KLOM, KL divergence of margins (Georgiev et al. 2024, "Attribute-to-Delete: Machine
Unlearning via Datamodel Matching", appendix E.1): how far, example by example, the
unlearned models' outputs are from those of models retrained without the forget data.

Follows RoyRin/data-unlearning-bench ``unlearning_bench/eval.py`` (commit eb261f9):

- the **margin** of an example with logits ``z`` and true class ``c`` (``get_margin``,
  ``get_margins_from_multimodel_logits``)::

      margin = z_c − log Σ_{j≠c} exp(z_j)

  (a log-sum-exp over the other classes, not the largest other logit);
- per example, its margins over the unlearned models (``P``) and over the retrain models
  (``Q``) are binned (``compute_binned_KL_div``): both clipped to [−100, 100]; 20 equal-width
  bins spanning the pooled minimum to the pooled maximum (maximum = minimum + 1 when they are
  equal); ``p_b``, ``q_b`` the fractions of each side's models in bin ``b``;
  ``q'_b = max(q_b, 1e-5)`` where ``p_b > 0`` (``q_b`` elsewhere), then renormalised to sum 1
  (``scipy.stats.entropy`` divides ``qk`` by its sum);
- ``KLOM = KL(P ‖ Q') = Σ_{b: p_b > 0} p_b · log(p_b / q'_b)``: the unlearned models'
  distribution first, as ``kl_from_margins`` names its arguments and as the later EasyDUB
  (easydub/EasyDUB-code ``easydub/eval.py``, ``klom_from_margins``) passes them
  (``p_samples=unlearned``).
  (data-unlearning-bench's ``run.py`` calls ``kl_from_margins(oracle_margins, margins)``
  positionally, which puts the retrain models first; the names and EasyDUB are followed here.)
- the summary over a set of examples (forget, retain, validation) is their notebook's
  ``get_klom_stats`` (``src/viz.ipynb``, commit 2ea37cf): the 95th and 99th percentiles,
  mean and std; their plots and EasyDUB's ``eval_pretrain.py`` headline the 95th.

One deviation: their ``np.digitize`` counts bins 1..20 only, so a margin equal to the pooled
maximum (at least one per example) falls outside every bin and is dropped. With their 100+
models per side that is one sample in 200; with the few models of this protocol it is a large
share (a single unlearned model whose margin exceeds every retrain model's leaves ``P``
empty, and their code returns NaN). Here the last bin is closed, ``[e_19, e_20]``, as in
``np.histogram``.
The two sides may hold different numbers of models (their code asserts equal counts).
"""
import numpy as np

BINS = 20
EPS = 1e-5
CLIP = (-100.0, 100.0)
PERCENTILES = (95, 99)


def margins(logits, labels):
  """``z_c − logsumexp_{j≠c} z_j`` (float64) of logits ``[..., N, K]``, labels ``[N]``."""
  z = np.asarray(logits, np.float64)
  y = np.asarray(labels)
  if z.shape[-1] < 2:
    raise ValueError(f'margins need at least two classes; got logits of shape {z.shape}.')
  y = np.broadcast_to(y, z.shape[:-1])[..., None]
  correct = np.take_along_axis(z, y, axis=-1)[..., 0]
  other = np.where(np.arange(z.shape[-1]) == y, -np.inf, z)
  top = other.max(axis=-1, keepdims=True)
  lse = top[..., 0] + np.log(np.exp(other - top).sum(axis=-1))
  return correct - lse


def _fractions(samples, edges):
  """``[models, N]`` samples → ``[N, bins]`` fractions. Bin ``b`` is ``[e_b, e_{b+1})``
  (``np.digitize``'s rule), the last one closed."""
  bins = edges.shape[1] - 1
  index = (samples[:, :, None] >= edges[None, :, :]).sum(axis=-1)   # digitize: 1-based
  index = np.minimum(index, bins) - 1
  n_models, n = samples.shape
  counts = np.zeros((n, bins))
  np.add.at(counts, (np.broadcast_to(np.arange(n), index.shape), index), 1.0)
  return counts / n_models


def klom(unlearned, retrain, bins=BINS, eps=EPS, clip=CLIP):
  """Per-example KLOM ``[N]`` from margins ``[models, N]`` of the unlearned models and of the
  retrain models (module docstring): ``KL(P ‖ Q')`` over ``bins`` equal-width bins of the
  pooled, clipped range."""
  u = np.clip(np.asarray(unlearned, np.float64), *clip)
  r = np.clip(np.asarray(retrain, np.float64), *clip)
  if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1] or not len(u) or not len(r):
    raise ValueError('klom: margins must be [models, examples] with the same examples and '
                     f'at least one model each; got {u.shape} and {r.shape}.')
  both = np.concatenate([u, r])
  lo, hi = both.min(axis=0), both.max(axis=0)
  hi = np.where(lo >= hi, lo + 1.0, hi)      # all equal: one bin of width 1 (theirs)
  edges = np.linspace(lo, hi, bins + 1, axis=-1)
  p, q = _fractions(u, edges), _fractions(r, edges)
  q = np.where(p > 0, np.maximum(q, eps), q)
  q = q / q.sum(axis=-1, keepdims=True)      # scipy.stats.entropy normalises qk
  seen = p > 0
  ratio = np.where(seen, p, 1.0) / np.where(seen, q, 1.0)
  return np.where(seen, p * np.log(ratio), 0.0).sum(axis=-1)


def summary(values, percentiles=PERCENTILES):
  """``{'p95', 'p99', 'mean', 'std', 'n'}`` of per-example KLOM values (their
  ``get_klom_stats``: ``np.percentile``'s linear interpolation, population std); None for
  no examples."""
  v = np.asarray(values, np.float64).reshape(-1)
  if not v.size:
    return None
  out = {f'p{q}': float(np.percentile(v, q)) for q in percentiles}
  out.update(mean=float(v.mean()), std=float(v.std()), n=int(v.size))
  return out
