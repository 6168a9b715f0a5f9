"""Reward registry for :class:`envs.MixupEnv`.

A reward is a function ``fn(inputs: RewardInputs)`` returning either

- one float: a **batch-level** reward, the same for every image of the batch, or
- a 1-D tensor or array of B floats: a **per-image** reward, in batch order.

Register one under a name with :func:`register_reward`, which also declares what the env must
compute for it (the clean saliency, the mixed-input gradient, the mixed batch's last-layer
inputs, a held-out gradient or loss, the EMA teacher) and whether it needs the step's outcome.
Select it by name in the config (``env.reward``), through ``gymnasium.make("rlmix/Mixup-v0",
reward=...)``, or as a ``module:function`` path to a function decorated with ``register_reward``
or a plain function of ``RewardInputs``. The env's Gymnasium reward is the mean over images; the
per-image vector is in ``info["reward_per_image"]`` and is what the RL-Mix agent learns from.

**Same-batch counterfactual.** A reward that depends only on the state and the mix (not on the
optimiser step's outcome) is also called on a counterfactual mix of the same batch, with the
same lam, partners and grid but a uniformly drawn top-k per image (what R-Mix would have done),
on the same weights (``env.counterfactual_every``). ``policy_gain`` is the mean of r(taken) -
r(counterfactual). Rewards registered with ``outcome=True`` (``loss_drop``, ``val_loss_drop``,
``test_acc_gain``) have no counterfactual: on a counterfactual mix the step's outcome fields of
:class:`RewardInputs` are None.

A reward that raises, returns something else (a string, a tensor of the wrong shape) or a NaN
stops the run with one error line naming it (:class:`rlmix.errors.RlmixError`).

Built-in rewards:

=====================  =========  ==========================================================
name                   kind       what it pays
=====================  =========  ==========================================================
``grad_cosine``        batch      the paper's: one cosine between the batch's concatenated
                                  8x8 pooled clean and mixed input-gradient maps
``grad_cosine_mean``   per image  each image's cosine between its clean and mixed maps
``val_grad_align``     per image  cosine of the mixed example's last-layer loss gradient with
                                  a held-out batch's (DeepAA's alignment, per image)
``val_grad_dot``       per image  the same dot product, unnormalised: lr / B times it is the
                                  first-order held-out loss drop the image's gradient causes
``ema_agreement``      per image  minus KL(mixed label || EMA teacher on the mixed image)
``teach``              per image  the classifier's soft-label CE on the mixed image minus the
                                  EMA teacher's: hard for the learner, recognisable for the
                                  teacher (TeachAugment's two-sided objective, per image)
``hardness``           per image  the classifier's soft-label CE on the mixed image alone
                                  (Adversarial AutoAugment's direction)
``loss_drop``          batch      previous step's training loss minus this step's (outcome)
``val_loss_drop``      batch      drop of the held-out loss (``data.val_size`` images
                                  carved from the training budget) across the step (outcome)
``test_acc_gain``      batch      test top-1 gain since the previous evaluation (outcome)
``probe_rank``         per image  a learnability probe with a known, context-dependent optimum
``none``               batch      always 0
=====================  =========  ==========================================================

Cost per step on top of the training step (resnet_tiny, batch 100, 2-core CPU, measured by
``benchmarks.bench_env``; see the README): ``grad_cosine*`` nothing for the taken mix (the mixed
gradient comes from the training backward); ``val_grad_*`` one eval-mode forward of a held-out
batch of ``trainer.batch_size`` images; ``ema_agreement`` and ``teach`` one EMA update and one
teacher forward of the mixed batch; ``hardness`` nothing (the training forward's logits). A
counterfactual adds one forward of the counterfactual mix (``val_grad_*``, ``hardness``;
``ema_agreement``, ``teach``: plus a teacher forward) or one forward and input-gradient backward
(``grad_cosine*``).

Example::

    from envs.rewards import register_reward

    @register_reward("small_topk")
    def small_topk(inputs):
        return 1.0 - inputs.q  # per image: prefers small top-k
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from envs.spaces import batch_ranks
from rlmix.errors import ConfigError, RlmixError
from rlmix.mixing import MixParams
from rlmix.probe import LastLayerGrad, MixedBatch, MixedRecord
from rlmix.registry import Registry
from rlmix.saliency import pool_saliency


@dataclass
class RewardInputs:
    """What a reward may look at after one step.

    Attributes:
        q: per-image top-k used for this step (B,), in [0, 1).
        loss: training loss on the mixed batch.
        action: per-image action indices (B,) long into ``topk_space(k)``, or None.
        k: size K of the top-k space.
        prev_loss: the previous step's training loss in this epoch, or None on its first step.
        obs_grid: side of the pooled maps compared by gradient rewards.
        clean_saliency: input saliency of the clean batch (B, H, W), when requested.
        mixed_saliency: RMS over channels of dLoss/dx_mix (B, H, W) from the training backward,
            when requested.
        logits: the clean batch's logits (B, N) from the saliency pass, when observed.
        val_loss: the held-out loss after this step, when requested (an outcome).
        prev_val_loss: the held-out loss before this step, when requested.
        test_metrics: test metrics when this step ended an evaluated epoch, else None (an
            outcome).
        prev_test_metrics: the previous evaluation's metrics, or None.
        mixed: the mixed batch's labels, logits, last-layer inputs (when a reward reads them)
            and per-example logit gradients (:class:`MixedBatch`), when requested.
        val_grad: the held-out batch's loss gradient on the last linear layer
            (:class:`LastLayerGrad`), before this step, when requested.
        teacher_probs: the EMA teacher's softmax (B, N) on the mixed batch, when requested.
        params: the batch's mixing parameters (lam, partners ``perm``, grid), the same for
            the taken and the counterfactual mix.
        counterfactual: True when these inputs describe the counterfactual mix.
    """

    q: torch.Tensor
    loss: float
    action: torch.Tensor | None = None
    k: int = 10
    prev_loss: float | None = None
    obs_grid: int = 8
    clean_saliency: torch.Tensor | None = None
    mixed_saliency: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    val_loss: float | None = None
    prev_val_loss: float | None = None
    test_metrics: dict[str, float] | None = None
    prev_test_metrics: dict[str, float] | None = None
    mixed: MixedBatch | None = None
    val_grad: LastLayerGrad | None = None
    teacher_probs: torch.Tensor | None = None
    params: MixParams | None = None
    counterfactual: bool = False


def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:80]


_ON_REQUEST = {
    "clean_saliency": "clean_saliency",
    "mixed_saliency": "mixed_saliency",
    "val_loss": "val_loss",
    "mixed": "mixed",
    "val_grad": "val_grad",
    "teacher_probs": "teacher",
}


def _unfilled_hint(inputs: RewardInputs, error: Exception) -> str:
    """What to declare when a reward read a field the env left None because it was not asked."""
    if not isinstance(error, (AttributeError, TypeError)) or "NoneType" not in str(error):
        return ""
    unfilled = [(f, flag) for f, flag in _ON_REQUEST.items() if getattr(inputs, f) is None]
    if not unfilled:
        return ""
    fields = ", ".join(f for f, _ in unfilled)
    flags = ", ".join(f"{flag}=True" for _, flag in unfilled)
    return (
        f" (the env fills only the inputs a reward asks for; None here: {fields}; decorate it "
        f"with envs.rewards.register_reward(name, ...) and one of {flags})"
    )


@dataclass(frozen=True)
class Reward:
    """A registered reward and the inputs it needs (see :func:`register_reward`)."""

    name: str
    fn: Callable[[RewardInputs], Any]
    clean_saliency: bool = False
    mixed_saliency: bool = False
    val_loss: bool = False
    mixed: bool = False
    logits: bool = False
    val_grad: bool = False
    teacher: bool = False
    outcome: bool = False
    # a plain module:function: it may read the mixed loss, so a counterfactual runs its pass
    plain: bool = False

    @property
    def reads_mix(self) -> bool:
        """Whether the reward reads the mixed batch's pass (its loss, gradient, last layer or
        teacher view), so a counterfactual must run that pass."""
        return self.mixed_saliency or self.mixed or self.logits or self.teacher or self.plain

    @property
    def held_out(self) -> bool:
        """Whether the reward reads the held-out split (``data.val_size``)."""
        return self.val_loss or self.val_grad

    @property
    def has_counterfactual(self) -> bool:
        """Whether the reward can be scored on a counterfactual mix (no outcome needed)."""
        return not self.outcome

    def __call__(self, inputs: RewardInputs) -> np.ndarray:
        """The per-image rewards (B,) float64; a batch-level reward is repeated B times.

        Raises:
            RlmixError: the function raised, or returned neither a real number nor B of them.
        """
        b = int(inputs.q.shape[0])
        try:
            value = self.fn(inputs)
        except RlmixError:
            raise
        except Exception as e:
            hint = (
                " on the counterfactual mix (a reward that needs the step's outcome must be "
                "registered with register_reward(..., outcome=True))"
                if inputs.counterfactual
                else _unfilled_hint(inputs, e)
            )
            raise RlmixError(f"reward '{self.name}' raised {type(e).__name__}: {e}{hint}") from e
        expected = f"a float or {b} floats (one per image, batch order)"
        if isinstance(value, (torch.Tensor, np.ndarray)):
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            if arr.ndim == 0:
                value = arr.item()
            elif arr.shape == (b,) and arr.dtype.kind in "biuf":
                return arr.astype(np.float64)
            else:
                raise RlmixError(
                    f"reward '{self.name}' must return {expected}, got {_describe(value)}"
                )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RlmixError(f"reward '{self.name}' must return {expected}, got {_describe(value)}")
        return np.full(b, float(value), dtype=np.float64)


@dataclass(frozen=True)
class RewardNeeds:
    """What a set of rewards reads, so that the env (and :class:`agents.LearnedMix`) computes
    just that for them (:meth:`of`).

    Attributes:
        clean_saliency, mixed_saliency, val_loss, val_grad, teacher: some reward reads that
            :class:`RewardInputs` field.
        record: what of the mixed batch's pass is recorded: ``"last_layer"`` (its logits and
            the last linear layer's inputs), ``"logits"``, or None.
        counterfactual: the rewards scored on the same-batch counterfactual (every reward that
            needs no outcome, but ``none``, which pays 0 whatever the mix).
    """

    clean_saliency: bool
    mixed_saliency: bool
    val_loss: bool
    val_grad: bool
    teacher: bool
    record: MixedRecord | None
    counterfactual: tuple[Reward, ...]

    @classmethod
    def of(cls, rewards: list[Reward]) -> RewardNeeds:
        record: MixedRecord | None = (
            "last_layer" if any(r.mixed for r in rewards)
            else "logits" if any(r.logits for r in rewards) else None
        )  # fmt: skip
        return cls(
            clean_saliency=any(r.clean_saliency for r in rewards),
            mixed_saliency=any(r.mixed_saliency for r in rewards),
            val_loss=any(r.val_loss for r in rewards),
            val_grad=any(r.val_grad for r in rewards),
            teacher=any(r.teacher for r in rewards),
            record=record,
            counterfactual=tuple(r for r in rewards if r.has_counterfactual and r.name != "none"),
        )

    @property
    def held_out(self) -> bool:
        """Whether some reward reads the held-out split."""
        return self.val_loss or self.val_grad

    @property
    def counterfactual_pass(self) -> bool:
        """Whether scoring the counterfactual needs a pass of its mix through the classifier."""
        return any(r.reads_mix for r in self.counterfactual)


REWARDS: Registry[Reward] = Registry("reward", hint=" or module:function")


def register_reward(
    name: str,
    *,
    clean_saliency: bool = False,
    mixed_saliency: bool = False,
    val_loss: bool = False,
    mixed: bool = False,
    logits: bool = False,
    val_grad: bool = False,
    teacher: bool = False,
    outcome: bool = False,
    override: bool = False,
) -> Callable[[Callable[[RewardInputs], Any]], Callable[[RewardInputs], Any]]:
    """Decorator registering ``fn`` as reward ``name``; flags say which inputs it reads.

    Args:
        clean_saliency, mixed_saliency, val_loss, mixed, val_grad, teacher: the
            :class:`RewardInputs` fields the env must fill (``clean_saliency``,
            ``mixed_saliency``, ``val_loss``/``prev_val_loss``, ``mixed``, ``val_grad``,
            ``teacher_probs``).
        logits: the reward reads ``mixed`` without the last layer's inputs (its labels, logits
            and logit gradients; ``features`` is None unless another reward needs them), so it
            works with a model that has no final linear layer.
        outcome: the reward needs the step's outcome (the loss after it, the held-out loss
            after it, a test evaluation), so it has no same-batch counterfactual.
        override: replace a reward registered under ``name`` (else a taken name raises
            ``ValueError``).
    """

    def wrap(fn: Callable[[RewardInputs], Any]) -> Callable[[RewardInputs], Any]:
        flags = dict(
            clean_saliency=clean_saliency,
            mixed_saliency=mixed_saliency,
            val_loss=val_loss,
            mixed=mixed,
            logits=logits,
            val_grad=val_grad,
            teacher=teacher,
            outcome=outcome,
        )
        reward = REWARDS.add(name, Reward(name, fn, **flags), override=override)
        fn.reward = reward  # type: ignore[attr-defined]
        return fn

    return wrap


def list_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return REWARDS.names()


def get_reward(name: str) -> Reward:
    """Look up a reward by registered name or ``module:function`` path.

    Raises:
        ValueError: an unknown name, or a ``module:function`` that cannot be imported (whatever
            its module raises), is missing or is not callable; the message names the reward.
    """
    if name in REWARDS:
        return REWARDS.get(name)
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import reward '{name}': {e}") from e
        except Exception as e:  # the module itself raised while it was imported
            text = str(e).strip().splitlines()
            raised = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
            raise ValueError(f"cannot import reward '{name}': importing raised {raised}") from e
        if not callable(fn):
            raise ValueError(f"reward '{name}' is not callable")
        reward = getattr(fn, "reward", None)
        return reward if isinstance(reward, Reward) else Reward(name, fn, plain=True)
    raise ValueError(REWARDS.unknown(name))


def reward_for(name: str, where: str) -> Reward:
    """:func:`get_reward`, with an unknown or unimportable reward as one
    :class:`rlmix.errors.ConfigError` prefixed by ``where`` (a config key or an option)."""
    try:
        return get_reward(name)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e


def _pooled_pair(inputs: RewardInputs) -> tuple[torch.Tensor, torch.Tensor]:
    if inputs.clean_saliency is None or inputs.mixed_saliency is None:
        raise ValueError("gradient rewards need clean_saliency and mixed_saliency")
    g = inputs.obs_grid
    clean = pool_saliency(inputs.clean_saliency.float(), g).flatten(1)
    mixed = pool_saliency(inputs.mixed_saliency.float(), g).flatten(1)
    return clean, mixed


@register_reward("grad_cosine", clean_saliency=True, mixed_saliency=True)
def grad_cosine(inputs: RewardInputs) -> float:
    """The paper's reward: one cosine between the batch's concatenated pooled gradient maps."""
    clean, mixed = _pooled_pair(inputs)
    return float(F.cosine_similarity(clean.flatten(), mixed.flatten(), dim=0))


@register_reward("grad_cosine_mean", clean_saliency=True, mixed_saliency=True)
def grad_cosine_mean(inputs: RewardInputs) -> torch.Tensor:
    """Per image: the cosine between the image's clean and mixed pooled maps (B,)."""
    clean, mixed = _pooled_pair(inputs)
    return F.cosine_similarity(clean, mixed, dim=1)


