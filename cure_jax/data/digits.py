"""The embedded default: scikit-learn's handwritten digits (1,797 8×8 images, 10 classes).

They ship inside scikit-learn, so the whole project runs offline. Like the paper's splits,
a seeded stratified 70 % is the training set and the held-out 30 % is cut in half into a
validation and a test split.
"""
import numpy as np
from sklearn import datasets, model_selection

from cure_jax.data.sources import ArraySource, DatasetSplits, loaded
from cure_jax.infra import content_digest

TRAIN_FRACTION = 0.7


def load_digits(split_seed=0):
  digits = datasets.load_digits()
  # Pixel values are 0..16: spread them over the uint8 range every other dataset uses.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train_idx, held_idx = model_selection.train_test_split(
      np.arange(len(labels)), train_size=TRAIN_FRACTION, stratify=labels,
      random_state=split_seed)
  val_idx, test_idx = model_selection.train_test_split(
      held_idx, train_size=0.5, stratify=labels[held_idx], random_state=split_seed)
  split = lambda idx: ArraySource(images[np.sort(idx)], labels[np.sort(idx)])
  mean = float(images.mean() / 255.0)
  std = float(images.std() / 255.0)
  return loaded(DatasetSplits(name='digits', train=split(train_idx), val=split(val_idx),
                              test=split(test_idx), num_classes=10, image_shape=(8, 8, 1),
                              mean=(mean,), std=(std,),
                              class_names=tuple(str(i) for i in range(10)),
                              digest=content_digest.arrays_digest(images, labels)),
                'scikit-learn')
