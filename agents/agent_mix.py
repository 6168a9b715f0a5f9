"""A searched RL-Mix policy as a drop-in mixer for any training loop, called like ``RMix``.

    from agents import AgentMix
    agent_mix = AgentMix.load("runs/default/agent.zip", num_classes=10)
    for step, (x, y) in enumerate(loader):
        x_mix, y_mix = agent_mix(model, x, y, progress=step / total_steps)
        loss = soft_ce(model(x_mix), y_mix)  # rlmix.losses.soft_ce

Per batch it does what ``rlmix.train --policy agent`` does in the environment: the clean batch's
input saliency and logits (one forward and input-gradient pass, :func:`rlmix.saliency.input_saliency`),
each image's slot observation (its 8x8 pooled saliency, a logits summary and the batch context of
:func:`envs.slots.slot_context`), the policy's top-k per image, and R-Mix with one lam (or one per
image, ``lam_mode="elem"``), one permutation and one grid for the batch
(:class:`rlmix.mixing.RMix`). The policy depends on
neither the batch size nor the number of classes, so it works on any of either, on any device
(the small policy runs on the CPU). The file is read without unpickling
(:mod:`agents.serialize`).

The context includes the fraction of training done and the learning rate as a fraction of its
peak; pass them (``progress``, ``lr_fraction``) where your loop knows them. A policy trained with
partner-aware decisions (``env.partner_first``) is shown each image's partner, lam and grid,
drawn before it chooses, as in the environment; the file says which (``partner_first``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.policy import PerImagePolicy
from agents.serialize import load_policy
from envs.slots import slot_observation
from envs.spaces import batch_observation, has_partner
from rlmix.mixing import MixParams, RMix, topk_space
from rlmix.saliency import input_saliency


class AgentMix(RMix):
    """R-Mix whose per-image top-k a trained RL-Mix policy chooses (see the module docstring).

    Args:
        policy: the agent's :class:`agents.policy.PerImagePolicy`.
        obs_grid: side of the pooled saliency map the policy was trained on.
        logit_clip: the observation's logit clip the policy was trained with.
        partner_first: the policy observes each image's partner, lam and grid (read from the
            policy's observation space when None).
        deterministic: take each image's most likely top-k instead of sampling one (sampling
            draws from the mixer's generator).
        **kwargs: :class:`rlmix.mixing.RMix` options (``num_classes``, ``grids``, ``alpha``,
            ``lam_mode``, ``smoothing``, ``saliency_mode``, ``generator`` or ``seed``); ``k`` is
            the policy's.
    """

    def __init__(
        self,
        policy: PerImagePolicy,
        *,
        obs_grid: int,
        logit_clip: float,
        deterministic: bool = False,
        partner_first: bool | None = None,
        **kwargs: Any,
    ) -> None:
        k = int(policy.action_space.n)
        if kwargs.setdefault("k", k) != k:
            raise ValueError(f"k is the policy's: {k} (got {kwargs['k']})")
        super().__init__(**kwargs)
        self.policy = policy.eval()
        self.obs_grid, self.logit_clip = obs_grid, float(logit_clip)
        self.deterministic = deterministic
        sees_partner = has_partner(policy.observation_space)
        if partner_first is not None and partner_first != sees_partner:
            raise ValueError(
                f"partner_first={partner_first}, but the policy was trained "
                f"{'with' if sees_partner else 'without'} partner-aware observations"
            )
        self.partner_first = sees_partner
        self._q_values = topk_space(k)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> AgentMix:
        """An :class:`AgentMix` from an ``agent.zip`` written by ``rlmix.train_agent``."""
        policy, settings = load_policy(path)
        p = settings["policy"]
        return cls(policy, obs_grid=p["obs_grid"], logit_clip=p["logit_clip"], **kwargs)

    def observation(
        self,
        saliency: torch.Tensor,
        logits: torch.Tensor,
        *,
        progress: float = 0.5,
        lr_fraction: float = 1.0,
        params: MixParams | None = None,
    ) -> dict[str, np.ndarray]:
        """The slot observations (key -> (B, ...)) of a batch's saliency (B, H, W) and logits;
        a partner-aware policy also needs the batch's mixing ``params``."""
        if self.partner_first and params is None:
            raise ValueError("this policy is partner-aware: pass the batch's mixing params")
        batch = batch_observation(
            saliency, logits, self.obs_grid, self.logit_clip, params if self.partner_first else None
        )
        return slot_observation(batch, float(progress), float(lr_fraction))

    def actions(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        """Each image's top-k index (B,) long: the policy's choice for its observation."""
        tensors = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in obs.items()}
        with torch.no_grad():
            probs = self.policy.action_probs(tensors)
        if self.deterministic:
            return probs.argmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0]

    def __call__(  # type: ignore[override]
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        progress: float = 0.5,
        lr_fraction: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix images (B, C, H, W) with labels (B,) long or (B, N) soft.

        Args:
            model: the classifier being trained (its saliency pass runs in ``saliency_mode``).
            progress: fraction of the training run done, in [0, 1].
            lr_fraction: the current learning rate over its peak, in [0, 1].
        """
        soft = self.soft_labels(y, x.dtype)
        params = self.sample(x)
        saliency, logits = input_saliency(model, x, y, mode=self.saliency_mode)
        obs = self.observation(
            saliency, logits, progress=progress, lr_fraction=lr_fraction, params=params
        )
        q = self._q_values[self.actions(obs)]
        return self.apply(x, soft, params, saliency=saliency, q=q)


__all__ = ["AgentMix"]
