"""The RL-Mix agent: the per-image SB3 policy, the epoch-aligned PPO, the frozen-agent policy and
the callbacks of the one epoch loop."""

from agents.frozen import FrozenAgent
from agents.policy import PerImagePolicy, SlotExtractor, logits_summary
from agents.ppo import EpochPPO, load_agent, make_ppo

__all__ = [
    "EpochPPO",
    "FrozenAgent",
    "PerImagePolicy",
    "SlotExtractor",
    "load_agent",
    "logits_summary",
    "make_ppo",
]
