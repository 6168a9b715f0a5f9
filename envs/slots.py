"""The B image slots of a batch env as B sub-environments: SB3's ``VecEnv`` seam.

Every image of a mini-batch is one decision with its own reward. :class:`ImageSlotVecEnv`
presents the batch env (:class:`envs.MixupEnv`, or :class:`envs.DistributedMixupEnv` on rank 0
of a torchrun job) as ``num_envs = B`` sub-environments, so that Stable-Baselines3's own PPO,
rollout buffer and GAE run unchanged, with per-image advantages and per-image ratio clipping.
It is one vectorised object: a step is one batch env step, and the B slot observations are
views of the batch observation, not B env objects.

Slot i at a step holds image i of that step's batch (the next step's slot i is another image).

- **Observation** (:func:`envs.spaces.slot_spaces`): the image's pooled ``saliency`` (g, g) and
  ``logits`` (N,), plus ``context`` (:data:`envs.spaces.CONTEXT`): the image's rank in its batch
  by confidence and by saliency peak, batch means of the confidence, the softmax entropy, the
  saliency entropy and peak, the fraction of the run done and the current LR / ``lr_max``.
  With ``env.partner_first`` also its partner's ``partner_saliency`` and ``partner_logits`` and
  ``mix`` = ``[lam, 1 / grid]`` (:data:`envs.spaces.PARTNER_KEYS`): the draws the step will mix
  with.
- **Action** ``Discrete(K)``: the image's top-k index.
- **Reward**: the image's entry of ``info["reward_per_image"]``; with ``difference_reward``
  that minus its entry of ``info["counterfactual_per_image"]`` (the same image's reward had it
  taken a uniformly drawn top-k on the same state: a difference reward, whose per-image offset
  is the counterfactual's, not the critic's guess).
- **Done**: every slot is done at the epoch's last step (``truncated``, so each slot's info has
  ``"TimeLimit.truncated": True`` and, with ``terminal_observations``, its
  ``"terminal_observation"``, which SB3 bootstraps with the value function); the observation
  returned is the next epoch's first batch (the adapter resets the batch env, which starts the
  next epoch).

Every slot's info is the batch env's step info (one dict shared by the slots except at an
epoch's end). ``reset()`` passes the seed set by ``seed()`` (SB3 sets the run seed) to the batch
env.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from envs.spaces import CONTEXT, batch_ranks, batch_size_of, slot_partner, slot_spaces
from rlmix.errors import RlmixError


def _rank(values: torch.Tensor) -> torch.Tensor:
    """Each entry's rank in its batch, scaled to [0, 1] (:func:`envs.spaces.batch_ranks`)."""
    return batch_ranks(values).float() / max(values.shape[0] - 1, 1)


def slot_context(
    saliency: np.ndarray, logits: np.ndarray, progress: float, lr_fraction: float
) -> np.ndarray:
    """The ``context`` rows (B, C) of :data:`envs.spaces.CONTEXT` for one batch observation.

    Args:
        saliency: pooled maps (B, g, g), each summing to 1.
        logits: clipped logits (B, N).
        progress: fraction of the run done; lr_fraction: current LR / lr_max.
    """
    sal = torch.from_numpy(saliency).flatten(1)
    logp = torch.from_numpy(logits).double().log_softmax(dim=1)
    b, n = logp.shape
    confidence = logp.amax(dim=1).exp().float()
    entropy = (-(logp.exp() * logp).sum(1) / math.log(n)).float() if n > 1 else torch.zeros(b)
    cells = sal.shape[1]
    sal_entropy = -(sal * sal.clamp_min(1e-12).log()).sum(1) / math.log(cells)
    peak = sal.amax(dim=1)
    columns = [
        torch.full((b,), progress),
        torch.full((b,), lr_fraction),
        _rank(confidence),
        _rank(peak),
        torch.full((b,), float(confidence.mean())),
        torch.full((b,), float(entropy.mean())),
        torch.full((b,), float(sal_entropy.mean())),
        torch.full((b,), float(peak.mean())),
    ]
    return torch.stack(columns, dim=1).clamp_(0.0, 1.0).numpy()


