"""One environment over W ``torchrun`` ranks: rank 0 acts for the global batch, the others follow.

Every rank owns a :class:`envs.MixupEnv` that trains the shared (DDP) classifier on its shard of
each global batch. Rank 0 wraps its env in :class:`DistributedMixupEnv`, whose spaces are those
of the global batch, and hands it to the policy (a fixed one or the PPO agent: exactly one
learner exists, on rank 0). Every other rank calls :func:`follow`, which mirrors rank 0's calls:

* ``reset``: rank 0 broadcasts the op (and seed); every rank resets; the shards' observations
  are gathered to rank 0 and interleaved into global-batch order.
* ``step``: rank 0 broadcasts the op and scatters the global action, so rank r receives the
  actions of its images (global positions r, r + W, ...); every rank steps; the reward and
  ``mean_q`` are averaged over ranks; the next observations are gathered.
* ``close``: rank 0 broadcasts a stop with its exit status, which :func:`follow` returns.

Shard observations travel as one float32 tensor per rank and step: saliency (b, g*g) and logits
(b, N) side by side.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs.mixup_env import MixupEnv
from rlmix import distributed
from rlmix.errors import RlmixError

RESET, STEP, STOP = 1, 2, 3


def _pack(obs: dict[str, np.ndarray]) -> torch.Tensor:
    sal = torch.from_numpy(obs["saliency"])
    return torch.cat([sal.reshape(sal.shape[0], -1), torch.from_numpy(obs["logits"])], dim=1)


def _exchange_step(env: MixupEnv, action: np.ndarray | None) -> tuple:
    """The collective part of a step, identical on every rank."""
    b = env.action_space.shape[0]
    local = distributed.scatter_interleaved(
        None if action is None else torch.as_tensor(action), (b,), torch.int64
    )
    obs, reward, terminated, truncated, info = env.step(local.cpu().numpy())
    stats = distributed.all_reduce_mean(torch.tensor([reward, info["mean_q"]], dtype=torch.float64))
    return obs, float(stats[0]), float(stats[1]), terminated, truncated, info


class DistributedMixupEnv(gym.Env):
    """Rank 0's view of a :class:`MixupEnv` trained on every rank of a torchrun job.

    Spaces are those of the global batch (``trainer.batch_size`` images), so a policy or an
    agent trained on W ranks acts unchanged on one rank and vice versa. ``trainer``, ``cfg``,
    ``state_dict`` and ``load_state_dict`` are rank 0's env's (the classifier is the same on
    every rank).

    Args:
        env: rank 0's local env.
    """

    metadata = {"render_modes": []}

    def __init__(self, env: MixupEnv) -> None:
        super().__init__()
        d = distributed.current()
        if not d.is_main:
            raise RuntimeError("DistributedMixupEnv lives on rank 0; other ranks call follow()")
        self.env, self.world_size = env, d.world_size
        b, n, g = env.cfg.trainer.batch_size, env.trainer.info.num_classes, env.cfg.env.obs_grid
        clip = float(env.cfg.env.logit_clip)
        self.observation_space = spaces.Dict(
            {
                "saliency": spaces.Box(0.0, 1.0, (b, g, g), np.float32),
                "logits": spaces.Box(-clip, clip, (b, n), np.float32),
            }
        )
        self.action_space = spaces.MultiDiscrete(np.full(b, env.cfg.mix.k, dtype=np.int64))
        self._open = True

    @property
    def trainer(self):
        return self.env.trainer

    @property
    def cfg(self):
        return self.env.cfg

    def state_dict(self) -> dict[str, Any]:
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state)

    def _gather(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        packed = distributed.gather_interleaved(_pack(obs)).cpu().numpy()
        g = self.env.cfg.env.obs_grid
        return {
            "saliency": np.ascontiguousarray(packed[:, : g * g].reshape(-1, g, g)),
            "logits": np.ascontiguousarray(packed[:, g * g :]),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        distributed.broadcast_ints([RESET, -1 if seed is None else int(seed)], 2)
        obs, info = self.env.reset(seed=seed)
        return self._gather(obs), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got {action.shape}"
            )
        distributed.broadcast_ints([STEP, 0], 2)
        obs, reward, mean_q, terminated, truncated, info = _exchange_step(self.env, action)
        info.update({"mean_q": mean_q, f"reward/{self.env.reward_fn.name}": reward})
        return self._gather(obs), reward, terminated, truncated, info

    def close(self, code: int = 0) -> None:
        """Release the followers; they return ``code`` from :func:`follow`."""
        if self._open:
            self._open = False
            distributed.broadcast_ints([STOP, int(code)], 2)


def follow(env: MixupEnv) -> int:
    """On ranks > 0: mirror rank 0's resets and steps until it closes; return its exit status.

    An :class:`rlmix.errors.RlmixError` (a non-finite loss, say) is decided collectively, so
    rank 0 raises it at the same step and reports it; this rank then waits for rank 0's stop.
    Any other exception ends the process, and torchrun then stops the other ranks.
    """
    failed = False
    while True:
        op, arg = distributed.broadcast_ints(None, 2)
        if op == STOP:
            return arg
        if failed:
            raise RuntimeError(f"rank 0 sent op {op} after a collective error")
        try:
            if op == RESET:
                obs, _ = env.reset(seed=None if arg < 0 else arg)
            elif op == STEP:
                obs = _exchange_step(env, None)[0]
            else:
                raise RuntimeError(f"unknown op {op} from rank 0")
        except RlmixError:
            failed = True
            continue
        distributed.gather_interleaved(_pack(obs))


__all__ = ["DistributedMixupEnv", "follow"]
