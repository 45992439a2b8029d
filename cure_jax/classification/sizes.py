"""The checks that need the data's sizes, run once the data is loaded and before any model
trains: a batch larger than the set it draws from is one line at start-up, not an error
after the original models have trained."""
from cure_jax.classification import train
from cure_jax.data import views


def retain_subset_size(retain_size, retain_fraction):
  """Examples in a run's retain subset (as :func:`cure_jax.data.views.retain_subset`)."""
  return max(1, int(round(retain_fraction * retain_size)))


def check_unlearn_batch(batch_size, n_forget, n_retain, label, uses_retain):
  """One scenario's forget set and retain subset each hold at least one batch."""
  if n_forget < batch_size:
    raise ValueError(f'config.unlearn.batch_size={batch_size} exceeds the {n_forget} forget '
                     f'examples of scenario {label}; use a batch size <= {n_forget}.')
  if uses_retain and n_retain < batch_size:
    raise ValueError(f'config.unlearn.batch_size={batch_size} exceeds the {n_retain} examples '
                     f'of the retain subset of scenario {label}; raise '
                     'config.unlearn.retain_fraction or lower the batch size.')


def check(config, data, scenarios, runs, kinds):
  """Every model's training batches and every run's unlearning batches fit their sets.

  ``scenarios``: ``[(label, forget classes), ...]``; ``runs``: the planned runs (their
  effective hyperparameters); ``kinds``: the model kinds the study trains."""
  b = config.train.batch_size
  sizes = {'the training set': len(train.training_source(data, 'original', ()))}
  for label, classes in scenarios:
    forget, retain = views.forget_retain(data.train, classes)
    n_forget, n_retain = len(forget), len(retain)
    if 'retrain' in kinds:
      sizes[f'the retain set of scenario {label}'] = n_retain
    for run in runs:
      hp = run.hparams
      check_unlearn_batch(int(hp.batch_size), n_forget,
                          retain_subset_size(n_retain, hp.retain_fraction), label,
                          run.method.uses_retain)
  for what, n in sizes.items():
    if n < b:
      raise ValueError(f'config.train.batch_size={b} exceeds the {n} examples of {what}; '
                       f'use a batch size <= {n}.')
