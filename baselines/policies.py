"""Fixed mix-up policies for the image slots: R-Mix, constant top-k, CutMix+, Mixup, vanilla, and
the paper's comparison set (SaliencyMix, PuzzleMix, Co-Mixup, Manifold Mixup: :mod:`rlmix.mixers`).

A policy acts like an SB3 model on :class:`envs.ImageSlotVecEnv`: ``predict(obs) -> (actions
(B,), None)`` with one top-k index per image slot, and ``action_probs(obs) -> (B, K)``, the
law it draws from (for the per-epoch policy diagnostics). Each names the env mixer it needs
(``mixer``); the mixer decides what the action means. R-Mix is the ``rmix`` policy: a uniformly
random top-k per image.

Policies live in a registry (:func:`register_policy`); ``agents`` adds ``agent``, a trained
RL-Mix agent applied frozen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from rlmix.mixing import topk_space
from rlmix.registry import Registry


class FixedPolicy:
    """Base class: a policy that needs no training.

    Args:
        action_space: the slot action space ``Discrete(K)``.
        seed: seed of the policy's own random stream (random policies only).
    """

    mixer = "rmix"

    def __init__(self, action_space: spaces.Discrete, seed: int = 0, **_: Any) -> None:
        if not isinstance(action_space, spaces.Discrete) or action_space.n < 2:
            raise ValueError(f"action_space must be Discrete(K) with K >= 2, got {action_space}")
        self.action_space = action_space
        self.k = int(action_space.n)
        self.rng = np.random.default_rng(seed)

    def probs(self, batch_size: int) -> np.ndarray:
        """The (B, K) law of the actions; the base policy always picks index 0."""
        out = np.zeros((batch_size, self.k))
        out[:, 0] = 1.0
        return out

    def act(self, batch_size: int) -> np.ndarray:
        """Per-image action indices (B,)."""
        return np.zeros(batch_size, dtype=np.int64)

    def choose(self, observation: dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        """The actions (B,) for slot observations; fixed policies ignore what they see."""
        return self.act(len(observation["saliency"]))

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        """SB3's ``predict``: ``(actions (B,), None)``."""
        return self.choose(observation, deterministic), None

    def action_probs(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.probs(len(observation["saliency"]))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


POLICIES: Registry[type[FixedPolicy]] = Registry("policy")
register_policy = POLICIES.register


@register_policy("rmix")
class RandomTopK(FixedPolicy):
    """R-Mix: top-k drawn uniformly from the K values, independently per image."""

    def probs(self, batch_size: int) -> np.ndarray:
        return np.full((batch_size, self.k), 1.0 / self.k)

    def act(self, batch_size: int) -> np.ndarray:
        return self.rng.integers(0, self.k, size=batch_size, dtype=np.int64)


@register_policy("constant")
class ConstantTopK(FixedPolicy):
    """One fixed top-k for every image: the value of the top-k space nearest to ``q``."""

    def __init__(
        self, action_space: spaces.Discrete, seed: int = 0, q: float = 0.5, **_: Any
    ) -> None:
        super().__init__(action_space, seed)
        self.index = int((topk_space(self.k) - q).abs().argmin())

    def probs(self, batch_size: int) -> np.ndarray:
        out = np.zeros((batch_size, self.k))
        out[:, self.index] = 1.0
        return out

    def act(self, batch_size: int) -> np.ndarray:
        return np.full(batch_size, self.index, dtype=np.int64)


@register_policy("cutmix_plus")
class CutMixPlus(FixedPolicy):
    """CutMix trained with OneCycleLR (the paper's CutMix+); the action is ignored."""

    mixer = "cutmix"


@register_policy("mixup")
class MixupPolicy(FixedPolicy):
    """Input Mixup; the action is ignored."""

    mixer = "mixup"


@register_policy("vanilla")
class Vanilla(FixedPolicy):
    """No mixing; the action is ignored."""

    mixer = "none"


@register_policy("saliencymix")
class SaliencyMixPolicy(FixedPolicy):
    """SaliencyMix (Uddin et al. 2021); the action is ignored."""

    mixer = "saliencymix"


@register_policy("puzzlemix")
class PuzzleMixPolicy(FixedPolicy):
    """PuzzleMix (Kim, Choo and Song 2020; needs ``rlmix[graphcut]``); the action is ignored."""

    mixer = "puzzlemix"


@register_policy("comixup")
class CoMixupPolicy(FixedPolicy):
    """Co-Mixup (Kim et al. 2021; needs ``rlmix[graphcut]``); the action is ignored."""

    mixer = "comixup"


@register_policy("manifold_mixup")
class ManifoldMixupPolicy(FixedPolicy):
    """Manifold Mixup (Verma et al. 2019; the model must expose ``stages``); the action is
    ignored."""

    mixer = "manifold_mixup"


def list_policies() -> list[str]:
    """Names accepted by :func:`make_policy`."""
    return POLICIES.names()


def make_policy(name: str, action_space: spaces.Discrete, seed: int = 0, **kwargs: Any):
    """Build a fixed policy by name; ``kwargs`` reach its constructor (e.g. ``q`` for constant)."""
    return POLICIES.get(name)(action_space, seed=seed, **kwargs)


def policy_mixer(name: str) -> str:
    """The env mixer a fixed policy needs."""
    return POLICIES.get(name).mixer
