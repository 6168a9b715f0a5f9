"""One environment over W ``torchrun`` ranks: rank 0 acts for the global batch, the others follow.

Every rank owns a :class:`envs.MixupEnv` that trains the shared (DDP) classifier on its shard of
each global batch. Rank 0 wraps its env in :class:`DistributedMixupEnv`, whose spaces are those
of the global batch, and hands it to the policy (a fixed one or the PPO agent: exactly one
learner exists, on rank 0). Every other rank calls :func:`follow`, which mirrors rank 0's calls:

* ``reset``: rank 0 broadcasts the op (and seed); every rank resets; the shards' observations
  are gathered to rank 0 and interleaved into global-batch order.
* ``step``: rank 0 broadcasts the op and scatters the global action, so rank r receives the
  actions of its images (global positions r, r + W, ...); every rank steps; the next
  observations and the per-image rewards are gathered into global-batch order (the reward is
  their mean); ``mean_q`` is averaged over ranks.
* ``close``: rank 0 broadcasts a stop with its exit status, which :func:`follow` returns.

Shard observations travel as one float64 tensor per rank and step: saliency (b, g*g), logits
(b, N), with partner-aware decisions (``env.partner_first``) each image's partner and lam (b, 2),
and the per-image reward and its counterfactual (b, 2), side by side. Partners are drawn within
each rank's shard (as timm, torchvision and OpenMixup pair images on each GPU); the global
observation names them by their global position, so each slot sees its own partner. The step's scalar
rewards and policy gains (``reward/<name>``, ``policy_gain/<name>``) are averaged over ranks.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.mixup_env import ActType, MixupEnv, ObsType
from envs.spaces import batch_spaces, check_action
from rlmix import distributed
from rlmix.errors import RlmixError

RESET, STEP, STOP = 1, 2, 3


def _pack(
    obs: ObsType, reward: np.ndarray | None = None, counterfactual: np.ndarray | None = None
) -> torch.Tensor:
    """One shard's observation with its per-image reward and counterfactual (zeros if None);
    with partner-aware decisions also each image's partner, as its position in the global
    batch (rank r's image i is at r + W * i), and its lam."""
    sal = torch.from_numpy(obs["saliency"]).double()
    b = sal.shape[0]
    columns = [sal.reshape(b, -1), torch.from_numpy(obs["logits"]).double()]
    if "partner" in obs:
        d = distributed.current()
        partner = d.rank + d.world_size * torch.from_numpy(obs["partner"]).double()
        columns += [partner.reshape(b, 1), torch.from_numpy(obs["lam"]).double().reshape(b, 1)]
    columns += [
        torch.zeros(b, 1, dtype=torch.float64)
        if v is None
        else torch.from_numpy(np.asarray(v, np.float64)).reshape(b, 1)
        for v in (reward, counterfactual)
    ]
    return torch.cat(columns, 1)


def _averaged(info: dict[str, Any]) -> dict[str, float]:
    """``mean_q`` and the scalar rewards and gains of a step, averaged over ranks."""
    keys = sorted(k for k in info if k == "mean_q" or k.startswith(("reward/", "policy_gain/")))
    values = torch.tensor([float(info[k]) for k in keys], dtype=torch.float64)
    return dict(zip(keys, distributed.all_reduce_mean(values).tolist(), strict=True))


def _exchange_step(env: MixupEnv, action: np.ndarray | None) -> tuple:
    """The collective part of a step, identical on every rank."""
    b = env.action_space.shape[0]
    local = distributed.scatter_interleaved(
        None if action is None else torch.as_tensor(action), (b,), torch.int64
    )
    obs, _, terminated, truncated, info = env.step(local.cpu().numpy())
    averaged = _averaged(info)
    packed = distributed.gather_interleaved(
        _pack(obs, info["reward_per_image"], info.get("counterfactual_per_image"))
    )
    return packed, obs, averaged, terminated, truncated, info


class DistributedMixupEnv(gym.Env[ObsType, ActType]):
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
        cfg = env.cfg
        self.partner_first = env.partner_first
        self.observation_space, self.action_space = batch_spaces(
            cfg.trainer.batch_size,
            env.trainer.info.num_classes,
            cfg.env.obs_grid,
            cfg.mix.k,
            cfg.env.logit_clip,
            partner=self.partner_first,
        )
        self.reward_fn = env.reward_fn
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

    def _unpack(
        self, packed: torch.Tensor, local: ObsType
    ) -> tuple[ObsType, np.ndarray, np.ndarray]:
        """The global observation, per-image rewards and counterfactuals; the grid is
        ``local``'s (every rank draws the same one from the epoch's mixing stream)."""
        packed = packed.cpu().numpy()
        g = self.env.cfg.env.obs_grid
        end = -4 if self.partner_first else -2
        obs = {
            "saliency": packed[:, : g * g].reshape(-1, g, g).astype(np.float32),
            "logits": packed[:, g * g : end].astype(np.float32),
        }
        if self.partner_first:
            obs["partner"] = np.rint(packed[:, -4]).astype(np.int64)
            obs["lam"] = packed[:, -3].astype(np.float32)
            obs["grid"] = local["grid"].copy()
        return obs, np.ascontiguousarray(packed[:, -2]), np.ascontiguousarray(packed[:, -1])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        distributed.broadcast_ints([RESET, -1 if seed is None else int(seed)], 2)
        obs, info = self.env.reset(seed=seed)
        return self._unpack(distributed.gather_interleaved(_pack(obs)), obs)[0], info

    def step(self, action: ActType) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        action = check_action(action, self.action_space)
        distributed.broadcast_ints([STEP, 0], 2)
        packed, local, averaged, terminated, truncated, info = _exchange_step(self.env, action)
        obs, per_image, counterfactual = self._unpack(packed, local)
        reward = float(per_image.mean())
        info.update(averaged)
        info.update({f"reward/{self.reward_fn.name}": reward, "reward_per_image": per_image})
        if "counterfactual_per_image" in info:
            info["counterfactual_per_image"] = counterfactual
        return obs, reward, terminated, truncated, info

    def close(self, code: int = 0) -> None:
        """Release the followers; they return ``code`` from :func:`follow`."""
        if self._open:
            self._open = False
            distributed.broadcast_ints([STOP, int(code)], 2)


def follow(env: MixupEnv) -> int:
    """On ranks > 0: mirror rank 0's resets and steps until it closes; return its exit status.

    An :class:`rlmix.errors.RlmixError` (a non-finite loss, a reward that raised on any rank, a
    bad batch) is decided collectively, so every rank raises it at the same step; this rank
    waits for rank 0's stop and then raises it too, so every rank reports the same line. Any
    other exception ends the process, and torchrun then stops the other ranks.
    """
    failed: RlmixError | None = None
    while True:
        op, arg = distributed.broadcast_ints(None, 2)
        if op == STOP:
            if failed is not None:  # every rank reports the error that stopped them all
                raise failed
            return arg
        if failed is not None:
            raise RuntimeError(f"rank 0 sent op {op} after a collective error")
        try:
            if op == RESET:
                obs, _ = env.reset(seed=None if arg < 0 else arg)
                distributed.gather_interleaved(_pack(obs))
            elif op == STEP:
                _exchange_step(env, None)
            else:
                raise RuntimeError(f"unknown op {op} from rank 0")
        except RlmixError as e:
            failed = e


__all__ = ["DistributedMixupEnv", "follow"]
