"""Per-class forget / retain views of a labelled source (forget set = the forget classes)."""
import numpy as np

from cure_jax.data.sources import SubsetSource


def forget_mask_of(labels, forget_classes):
  return np.isin(np.asarray(labels), np.asarray(forget_classes))


def forget_retain(source, forget_classes):
  """``(forget, retain)``: all examples of the forget classes, and the rest."""
  is_forget = forget_mask_of(source.labels, forget_classes)
  forget = SubsetSource(source, np.flatnonzero(is_forget))
  if len(forget) == 0:
    raise ValueError(f'The forget set is empty: no example of classes {list(forget_classes)} '
                     'in this split; choose classes present in the data (config.forget_classes).')
  return forget, SubsetSource(source, np.flatnonzero(~is_forget))


def retain_subset(retain, fraction, seed):
  """A seeded random subset holding ``fraction`` of the retain examples (at least one)."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'retain fraction must be in (0, 1], got {fraction} '
                     '(config.unlearn.retain_fraction).')
  n = max(1, int(round(fraction * len(retain))))
  chosen = np.random.default_rng(seed).choice(len(retain), size=n, replace=False)
  return SubsetSource(retain, np.sort(chosen))
