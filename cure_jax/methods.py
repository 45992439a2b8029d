"""The unlearning methods: one registry entry each, all driven by the same jitted step.

A method is an update *direction* computed from a :class:`StepInputs` (the model's pure
``apply``, the current parameters, a forget batch with the frozen teacher's logits, an
optional retain batch, a PRNG key, the hyperparameters, the 0-based step index and the
method's ``aux``). The runner hands the direction to the optimizer. A method with a
``prepare`` gets it called once per run, before the first step, on the whole forget set:
``prepare(apply, params, forget_batch, rng, hp) -> aux`` (SalUn's saliency mask, SCRUB's
frozen teacher), and ``aux`` comes back in every step's inputs. Per-example forget losses
work on logits only, so the same code serves every model.
"""
import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from cure_jax import grogu, losses, parallel, saliency

# Numeric hyperparameters the runner passes as traced float32 scalars, so another learning
# rate, temperature or SalUn fraction reuses the compiled program. Every name is a key of
# ``config.unlearn`` (cure_jax/config_defaults.py documents each).
DYNAMIC_HPARAMS = ('lr', 'temperature', 'w_h', 'w_s', 'eps', 'undial_strength', 'retain_weight',
                   'lur_alpha', 'lur_w_r', 'lur_w_f', 'salun_fraction', 'salun_weight_decay',
                   'scrub_alpha', 'scrub_gamma', 'scrub_temperature', 'scrub_max_steps')


@dataclasses.dataclass(frozen=True)
class Batch:
  """A forget or retain batch; ``teacher_logits`` come from the frozen original model."""
  image: jax.Array
  label: jax.Array
  teacher_logits: Optional[jax.Array] = None
  forget_mask: Optional[jax.Array] = None   # bool, broadcastable to the logits
  target: Optional[jax.Array] = None        # AGE's fixed target labels


jax.tree_util.register_dataclass(
    Batch, data_fields=['image', 'label', 'teacher_logits', 'forget_mask', 'target'],
    meta_fields=[])


@dataclasses.dataclass(frozen=True)
class StepInputs:
  apply: Callable       # (params, images) -> logits, BatchNorm frozen
  params: Any
  forget: Batch
  retain: Optional[Batch]
  rng: jax.Array
  hp: Any               # the method's hyperparameters (attribute access)
  mesh: Any = None      # the device mesh the step runs on, if any
  step: Any = 0         # int32 scalar: 0-based index of this unlearning step
  aux: Any = None       # what the method's ``prepare`` returned for this run, if any


# ---- per-example forget losses on logits: (logits, batch, rng, hp) -> [B] ----------------

def _gradasc(logits, b, rng, hp):
  return -losses.cross_entropy(logits, b.label)


def _randlabel(logits, b, rng, hp):
  labels = losses.random_non_forget_labels(rng, b.forget_mask[0], b.label.shape)
  return losses.cross_entropy(logits, labels)


def _age(logits, b, rng, hp):
  return losses.cross_entropy(logits, b.target)


def _undial(logits, b, rng, hp):
  return losses.undial(logits, b.teacher_logits, b.forget_mask, hp.undial_strength)


def _ghr(logits, b, rng, hp):
  return losses.ghr(logits, b.teacher_logits, b.forget_mask)


def _gsr(logits, b, rng, hp):
  return losses.gsr(logits, b.teacher_logits, b.forget_mask, hp.temperature)


def retain_loss(inputs, params):
  return jnp.mean(losses.cross_entropy(inputs.apply(params, inputs.retain.image),
                                       inputs.retain.label))


# ---- directions ---------------------------------------------------------------------------

def loss_direction(forget_loss, with_retain):
  """∇ of ``mean forget_loss`` (+ λ · retain CE for the Descent variants)."""
  def direction(inputs):
    def total(params):
      loss = 0.0
      if forget_loss is not None:
        logits = inputs.apply(params, inputs.forget.image)
        loss = jnp.mean(forget_loss(logits, inputs.forget, inputs.rng, inputs.hp))
      if with_retain:
        loss = loss + inputs.hp.retain_weight * retain_loss(inputs, params)
      return loss
    return jax.value_and_grad(total)(inputs.params)
  return direction


def _per_example(loss):
  """``[B]`` per-example losses: a per-token loss (``BxT`` from ``BxTxV`` logits, the
  public step's per-token rule) is averaged over its positions, so GROGU's projections act
  on whole sequences (as the LM runner's sequence means do)."""
  return loss if loss.ndim == 1 else jnp.mean(loss.reshape(loss.shape[0], -1), axis=1)


