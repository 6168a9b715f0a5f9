"""Reward registry for :class:`envs.MixupEnv`.

A reward is a function ``fn(inputs: RewardInputs)`` returning either

- one float: a **batch-level** reward, the same for every image of the batch, or
- a 1-D tensor or array of B floats: a **per-image** reward, in batch order.

Register one under a name with :func:`register_reward`, which also declares what the env must
compute for it (the clean saliency, the mixed-input gradient, the held-out loss). Select it by
name in the config (``env.reward``), through ``gymnasium.make("rlmix/Mixup-v0", reward=...)``,
or as a ``module:function`` path to a function decorated with ``register_reward`` or a plain
function of ``RewardInputs``. The env's Gymnasium reward is the mean over images; the per-image
vector is in ``info["reward_per_image"]`` and is what the RL-Mix agent learns from.

A reward that raises, returns something else (a string, a tensor of the wrong shape) or a NaN
stops the run with one error line naming it (:class:`rlmix.errors.RlmixError`).

Built-in rewards:

=====================  =========  ==========================================================
name                   kind       what it pays
=====================  =========  ==========================================================
``grad_cosine``        batch      the paper's: one cosine between the batch's concatenated
                                  8x8 pooled clean and mixed input-gradient maps
``grad_cosine_mean``   per image  each image's cosine between its clean and mixed maps
``loss_drop``          batch      previous step's training loss minus this step's
``val_loss_drop``      batch      drop of the held-out loss (``data.val_size`` images
                                  carved from the training split) across the step
``test_acc_gain``      batch      test top-1 gain since the previous evaluation
``probe_rank``         per image  a learnability probe with a known, context-dependent optimum
``none``               batch      always 0
=====================  =========  ==========================================================

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
from rlmix.errors import RlmixError
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
        val_loss: the held-out loss after this step, when requested.
        prev_val_loss: the held-out loss before this step, when requested.
        test_metrics: test metrics when this step ended an evaluated epoch, else None.
        prev_test_metrics: the previous evaluation's metrics, or None.
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


def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:80]


@dataclass(frozen=True)
class Reward:
    """A registered reward and the inputs it needs."""

    name: str
    fn: Callable[[RewardInputs], Any]
    clean_saliency: bool = False
    mixed_saliency: bool = False
    val_loss: bool = False

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
            raise RlmixError(f"reward '{self.name}' raised {type(e).__name__}: {e}") from e
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


REWARDS: Registry[Reward] = Registry("reward", hint=" or module:function")


def register_reward(
    name: str,
    *,
    clean_saliency: bool = False,
    mixed_saliency: bool = False,
    val_loss: bool = False,
    override: bool = False,
) -> Callable[[Callable[[RewardInputs], Any]], Callable[[RewardInputs], Any]]:
    """Decorator registering ``fn`` as reward ``name``; flags say which inputs it reads.

    A taken name raises ``ValueError`` unless ``override=True``.
    """

    def wrap(fn: Callable[[RewardInputs], Any]) -> Callable[[RewardInputs], Any]:
        reward = REWARDS.add(
            name, Reward(name, fn, clean_saliency, mixed_saliency, val_loss), override=override
        )
        fn.reward = reward  # type: ignore[attr-defined]
        return fn

    return wrap


def list_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return REWARDS.names()


def get_reward(name: str) -> Reward:
    """Look up a reward by registered name or ``module:function`` path."""
    if name in REWARDS:
        return REWARDS.get(name)
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import reward '{name}': {e}") from e
        if not callable(fn):
            raise ValueError(f"reward '{name}' is not callable")
        reward = getattr(fn, "reward", None)
        return reward if isinstance(reward, Reward) else Reward(name, fn)
    raise ValueError(REWARDS.unknown(name))


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


@register_reward("loss_drop")
def loss_drop(inputs: RewardInputs) -> float:
    """Training progress: previous step's loss minus this step's (0 on an epoch's first step)."""
    return 0.0 if inputs.prev_loss is None else inputs.prev_loss - inputs.loss


@register_reward("val_loss_drop", val_loss=True)
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


@register_reward("test_acc_gain")
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
    "Reward",
    "RewardInputs",
    "get_reward",
    "list_rewards",
    "probe_targets",
    "register_reward",
]
