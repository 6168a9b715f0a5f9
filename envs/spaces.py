"""The spaces of the rlmix environments, in one place.

Two views of the same decisions:

- the **batch** view of :class:`envs.MixupEnv` (one Gymnasium env, DESIGN.md section 5):
  ``Dict(saliency=Box(0, 1, (B, g, g)), logits=Box(-L, L, (B, N)))`` and
  ``MultiDiscrete([K] * B)``;
- the **slot** view of :class:`envs.ImageSlotVecEnv` (B sub-environments, one per image slot):
  ``Dict(saliency=Box(0, 1, (g, g)), logits=Box(-L, L, (N,)), context=Box(0, 1, (C,)))`` and
  ``Discrete(K)``, where ``context`` holds :data:`CONTEXT` (batch summary and training progress).

With partner-aware decisions (``env.partner_first``) the partner permutation, lam and grid are
drawn before the action and shown: the batch view gains ``partner`` (``MultiDiscrete([B] * B)``,
image i's partner index), ``lam`` (``Box(0, 1, (B,))``, image i's mixing coefficient) and
``grid`` (``Box(0, 1, (1,))``, 1 / the mixing grid side); each slot gains its partner's
``partner_saliency`` (g, g) and ``partner_logits`` (N,) and ``mix`` = ``[lam, 1 / grid]``
(:data:`PARTNER_KEYS`).

An action index ``a`` means the top-k ``q = topk_space(K)[a]`` (:func:`rlmix.mixing.topk_space`).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from rlmix.mixing import MixParams
from rlmix.saliency import pool_saliency

#: The slot observation's ``context`` features, each in [0, 1]:
CONTEXT = (
    "progress",  # fraction of the run's optimiser steps done
    "lr",  # current learning rate / trainer.lr_max
    "confidence_rank",  # this image's rank of top-1 softmax probability in its batch, in [0, 1]
    "saliency_peak_rank",  # this image's rank of its largest saliency cell in its batch
    "batch_confidence",  # batch mean of the top-1 softmax probability
    "batch_entropy",  # batch mean of the softmax entropy / ln N
    "batch_saliency_entropy",  # batch mean of the saliency map's entropy / ln g^2
    "batch_saliency_peak",  # batch mean of the largest saliency cell
)


#: The slot keys that partner-aware decisions (``env.partner_first``) add.
PARTNER_KEYS = ("partner_saliency", "partner_logits", "mix")


def batch_observation(
    saliency: torch.Tensor,
    logits: torch.Tensor,
    obs_grid: int,
    logit_clip: float,
    params: MixParams | None = None,
) -> dict[str, np.ndarray]:
    """The batch view's observation of a batch's input saliency (B, H, W) and logits (B, N):
    the saliency pooled to ``obs_grid`` x ``obs_grid`` in [0, 1] and the logits clipped to
    ``logit_clip``, as float32 arrays on the CPU (the env and :class:`agents.AgentMix` alike).
    With the batch's mixing ``params`` drawn before the action, also ``partner``, ``lam`` and
    ``grid`` (:func:`partner_observation`)."""
    pooled = pool_saliency(saliency.detach(), obs_grid).clamp_(0.0, 1.0)
    clipped = logits.detach().clamp(-logit_clip, logit_clip)
    obs = {
        "saliency": pooled.to("cpu", torch.float32).numpy(),
        "logits": clipped.to("cpu", torch.float32).numpy(),
    }
    if params is not None:
        obs.update(partner_observation(params, pooled.shape[0]))
    return obs


def partner_observation(params: MixParams, batch_size: int) -> dict[str, np.ndarray]:
    """The batch view's ``partner`` (B,) int64, ``lam`` (B,) float32 and ``grid`` (1,) float32
    (1 / side) of mixing parameters drawn before the action."""
    lam = torch.as_tensor(params.lam, dtype=torch.float32).cpu().expand(batch_size)
    return {
        "partner": params.perm.to("cpu", torch.int64).numpy(),
        "lam": lam.numpy().copy(),
        "grid": np.array([1.0 / params.grid if params.grid else 0.0], np.float32),
    }


def slot_partner(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The slot keys of :data:`PARTNER_KEYS` (B, ...) from a batch observation that has
    ``partner``, ``lam`` and ``grid``: each image's partner's saliency and logits, and
    ``[lam_i, 1 / grid]``."""
    perm = obs["partner"]
    b = perm.shape[0]
    grid = np.broadcast_to(obs["grid"].astype(np.float32), (b, 1))
    return {
        "partner_saliency": obs["saliency"][perm],
        "partner_logits": obs["logits"][perm],
        "mix": np.concatenate([obs["lam"].astype(np.float32).reshape(b, 1), grid], axis=1),
    }


def batch_ranks(values: torch.Tensor) -> torch.Tensor:
    """Each entry's rank (B,) long in its batch (0 = smallest; ties by batch position).

    The one ranking behind the ``*_rank`` features of :data:`CONTEXT` and the targets of the
    ``probe_rank`` reward, so that the probe's optimum is exactly what a slot observes.
    """
    b = values.shape[0]
    rank = torch.empty(b, dtype=torch.long, device=values.device)
    rank[torch.argsort(values, stable=True)] = torch.arange(b, device=values.device)
    return rank