@register_reward("loss_drop", outcome=True)
def loss_drop(inputs: RewardInputs) -> float:
    """Training progress: previous step's loss minus this step's (0 on an epoch's first step)."""
    return 0.0 if inputs.prev_loss is None else inputs.prev_loss - inputs.loss


@register_reward("val_loss_drop", val_loss=True, outcome=True)
def val_loss_drop(inputs: RewardInputs) -> float:
    """Generalisation: the held-out loss before the step minus after it (batch-level).

    The held-out split (``data.val_size``) is carved from the training split, never the test
    split. The loss after a step is measured once (one forward of the held-out batch) and is the
    next step's "before" (the run's first step measures from the loss at the first reset); so
    the drop also includes the BatchNorm statistics the next saliency pass moves.
    """
    if inputs.val_loss is None:
        raise ValueError("val_loss_drop needs the held-out loss")
    return 0.0 if inputs.prev_val_loss is None else inputs.prev_val_loss - inputs.val_loss


@register_reward("test_acc_gain", outcome=True)
def test_acc_gain(inputs: RewardInputs) -> float:
    """Held-out top-1 gain (fraction) since the previous evaluation, paid at evaluated epoch ends."""
    if inputs.test_metrics is None:
        return 0.0
    prev = inputs.prev_test_metrics["top1"] if inputs.prev_test_metrics else 0.0
    return inputs.test_metrics["top1"] - prev


