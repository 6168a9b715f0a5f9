"""A trained RL-Mix agent applied without learning: the fixed policy ``agent``.

``python -m rlmix.train --policy agent --set frozen_agent.path=runs/default/agent.zip`` reuses a
searched policy on another model, dataset, batch size or number of classes (the policy network
depends on none of them), through the same env as every other fixed policy: AutoAugment's
"search once, apply anywhere". ``frozen_agent.deterministic`` picks each image's most likely
top-k instead of sampling one (sampling draws from torch's global RNG, which the trainer reseeds
every epoch, so runs stay reproducible and resumable).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from agents.serialize import load_policy
from baselines.policies import FixedPolicy, register_policy
from rlmix.errors import ConfigError


@register_policy("agent")
class FrozenAgent(FixedPolicy):
    """Act with the policy of an exported ``agent.zip``; nothing is learned.

    Args:
        action_space: the slot action space ``Discrete(K)``; K must be the agent's.
        seed: unused (sampling uses torch's per-epoch global RNG).
        path: the ``agent.zip`` (JSON settings and tensors; nothing in it is unpickled).
        deterministic: take the most likely top-k instead of sampling.
        partner_first: the run's ``env.partner_first``; it must be the setting the agent was
            trained with (its observation differs).
    """

    mixer = "rmix"

    def __init__(
        self,
        action_space: spaces.Discrete,
        seed: int = 0,
        path: str = "",
        deterministic: bool = False,
        partner_first: bool = False,
        **_: Any,
    ) -> None:
        super().__init__(action_space, seed)
        if not path:
            raise ConfigError(
                "policy 'agent' applies a trained agent: set frozen_agent.path to an agent.zip "
                "(python -m rlmix.train_agent writes one into its run directory)"
            )
        self.policy, settings = load_policy(path)
        k = settings["policy"]["k"]
        if k != self.k:
            raise ConfigError(
                f"agent file '{path}' chooses among K={k} top-k values; this run has mix.k={self.k}"
            )
        trained = settings["policy"]["partner_first"]
        if trained != partner_first:
            sees = "sees" if trained else "does not see"
            raise ConfigError(
                f"agent file '{path}' was trained with env.partner_first={str(trained).lower()} "
                f"(it {sees} each image's partner); set env.partner_first="
                f"{str(trained).lower()}"
            )
        self.path = path
        self.grid = settings["policy"]["obs_grid"]
        self.deterministic = deterministic

    def _distribution(self, obs: dict[str, np.ndarray]) -> torch.distributions.Categorical:
        if obs["saliency"].shape[-1] != self.grid:
            raise ConfigError(
                f"agent file '{self.path}' was trained on {self.grid}x{self.grid} saliency maps; "
                f"set env.obs_grid={self.grid}"
            )
        tensors = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in obs.items()}
        with torch.no_grad():
            return self.policy.get_distribution(tensors).distribution

    def choose(self, observation: dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        dist = self._distribution(observation)
        greedy = deterministic or self.deterministic
        actions = dist.probs.argmax(dim=-1) if greedy else dist.sample()
        return actions.numpy().astype(np.int64)

    def action_probs(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        probs = self._distribution(observation).probs.numpy()
        if not self.deterministic:
            return probs
        return np.eye(self.k)[probs.argmax(axis=-1)]


__all__ = ["FrozenAgent"]
