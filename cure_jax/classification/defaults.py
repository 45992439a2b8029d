"""The complete classification config; ``configs/*.py`` only change what differs.

Every key the library reads exists here, so ``lock_config=True`` catches typos in
command-line overrides.
"""
import ml_collections

from cure_jax.classification import claims
from cure_jax.unlearning import hparams


def classification_config():
  c = ml_collections.ConfigDict()
  c.task = 'classification'
  # train_original | train_retrain | unlearn | reproduce | tune
  c.mode = 'reproduce'
  c.seed = 0                  # seed of the original/retrain training runs
  # Directory of trained models shared between workdirs ('' = WORKDIR/models); a model's
  # subdirectory is named by the fingerprint of every setting that determines it.
  c.model_cache = ''
  c.forget_classes = '1'      # comma-separated class indices, e.g. '1' or '1,3'
  # Forget scenarios of one sweep, ';'-separated, each a class or a comma list ('1;3;8');
  # empty = the single scenario forget_classes.
  c.scenarios = ''
  # K: original models (and K retrain models per scenario), trained with seeds
  # seed..seed+K-1 (or an explicit list '0,1,2'); run i starts from original i mod K.
  c.model_seeds = 1
  c.distributed = False       # multi-host: call jax.distributed.initialize()
  c.seeds = 5                 # unlearning runs per method and scenario (seeds 0..seeds-1)
  # Train the K models of a kind, and run a method's seeds, as one program each, the models
  # split over the `seeds` mesh axis: True, False, or None = on accelerators only (on the
  # 2-core CPU the vmapped sweep was not faster; docs/benchmarks.md).
  c.seed_parallel = ml_collections.config_dict.placeholder(bool)
  # Device groups along `seeds` when seed_parallel; each group's devices split one model's
  # batch (`data`). 0 = one group per device (a model per device, several if K > devices).
  c.seed_devices = 0
  # At most this many models per device group in one program (bounds its memory; 0 = all K
  # models, or all of a method's runs, at once).
  c.models_per_device = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'digits'
  c.data.data_dir = ''
  c.data.split_seed = 0
  c.data.image_size = 224     # ImageNet only
  c.data.augment = 'crop'     # none | crop | cifar | flip
  c.data.pad = 1

  c.model = ml_collections.ConfigDict()
  c.model.name = 'resnet8'
  c.model.dtype = 'float32'

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64
  c.train.epochs = 30
  c.train.lr = 0.1
  c.train.momentum = 0.9
  c.train.nesterov = False
  c.train.weight_decay = 5e-4
  c.train.warmup_fraction = 0.05
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  c.train.eval_batch_size = 128

  c.unlearn = ml_collections.ConfigDict()
  c.unlearn.method = 'grogu'
  c.unlearn.epochs = 10.0            # passes over the forget set (fractions allowed)
  c.unlearn.batch_size = 32
  c.unlearn.retain_fraction = 0.34  # retain subset drawn per seed (descent variants, finetune)
  c.unlearn.log_every = 100
  # Every method hyperparameter, at the core's defaults (cure_jax/unlearning/hparams.py).
  c.unlearn.update(hparams.DEFAULTS)
  # Per-method hyperparameters (chosen on the validation split, see the config docstring).
  c.unlearn.overrides = ml_collections.ConfigDict()

  c.reproduce = ml_collections.ConfigDict()
  # The paper's order: forget data only (Finetune, which sees retain data only, sits here as
  # in the paper), then with retain data; the peers' baselines next to their kin.
  c.reproduce.methods = ('gradasc', 'randlabel', 'finetune', 'age', 'undial', 'salun', 'delete',
                         'ghr', 'gsr', 'grogu_t1', 'grogu', 'gradasc_descent',
                         'gradrest_descent', 'age_descent', 'undial_descent', 'salun_descent',
                         'scrub', 'lur', 'lur_randlabel', 'ghr_descent', 'gsr_descent',
                         'grogu_t1_descent', 'grogu_descent')
  c.reproduce.forget_threshold = 0.003  # "best" rule: forget acc under this, then max retain
  c.reproduce.plots = True

  # The claims (claims.md): what each compares, fixed before the results, and how it decides
  # (cure_jax/classification/claims.py): Holm at alpha across the claims; equivalent when
  # every comparison lies within +-margin (accuracies, a fraction) or +-margin_tv (claim 4).
  c.claims = ml_collections.ConfigDict()
  c.claims.grogu_rivals = claims.GROGU_RIVALS           # claim 1: GROGU against each
  c.claims.cure_with_retain = 'grogu_descent'           # claim 3: this CURE method ...
  c.claims.retain_rivals = claims.RETAIN_RIVALS         # ... against each of these
  c.claims.margin = 0.005
  c.claims.margin_tv = 0.02
  c.claims.alpha = 0.05

  # mode=tune: grid over these values per method, scored on the validation split.
  c.tune = ml_collections.ConfigDict()
  c.tune.lrs = (0.003, 0.01, 0.03, 0.1)
  c.tune.epochs = (5, 10)
  c.tune.temperatures = (2.0, 4.0, 8.0)
  c.tune.grogu_weights = (0.5,)      # GROGU's w_h (w_s = 1 - w_h), Latin-assigned like T
  # The search after the grid (cure_jax/classification/search.py): tune.trials per method (the
  # same for every method; 0: the grid only), one-rung moves along each dimension's ladder,
  # whose ends are the caps (epochs: one cap for every method).
  c.tune.trials = 0
  c.tune.lr_min = 1e-5
  c.tune.lr_max = 1.0
  c.tune.max_epochs = 30.0
  c.tune.epoch_ladder = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
  c.tune.temperature_ladder = (1.0, 2.0, 4.0, 8.0, 12.0, 16.0)
  c.tune.grogu_weight_ladder = (0.1, 0.25, 0.5, 0.75, 0.9)
  c.tune.seeds = 2
  # Tuning trains its own original (and retrain) models, seeds tune.seed .. tune.seed+K-1
  # (K = tune.model_seeds), and its runs draw unlearning keys from tune.seed on: no model,
  # seed or batch order of a tuning trial is one a reported run uses (config.model_seeds,
  # seeds from config.seed; the two sets of model seeds must not meet).
  c.tune.model_seeds = 2
  c.tune.seed = 1000
  # A trial with any run's val retain acc below this has destroyed the model (GradAsc's
  # collapse onto one or two classes) and is not eligible, as diverged trials are not: which
  # classes a collapsed model keeps is chaotic in floating point (not reproducible across
  # CPUs). 0 gives the paper's plain rule.
  c.tune.min_retain_acc = 0.3
  return c
