"""The peers' class-unlearning methods as their code runs them: SalUn and SCRUB.

Each is a direction (``StepInputs -> (value, direction)``) or, where the peer's code runs
passes over the forget and retain sets, a schedule of :class:`~cure_jax.unlearning.schedule.
Phase` passes (:data:`SCRUB_PASSES`, :data:`SALUN_PASSES`), plus, where the method computes
something once per run, a ``prepare(apply, params, forget_batch, rng, hp) -> aux``.
Their optimizer (SGD with momentum 0.9) is the registry entries' ``defaults``
(:mod:`cure_jax.unlearning.methods`); BatchNorm stays frozen here, as for every method.
"""
import jax
import jax.numpy as jnp

from cure_jax.unlearning import losses, objectives
from cure_jax.unlearning.baselines import saliency
from cure_jax.unlearning.directions import loss_direction
from cure_jax.unlearning.schedule import FORGET, RETAIN, Phase


def _decayed(value, g, params, wd):
  """SGD weight decay as torch's ``weight_decay`` adds it: ``g + wd · θ``."""
  return value, jax.tree.map(lambda gi, p: (gi + wd * p).astype(gi.dtype), g, params)


# ---- SalUn ----------------------------------------------------------------------------------

def salun_prepare(apply, params, forget, rng, hp):
  """SalUn's saliency mask over the whole forget set (:mod:`cure_jax.unlearning.baselines.saliency`)."""
  return saliency.saliency_mask(apply, params, forget.inputs, forget.label, hp.salun_fraction)


def _salun_masked(base):
  """``base``'s direction plus SalUn's SGD weight decay ``salun_weight_decay · θ``, both
  multiplied by the saliency mask from ``prepare`` (``aux``). Masking the *final*
  direction makes a frozen weight's direction exactly 0, so momentum never moves it either:
  frozen weights stay bit-identical, which the official code (``unlearn/RL.py``
  ``_restore_masked_params``) reaches by restoring them after each step."""
  def direction(inputs):
    value, g = base(inputs)
    wd = inputs.hp.salun_weight_decay
    return value, jax.tree.map(lambda gi, p, m: jnp.where(m, gi + wd * p, 0.0).astype(gi.dtype),
                               g, inputs.params, inputs.aux)
  return direction


def salun_direction(with_retain):
  """SalUn (Fan et al., ICLR 2024; OPTML-Group/Unlearn-Saliency
  ``Classification/unlearn/RL.py``): RandLabel's gradient (labels uniform outside the forget
  classes, as our ``randlabel``; the official code draws from all classes), masked with
  weight decay (:func:`_salun_masked`, top ``salun_fraction`` of |∇ CE_forget|). The runner's
  optimizer must add no weight decay of its own. ``with_retain`` adds ``retain_weight`` ·
  retain CE in the same step (one joint step; ``salun_descent`` runs passes instead).

  ``salun`` (this direction on forget data only, one step per forget batch) has no
  counterpart in the official code, whose RL always trains on retain data too: it is our
  forget-data-only variant.
  """
  return _salun_masked(loss_direction(objectives.randlabel, with_retain))


# ``salun_descent``: RL.py's CIFAR-10/SVHN branch, every epoch a pass over the forget set with
# random labels, then a pass over the retain set with their labels, the mask on both
# (momentum 0.9, weight decay 5e-4: unlearn/impl.py ``_iterative_unlearn_impl``'s SGD). Its
# CIFAR-100/TinyImageNet branch shuffles both sets into one loader instead. The official
# retain pass is plain CE; ours is ``retain_weight`` · CE (1 by default).
SALUN_PASSES = (Phase(FORGET, _salun_masked(loss_direction(objectives.randlabel, False))),
                Phase(RETAIN, _salun_masked(loss_direction(None, True))))


# ---- SCRUB ----------------------------------------------------------------------------------

def scrub_prepare(apply, params, forget, rng, hp):
  """SCRUB's teacher is the model the run starts from (the original)."""
  return {'teacher': params}


def scrub_max(inputs):
  """SCRUB's max step (meghdadk/SCRUB ``thirdparty/repdistiller/helper/loops.py``
  ``train_distill``, ``split='maximize'``): ``−KL_T(teacher ‖ student)`` on the forget
  batch (raising the divergence), ``KL_T`` being ``DistillKL``'s ``T² · KL`` of the
  temperature-softened distributions; plus ``scrub_weight_decay · θ``."""
  hp, f = inputs.hp, inputs.forget

  def loss(params):
    kl = losses.distill_kl(inputs.apply(params, f.inputs), f.teacher_logits,
                           hp.scrub_temperature)
    return -jnp.mean(kl)
  return _decayed(*jax.value_and_grad(loss)(inputs.params), inputs.params,
                  hp.scrub_weight_decay)


def scrub_min(inputs):
  """SCRUB's min step (``train_distill``, ``split='minimize'``): ``γ·CE + α·KL_T(teacher ‖
  student)`` on the retain batch (``β`` = 0: no other distillation term), the teacher being
  ``aux['teacher']``; plus ``scrub_weight_decay · θ``."""
  hp, r = inputs.hp, inputs.retain

  def loss(params):
    logits = inputs.apply(params, r.inputs)
    teacher = jax.lax.stop_gradient(inputs.apply(inputs.aux['teacher'], r.inputs))
    kl = losses.distill_kl(logits, teacher, hp.scrub_temperature)
    return jnp.mean(hp.scrub_gamma * losses.cross_entropy(logits, r.label) + hp.scrub_alpha * kl)
  return _decayed(*jax.value_and_grad(loss)(inputs.params), inputs.params,
                  hp.scrub_weight_decay)


# SCRUB (Kurmanji et al., NeurIPS 2023) as meghdadk/SCRUB ``large_scale_unlearning.ipynb``
# (CIFAR) runs it: for epoch in 1..sgda_epochs (3), a max pass over the forget loader while
# epoch <= msteps (2), then a min pass over the retain loader; one SGD (momentum 0.9,
# weight decay 5e-4, lr 5e-4, no decay within 3 epochs), kd_T 4, gamma 0.99, alpha 0.001,
# beta 0. Their forget batches hold 512 examples and their retain batches 256: the registry
# fixes both by the name (methods.batch_sizes caps each at its set), so a max pass takes
# ceil(n/512) steps as theirs does, whatever the run's batch_size.
SCRUB_PASSES = (Phase(FORGET, scrub_max, first_epochs='scrub_max_epochs'),
                Phase(RETAIN, scrub_min))
