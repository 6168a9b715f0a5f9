"""Drive a fixed policy through the image-slot VecEnv with SB3's callback protocol.

:class:`PolicyRunner` has the parts of an SB3 algorithm that callbacks use (``learn``,
``get_env``, ``logger``, ``num_timesteps``, ``_last_obs``), so a fixed policy and the PPO agent
run through the same callbacks (logging, progress, checkpoints, stopping) and the same env: the
one epoch loop. A rollout is one classifier epoch; nothing is learned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv

from baselines.policies import FixedPolicy


class PolicyRunner:
    """Act with ``policy`` on ``env`` (an :class:`envs.ImageSlotVecEnv`).

    Args:
        policy: a fixed policy (``predict`` and ``action_probs`` on slot observations).
        env: the VecEnv.
        logger: SB3 logger handed to the callbacks (default: one that writes nowhere).
    """

    def __init__(self, policy: FixedPolicy, env: VecEnv, logger: Logger | None = None) -> None:
        self.policy = policy
        self.env = env
        self.logger = logger or Logger(folder=None, output_formats=[])
        self.num_timesteps = 0
        self._last_obs: dict[str, np.ndarray] | None = None

    def get_env(self) -> VecEnv:
        return self.env

    def action_probs(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.policy.action_probs(obs)

    def learn(
        self,
        total_timesteps: int,
        callback: BaseCallback | list[BaseCallback] | None = None,
        reset_num_timesteps: bool = True,
    ) -> PolicyRunner:
        """Step until ``total_timesteps`` more decisions (B per batch) are taken or a callback
        returns False."""
        if isinstance(callback, list):
            callback = CallbackList(callback)
        callback = callback or CallbackList([])
        callback.init_callback(self)  # type: ignore[arg-type]
        if reset_num_timesteps:
            self.num_timesteps = 0
        end = self.num_timesteps + total_timesteps
        callback.on_training_start(locals(), globals())
        if reset_num_timesteps or self._last_obs is None:  # as SB3: a later call goes on
            self._last_obs = self.env.reset()
        running = True
        while running and self.num_timesteps < end:
            running = self._rollout(callback, end)
        callback.on_training_end()
        return self

    def _rollout(self, callback: BaseCallback, end: int) -> bool:
        """One epoch; False when a callback stopped the run."""
        callback.on_rollout_start()
        done = False
        while not done and self.num_timesteps < end:
            actions, _ = self.policy.predict(self._last_obs)
            new_obs, rewards, dones, infos = self.env.step(actions)
            self.num_timesteps += self.env.num_envs
            callback.update_locals(_step_locals(actions, new_obs, rewards, dones, infos))
            if not callback.on_step():
                return False
            self._last_obs, done = new_obs, bool(dones.any())
        callback.on_rollout_end()
        return True


def _step_locals(actions, new_obs, rewards, dones, infos) -> dict[str, Any]:
    """The names SB3's ``collect_rollouts`` exposes to callbacks after a step."""
    return {
        "actions": actions,
        "new_obs": new_obs,
        "rewards": rewards,
        "dones": dones,
        "infos": infos,
    }


__all__ = ["PolicyRunner"]
