"""The per-image actor-critic policy of the RL-Mix agent (DESIGN.md section 6).

The agent acts on :class:`envs.ImageSlotVecEnv`: each image of a batch is one sub-environment,
so the policy sees one image at a time and SB3 batches the images for it. Per image:

1. :class:`SlotExtractor` (SB3 features extractor) embeds the image from its pooled saliency map
   (``log1p(g*g * s)``, so a uniform map gives log 2 per cell), a fixed-size summary of its
   logits (:func:`logits_summary`: class-order and class-count independent) and the slot's
   ``context`` (its rank in the batch, batch summaries, training progress and LR); with
   partner-aware decisions (``env.partner_first``) also its partner's saliency and logits
   summary, embedded the same way, and ``mix`` (its lam and 1 / grid).
2. SB3's actor and critic MLPs (one hidden layer of ``hidden`` units each) on that embedding;
   ``action_net`` gives the K logits of the image's top-k choice, ``value_net`` its baseline.

No weight has a B- or N-dependent shape: one set of weights acts on batches of any size and on
classifiers with any number of classes, and since every image is processed alone (its batch
enters only through ``context``), permuting a batch permutes the actions the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from envs.spaces import CONTEXT, check_slot_spaces, has_partner

__all__ = ["TOP_PROBS", "PerImagePolicy", "SlotExtractor", "logits_summary", "slot_features"]

TOP_PROBS = 3  # the largest softmax probabilities in the logits summary


def _symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: keeps unbounded logit statistics O(1) for the MLP."""
    return torch.sign(x) * torch.log1p(x.abs())


def logits_summary(logits: torch.Tensor, top_probs: int = TOP_PROBS) -> torch.Tensor:
    """A fixed-size, class-order- and class-count-independent summary of each image's logits.

    Args:
        logits: (..., N) classifier logits, N >= 1.
        top_probs: how many of the largest softmax probabilities to keep.

    Returns:
        (..., top_probs + 4) features, in this order:
        the ``top_probs`` largest softmax probabilities, descending (zero-padded when
        N < top_probs: missing classes have probability 0); the entropy of the softmax divided
        by log N (in [0, 1]; 0 when N = 1); and, through ``symlog``, the top1 - top2 logit
        margin (0 when N = 1), the max logit and the logsumexp of the logits.
    """
    n = logits.shape[-1]
    logp = torch.log_softmax(logits, dim=-1)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    # softmax is monotone: the top logits give the top probabilities (one topk instead of two)
    top = torch.topk(logits, min(max(top_probs, 2), n), dim=-1).values
    probs = (top[..., :top_probs] - lse).exp()
    if probs.shape[-1] < top_probs:
        probs = nn.functional.pad(probs, (0, top_probs - probs.shape[-1]))
    entropy = -(logp.exp() * logp).sum(-1, keepdim=True)
    entropy = entropy / math.log(n) if n > 1 else torch.zeros_like(entropy)
    margin = top[..., :1] - top[..., 1:2] if n > 1 else torch.zeros_like(lse)
    return torch.cat([probs, entropy, _symlog(margin), _symlog(top[..., :1]), _symlog(lse)], -1)


def slot_features(grid: int, partner: bool, top_probs: int = TOP_PROBS) -> int:
    """The width of one slot's input to :class:`SlotExtractor` (its first linear layer's
    ``in_features``): the ``grid x grid`` saliency, the logits summary and the context, and with
    ``partner`` the partner's saliency and summary and ``mix``."""
    image = grid * grid + top_probs + 4
    return image + len(CONTEXT) + (image + 2 if partner else 0)