def _grogu_vmap(inputs):
  forget = inputs.forget
  if inputs.mesh is not None and inputs.mesh.devices.size > 1:
    # XLA's SPMD partitioner gets vmapped per-example convolution gradients wrong on a
    # batch-sharded input (seen with jax 0.10.2 on CPU host devices: even their mean differs
    # from the batch gradient). The reference path therefore works on a replicated batch.
    forget = jax.lax.with_sharding_constraint(forget, parallel.replicated(inputs.mesh))

  def one_example_loss(loss_fn):
    def per_example(params, ex):
      logits = inputs.apply(params, ex.image[None])
      ex1 = jax.tree.map(lambda x: x[None], ex)
      return _per_example(loss_fn(logits, ex1, inputs.rng, inputs.hp))[0]
    return per_example

  direction = grogu.grogu_direction(
      one_example_loss(_ghr), one_example_loss(_gsr), inputs.params, forget,
      eps=inputs.hp.eps, w_h=inputs.hp.w_h, w_s=inputs.hp.w_s)
  value = jnp.mean(inputs.hp.w_h * _ghr(inputs.apply(inputs.params, inputs.forget.image),
                                        inputs.forget, inputs.rng, inputs.hp))
  return value, direction


def _grogu_fast(inputs):
  from cure_jax import grogu_fast
  b = inputs.forget
  direction, aux = grogu_fast.grogu_direction_fast(
      inputs.apply, inputs.params, b.image,
      lambda logits: _per_example(_ghr(logits, b, inputs.rng, inputs.hp)),
      lambda logits: _per_example(_gsr(logits, b, inputs.rng, inputs.hp)),
      eps=inputs.hp.eps, w_h=inputs.hp.w_h, w_s=inputs.hp.w_s)
  # The reported loss comes from the forward the fast path already ran.
  return jnp.mean(inputs.hp.w_h * aux['loss_h']), direction


def grogu_impl(inputs):
  """The implementation ``config.unlearn.grogu_impl`` asks for: 'fast' falls back to the
  vmap reference, with a logged notice, for a model the fast path does not support."""
  from cure_jax import grogu_fast
  impl = grogu_fast.resolve_grogu_impl(inputs.hp.grogu_impl, inputs.apply, inputs.params,
                                       inputs.forget.image)
  return _grogu_fast if impl == 'fast' else _grogu_vmap


def grogu_direction(with_retain):
  """GROGU's mean restricted orthogonal sum on the forget batch (+ λ ∇ retain CE)."""
  def direction(inputs):
    value, g = grogu_impl(inputs)(inputs)
    if with_retain:
      r_value, g_r = jax.value_and_grad(functools.partial(retain_loss, inputs))(inputs.params)
      g = jax.tree.map(lambda a, b: a + inputs.hp.retain_weight * b, g, g_r)
      value = value + inputs.hp.retain_weight * r_value
    return value, g
  return direction


def _conditional_projection(a, b):
  """``a − ⟨a,b⟩/‖b‖²·b`` only when the two conflict (⟨a,b⟩ < 0), else ``a``."""
  dot = grogu.tree_vdot(a, b)
  coef = jnp.where(dot < 0, dot / jnp.maximum(grogu.tree_vdot(b, b), 1e-30), 0.0)
  return jax.tree.map(lambda x, y: x - coef * y, a, b)


def gradrest_direction(inputs):
  """Ko et al. 2024: batch-level restricted gradient ``P(g_u,g_r) + λ P(g_r,g_u)``."""
  def unlearn_loss(params):
    logits = inputs.apply(params, inputs.forget.image)
    return jnp.mean(_gradasc(logits, inputs.forget, inputs.rng, inputs.hp))
  value_u, g_u = jax.value_and_grad(unlearn_loss)(inputs.params)
  value_r, g_r = jax.value_and_grad(functools.partial(retain_loss, inputs))(inputs.params)
  lam = inputs.hp.retain_weight
  g = jax.tree.map(lambda a, b: a + lam * b, _conditional_projection(g_u, g_r),
                   _conditional_projection(g_r, g_u))
  return value_u + lam * value_r, g


