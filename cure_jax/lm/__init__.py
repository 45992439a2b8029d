"""LLM concept unlearning (TOFU protocol): the LM task: fine-tuning, unlearning loop, evaluation.

Entry point: :func:`cure_jax.infra.entry.run` with ``config.task == 'lm'``, configured by
:func:`cure_jax.lm.config.get_config`: ``configs/authors.py`` (a byte-level LM from scratch),
``configs/authors_smollm2.py`` (the pretrained SmolLM2-135M-Instruct) and ``configs/tofu.py``
(real TOFU files on any checkpoint :mod:`cure_jax.lm.pretrained` loads).
"""
