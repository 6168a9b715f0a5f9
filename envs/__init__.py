"""Gymnasium environments of rlmix; importing this package registers ``rlmix/Mixup-v0``."""

import gymnasium as gym

from envs.distributed_env import DistributedMixupEnv, follow
from envs.mixup_env import MixupEnv
from envs.rewards import RewardInputs, get_reward, list_rewards, register_reward

if "rlmix/Mixup-v0" not in gym.registry:
    gym.register(id="rlmix/Mixup-v0", entry_point="envs.mixup_env:MixupEnv")

__all__ = [
    "DistributedMixupEnv",
    "MixupEnv",
    "follow",
    "RewardInputs",
    "get_reward",
    "list_rewards",
    "register_reward",
]
