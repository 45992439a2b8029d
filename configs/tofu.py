r"""TOFU (locuslab/TOFU, local files) on any supported pretrained checkpoint with
open-unlearning's recipe, point by point (locuslab/open-unlearning at d3d7cf9; they pin
transformers==4.45.1, requirements.txt:2, whose Trainer defaults fill in the rest; "HF"
below is that version, its files under src/transformers/).

Recipe point: value here (``config.<key>``) — their source — our default (configs/authors*.py)
and why it differs there.
* Unlearning optimiser: AdamW lr 1e-5, weight decay 0.01, 10 epochs, warm-up 1 epoch
  (``unlearn.warmup_fraction=0.1``) — configs/experiment/unlearn/tofu/default.yaml:44-47;
  warm-up steps ``int(warmup_epochs*len(forget) // (batch*accum*devices))``,
  src/trainer/__init__.py:33-42 (here 0.1 × the steps: the same count for TOFU's sizes);
  ``optim: paged_adamw_32bit`` (AdamW's maths),
  configs/trainer/finetune.yaml:15 — our LM default lr 5e-4, no decay (tuned: docs/tuning.md).
* Unlearning schedule: warm-up then linear decay to 0 (``unlearn.lr_schedule='linear'``) —
  HF ``lr_scheduler_type='linear'``, transformers training_args.py:901, formula
  optimization.py:102-105 — ours 'constant' after the warm-up (the tuned published runs).
* Fine-tuning: AdamW lr 1e-5, weight decay 0.01, 5 epochs, warm-up 1 epoch
  (``finetune.warmup_fraction=0.2``), linear decay to 0 (``finetune.lr_schedule='linear'``),
  beta2 0.999 (``finetune.adam_b2``), gradient norm clipped at 1 —
  configs/experiment/finetune/tofu/default.yaml:12-15, HF training_args.py:892,894,901 —
  ours: cosine to 0.1·lr and beta2 0.98, the fine-tuning of the published authors rows.
* Gradient clipping in unlearning: global norm 1 (``unlearn.grad_clip=1.0``) — HF
  ``max_grad_norm=1.0``, training_args.py:894, trainer.py:2421-2441 — ours none (0).
* Weight decay skips norm weights and biases (``*.decay_norms=False``) — HF
  ``get_decay_parameter_names``, trainer.py:1065-1074, with LlamaRMSNorm registered as a
  layer norm, models/llama/modeling_llama.py:133 — ours decays every parameter (the
  published runs).
* Batches: effective 32 = per-device batch × accumulation × devices; their runs use 4 × 4 ×
  2 GPUs (scripts/tofu_unlearn.sh:26-27,50; scripts/tofu_finetune.sh:12,38 with
  configs/trainer/finetune.yaml:5); the trainer YAML alone is 8 × 4 × 1
  (configs/trainer/finetune.yaml:3,5). Here 8 micro-batches of 4 (``*.grad_accum=8``): on
  one device the mean of eight 4-row micro-batch losses, which is what their two GPUs
  average (each GPU's 4 accumulation steps, then DDP's mean); ``--config.unlearn.grad_accum=4``
  gives the single-GPU YAML's micro-batches of 8.
* Accumulation: the step's gradient is the mean of the micro-batch losses' gradients — HF
  4.45 ``training_step`` backward, trainer.py:3518 (accelerate divides each micro-batch's loss
  by the accumulation steps); 4.45 has no ``num_items_in_batch`` (added in 4.46, and their
  ``compute_loss`` overrides take none), so this is what they run.
* Steps and epochs (``*.drop_last=False``): an epoch is one pass over the forget set
  (src/data/unlearn.py:19-25, each forget item paired with a random retain item,
  :34-40) or the fine-tuning set, in micro-batches with the last partial one kept
  (HF ``dataloader_drop_last=False``, training_args.py:1132); a step is ``grad_accum``
  consecutive micro-batches counted across epoch ends (trainer.py:2316,2346,2406-2415), and
  the run stops after ``epochs × (micro-batches per epoch // grad_accum)`` steps
  (trainer.py:2095-2111, trainer_callback.py:563) — ours drops each epoch's last partial
  batch (whole batches inside one epoch, the published runs). A partial micro-batch is
  refused here (TOFU's 40/200/400 forget and 3600-4000 fine-tuning items never give one).
* GradAscent / GradDiff NLL and every retain NLL: HF's ``outputs.loss``, the token mean over
  the micro-batch (``unlearn.loss_mean='token'``) — src/trainer/unlearn/grad_ascent.py:12-13,
  grad_diff.py:25-29,49-50; HF models/llama/modeling_llama.py:1224-1229 — ours the mean of
  per-sequence answer means (every sequence counts alike, as the CURE losses).
* UNDIAL: β = 10 on every position of the micro-batch, prompt and right padding included,
  up to its longest row (``unlearn.undial_positions='all'``), retain weight α = 0
  (``undial_descent:retain_weight=0``) — src/trainer/utils.py:70-99 (``loss.mean()`` over all
  positions; their label -100 indexes vocabulary entry V-100, lowered by β there),
  configs/trainer/UNDIAL.yaml:10-11 (its lr 1e-4 at :6 is overridden by the experiment's 1e-5),
  right padding configs/collator/DataCollatorForSupervisedDataset.yaml:4 — ours the answer
  tokens only and α = 1 (the paper's with-retain rows).
* Prompt: the checkpoint's own chat template rendered as transformers renders it, with the
  system turn "You are a helpful assistant." (``data.chat_system``) and the date line
  "10 Apr 2025" (``data.chat_date``) — configs/model/Llama-3.2-1B-Instruct.yaml
  (template_args: system_prompt, date_string) — ours: no system turn unless asked.
* Not followed: their collator's attention mask (``input_ids != pad``,
  src/data/collators.py:49) with Llama-3's pad set to its EOS (src/model/__init__.py:98-99)
  hides every ``<|eot_id|>`` key and the padding from attention; ours attends to every
  earlier token (so UNDIAL's padding terms differ in value too). Their weights are bfloat16
  (configs/model/Llama-3.2-1B-Instruct.yaml:4); ours float32 with bfloat16 compute.

Data: a local copy of the hub dataset ``locuslab/TOFU`` (forget10.json, retain90.json,
forget10_perturbed.json, retain_perturbed.json, real_authors_perturbed.json,
world_facts_perturbed.json; holdout10.json for privleak; JSON lines or parquet), e.g.
``huggingface-cli download locuslab/TOFU --repo-type dataset --local-dir DATA``.

Llama-3.2-1B-Instruct on one GPU, fine-tuning the original (full) and retrain (retain90)
models first, then every method:
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
--config.unlearn.method=npo``. Any recipe point back to our choice, e.g.
``--config.unlearn.lr_schedule=constant``.
Runtime: a GPU job (TOFU's 4,000 items at up to 512 tokens); not sized for a 2-core CPU.
``:smoke`` is the tiny variant its test runs on fabricated files and a tiny checkpoint.
Results: DIR/results.md, DIR/results.json and DIR/generations.json.

Tuning history and run logs: docs/tuning.md.
"""
from cure_jax.lm import defaults as lm_config


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
  # Their Llama-3.x prompt: system turn and date line (configs/model/Llama-3.2-1B-Instruct.yaml
  # template_args; the date is config.data.chat_date's default).
  c.data.chat_system = 'You are a helpful assistant.'
  c.data.train_utility_sets = False

  # open-unlearning's TOFU fine-tuning (the docstring cites each point).
  c.finetune.lr = 1e-5
  c.finetune.epochs = 5
  c.finetune.batch_size = 32
  c.finetune.grad_accum = 8     # micro-batches of 4
  c.finetune.warmup_fraction = 0.2  # one epoch of five
  c.finetune.weight_decay = 0.01
  c.finetune.grad_clip = 1.0
  c.finetune.lr_schedule = 'linear'
  c.finetune.drop_last = False
  c.finetune.decay_norms = False
  c.finetune.adam_b2 = 0.999
  c.finetune.log_every = 20
  c.finetune.checkpoint_every = 200

  # open-unlearning's unlearning trainer (the docstring cites each point).
  c.unlearn.optimizer = 'adamw'
  c.unlearn.lr = 1e-5
  c.unlearn.epochs = 10
  c.unlearn.batch_size = 32
  c.unlearn.grad_accum = 8
  c.unlearn.warmup_fraction = 0.1
  c.unlearn.weight_decay = 0.01
  c.unlearn.lr_schedule = 'linear'
  c.unlearn.drop_last = False
  c.unlearn.loss_mean = 'token'
  c.unlearn.undial_positions = 'all'
  c.unlearn.decay_norms = False
  c.unlearn.grad_clip = 1.0
  c.unlearn.log_every = 5
  # RMU as configs/trainer/RMU.yaml:8-13 runs it: layer 7 steered with coefficient 2, every
  # parameter trained ('.*'; WMDP's three down-projections are our default ''); DPO's beta
  # 0.1 (DPO.yaml:6) and the retain weights 1 are the core's defaults.
  c.unlearn.rmu_layer = 7
  c.unlearn.rmu_params = '.*'
  # Their UNDIAL's alpha (retain weight) is 0 (configs/trainer/UNDIAL.yaml:10).
  c.reproduce.runs = tuple('undial_descent:retain_weight=0' if r == 'undial_descent' else r
                           for r in lm_config.RUNS) + lm_config.OU_RUNS

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
