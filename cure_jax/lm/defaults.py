"""The complete LLM-unlearning config (``task='lm'``); ``configs/authors.py`` exposes it.

It lives in the library so a notebook or script outside the repository checkout (e.g. on
Colab after ``pip install``) builds the same config. Every key the LM code reads exists
here, so ``lock_config=True`` catches typos in command-line overrides.

Hyperparameter precedence of an unlearning run (``reproduce.runs`` entries such as
``'grogu_descent:T=5,w=10'`` are the LM configs' only per-method settings):

1. ``--config.unlearn.<key>`` given on the command line wins over everything else: with
   ``--config.unlearn.temperature=8`` every run uses T = 8, a ``T=...`` in a config file's
   run spec included (a warning names the spec value it replaces; runs that become
   identical are run once).
2. A run spec's setting wins over the config file's ``unlearn.<key>``.
3. ``config.unlearn.<key>`` otherwise.

A ``--config.reproduce.runs=...`` given on the command line is itself a command-line value:
its specs win over ``--config.unlearn.*``. ``mode=unlearn`` has no spec: ``config.unlearn``
as given. Each results row stores the effective values (``hparams``).

Outputs of ``unlearn`` / ``reproduce`` beside ``results.json``: for every evaluated model
(original, retrain, each run and seed) open-unlearning's ``TOFU_EVAL.json`` and
``TOFU_SUMMARY.json`` (their key names and layout, :mod:`cure_jax.lm.ou_files`) in
``WORKDIR/ou/<method>[-<variant>]-seed<s>/`` (``,`` in the variant written ``_``, as the
exports name them), e.g. ``WORKDIR/ou/grogu_descent-T=5_w=10-seed0/TOFU_EVAL.json``. The
retrain model's file can serve as another run's ``config.eval.retain_logs``.
"""
import ml_collections

from cure_jax.unlearning import hparams

# The paper's LLM settings: every baseline once, GROGU at (T=1,w=0.5), (T=5,w=0.5), (T=5,w=10).
# Every method but gradient ascent carries the retain term (GradDiff is gradasc_descent).
RUNS = ('gradasc', 'gradasc_descent', 'npo_descent', 'simnpo_descent', 'undial_descent',
        'ghr_descent', 'gsr_descent', 'grogu_descent:T=1,w=0.5', 'grogu_descent:T=5,w=0.5',
        'grogu_descent:T=5,w=10')
# open-unlearning's other trainers as their configs run them: WGA, SatImp, RMU and DPO with
# the retain term (their GradDiff base), CE-U without (their UnlearnTrainer base); DPO here
# prefers a perturbed answer, IdkDPO a refusal (their idk experiment).
OU_RUNS = ('wga_descent', 'satimp_descent', 'ceu', 'rmu_descent', 'dpo_descent',
           'idkdpo_descent')


