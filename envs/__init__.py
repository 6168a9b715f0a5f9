"""Gymnasium environments of rlmix; importing this package registers ``rlmix/Mixup-v0``.

- :class:`MixupEnv`: one classifier epoch per episode, one batch per step (the batch view);
- :class:`DistributedMixupEnv` / :func:`follow`: the same over torchrun ranks;
- :class:`ImageSlotVecEnv`: the batch's image slots as SB3 sub-environments (per-image view);
- :mod:`envs.rewards`: the reward registry; :mod:`envs.spaces`: the spaces of both views.
"""

import gymnasium as gym

from envs.distributed_env import DistributedMixupEnv, follow
from envs.mixup_env import MixupEnv
from envs.rewards import RewardInputs, get_reward, list_rewards, register_reward
from envs.slots import ImageSlotVecEnv

if "rlmix/Mixup-v0" not in gym.registry:
    gym.register(id="rlmix/Mixup-v0", entry_point="envs.mixup_env:MixupEnv")

__all__ = [
    "DistributedMixupEnv",
    "ImageSlotVecEnv",
    "MixupEnv",
    "RewardInputs",
    "follow",
    "get_reward",
    "list_rewards",
    "register_reward",
]
