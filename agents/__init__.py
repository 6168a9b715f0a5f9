"""The RL-Mix agent: the per-image SB3 policy, the epoch-aligned PPO, saving and loading without
pickles, the frozen-agent policy, the drop-in :class:`AgentMix`, the learning mixer for your own
loop (:class:`LearnedMix`) and the callbacks of the one epoch loop."""

from agents.agent_mix import AgentMix
from agents.frozen import FrozenAgent
from agents.learned_mix import LearnedMix
from agents.policy import PerImagePolicy, SlotExtractor, logits_summary
from agents.ppo import EpochPPO, make_ppo
from agents.serialize import load_policy, read_agent

__all__ = [
    "AgentMix",
    "EpochPPO",
    "FrozenAgent",
    "LearnedMix",
    "PerImagePolicy",
    "SlotExtractor",
    "load_policy",
    "logits_summary",
    "make_ppo",
    "read_agent",
]
