"""The peers' class-unlearning methods as their code runs them: SalUn and SCRUB.

Each is a direction (``StepInputs -> (value, direction)``) plus, where the method computes
something once per run, a ``prepare(apply, params, forget_batch, rng, hp) -> aux``.
"""
import jax
import jax.numpy as jnp

from cure_jax.unlearning import losses, objectives, saliency
from cure_jax.unlearning.directions import loss_direction


def salun_prepare(apply, params, forget, rng, hp):
  """SalUn's saliency mask over the whole forget set (:mod:`cure_jax.unlearning.saliency`)."""
  return saliency.saliency_mask(apply, params, forget.inputs, forget.label, hp.salun_fraction)


def salun_direction(with_retain):
  """SalUn (Fan et al., ICLR 2024; OPTML-Group/Unlearn-Saliency ``unlearn/RL.py``).

  RandLabel's gradient (labels uniform outside the forget classes, as our ``randlabel``;
  the official code draws from all classes) plus SalUn's SGD weight decay
  ``salun_weight_decay · θ``, both multiplied by the saliency mask from ``prepare``
  (``aux``, top ``salun_fraction`` of |∇ CE_forget|). Masking the *final* direction makes
  a frozen weight's direction exactly 0, so momentum never moves it either: frozen weights
  stay bit-identical, which the official code only reaches by restoring them after each
  step. The runner's optimizer must add no weight decay of its own. ``salun_descent`` adds
  ``retain_weight`` · retain CE before masking, like the official CIFAR-10 recipe's
  retain pass.
  """
  base = loss_direction(objectives.randlabel, with_retain)

  def direction(inputs):
    value, g = base(inputs)
    wd = inputs.hp.salun_weight_decay
    return value, jax.tree.map(lambda gi, p, m: jnp.where(m, gi + wd * p, 0.0).astype(gi.dtype),
                               g, inputs.params, inputs.aux)
  return direction


def scrub_prepare(apply, params, forget, rng, hp):
  """SCRUB's teacher is the model the run starts from (the original)."""
  return {'teacher': params}


def scrub_is_max_step(step, hp):
  """SCRUB's schedule in steps: a max step on even steps among the first
  ``2 · scrub_max_steps``, a min step everywhere else."""
  return (step % 2 == 0) & (step < 2 * hp.scrub_max_steps)


def scrub_direction(inputs):
  """SCRUB (Kurmanji et al., NeurIPS 2023; meghdadk/SCRUB ``helper/loops.py:train_distill``).

  Max step: ``−KL_T(teacher ‖ student)`` on the forget batch (raising the divergence).
  Min step: ``γ·CE + α·KL_T(teacher ‖ student)`` on the retain batch, ``KL_T`` being
  ``T² · KL`` of the temperature-softened distributions. Every step draws one forget and
  one retain batch, so the two alternate per step (:func:`scrub_is_max_step`):
  ``scrub_max_steps`` max steps interleaved with min steps, then min steps only.
  Defaults follow the SCRUB notebooks' CIFAR settings: ``scrub_gamma`` 0.99,
  ``scrub_alpha`` 0.001, ``scrub_temperature`` 4; the teacher is ``aux['teacher']``.
  """
  hp, f, r = inputs.hp, inputs.forget, inputs.retain

  def max_loss(params):
    kl = losses.distill_kl(inputs.apply(params, f.inputs), f.teacher_logits,
                           hp.scrub_temperature)
    return -jnp.mean(kl)

  def min_loss(params):
    logits = inputs.apply(params, r.inputs)
    teacher = jax.lax.stop_gradient(inputs.apply(inputs.aux['teacher'], r.inputs))
    kl = losses.distill_kl(logits, teacher, hp.scrub_temperature)
    return jnp.mean(hp.scrub_gamma * losses.cross_entropy(logits, r.label) + hp.scrub_alpha * kl)

  return jax.lax.cond(scrub_is_max_step(inputs.step, hp),
                      lambda p: jax.value_and_grad(max_loss)(p),
                      lambda p: jax.value_and_grad(min_loss)(p), inputs.params)
