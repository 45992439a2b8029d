"""The peers' baselines that need more than a per-example loss: SalUn and SCRUB
(``peers``, with SalUn's weight saliency in ``saliency``), DPO and its IdkDPO variant
(``preference``) and RMU (``rmu``). The paper's own baselines are objectives
(:mod:`cure_jax.unlearning.objectives`); the registry (:mod:`cure_jax.unlearning.methods`)
names them all.
"""
