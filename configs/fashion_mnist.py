r"""Fashion-MNIST, a small CNN, the paper's protocol on scenarios shirt (6), sneaker (7), trouser (1).

Data: the four standard IDX files (gzip or plain). On Debian/Ubuntu
`apt-get install dataset-fashion-mnist` puts them where this config looks by default
(/usr/share/datasets/fashion-mnist); elsewhere pass their folder with
--config.data.data_dir=DIR. The official test set is halved (seeded) into validation and test.

Command (K = 3 original models, K = 3 retrain models per scenario, every method × 3 runs ×
3 scenarios; prints the Table 1 layout):
  python -m experiments.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist
Runtime: 26 min from an empty workdir on an idle 2-core AMD EPYC with AVX-512 (training 5
min, unlearning 11 min, evaluation 9 min; peak RSS 2.0 GB); 32 min on a 2-core AMD EPYC with
AVX2 only, other jobs beside it (the published rows; the split in
docs/results_fashion_mnist.md).
Run i starts from original model i mod K and is compared with retrain model i mod K. The
scenarios are the most, a middling and the least confused class (shirt ↔ T-shirt / pullover /
coat; sneaker ↔ sandal / ankle boot; trouser). Unlearning uses the whole forget class (6,000
training images), as the paper does.
Model: ``cnn_small`` (two conv–BatchNorm–ReLU–pool stages, 8 and 16 channels, a 64-unit
hidden layer: 52 k parameters, 0.33 M multiply-adds per image), 5 epochs at batch 128:
about 0.91 test accuracy. Results: results.json, results.md and the plots in the workdir.

The per-method values in ``config.unlearn.overrides`` were chosen on the validation split
(never the test split) with --config.mode=tune, by one rule for every method: the same 12
trials (``config.tune``), the paper's selection rule (1 h 38 min on the 2-core CPU with other
jobs beside it; docs/tuning_fashion_mnist.md lists each method's choice and every trial),
before tuning had models of its own: its runs started from reported model 0 (a rerun of the
tuning command now uses model 1000). A value given on the command line beats them.

Tuning (the same rule for every method; docs/tuning.md):
  python -m experiments.main --config=configs/fashion_mnist.py --config.mode=tune \
      --workdir=runs/fashion_mnist

Variants:
  configs/fashion_mnist.py:smoke   a few steps on whatever IDX files data_dir holds (tests)
  configs/fashion_mnist.py:paper   the paper's counts for accelerators: CIFAR ResNet-18,
                                   K = 30 models, 30 runs per method and scenario. About 3 h
                                   on one H200-class GPU, estimated from a measured 4.9 ms
                                   training step (docs/tuning.md); not run here.
"""
import ml_collections

from cure_jax.classification import defaults


def get_config(arg=None):
  config = defaults.classification_config()
  config.data.name = 'fashion_mnist'
  # No augmentation: the small CNN underfits rather than overfits in 5 epochs.
  config.data.augment = 'none'
  config.data.pad = 0
  config.model.name = 'cnn_small'
  config.scenarios = '6;7;1'
  config.forget_classes = '6'
  config.model_seeds = 3
  config.seeds = 3
  config.train.batch_size = 128
  config.train.epochs = 5
  config.train.lr = 0.1
  config.train.eval_batch_size = 500
  config.unlearn.batch_size = 128
  config.unlearn.lr = 0.01
  config.unlearn.epochs = 2.0
  config.unlearn.temperature = 4.0
  config.unlearn.retain_fraction = 0.34
  config.reproduce.forget_threshold = 0.003   # as the paper's CIFAR-10 (500 test images a class)
  # Chosen by mode=tune on the validation split with the one rule for every method: the same
  # 12 trials (tune.lrs x tune.epochs below), 1 run per scenario (docs/tuning_fashion_mnist.md).
  config.unlearn.overrides = ml_collections.ConfigDict({
      'gradasc': {'lr': 0.001, 'epochs': 1.0},
      'randlabel': {'lr': 0.01, 'epochs': 2.0},
      'finetune': {'lr': 0.1, 'epochs': 2.0},
      'age': {'lr': 0.003, 'epochs': 2.0},
      'undial': {'lr': 0.03, 'epochs': 1.0},
      'salun': {'lr': 0.01, 'epochs': 2.0},
      'delete': {'lr': 0.001, 'epochs': 2.0},
      'ghr': {'lr': 0.03, 'epochs': 2.0},
      'gsr': {'lr': 0.003, 'epochs': 2.0, 'temperature': 2.0},
      'grogu_t1': {'lr': 0.1, 'epochs': 2.0},
      'grogu': {'lr': 0.1, 'epochs': 2.0, 'temperature': 2.0},
      'gradasc_descent': {'lr': 0.001, 'epochs': 1.0},
      'gradrest_descent': {'lr': 0.001, 'epochs': 1.0},
      'age_descent': {'lr': 0.03, 'epochs': 2.0},
      'undial_descent': {'lr': 0.03, 'epochs': 2.0},
      'salun_descent': {'lr': 0.001, 'epochs': 1.0},
      'scrub': {'lr': 0.001, 'epochs': 2.0},
      'lur': {'lr': 0.001, 'epochs': 1.0},
      'lur_randlabel': {'lr': 0.1, 'epochs': 2.0},
      'ghr_descent': {'lr': 0.03, 'epochs': 1.0},
      'gsr_descent': {'lr': 0.01, 'epochs': 1.0, 'temperature': 2.0},
      'grogu_t1_descent': {'lr': 0.03, 'epochs': 2.0},
      'grogu_descent': {'lr': 0.1, 'epochs': 2.0, 'temperature': 2.0},
  })
  # The tuning grid: 12 trials per method (a temperature is searched inside them). The first
  # pass (0.003-0.1) diverged for every trial of five methods, hence the two lower rates.
  config.tune.lrs = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
  config.tune.epochs = (1, 2)
  config.tune.seeds = 1
  config.tune.model_seeds = 1   # tuning's own model (seed config.tune.seed), never reported
  if arg == 'smoke':
    config.scenarios = '6;1'
    config.model_seeds = 2
    config.seeds = 2
    config.train.batch_size = 16
    config.train.epochs = 1
    config.train.log_every = 10
    config.train.checkpoint_every = 10
    config.train.eval_batch_size = 16
    config.unlearn.batch_size = 8
    config.unlearn.epochs = 1.0
    config.reproduce.plots = False
    # The smoke run's own epochs must not be shadowed by tuned per-method overrides.
    for name in config.unlearn.overrides.keys():
      config.unlearn.overrides[name].epochs = 1.0
  elif arg == 'paper':
    config.model.name = 'resnet18_cifar'
    config.data.augment = 'crop'
    config.data.pad = 2
    config.model_seeds = 30
    config.seeds = 30
    config.train.epochs = 30
    config.train.lr = 0.1
    config.tune.seeds = 2
  elif arg not in (None, ''):
    raise ValueError(f'Unknown fashion_mnist config variant {arg!r}; use "", "smoke" or '
                     '"paper".')
  return config
