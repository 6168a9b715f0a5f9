"""Build the Stable-Baselines3 PPO agent that drives the image slots (saving and loading it
without pickles: :mod:`agents.serialize`).

The agent is SB3's PPO on :class:`envs.ImageSlotVecEnv` (``num_envs = B``): every image is one
decision with its own reward, advantage and clipped probability ratio. :class:`EpochPPO` changes
one thing: a rollout never crosses an epoch boundary (it has at most ``agent.n_steps`` batch
steps and ends early at an epoch's end), so every epoch-boundary checkpoint holds the agent
between two updates and the run stops exactly after its last epoch, whatever ``n_steps`` and the
epoch length are. SB3's rollout buffer, GAE and PPO update run unchanged.

Discount: ``agent.gamma = 0`` by default. A slot's next observation is another image, and an
image's reward answers its own action (the classifier's drift is shared by all slots and is not
an image's doing), so each decision is a contextual bandit: the advantage is the reward minus the
critic's baseline, and GAE's lambda has no effect.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.policy import PerImagePolicy
from rlmix.config import Config


class EpochPPO(PPO):
    """PPO whose rollouts end at classifier epoch boundaries (see the module docstring)."""

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        steps = min(n_rollout_steps, env.unwrapped.steps_left_in_epoch)
        rollout_buffer.buffer_size = steps  # reset() inside allocates this many steps
        return super().collect_rollouts(env, callback, rollout_buffer, steps)

    def action_probs(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Per-image probabilities (B, K) of the K top-k choices for slot observations."""
        with torch.no_grad():
            tensors = self.policy.obs_to_tensor(obs)[0]
            return self.policy.action_probs(tensors).cpu().numpy()


#: The ``agent`` config keys that are Stable-Baselines3 PPO's own arguments, by the same name.
PPO_KEYS = (
    "learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
    "ent_coef", "vf_coef", "max_grad_norm", "target_kl",
)  # fmt: skip


def make_ppo(venv: VecEnv, cfg: Config, *, device: str = "cpu") -> EpochPPO:
    """The per-image PPO agent for ``venv`` (an :class:`envs.ImageSlotVecEnv`), from
    ``cfg.agent``. It runs on ``device`` (CPU by default: its networks are tiny; the
    classifier's device is ``trainer.device``)."""
    a = cfg.agent
    return EpochPPO(
        PerImagePolicy,
        venv,
        **{key: getattr(a, key) for key in PPO_KEYS},
        policy_kwargs={
            "embed_dim": a.embed_dim,
            "hidden": a.hidden,
            "optimizer_kwargs": {"foreach": True},  # one kernel per step, not one per tensor
        },
        seed=cfg.seed,
        device=device,
        verbose=0,
    )


__all__ = ["EpochPPO", "make_ppo"]