def get_config(arg=None):
  """The complete LM config; ``arg="smoke"`` gives the seconds-long test variant."""
  c = ml_collections.ConfigDict()
  c.task = 'lm'
  c.mode = 'reproduce'        # train_original | train_retrain | unlearn | reproduce
  c.seed = 0                  # fine-tuning seed of the original / retrain models
  # Directory of fine-tuned models shared between workdirs ('' = WORKDIR/checkpoints), e.g.
  # for a second forget-mask variant on the same fine-tuned models; named by fingerprint.
  c.model_cache = ''
  c.seeds = 2                 # unlearning seeds per run (0..seeds-1)

  c.model = ml_collections.ConfigDict()   # LMConfig fields (vocab_size from the tokenizer)
  # A pretrained checkpoint to start from (anything cure_jax.weights.pretrained.load takes: an HF
  # directory, a .gguf file, 'smollm2-135m-instruct'); '' trains the byte-level LM below
  # from scratch. With a checkpoint its architecture wins; only dtype and max_len apply.
  c.model.pretrained = ''
  # Already fine-tuned original / retrain checkpoints (e.g. open-unlearning's
  # tofu_<model>_full / _retain90): given, that model's fine-tuning is skipped.
  c.model.original = ''
  c.model.retrain = ''
  c.model.sharding = 'replicated'  # replicated | fsdp (parameters + optimizer state sharded)
  c.model.num_layers = 3
  c.model.d_model = 128
  c.model.num_heads = 4
  c.model.num_kv_heads = 4
  c.model.d_ff = 384
  c.model.max_len = 160
  c.model.rope_base = 10000.0
  c.model.norm_eps = 1e-5
  c.model.tie_embeddings = True
  c.model.dtype = 'float32'

  c.data = ml_collections.ConfigDict()
  c.data.source = 'authors'   # authors (generated here) | tofu (local files)
  c.data.data_dir = ''
  c.data.num_authors = 20
  c.data.qa_per_author = 20
  c.data.forget_pct = 5       # 1 | 5 | 10 (20 authors, 5%: 2 forget authors)
  # Forget sets studied (generated authors only): set k forgets the k-th block of forget_pct
  # authors from the end of the fine-tuning authors. The original is fine-tuned once, a
  # retrain model per set; rows carry 'forget_set' and the table is mean ± std over them.
  c.data.forget_sets = 1
  c.data.seed = 0
  # Prompt: a str.format template with {question}, or 'chat' for the checkpoint's chat
  # template (config.data.chat_template overrides which one).
  c.data.template = 'Q: {question}\nA: '
  # The day a chat template's date line shows (Llama-3.x: "Today Date: ..."), fixed so a
  # prompt does not change with the calendar; open-unlearning's model configs fix this one.
  # '' = today, as transformers renders it.
  c.data.chat_date = '10 Apr 2025'
  # A system turn for chat prompts ('' = none: the template's own default, if it has one).
  c.data.chat_system = ''
  c.data.chat_template = ''   # '' = the checkpoint's own; else a name the chat module knows
  # World facts / real authors in the fine-tuning data: only for a model trained from
  # scratch, where they stand in for pre-training knowledge. A pretrained model keeps it
  # False (TOFU: utility comes from what the model already knows).
  c.data.train_utility_sets = True

  c.finetune = ml_collections.ConfigDict()
  # Batch 16 memorises per epoch much better than 32 (original forget ROUGE 0.99 after 24
  # epochs vs 0.88 with batch 32; 0.97 after 20) at ~1.6x the cost of an epoch.
  c.finetune.lr = 3e-3
  c.finetune.epochs = 20
  c.finetune.batch_size = 16   # effective batch: grad_accum micro-batches of batch_size/grad_accum
  c.finetune.grad_accum = 1
  c.finetune.warmup_fraction = 0.05
  c.finetune.weight_decay = 0.0
  c.finetune.grad_clip = 1.0
  # open-unlearning's recipe point by point (configs/tofu.py sets theirs and cites each):
  # 'cosine' (to a tenth of lr) | 'linear' (HF's decay to 0); drop_last=True drops each
  # epoch's last partial batch, False follows HF Trainer's micro-batch stream; decay_norms
  # False spares norm scales and biases from weight decay (HF); AdamW's beta2 (HF: 0.999).
  c.finetune.lr_schedule = 'cosine'
  c.finetune.drop_last = True
  c.finetune.decay_norms = True
  c.finetune.adam_b2 = 0.98
  c.finetune.log_every = 50
  c.finetune.checkpoint_every = 200

  c.unlearn = ml_collections.ConfigDict()
  c.unlearn.method = 'grogu_descent'  # mode=unlearn
  # Every method hyperparameter at the core's defaults (cure_jax/unlearning/hparams.py);
  # the LM's own values follow.
  c.unlearn.update(hparams.DEFAULTS)
  c.unlearn.optimizer = 'adamw'      # adamw | sgd (with config.unlearn.momentum)
  c.unlearn.lr = 5e-4               # chosen on validation data: docs/tuning.md
  c.unlearn.epochs = 5
  c.unlearn.batch_size = 16
  c.unlearn.grad_accum = 1
  # Forget classes at each answer token: 'answer_token' (the ground-truth next token) or
  # 'author_names' (the paper: the forget authors' name tokens, at every answer position).
  c.unlearn.forget_mask = 'answer_token'
  c.unlearn.warmup_fraction = 0.1
  c.unlearn.weight_decay = 0.0
  c.unlearn.temperature = 5.0        # GSR / GROGU (the core's default is 4)
  # open-unlearning's recipe point by point (configs/tofu.py sets theirs and cites each), here
  # at this loop's own choices: after the warm-up 'constant' | 'linear' (HF's decay to 0);
  # drop_last as in config.finetune; loss_mean 'sequence' (mean of per-sequence answer
  # means) | 'token' (HF's token mean per micro-batch) for gradient ascent's NLL and every
  # retain NLL; undial_positions 'answer' | 'all' (their UNDIAL: every position of the
  # micro-batch); decay_norms as in config.finetune; grad_clip: the gradient's global norm
  # cap (0: none; HF's max_grad_norm is 1).
  c.unlearn.lr_schedule = 'constant'
  c.unlearn.drop_last = True
  c.unlearn.loss_mean = 'sequence'
  c.unlearn.undial_positions = 'answer'
  c.unlearn.decay_norms = True
  c.unlearn.grad_clip = 0.0
  # RMU (rmu, rmu_descent): the decoder layer whose output is steered (open-unlearning's
  # module_regex model.layers.7) and the parameters that train, a regular expression over
  # paths such as 'layers_7/mlp/down_proj/kernel' ('' = the MLP down-projections of that
  # layer and the two below it, WMDP's choice; '.*' = all, open-unlearning's RMU.yaml).
  c.unlearn.rmu_layer = 7
  c.unlearn.rmu_params = ''
  # IdkDPO's refusals: a text file, one per line (open-unlearning's data/idk.jsonl layout);
  # '' = cure-jax's own set (cure_jax/data/refusals.py).
  c.unlearn.idk_path = ''
  c.unlearn.log_every = 10

  c.reproduce = ml_collections.ConfigDict()
  c.reproduce.runs = RUNS

  # Write each unlearned model (seed by seed) to WORKDIR/exports/<method>[-<variant>]-seed<s>
  # [-<dtype>]: 'hf' (a Hugging Face directory) or 'gguf' (a .gguf file); '' writes none. A
  # finished run asked for an export it lacks is unlearned again (deterministic) to write it. Needs a
  # pretrained checkpoint (its tokenizer and chat template go with the weights).
  c.export = ml_collections.ConfigDict()
  c.export.format = ''
  c.export.dtype = 'float32'   # float32 | bfloat16 | float16 (| q8_0 for gguf); in the name
  # A target that exists and was not written by cure-jax (no owner mark beside it) stops the
  # job at start-up; True replaces it.
  c.export.overwrite = False

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.retain_items = 20    # evenly spaced retain questions (TOFU evaluates 400)
  c.eval.utility_items = 0    # real-authors / world-facts items to evaluate (0: all)
  c.eval.num_samples = 4      # forget questions whose generations go to generations.json
  c.eval.max_new_tokens = 200  # greedy generation length (stops at EOS; capped by max_len)
  c.eval.num_perturbed = 0    # perturbed answers per item in truth ratios (0: all of them)
  # A retain model's TOFU_EVAL.json as open-unlearning writes it (their retain_logs_path,
  # e.g. a published tofu_<model>_retain90's): forget quality and privleak of every row are
  # computed against its forget truth ratios and min-k% AUC instead of the retrain model's
  # (which is still trained and evaluated). '' = against the retrain model.
  c.eval.retain_logs = ''

  if arg == 'smoke':
    c.seeds = 1
    c.model.num_layers = 1
    c.model.d_model = 32
    c.model.num_heads = 2
    c.model.num_kv_heads = 1
    c.model.d_ff = 64
    c.data.num_authors = 9
    c.data.qa_per_author = 4
    c.data.forget_pct = 1     # 1 forget author, 4 retain authors
    c.finetune.epochs = 2
    c.finetune.batch_size = 8
    c.finetune.log_every = 5
    c.unlearn.epochs = 1
    c.unlearn.batch_size = 4
    c.unlearn.warmup_fraction = 0.0   # one step: with a warm-up its learning rate would be 0
    c.unlearn.log_every = 1
    c.eval.batch_size = 32
    c.eval.retain_items = 6
    c.eval.utility_items = 6
    c.eval.num_samples = 2
    c.reproduce.runs = ('gradasc', 'npo_descent', 'grogu_descent:T=5,w=10')
  elif arg not in (None, ''):
    raise ValueError(f'Unknown authors config variant {arg!r}; use "" or "smoke".')
  return c