def lur_direction(forget_loss):
  """LUR (Patel & Qiu, ICCV 2025) as its known reimplementation: a MAML/MLDG look-ahead.

  ``θ̃ = θ − α∇L_r(θ)`` stays differentiable and the objective is
  ``w_r·L_r(θ) + w_f·L_u(θ̃)``: to first order it adds ``−α·w_f·⟨∇L_r, ∇L_u⟩``, rewarding
  retain and unlearning gradients that agree (SPEC §3). No official code is public; α, w_r,
  w_f are ``config.unlearn.lur_alpha / lur_w_r / lur_w_f``. ``lur``: ``L_u = −CE_f`` as
  SPEC §3 reads it; ``lur_randlabel``: ``L_u`` = RandLabel's CE (bounded).

  Why ``lur`` collapses on some seeds (digits, class 1; 4 original models × 2 runs, run i
  from original i mod 4; lr 0.003, 10 epochs, α 0.01; every variant on the same runs).
  The look-ahead is not the cause: ``lur`` and ``gradasc_descent`` give the same outcome
  run by run, and α = 0.3 diverged (non-finite) on 18 of 24 runs. The cause is ``−CE_f``:
  its logit gradient ``1 − p_u`` is ≈ 0 on a confident original, ≈ 1 once the class is
  gone, and never decays (the loss has no minimum), so whether and how hard the ascent "ignites"
  within the budget depends on the original: on one set of originals nothing was erased on
  8/8 runs (forget acc ≥ 0.96), on another 6/8 kept forget acc 1.0 and the 2 runs of one
  original erased it at retain 0.81 / 0.60; at lr 0.01, 5/8 diverged, 2 erased at retain
  0.20 / 0.11, 1 kept 0.89. No step size serves every original. With RandLabel's bounded CE
  as ``L_u`` every run erases the class (8/8, two sets of originals) at retain
  0.976 ± 0.009 and 0.969 ± 0.005, what the paper reports; α = 0 gives 0.973 ± 0.012, so
  on digits the gain comes from the bounded loss, not from the look-ahead.
  """
  def direction(inputs):
    hp = inputs.hp

    def objective(params):
      l_r, g_r = jax.value_and_grad(functools.partial(retain_loss, inputs))(params)
      lookahead = jax.tree.map(lambda p, g: p - hp.lur_alpha * g, params, g_r)
      logits = inputs.apply(lookahead, inputs.forget.image)
      l_f = jnp.mean(forget_loss(logits, inputs.forget, inputs.rng, hp))
      return hp.lur_w_r * l_r + hp.lur_w_f * l_f
    return jax.value_and_grad(objective)(inputs.params)
  return direction


def _delete(logits, b, rng, hp):
  """DELETE (Zhou et al., CVPR 2025; shaaaaron/DELETE ``method/delete.py``): KL to the
  teacher with the example's own label masked, T = 1, forget data only."""
  return losses.delete(logits, b.teacher_logits, b.label)


# ---- SalUn, SCRUB ---------------------------------------------------------------------------

def salun_prepare(apply, params, forget, rng, hp):
  """SalUn's saliency mask over the whole forget set (:mod:`cure_jax.saliency`)."""
  return saliency.saliency_mask(apply, params, forget.image, forget.label, hp.salun_fraction)


