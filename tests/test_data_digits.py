import numpy as np
import pytest

from cure_jax.data import load_dataset, pipeline, views
from cure_jax.data.digits import load_digits
import ml_collections


@pytest.fixture(scope='module')
def digits():
  return load_digits()


def test_digits_splits_are_disjoint_stratified_and_sized_like_the_paper(digits):
  assert (len(digits.train), len(digits.val), len(digits.test)) == (1257, 270, 270)
  images = [s.images.reshape(len(s), -1) for s in (digits.train, digits.val, digits.test)]
  keys = [set(map(bytes, x)) for x in images]
  # Some digit images are duplicated in the raw data; almost all must be disjoint.
  assert len(keys[1] & keys[2]) <= 2 and len(keys[0] & keys[2]) <= 5
  for split in (digits.train, digits.val, digits.test):
    counts = np.bincount(split.labels, minlength=10)
    assert counts.min() >= 0.9 * counts.max()
  assert digits.train.images.dtype == np.uint8 and digits.train.images.max() == 255


def test_batches_are_a_function_of_seed_and_step(digits):
  kw = dict(mean=digits.mean, std=digits.std, seed=3, augment='crop', pad=1)
  full = pipeline.batches(digits.train, 32, **kw)
  first = [next(full) for _ in range(45)]  # crosses an epoch boundary (39 batches/epoch)
  resumed = pipeline.batches(digits.train, 32, start_step=40, **kw)
  for expected in first[40:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], expected['image'])
    np.testing.assert_array_equal(got['label'], expected['label'])
  other = next(pipeline.batches(digits.train, 32, **{**kw, 'seed': 4}))
  assert not np.array_equal(other['label'], first[0]['label'])
  # Each epoch is a permutation: the first 39 batches hold 39*32 distinct examples.
  assert first[0]['image'].shape == (32, 8, 8, 1) and first[0]['image'].dtype == np.float32


def test_eval_batches_cover_everything_in_order(digits):
  got = np.concatenate([b['label'] for b in pipeline.eval_batches(
      digits.test, 64, mean=digits.mean, std=digits.std)])
  np.testing.assert_array_equal(got, digits.test.labels)


def test_forget_retain_views_and_seeded_subset(digits):
  forget, retain = views.forget_retain(digits.train, (1, 3))
  assert set(forget.labels) == {1, 3} and not np.isin(retain.labels, (1, 3)).any()
  assert len(forget) + len(retain) == len(digits.train)
  a = views.retain_subset(retain, 0.34, seed=0)
  b = views.retain_subset(retain, 0.34, seed=0)
  c = views.retain_subset(retain, 0.34, seed=1)
  assert len(a) == round(0.34 * len(retain))
  np.testing.assert_array_equal(a.indices, b.indices)
  assert not np.array_equal(a.indices, c.indices)
  np.testing.assert_array_equal(a[0]['image'], retain[int(a.indices[0])]['image'])


def test_empty_forget_set_and_bad_names_are_clear_errors(digits):
  with pytest.raises(ValueError, match='forget set is empty'):
    views.forget_retain(views.forget_retain(digits.train, (1,))[1], (1,))
  with pytest.raises(ValueError, match='retain fraction'):
    views.retain_subset(digits.train, 0.0, 0)
  with pytest.raises(ValueError, match="Unknown dataset 'svhn'"):
    load_dataset(ml_collections.ConfigDict({'name': 'svhn', 'split_seed': 0}))
  with pytest.raises(ValueError, match="Unknown augmentation 'jitter'"):
    pipeline.batches(digits.train, 8, mean=(0,), std=(1,), augment='jitter')