def probe_targets(pooled: torch.Tensor, k: int) -> torch.Tensor:
    """The ``probe_rank`` optimum (B,) long from pooled saliency maps (B, g, g): ``floor(K *
    rank / B)``, where ``rank`` is the image's position (0 = smallest) when the batch is sorted
    by its largest saliency cell (:func:`envs.spaces.batch_ranks`, as the slot observation's
    ``saliency_peak_rank``)."""
    rank = batch_ranks(pooled.flatten(1).amax(dim=1))
    return torch.div(rank * k, pooled.shape[0], rounding_mode="floor")


def last_layer_alignment(
    mixed: MixedBatch, val: LastLayerGrad
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the dot product of its last-layer loss gradient with ``val`` and the
    gradient's norm, in closed form (no per-example backward).

    Example i's gradient on the weight is ``d_i h_i^T`` and on the bias ``d_i`` (``d_i`` its
    logit gradient, ``h_i`` its features), so ``<g_i, G> = d_i^T G_w h_i + d_i^T G_b`` and
    ``|g_i| = |d_i| sqrt(|h_i|^2 + 1)``. Returns ``(dot (B,), norm (B,))`` in float64.
    """
    d, h = mixed.logit_grad.double(), mixed.features.double()
    dot = ((d @ val.weight.double()) * h).sum(1) + d @ val.bias.double()
    norm = d.norm(dim=1) * (h.square().sum(1) + 1.0).sqrt()
    return dot, norm


def _alignment(inputs: RewardInputs) -> tuple[torch.Tensor, torch.Tensor, float]:
    if inputs.mixed is None or inputs.val_grad is None:
        raise ValueError("val_grad_* rewards need the mixed batch's last layer and val_grad")
    dot, norm = last_layer_alignment(inputs.mixed, inputs.val_grad)
    g = inputs.val_grad
    val_norm = float(torch.cat([g.weight.flatten(), g.bias]).double().norm())
    return dot, norm, val_norm


@register_reward("val_grad_align", mixed=True, val_grad=True)
def val_grad_align(inputs: RewardInputs) -> torch.Tensor:
    """Per image: the cosine between the mixed example's loss gradient on the last linear layer
    and a held-out batch's mean loss gradient there (DeepAA's reward, per image, in closed
    form; positive when a step on the example lowers the held-out loss to first order).

    The held-out batch rotates over the ``data.val_size`` images held out of the training
    budget (``trainer.batch_size`` of them a step). An example with a zero gradient scores 0.
    """
    dot, norm, val_norm = _alignment(inputs)
    return dot / (norm * val_norm).clamp_min(1e-30)


@register_reward("val_grad_dot", mixed=True, val_grad=True)
def val_grad_dot(inputs: RewardInputs) -> torch.Tensor:
    """Per image: the unnormalised dot product of :func:`val_grad_align`; ``lr / B`` times it is
    the first-order drop of the held-out loss that the image's share of the step causes."""
    return _alignment(inputs)[0]


