"""The one method registry: image-classification and LM unlearning methods alike.

A method is an update *direction* computed from a
:class:`~cure_jax.unlearning.batch.StepInputs` (the model's pure ``apply``, the current
parameters, a forget batch with the frozen teacher's logits, an optional retain batch, a
PRNG key, the hyperparameters, the 0-based step index and the method's ``aux``); the step
builder (:mod:`cure_jax.unlearning.step`) hands it to the optimizer. A method with a
``prepare`` gets it called once per run, before the first step, on the whole forget set
(SalUn's saliency mask, SCRUB's frozen teacher); what it returns comes back as ``aux``.
Losses work on logits in the batch's view, so one entry serves a ResNet and a causal LM.

A method with a ``schedule`` (SCRUB, SalUn with retain data) runs its peer's per-epoch
passes over the forget set and the retain subset instead of one step per forget batch
(:mod:`cure_jax.unlearning.schedule`); its ``epochs`` are the peer's epochs.

Names: ``<method>`` uses forget data only; ``<method>_descent`` adds ``retain_weight`` ×
the retain NLL (what LM papers call GradDiff is ``gradasc_descent``; NPO, SimNPO, UNDIAL,
GHR, GSR and GROGU "with a retain term" are their ``_descent`` entries; open-unlearning's
WGA and SatImp, ``γ`` · forget + ``α`` · retain, are ``wga_descent`` / ``satimp_descent`` with
``γ`` = ``wga_gamma`` / ``satimp_gamma`` inside the forget loss and ``α`` = ``retain_weight``;
RMU's retain term holds the represented layer's activations instead of the NLL).

DPO, IdkDPO and RMU read what only the LM loop supplies (preferred answers, a layer's
activations: :attr:`Method.lm_only`); the classification runs and the public step refuse them.
"""
import dataclasses
from typing import Any, Callable, Optional

from cure_jax.infra import rules
from cure_jax.unlearning import directions, objectives, schedule as schedule_lib
from cure_jax.unlearning.baselines import peers, preference, rmu
from cure_jax.unlearning.batch import StepInputs


@dataclasses.dataclass(frozen=True)
class Method:
  direction: Callable[[StepInputs], Any]   # -> (loss value, direction pytree)
  uses_forget: bool = True
  uses_retain: bool = False
  needs_teacher: bool = False
  needs_target: bool = False                # AGE's target classes
  # Draws or targets whole classes, or reads class labels: a classifier's method only.
  classifier_only: bool = False
  # Hyperparameters fixed by the method's name; a scheduled method may also fix its passes'
  # batch sizes here ('forget_batch', 'retain_batch': see batch_sizes), as its peer's code does.
  defaults: tuple = ()
  prepare: Optional[Callable] = None        # (apply, params, forget, rng, hp) -> aux, once
  own_hparams: tuple = ()                   # the method's own hyperparameters (run labels)
  # The results table the method belongs to: 'forget' (forget data only) or 'retain' (with
  # retain data); None = 'retain' exactly when it trains on retain data.
  setting: Optional[str] = None
  # Per-epoch passes (schedule.Phase, in order); () = one step per forget batch.
  schedule: tuple = ()
  # What only the LM loop supplies: preferred answers to the forget questions ('idk': a
  # refusal, 'perturbed': one of the item's perturbed answers; StepInputs.alternate) or a
  # layer's activations (StepInputs.represent). Such a method runs on an LM only.
  alternate: Optional[str] = None
  represents: bool = False

  @property
  def lm_only(self):
    return self.alternate is not None or self.represents

  def __post_init__(self):
    if self.setting is None:
      object.__setattr__(self, 'setting', 'retain' if self.uses_retain else 'forget')
    if self.schedule:
      schedule_lib.check(self.schedule)


def _loss_method(loss, with_retain=False, **kwargs):
  return Method(directions.loss_direction(loss, with_retain), uses_retain=with_retain, **kwargs)


