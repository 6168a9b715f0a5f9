"""Fixed mix-up policies that act through :class:`envs.MixupEnv`, like an SB3 model.

Each policy has ``predict(obs, state=None, episode_start=None, deterministic=False) ->
(action, None)`` and names the env mixer it needs (``mixer``); the env's mixer decides what the
action means. R-Mix is the ``rmix`` policy: a uniformly random top-k per image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces


class FixedPolicy:
    """Base class: a policy that needs no training.

    Args:
        action_space: the env's ``MultiDiscrete([K] * B)`` action space.
        seed: seed of the policy's own random stream (random policies only).
    """

    mixer = "rmix"

    def __init__(self, action_space: spaces.MultiDiscrete, seed: int = 0, **_: Any) -> None:
        self.action_space = action_space
        self.k = int(action_space.nvec[0])
        self.rng = np.random.default_rng(seed)

    def act(self, batch_size: int) -> np.ndarray:
        """Per-image action indices (B,)."""
        return np.zeros(batch_size, dtype=np.int64)

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        batch_size = observation["saliency"].shape[-3]
        return self.act(batch_size), None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class RandomTopK(FixedPolicy):
    """R-Mix: top-k drawn uniformly from the K values, independently per image."""

    def act(self, batch_size: int) -> np.ndarray:
        return self.rng.integers(0, self.k, size=batch_size, dtype=np.int64)


class ConstantTopK(FixedPolicy):
    """One fixed top-k for every image: the grid value nearest to ``q``."""

    def __init__(self, action_space: spaces.MultiDiscrete, seed: int = 0, q: float = 0.5, **_: Any):
        super().__init__(action_space, seed)
        grid = np.linspace(0.0, 0.99, self.k)
        self.index = int(np.abs(grid - q).argmin())

    def act(self, batch_size: int) -> np.ndarray:
        return np.full(batch_size, self.index, dtype=np.int64)


class CutMixPlus(FixedPolicy):
    """CutMix trained with OneCycleLR (the paper's CutMix+); the action is ignored."""

    mixer = "cutmix"


class MixupPolicy(FixedPolicy):
    """Input Mixup; the action is ignored."""

    mixer = "mixup"


class Vanilla(FixedPolicy):
    """No mixing; the action is ignored."""

    mixer = "none"


POLICIES: dict[str, Callable[..., FixedPolicy]] = {
    "rmix": RandomTopK,
    "constant": ConstantTopK,
    "cutmix_plus": CutMixPlus,
    "mixup": MixupPolicy,
    "vanilla": Vanilla,
}


def list_policies() -> list[str]:
    """Names accepted by :func:`make_policy`."""
    return sorted(POLICIES)


def make_policy(name: str, action_space: spaces.MultiDiscrete, seed: int = 0, **kwargs: Any):
    """Build a fixed policy by name; ``kwargs`` reach its constructor (e.g. ``q`` for constant)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}'; choose one of: {', '.join(list_policies())}")
    return POLICIES[name](action_space, seed=seed, **kwargs)


def policy_mixer(name: str) -> str:
    """The env mixer a fixed policy needs."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}'; choose one of: {', '.join(list_policies())}")
    return POLICIES[name].mixer