def salun_direction(with_retain):
  """SalUn (Fan et al., ICLR 2024; OPTML-Group/Unlearn-Saliency ``unlearn/RL.py``).

  RandLabel's gradient (labels uniform outside the forget classes, as our ``randlabel``;
  the official code draws from all classes) plus SalUn's SGD weight decay
  ``salun_weight_decay · θ``, both multiplied by the saliency mask from ``prepare``
  (``aux``, top ``salun_fraction`` of |∇ CE_forget|). Masking the *final* direction makes
  a frozen weight's direction exactly 0, so momentum never moves it either: frozen weights
  stay bit-identical, which the official code only reaches by restoring them after each
  step (``_restore_masked_params``) and its first version not at all (weight decay and
  momentum still moved them). The runner's optimizer must add no weight decay of its own.
  ``salun_descent`` adds ``retain_weight`` · retain CE before masking, like the official
  CIFAR-10 recipe's retain pass.
  """
  base = loss_direction(_randlabel, with_retain)

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
  RepDistiller's ``DistillKL`` (``T² · KL`` of the temperature-softened distributions).
  The official loop runs, per epoch, one max pass over the forget set (first ``msteps``
  epochs only) and one min pass over the retain set; here every step draws one forget and
  one retain batch, so the two alternate per step (:func:`scrub_is_max_step`):
  ``scrub_max_steps`` max steps interleaved with min steps, then min steps only.
  Defaults follow the SCRUB notebooks' CIFAR settings: ``scrub_gamma`` 0.99,
  ``scrub_alpha`` 0.001, ``scrub_temperature`` 4; the teacher is ``aux['teacher']``.
  """
  hp, f, r = inputs.hp, inputs.forget, inputs.retain

  def max_loss(params):
    kl = losses.distill_kl(inputs.apply(params, f.image), f.teacher_logits,
                           hp.scrub_temperature)
    return -jnp.mean(kl)

  def min_loss(params):
    logits = inputs.apply(params, r.image)
    teacher = jax.lax.stop_gradient(inputs.apply(inputs.aux['teacher'], r.image))
    kl = losses.distill_kl(logits, teacher, hp.scrub_temperature)
    return jnp.mean(hp.scrub_gamma * losses.cross_entropy(logits, r.label) + hp.scrub_alpha * kl)

  return jax.lax.cond(scrub_is_max_step(inputs.step, hp),
                      lambda p: jax.value_and_grad(max_loss)(p),
                      lambda p: jax.value_and_grad(min_loss)(p), inputs.params)


@dataclasses.dataclass(frozen=True)
class Method:
  direction: Callable[[StepInputs], Any]   # -> (loss value, direction pytree)
  uses_forget: bool = True
  uses_retain: bool = False
  needs_teacher: bool = False
  needs_target: bool = False                # AGE's target classes
  defaults: tuple = ()                      # hyperparameters fixed by the method's name
  prepare: Optional[Callable] = None        # (apply, params, forget, rng, hp) -> aux, once
  # The results table the method belongs to: 'forget' (forget data only) or 'retain' (with
  # retain data); None = 'retain' exactly when it trains on retain data.
  setting: Optional[str] = None

  def __post_init__(self):
    if self.setting is None:
      object.__setattr__(self, 'setting', 'retain' if self.uses_retain else 'forget')


def _forget_method(loss, with_retain=False, **kwargs):
  return Method(loss_direction(loss, with_retain), uses_retain=with_retain, **kwargs)


REGISTRY = {
    # forget data only
    'gradasc': _forget_method(_gradasc),
    'randlabel': _forget_method(_randlabel),
    # The paper lists Finetune with the forget-data-only methods (it sees no forget data).
    'finetune': Method(loss_direction(None, True), uses_forget=False, uses_retain=True,
                       setting='forget'),
    'age': _forget_method(_age, needs_target=True),
    'undial': _forget_method(_undial, needs_teacher=True),
    'ghr': _forget_method(_ghr, needs_teacher=True),
    'gsr': _forget_method(_gsr, needs_teacher=True),
    'grogu': Method(grogu_direction(False), needs_teacher=True),
    'grogu_t1': Method(grogu_direction(False), needs_teacher=True,
                       defaults=(('temperature', 1.0),)),
    'salun': Method(salun_direction(False), prepare=salun_prepare),
    'delete': _forget_method(_delete, needs_teacher=True),
    # with retain data
    'gradasc_descent': _forget_method(_gradasc, True),
    'gradrest_descent': Method(gradrest_direction, uses_retain=True),
    'age_descent': _forget_method(_age, True, needs_target=True),
    'undial_descent': _forget_method(_undial, True, needs_teacher=True),
    'ghr_descent': _forget_method(_ghr, True, needs_teacher=True),
    'gsr_descent': _forget_method(_gsr, True, needs_teacher=True),
    'grogu_descent': Method(grogu_direction(True), uses_retain=True, needs_teacher=True),
    'grogu_t1_descent': Method(grogu_direction(True), uses_retain=True, needs_teacher=True,
                               defaults=(('temperature', 1.0),)),
    'salun_descent': Method(salun_direction(True), uses_retain=True, prepare=salun_prepare),
    'scrub': Method(scrub_direction, uses_retain=True, needs_teacher=True,
                    prepare=scrub_prepare),
    'lur': Method(lur_direction(_gradasc), uses_retain=True),
    'lur_randlabel': Method(lur_direction(_randlabel), uses_retain=True),
}


def get(name):
  if name not in REGISTRY:
    raise ValueError(f'Unknown unlearning method {name!r}; choose one of {sorted(REGISTRY)} '
                     '(config.unlearn.method).')
  return REGISTRY[name]