def _scheduled(phases, **kwargs):
  """A method that runs ``phases`` every epoch; it reads the data its passes cover."""
  return Method(schedule_lib.phased(phases), schedule=phases,
                uses_forget=any(p.data == schedule_lib.FORGET for p in phases),
                uses_retain=any(p.data == schedule_lib.RETAIN for p in phases), **kwargs)


def _pair(name, loss, **kwargs):
  """``name`` (forget data only) and ``name_descent`` (with the retain term)."""
  return {name: _loss_method(loss, **kwargs),
          f'{name}_descent': _loss_method(loss, True, **kwargs)}


def _direction_pair(name, make_direction, **kwargs):
  """Like :func:`_pair` for a method with its own direction ``make_direction(with_retain)``."""
  return {name: Method(make_direction(False), **kwargs),
          f'{name}_descent': Method(make_direction(True), uses_retain=True, **kwargs)}


_GROGU = ('temperature', 'w_h', 'w_s')
_T1 = (('temperature', 1.0),)
_SALUN = ('salun_fraction', 'salun_weight_decay')
_LUR = ('lur_alpha', 'lur_w_r', 'lur_w_f')
_SIMNPO = ('simnpo_beta', 'simnpo_delta', 'simnpo_gamma')
_WGA = ('wga_beta', 'wga_gamma')
_SATIMP = ('satimp_beta1', 'satimp_beta2', 'satimp_gamma')
_SCRUB = ('scrub_alpha', 'scrub_gamma', 'scrub_temperature', 'scrub_max_epochs',
          'scrub_weight_decay')
# The peers' SGD: SCRUB's notebooks (sgda_momentum), SalUn's unlearn/impl.py and DELETE's
# method/delete.py all use momentum 0.9; fixed by the name, as their code fixes it.
_PEER_SGD = (('momentum', 0.9),)
# SCRUB's loaders (large_scale_unlearning.ipynb): forget batches of 512, retain batches of 256.
_SCRUB_LOADERS = (('forget_batch', 512), ('retain_batch', 256))

REGISTRY = {
    **_pair('gradasc', objectives.gradasc),
    **_pair('randlabel', objectives.randlabel, classifier_only=True),
    # The paper lists Finetune with the forget-data-only methods (it sees no forget data).
    'finetune': Method(directions.loss_direction(None, True), uses_forget=False,
                       uses_retain=True, setting='forget'),
    **_pair('age', objectives.age, needs_target=True, classifier_only=True),
    **_pair('undial', objectives.undial, needs_teacher=True, own_hparams=('undial_strength',)),
    **_pair('ghr', objectives.ghr, needs_teacher=True),
    **_pair('gsr', objectives.gsr, needs_teacher=True, own_hparams=('temperature',)),
    **_pair('delete', objectives.delete, needs_teacher=True, defaults=_PEER_SGD),
    **_pair('npo', objectives.npo, needs_teacher=True, own_hparams=('npo_beta',)),
    **_pair('simnpo', objectives.simnpo, own_hparams=_SIMNPO),
    # open-unlearning's WGA, SatImp and CE-U (their WGA and SatImp load a reference model
    # that their losses never read: no teacher here).
    **_pair('wga', objectives.wga, own_hparams=_WGA),
    **_pair('satimp', objectives.satimp, own_hparams=_SATIMP),
    **_pair('ceu', objectives.ceu, own_hparams=('ceu_ignore_first',)),
    # open-unlearning's DPO trainer: preferring a refusal (their IdkDPO experiment) or, here
    # also, one of the item's perturbed answers; and RMU (LM-only: see Method.alternate).
    **_direction_pair('dpo', preference.dpo_direction, needs_teacher=True,
                      alternate='perturbed', own_hparams=('dpo_beta',)),
    **_direction_pair('idkdpo', preference.dpo_direction, needs_teacher=True, alternate='idk',
                      own_hparams=('dpo_beta',)),
    **_direction_pair('rmu', rmu.rmu_direction, represents=True,
                      own_hparams=('rmu_steering',)),
    'grogu': Method(directions.grogu_direction(False), needs_teacher=True, own_hparams=_GROGU),
    'grogu_t1': Method(directions.grogu_direction(False), needs_teacher=True, defaults=_T1,
                       own_hparams=_GROGU),
    'grogu_descent': Method(directions.grogu_direction(True), uses_retain=True,
                            needs_teacher=True, own_hparams=_GROGU),
    'grogu_t1_descent': Method(directions.grogu_direction(True), uses_retain=True,
                               needs_teacher=True, defaults=_T1, own_hparams=_GROGU),
    'gradrest_descent': Method(directions.gradrest_direction, uses_retain=True),
    'salun': Method(peers.salun_direction(False), prepare=peers.salun_prepare,
                    classifier_only=True, own_hparams=_SALUN),
    'salun_descent': _scheduled(peers.SALUN_PASSES, prepare=peers.salun_prepare,
                                classifier_only=True, defaults=_PEER_SGD, own_hparams=_SALUN),
    'scrub': _scheduled(peers.SCRUB_PASSES, needs_teacher=True, prepare=peers.scrub_prepare,
                        classifier_only=True, defaults=_PEER_SGD + _SCRUB_LOADERS,
                        own_hparams=_SCRUB),
    'lur': Method(directions.lur_direction(objectives.gradasc), uses_retain=True,
                  own_hparams=_LUR),
    'lur_randlabel': Method(directions.lur_direction(objectives.randlabel), uses_retain=True,
                            classifier_only=True, own_hparams=_LUR),
}