@register_reward("ema_agreement", logits=True, teacher=True)
def ema_agreement(inputs: RewardInputs) -> torch.Tensor:
    """Per image: ``-KL(y'_i || p_T(x'_i))``, how well the mixed label agrees with what an EMA
    teacher of the classifier (``env.ema_decay``) sees in the mixed image (0 = full agreement).

    A mix whose label fractions contradict its content (a salient region of one image hidden,
    its label weight kept) is label noise for the classifier; this reward prefers faithful mixes.
    """
    if inputs.mixed is None or inputs.teacher_probs is None:
        raise ValueError("ema_agreement needs the mixed labels and the teacher's probabilities")
    y = inputs.mixed.labels.double()
    log_t = inputs.teacher_probs.double().clamp_min(1e-12).log()
    log_y = y.clamp_min(1e-12).log()
    return -(y * (log_y - log_t)).sum(1)


def _soft_ce(labels: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Per example ``-sum_c y_c log p_c`` (B,) in float64."""
    return -(labels.double() * log_probs.double()).sum(1)


def _hardness(inputs: RewardInputs) -> torch.Tensor:
    if inputs.mixed is None:
        raise ValueError("hardness and teach need the mixed batch's labels and logits")
    return _soft_ce(inputs.mixed.labels, inputs.mixed.logits.double().log_softmax(dim=1))


@register_reward("hardness", logits=True)
def hardness(inputs: RewardInputs) -> torch.Tensor:
    """Per image: the classifier's soft-label cross-entropy ``CE(y'_i, f(x'_i))`` on its mixed
    image (train mode, the weights before the step): pays for mixes the learner finds hard
    (Adversarial AutoAugment's direction; unguarded, it favours label noise)."""
    return _hardness(inputs)


@register_reward("teach", logits=True, teacher=True)
def teach(inputs: RewardInputs) -> torch.Tensor:
    """Per image: ``CE(y'_i, f(x'_i)) - CE(y'_i, T(x'_i))``, the classifier's soft-label
    cross-entropy on the mixed image minus that of its EMA teacher ``T`` (``env.ema_decay``,
    eval mode): hard for the learner while recognisable for the teacher (TeachAugment's
    two-sided objective, per image). The teacher's term guards against the mixes that are hard
    because their label is wrong, which :func:`hardness` alone favours."""
    if inputs.teacher_probs is None:
        raise ValueError("teach needs the EMA teacher's probabilities")
    log_t = inputs.teacher_probs.double().clamp_min(1e-12).log()
    return _hardness(inputs) - _soft_ce(inputs.mixed.labels, log_t)


@register_reward("probe_rank", clean_saliency=True)
def probe_rank(inputs: RewardInputs) -> torch.Tensor:
    """A learnability probe: ``cos(2 pi (a_i - t_i) / K)`` per image, ``t_i`` its target.

    The target of an image is :func:`probe_targets`: ``floor(K * rank / B)`` of the rank of its
    pooled saliency peak in the batch, which the slot observation's ``saliency_peak_rank``
    shows, so the optimum is context-dependent. The targets split the batch evenly over the K
    actions and the cosines of all K offsets sum to 0, so every policy that ignores the
    observation scores 0 in expectation; the optimum scores 1, and a near miss still earns
    something (a dense signal). It says nothing about mix-up quality: use it to check that an
    agent learns. (Under torchrun, ranks are taken within each rank's shard.)
    """
    if inputs.clean_saliency is None or inputs.action is None:
        raise ValueError("probe_rank needs the clean saliency and the actions")
    pooled = pool_saliency(inputs.clean_saliency.float(), inputs.obs_grid).clamp_(0.0, 1.0)
    target = probe_targets(pooled, inputs.k)
    offset = inputs.action.to(target.device).double() - target.double()
    return torch.cos(2 * torch.pi * offset / inputs.k)


@register_reward("none")
def no_reward(inputs: RewardInputs) -> float:
    """Always 0: for fixed policies that should not pay for gradient rewards."""
    return 0.0


__all__ = [
    "REWARDS",
    "LastLayerGrad",
    "MixedBatch",
    "Reward",
    "RewardInputs",
    "RewardNeeds",
    "get_reward",
    "last_layer_alignment",
    "list_rewards",
    "probe_targets",
    "register_reward",
    "reward_for",
]
