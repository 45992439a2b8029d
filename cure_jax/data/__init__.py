"""Datasets by name: ``load_dataset(config.data)`` returns :class:`DatasetSplits`."""
from cure_jax.data.sources import DatasetSplits

__all__ = ['DatasetSplits', 'LOADERS', 'load_dataset']


def _digits(cfg):
  from cure_jax.data.digits import load_digits
  return load_digits(split_seed=cfg.split_seed)


def _cifar(name):
  def load(cfg):
    from cure_jax.data.cifar import load_cifar
    return load_cifar(name, cfg.get('data_dir'), split_seed=cfg.split_seed)
  return load


def _imagenet(cfg):
  from cure_jax.data.imagenet import load_imagenet
  return load_imagenet(cfg.get('data_dir'), split_seed=cfg.split_seed,
                       image_size=cfg.get('image_size', 224))


def _idx(name):
  def load(cfg):
    from cure_jax.data.idx import load_mnist_family
    return load_mnist_family(name, cfg.get('data_dir'), split_seed=cfg.split_seed)
  return load


LOADERS = {'digits': _digits, 'cifar10': _cifar('cifar10'), 'cifar100': _cifar('cifar100'),
           'imagenet': _imagenet, 'fashion_mnist': _idx('fashion_mnist'),
           'mnist': _idx('mnist'), 'kmnist': _idx('kmnist')}


def load_dataset(cfg):
  """Loads ``cfg.name`` (one of :data:`LOADERS`) with its split seed and data directory."""
  if cfg.name not in LOADERS:
    raise ValueError(f'Unknown dataset {cfg.name!r}; choose one of {sorted(LOADERS)} '
                     '(config.data.name).')
  return LOADERS[cfg.name](cfg)