def slot_observation(
    batch: dict[str, np.ndarray], progress: float, lr_fraction: float
) -> dict[str, np.ndarray]:
    """The slot observations (key -> (B, ...)) of a batch observation
    (:func:`envs.spaces.batch_observation`): each image's pooled saliency and logits, the
    ``context`` of :func:`slot_context`, and with partner-aware decisions its partner's keys
    (:func:`envs.spaces.slot_partner`). The one observation the env, :class:`agents.AgentMix`
    and :class:`agents.LearnedMix` show a policy."""
    context = slot_context(batch["saliency"], batch["logits"], progress, lr_fraction)
    slots = {"saliency": batch["saliency"], "logits": batch["logits"], "context": context}
    if "partner" in batch:
        slots.update(slot_partner(batch))
    return slots


class ImageSlotVecEnv(VecEnv):
    """SB3 ``VecEnv`` over the image slots of a batch env (see the module docstring).

    Args:
        env: a :class:`envs.MixupEnv` or :class:`envs.DistributedMixupEnv` (needs ``cfg`` and
            ``trainer`` attributes).
        terminal_observations: give every slot its terminal observation at an epoch's end. SB3
            then bootstraps each truncated slot with ``gamma * V(terminal)``: B value forwards
            per epoch, which the agent needs only when gamma > 0 (and a fixed policy never).
        difference_reward: hand SB3 ``r_i(a_i) - r_i(a'_i)`` (``agent.baseline:
            counterfactual``); the batch env must compute a counterfactual every step.

    Example::

        from stable_baselines3 import PPO
        venv = ImageSlotVecEnv(envs.MixupEnv(epochs=2))
        venv.num_envs  # 100: one sub-environment per image slot
        PPO("MultiInputPolicy", venv, n_steps=10, batch_size=250).learn(1000)
    """

    def __init__(
        self, env: gym.Env, *, terminal_observations: bool = True, difference_reward: bool = False
    ) -> None:
        self.env = env
        self.terminal_observations = terminal_observations
        self.difference_reward = difference_reward
        self.trainer = env.trainer
        self.cfg = env.cfg
        b, k = batch_size_of(env.action_space)
        n = env.observation_space["logits"].shape[1]
        obs_space, act_space = slot_spaces(
            n,
            self.cfg.env.obs_grid,
            k,
            self.cfg.env.logit_clip,
            partner="partner" in env.observation_space.spaces,
        )
        super().__init__(b, obs_space, act_space)
        self._actions: np.ndarray | None = None

    @property
    def steps_left_in_epoch(self) -> int:
        """Batch steps until the current (or next) epoch ends: where a rollout must stop."""
        return self.trainer.steps_left_in_epoch

    def slot_observation(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The slot observations (key -> (B, ...)) of a batch observation."""
        t = self.trainer
        return slot_observation(obs, t.progress, t.lr / self.cfg.trainer.lr_max)

    def reset(self) -> dict[str, np.ndarray]:
        obs, info = self.env.reset(seed=self._seeds[0])
        self._reset_seeds()
        self.reset_infos = [info] * self.num_envs
        return self.slot_observation(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        obs, _, terminated, truncated, info = self.env.step(self._actions)
        rewards = np.asarray(info["reward_per_image"], dtype=np.float64)
        if self.difference_reward:
            if "counterfactual_per_image" not in info:
                raise RlmixError(
                    "agent.baseline 'counterfactual' needs a counterfactual every step: set "
                    "env.counterfactual_every=1 (and a reward that has one)"
                )
            rewards = rewards - info["counterfactual_per_image"]
        rewards = rewards.astype(np.float32)
        if not (terminated or truncated):
            obs = self.slot_observation(obs)
            return obs, rewards, np.zeros(self.num_envs, dtype=bool), [info] * self.num_envs
        infos = [{**info, "TimeLimit.truncated": truncated} for _ in range(self.num_envs)]
        if self.terminal_observations:  # else the epoch's last observation is not needed
            terminal = self.slot_observation(obs)
            for i, slot_info in enumerate(infos):
                slot_info["terminal_observation"] = {k: v[i] for k, v in terminal.items()}
        return self.reset(), rewards, np.ones(self.num_envs, dtype=bool), infos

    def close(self) -> None:
        self.env.close()

    # -- attribute access: every slot shares the one batch env ---------------------------------

    def _count(self, indices: VecEnvIndices) -> int:
        if indices is None:
            return self.num_envs
        return 1 if isinstance(indices, int) else len(list(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [isinstance(self.env, wrapper_class)] * self._count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


__all__ = ["CONTEXT", "ImageSlotVecEnv", "slot_context", "slot_observation"]
