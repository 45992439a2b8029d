r"""TOFU (locuslab/TOFU, local files) on any supported pretrained checkpoint, with
open-unlearning's recipe: AdamW, lr 1e-5, 10 unlearning epochs, effective batch 32 (gradient
accumulation), each forget item paired with a random retain item; the paper's methods.

Data: a local copy of the hub dataset ``locuslab/TOFU`` (forget10.json, retain90.json,
forget10_perturbed.json, retain_perturbed.json, real_authors_perturbed.json,
world_facts_perturbed.json; holdout10.json for privleak; JSON lines or parquet), e.g.
``huggingface-cli download locuslab/TOFU --repo-type dataset --local-dir DATA``.

Llama-3.2-1B-Instruct on one GPU, fine-tuning the original (full) and retrain (retain90)
models first (5 epochs, lr 1e-5, as open-unlearning's finetune recipe), then every method:
  python -m experiments.main --config=configs/tofu.py --workdir=DIR \
      --config.model.pretrained=PATH/Llama-3.2-1B-Instruct --config.data.data_dir=DATA \
      --config.model.dtype=bfloat16
Starting from already fine-tuned models (open-unlearning's tofu_Llama-3.2-1B-Instruct_full
and _retain90, downloaded as HF directories) skips fine-tuning:
  ... --config.model.original=PATH/tofu_Llama-3.2-1B-Instruct_full \
      --config.model.retrain=PATH/tofu_Llama-3.2-1B-Instruct_retain90
(``config.model.pretrained`` may then stay empty: the original's architecture and tokenizer
are used.) Memory: a 1B model in float32 parameters + AdamW state is ~16 GB, plus the
frozen reference copy; ``--config.model.sharding=fsdp`` splits parameters and optimizer
state over all devices (a 7B model on 8 accelerators). Other forget sizes:
``--config.data.forget_pct=1`` or ``5``. One method: ``--config.mode=unlearn
--config.unlearn.method=npo``.
Runtime: a GPU job (TOFU's 4,000 items at up to 512 tokens); not sized for a 2-core CPU.
``:smoke`` is the tiny variant its test runs on fabricated files and a tiny checkpoint.
Results: DIR/results.md, DIR/results.json and DIR/generations.json.

Tuning history and run logs: docs/tuning.md.
"""
from cure_jax.lm import config as lm_config


def get_config(arg=None):
  """TOFU with open-unlearning's recipe (``arg=None``) or the ``'smoke'`` test variant."""
  if arg not in (None, '', 'smoke'):
    raise ValueError(f'Unknown tofu config variant {arg!r}; use "" or "smoke".')
  c = lm_config.get_config()
  c.seeds = 1
  c.model.pretrained = ''       # required: --config.model.pretrained=PATH (or .original/.retrain)
  c.model.max_len = 512         # open-unlearning's TOFU max_length
  c.model.dtype = 'float32'     # 'bfloat16': bfloat16 compute, float32 parameters
  c.data.source = 'tofu'
  c.data.data_dir = ''          # required: the local locuslab/TOFU copy
  c.data.forget_pct = 10
  c.data.template = 'chat'
  c.data.chat_template = ''     # the checkpoint's own format
  c.data.train_utility_sets = False

  # open-unlearning's TOFU fine-tuning: 5 epochs, lr 1e-5, effective batch 32, wd 0.01.
  c.finetune.lr = 1e-5
  c.finetune.epochs = 5
  c.finetune.batch_size = 32
  c.finetune.grad_accum = 8     # micro-batches of 4
  c.finetune.warmup_fraction = 0.2  # one epoch of five
  c.finetune.weight_decay = 0.01
  c.finetune.log_every = 20
  c.finetune.checkpoint_every = 200

  # open-unlearning's unlearning trainer: AdamW lr 1e-5, 10 epochs, 1 warmup epoch, wd 0.01.
  c.unlearn.optimizer = 'adamw'
  c.unlearn.lr = 1e-5
  c.unlearn.epochs = 10
  c.unlearn.batch_size = 32
  c.unlearn.grad_accum = 8
  c.unlearn.warmup_fraction = 0.1
  c.unlearn.weight_decay = 0.01
  c.unlearn.log_every = 5

  c.eval.batch_size = 32
  c.eval.retain_items = 400     # TOFU evaluates 400 retain questions
  c.eval.utility_items = 0      # all real-authors / world-facts items
  c.eval.max_new_tokens = 200
  c.eval.num_samples = 8

  if arg == 'smoke':
    c.model.max_len = 128
    c.data.forget_pct = 1
    c.finetune.epochs = 1
    c.finetune.batch_size = 8   # 2 micro-batches of 4: the tests' 4 CPU devices
    c.finetune.grad_accum = 2
    c.finetune.log_every = 1
    c.unlearn.epochs = 1
    c.unlearn.batch_size = 8
    c.unlearn.grad_accum = 2
    c.unlearn.warmup_fraction = 0.0
    c.unlearn.lr = 1e-3
    c.unlearn.log_every = 1
    c.eval.batch_size = 16
    c.eval.retain_items = 2
    c.eval.max_new_tokens = 4
    c.eval.num_samples = 1
    c.reproduce.runs = ('grogu_descent:T=5,w=0.5',)
  return c
