r"""LLM concept unlearning on fictitious authors (TOFU protocol) with a small byte-level LM.

Command (fine-tune original + retrain, every method x 2 seeds):
  python -m experiments.main --config=configs/authors.py --config.mode=reproduce --workdir=DIR
Runtime: about 6 min on a 2-core CPU; a second run reuses the checkpoints in DIR/models.
Results: DIR/results.md and DIR/results.json (Table 2's layout), sample answers in
DIR/generations.json.

This byte-level model is trained from scratch, so it knows no world facts:
``config.data.train_utility_sets=True`` (the default here, and only here) puts the real-authors
and world-facts QA into both fine-tuning sets to stand in for pre-training. With a pretrained
model (``configs/authors_smollm2.py``, ``configs/tofu.py``) they are never trained on.

Other modes: train_original, train_retrain (one model), unlearn (config.unlearn.method, e.g.
--config.unlearn.method=npo). Real TOFU: --config.data.source=tofu --config.data.data_dir=PATH
(a local copy of locuslab/TOFU; it needs a pretrained model and tokenizer to be meaningful).

Smoke variant for tests (tiny model and data, seconds):
  python -m experiments.main --config=configs/authors.py:smoke --workdir=/tmp/lm_smoke

Tuning history and run logs: docs/tuning.md.
"""
from cure_jax.lm import defaults as lm_config


def get_config(arg=None):
  """The embedded default (``arg=None``) or the ``'smoke'`` test variant."""
  return lm_config.get_config(arg)