def batch_sizes(method, batch_size, n_forget, n_retain):
  """``(forget, retain)`` batch sizes of a run of ``method`` on ``n_forget`` forget and
  ``n_retain`` retain examples: ``batch_size`` for both, except where the method's name fixes
  its passes' sizes (SCRUB's 512 and 256), each then capped at its set (a pass is at least
  one batch, and a batch never holds an example twice)."""
  b = int(batch_size)
  fixed = dict(method.defaults)
  return (min(int(fixed['forget_batch']), n_forget) if 'forget_batch' in fixed else b,
          min(int(fixed['retain_batch']), n_retain) if 'retain_batch' in fixed else b)


def no_op_note(name, temperature, num_classes, num_forget):
  """One line when the maths makes method ``name`` leave the model as it is, else None.

  GROGU with one retained class: GHR and GSR both target that class, so with T = 1 each
  example's two gradients coincide (with two classes in all they are parallel for any T:
  both logit gradients lie on the one zero-sum direction), and each projection removes the
  other entirely.
  """
  method = REGISTRY[name]
  if (method.own_hparams == _GROGU and not method.uses_retain
      and num_classes - num_forget == 1 and (float(temperature) == 1.0 or num_classes == 2)):
    return (f'{name}: with one retained class and T = {float(temperature):g} of {num_classes} '
            'the GHR and GSR gradients are parallel and project each other to zero, so the '
            'model does not change; use a *_descent variant or ghr'
            + (', or T != 1.' if num_classes > 2 else '.'))
  return None


def get(name, field='config.unlearn.method'):
  """The registry entry ``name``; an unknown name is one line naming ``field``."""
  if name not in REGISTRY:
    raise rules.ConfigError(f'{field}: Unknown unlearning method {name!r}; choose one of '
                            f'{sorted(REGISTRY)}.')
  return REGISTRY[name]


def for_task(name, lm, field='config.unlearn.method'):
  """The registry entry ``name`` for a run on an LM (``lm``) or a classifier: a method that
  reads what only the LM loop supplies is refused on a classifier, in one line."""
  method = get(name, field)
  if method.lm_only and not lm:
    raise rules.ConfigError(
        f"method {name!r} reads preferred answers or a layer's activations, which only the "
        'LM loop supplies: run it with an LM config (configs/authors.py, configs/tofu.py) or '
        'cure_jax.lm.unlearn.unlearn.')
  return method