def batch_spaces(
    batch_size: int,
    num_classes: int,
    obs_grid: int,
    k: int,
    logit_clip: float,
    partner: bool = False,
) -> tuple[spaces.Dict, spaces.MultiDiscrete]:
    """Observation and action spaces of the batch env (``partner``: ``env.partner_first``)."""
    clip = float(logit_clip)
    keys = {
        "saliency": spaces.Box(0.0, 1.0, (batch_size, obs_grid, obs_grid), np.float32),
        "logits": spaces.Box(-clip, clip, (batch_size, num_classes), np.float32),
    }
    if partner:
        keys["partner"] = spaces.MultiDiscrete(np.full(batch_size, batch_size, dtype=np.int64))
        keys["lam"] = spaces.Box(0.0, 1.0, (batch_size,), np.float32)
        keys["grid"] = spaces.Box(0.0, 1.0, (1,), np.float32)
    return spaces.Dict(keys), spaces.MultiDiscrete(np.full(batch_size, k, dtype=np.int64))


def slot_spaces(
    num_classes: int, obs_grid: int, k: int, logit_clip: float, partner: bool = False
) -> tuple[spaces.Dict, spaces.Discrete]:
    """Observation and action spaces of one image slot (``partner``: with
    :data:`PARTNER_KEYS`)."""
    clip = float(logit_clip)
    keys = {
        "saliency": spaces.Box(0.0, 1.0, (obs_grid, obs_grid), np.float32),
        "logits": spaces.Box(-clip, clip, (num_classes,), np.float32),
        "context": spaces.Box(0.0, 1.0, (len(CONTEXT),), np.float32),
    }
    if partner:
        keys["partner_saliency"] = spaces.Box(0.0, 1.0, (obs_grid, obs_grid), np.float32)
        keys["partner_logits"] = spaces.Box(-clip, clip, (num_classes,), np.float32)
        keys["mix"] = spaces.Box(0.0, 1.0, (2,), np.float32)
    return spaces.Dict(keys), spaces.Discrete(k)


def has_partner(observation: spaces.Dict) -> bool:
    """Whether a slot observation space is partner-aware (has :data:`PARTNER_KEYS`)."""
    return all(key in observation.spaces for key in PARTNER_KEYS)


def batch_size_of(space: spaces.MultiDiscrete) -> tuple[int, int]:
    """``(B, K)`` of a batch action space; raises ValueError for anything else."""
    if not isinstance(space, spaces.MultiDiscrete) or space.nvec.ndim != 1:
        raise ValueError(f"action_space must be a 1-D MultiDiscrete space, got {space}")
    nvec = space.nvec
    if (nvec != nvec[0]).any() or nvec[0] < 2:
        raise ValueError(
            f"action_space must be MultiDiscrete([K] * B) with one K >= 2 for every image, "
            f"got nvec={nvec.tolist()}"
        )
    return len(nvec), int(nvec[0])


def check_slot_spaces(observation: spaces.Space, action: spaces.Space) -> tuple[int, int]:
    """``(g, K)`` of slot spaces as :func:`slot_spaces` makes them; ValueError otherwise."""
    own = {"saliency", "logits", "context"}
    if not isinstance(observation, spaces.Dict) or set(observation.spaces) not in (
        own,
        own | set(PARTNER_KEYS),
    ):
        raise ValueError(
            "observation_space must be a Dict with the keys 'saliency', 'logits' and 'context' "
            f"(and, partner-aware, {', '.join(map(repr, PARTNER_KEYS))}: one image slot, see "
            f"envs.spaces.slot_spaces), got {observation}"
        )
    sal, logits, context = (observation[k] for k in ("saliency", "logits", "context"))
    if len(sal.shape) != 2 or sal.shape[0] != sal.shape[1]:
        raise ValueError(f"observation_space['saliency'] must have shape (g, g), got {sal.shape}")
    if len(logits.shape) != 1:
        raise ValueError(f"observation_space['logits'] must have shape (N,), got {logits.shape}")
    if context.shape != (len(CONTEXT),):
        raise ValueError(
            f"observation_space['context'] must have shape ({len(CONTEXT)},), got {context.shape}"
        )
    if not isinstance(action, spaces.Discrete) or action.n < 2:
        raise ValueError(f"action_space must be Discrete(K) with K >= 2, got {action}")
    return sal.shape[0], int(action.n)


def check_action(action: object, space: spaces.MultiDiscrete) -> np.ndarray:
    """``action`` as an int64 array, or a ValueError saying what the batch env expects."""
    b, k = batch_size_of(space)
    arr = np.asarray(action)
    expected = (
        f"one top-k index per image: an integer array of shape ({b},) with values in [0, {k})"
    )
    if arr.shape != (b,):
        raise ValueError(f"action must have shape ({b},), got {arr.shape}; expected {expected}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"action must hold integers, got dtype {arr.dtype}; expected {expected}")
    if b and (arr.min() < 0 or arr.max() >= k):
        bad = int(arr[(arr < 0) | (arr >= k)][0])
        raise ValueError(f"action holds {bad}, outside [0, {k}); expected {expected}")
    return arr.astype(np.int64, copy=False)


__all__ = [
    "CONTEXT",
    "PARTNER_KEYS",
    "batch_observation",
    "batch_ranks",
    "batch_size_of",
    "batch_spaces",
    "check_action",
    "check_slot_spaces",
    "has_partner",
    "partner_observation",
    "slot_partner",
    "slot_spaces",
]
