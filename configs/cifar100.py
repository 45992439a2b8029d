r"""CIFAR-100, CIFAR ResNet-18, the paper's protocol: scenarios 16, 54, 81; K = 30.

Command (data: `cifar-100-python.tar.gz` in DATA, or a prepared tfds `cifar100` directory):
  python -m experiments.main --config=configs/cifar100.py --config.data.data_dir=DATA \
      --workdir=runs/cifar100
Runtime: a GPU job, like configs/cifar10.py (unlearning runs over the 500 forget images).
Results: results.json, results.md and the per-scenario plots in the workdir.
Expected result (the paper, test retain/forget acc): original .728/.746, retrain .731/0, GHR
.573/.015, GSR .584/.014, UNDIAL .551/.027, GROGU .598/.008.
Hyperparameters: the paper's (62 % retain subset, threshold 0.010); not re-tuned here.

Tuning history and run logs: docs/tuning.md.
"""
from configs.cifar10 import cifar_config


def get_config(arg=None):
  config = cifar_config('cifar100', '16;54;81', retain_fraction=0.62, forget_threshold=0.010)
  if arg not in (None, ''):
    raise ValueError(f'Unknown cifar100 config variant {arg!r}.')
  return config