class SlotExtractor(BaseFeaturesExtractor):
    """Embed one image slot: ``[log1p(g*g * saliency), logits_summary(logits), context]`` -> MLP.

    Args:
        observation_space: a slot space of :func:`envs.spaces.slot_spaces`; only g is baked
            into the weights.
        embed_dim: width of the embedding (``features_dim``).
        activation_fn: activation class after each of the two linear layers.
        top_probs: number of sorted softmax probabilities in the logits summary.

    Forward: ``{"saliency": (n, g, g), "logits": (n, N), "context": (n, C)}`` -> (n, embed_dim).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_dim: int = 64,
        activation_fn: type[nn.Module] = nn.Tanh,
        top_probs: int = TOP_PROBS,
    ) -> None:
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if top_probs < 1:
            raise ValueError(f"top_probs must be >= 1, got {top_probs}")
        super().__init__(observation_space, features_dim=embed_dim)
        self.grid = observation_space["saliency"].shape[-1]
        self.top_probs = top_probs
        self.partner = has_partner(observation_space)
        self.mlp = nn.Sequential(
            nn.Linear(slot_features(self.grid, self.partner, top_probs), embed_dim),
            activation_fn(),
            nn.Linear(embed_dim, embed_dim),
            activation_fn(),
        )

    def _image(self, saliency: torch.Tensor, logits: torch.Tensor) -> list[torch.Tensor]:
        sal = torch.log1p(saliency.flatten(-2) * (self.grid * self.grid))
        return [sal, logits_summary(logits, self.top_probs)]

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = self._image(observations["saliency"], observations["logits"])
        parts.append(observations["context"])
        if self.partner:
            parts += self._image(observations["partner_saliency"], observations["partner_logits"])
            parts.append(observations["mix"])
        return self.mlp(torch.cat(parts, dim=-1))


class PerImagePolicy(ActorCriticPolicy):
    """SB3 actor-critic policy for one image slot (see the module docstring).

    Use as ``PPO(PerImagePolicy, ImageSlotVecEnv(env), policy_kwargs={"embed_dim": 64,
    "hidden": 64})``; ``PPO.save`` / ``PPO.load`` need no extra code. Orthogonal init as in SB3
    (gain 0.01 for the action head, so the initial policy is near-uniform over the K choices).

    Per-image action probabilities: ``policy.get_distribution(obs).distribution.probs``, (n, K).

    Args:
        observation_space: a slot space (:func:`envs.spaces.slot_spaces`).
        action_space: ``Discrete(K)``.
        lr_schedule: learning-rate schedule (SB3).
        embed_dim: width of the per-image embedding (:class:`SlotExtractor`).
        hidden: width of the one hidden layer of the actor and of the critic.
        activation_fn: activation class (SB3's default ``nn.Tanh``).
        **kwargs: other :class:`ActorCriticPolicy` arguments (``ortho_init``, optimizer, ...);
            ``net_arch`` and the features extractor are set from ``embed_dim`` and ``hidden``.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        embed_dim: int = 64,
        hidden: int = 64,
        activation_fn: type[nn.Module] = nn.Tanh,
        **kwargs: Any,
    ) -> None:
        check_slot_spaces(observation_space, action_space)
        for key in ("net_arch", "features_extractor_class"):
            if kwargs.pop(key, None) is not None:
                raise TypeError(
                    f"{key} is not used by PerImagePolicy: size it with embed_dim and hidden"
                )
        if kwargs.get("use_sde"):
            raise ValueError("use_sde must be False: PerImagePolicy has discrete actions")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        fe_kwargs = dict(kwargs.pop("features_extractor_kwargs", None) or {})
        if fe_kwargs.setdefault("embed_dim", embed_dim) != embed_dim:
            raise ValueError(
                f"embed_dim is {embed_dim} but features_extractor_kwargs sets "
                f"{fe_kwargs['embed_dim']}: set it once"
            )
        fe_kwargs.setdefault("activation_fn", activation_fn)
        self.embed_dim, self.hidden = embed_dim, hidden
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch={"pi": [hidden], "vf": [hidden]},
            activation_fn=activation_fn,
            features_extractor_class=SlotExtractor,
            features_extractor_kwargs=fe_kwargs,
            **kwargs,
        )

    def action_probs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-image probabilities (n, K) of the K top-k choices."""
        return self.get_distribution(obs).distribution.probs

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("net_arch", "features_extractor_class", "features_extractor_kwargs"):
            data.pop(key, None)
        data.update(embed_dim=self.embed_dim, hidden=self.hidden)
        return data
