"""The RL-Mix agent: the per-image SB3 policy (PPO construction lives in :mod:`agents.ppo`)."""

from agents.policy import (
    PerImageCategoricalDistribution,
    PerImageExtractor,
    PerImageNetwork,
    PerImagePolicy,
    check_spaces,
    logits_summary,
)

__all__ = [
    "PerImageCategoricalDistribution",
    "PerImageExtractor",
    "PerImageNetwork",
    "PerImagePolicy",
    "check_spaces",
    "logits_summary",
]
