"""Reward registry for :class:`envs.MixupEnv`.

A reward is a function ``fn(inputs: RewardInputs) -> float`` registered under a name with
:func:`register_reward`, which also declares what the env must compute for it (the clean
saliency, the mixed-input gradient). Select one by name in the config (``env.reward``), through
``gymnasium.make("rlmix/Mixup-v0", reward=...)``, or as a ``module:function`` path to a function
decorated with ``register_reward`` or a plain function of ``RewardInputs``.

Example::

    from envs.rewards import register_reward

    @register_reward("small_topk")
    def small_topk(inputs):
        return float(1.0 - inputs.q.mean())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlmix.saliency import pool_saliency


@dataclass
class RewardInputs:
    """What a reward may look at after one step.

    Attributes:
        q: per-image top-k used for this step (B,), in [0, 1).
        loss: training loss on the mixed batch.
        prev_loss: the previous step's training loss in this epoch, or None on its first step.
        obs_grid: side of the pooled maps compared by gradient rewards.
        clean_saliency: input saliency of the clean batch (B, H, W), when requested.
        mixed_saliency: RMS over channels of dLoss/dx_mix (B, H, W) from the training backward,
            when requested.
        test_metrics: test metrics when this step ended an evaluated epoch, else None.
        prev_test_metrics: the previous evaluation's metrics, or None.
    """

    q: torch.Tensor
    loss: float
    prev_loss: float | None = None
    obs_grid: int = 8
    clean_saliency: torch.Tensor | None = None
    mixed_saliency: torch.Tensor | None = None
    test_metrics: dict[str, float] | None = None
    prev_test_metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class Reward:
    """A registered reward and the inputs it needs."""

    name: str
    fn: Callable[[RewardInputs], float]
    clean_saliency: bool = False
    mixed_saliency: bool = False

    def __call__(self, inputs: RewardInputs) -> float:
        return float(self.fn(inputs))


_REWARDS: dict[str, Reward] = {}


def register_reward(
    name: str, *, clean_saliency: bool = False, mixed_saliency: bool = False
) -> Callable[[Callable[[RewardInputs], float]], Callable[[RewardInputs], float]]:
    """Decorator registering ``fn`` as reward ``name``; flags say which gradients it reads."""

    def wrap(fn: Callable[[RewardInputs], float]) -> Callable[[RewardInputs], float]:
        _REWARDS[name] = Reward(name, fn, clean_saliency, mixed_saliency)
        fn.reward = _REWARDS[name]  # type: ignore[attr-defined]
        return fn

    return wrap


def list_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REWARDS)


def get_reward(name: str) -> Reward:
    """Look up a reward by registered name or ``module:function`` path."""
    if name in _REWARDS:
        return _REWARDS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import reward '{name}': {e}") from e
        if name in _REWARDS:  # registered on import under its path
            return _REWARDS[name]
        reward = getattr(fn, "reward", None)
        return reward if isinstance(reward, Reward) else Reward(name, fn)
    raise ValueError(
        f"unknown reward '{name}'; choose one of: {', '.join(list_rewards())} or module:function"
    )


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
def grad_cosine_mean(inputs: RewardInputs) -> float:
    """Mean over images of the cosine between each image's clean and mixed pooled maps."""
    clean, mixed = _pooled_pair(inputs)
    return float(F.cosine_similarity(clean, mixed, dim=1).mean())


@register_reward("loss_drop")
def loss_drop(inputs: RewardInputs) -> float:
    """Training progress: previous step's loss minus this step's (0 on an epoch's first step)."""
    return 0.0 if inputs.prev_loss is None else inputs.prev_loss - inputs.loss


@register_reward("test_acc_gain")
def test_acc_gain(inputs: RewardInputs) -> float:
    """Held-out top-1 gain (fraction) since the previous evaluation, paid at evaluated epoch ends."""
    if inputs.test_metrics is None:
        return 0.0
    prev = inputs.prev_test_metrics["top1"] if inputs.prev_test_metrics else 0.0
    return inputs.test_metrics["top1"] - prev


@register_reward("none")
def no_reward(inputs: RewardInputs) -> float:
    """Always 0: for fixed policies that should not pay for gradient rewards."""
    return 0.0
