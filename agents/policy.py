"""The per-image actor-critic policy for :class:`envs.MixupEnv` (DESIGN.md section 6).

One small network is shared across the B images of a classifier mini-batch:

1. :class:`PerImageExtractor` (SB3 features extractor) embeds each image on its own, from its
   pooled saliency map and a fixed-size summary of its logits, into ``embed_dim`` features.
2. :class:`PerImageNetwork` (SB3 ``mlp_extractor``) pools the embeddings into a batch summary
   (their mean over images). The actor latent of image i is an MLP of ``[e_i, mean_j e_j]``; the
   critic latent is an MLP of the batch summary alone.
3. ``action_net`` is a ``Linear(hidden, K)`` applied to every image's latent (per-image logits
   over the K top-k choices); ``value_net`` is a ``Linear(hidden, 1)``.
4. :class:`PerImageCategoricalDistribution` treats the B choices as independent categoricals:
   the log-probability and entropy of an action are sums over images.

No weight has a B- or N-dependent shape, so one set of weights acts on batches of any size and on
classifiers with any number of classes, and permuting the images of a batch permutes the per-image
action probabilities the same way while leaving the value unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch.distributions import Categorical

__all__ = [
    "PerImageCategoricalDistribution",
    "PerImageExtractor",
    "PerImageNetwork",
    "PerImagePolicy",
    "check_spaces",
    "logits_summary",
]


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space | None = None) -> int:
    """Validate the env's spaces for the per-image policy and return the batch size B.

    Expects ``Dict(saliency=Box((B, g, g)), logits=Box((B, N)))`` and, if given,
    ``MultiDiscrete([K] * B)`` with one K for all images.
    """
    if not isinstance(observation_space, spaces.Dict):
        raise TypeError(
            f"observation_space must be a gymnasium Dict space, got {observation_space}"
        )
    if set(observation_space.spaces) != {"saliency", "logits"}:
        raise ValueError(
            "observation_space must have exactly the keys 'saliency' and 'logits', "
            f"got {sorted(observation_space.spaces)}"
        )
    sal, logits = observation_space["saliency"], observation_space["logits"]
    if not isinstance(sal, spaces.Box) or len(sal.shape) != 3 or sal.shape[1] != sal.shape[2]:
        raise ValueError(
            f"observation_space['saliency'] must be a Box of shape (B, g, g), got {sal}"
        )
    if not isinstance(logits, spaces.Box) or len(logits.shape) != 2:
        raise ValueError(f"observation_space['logits'] must be a Box of shape (B, N), got {logits}")
    b = sal.shape[0]
    if logits.shape[0] != b:
        raise ValueError(
            f"observation_space['saliency'] and ['logits'] disagree on the batch size "
            f"({b} vs {logits.shape[0]})"
        )
    if action_space is not None:
        if not isinstance(action_space, spaces.MultiDiscrete) or action_space.nvec.ndim != 1:
            raise TypeError(f"action_space must be a 1-D MultiDiscrete space, got {action_space}")
        nvec = action_space.nvec
        if len(nvec) != b or (nvec != nvec[0]).any() or nvec[0] < 2:
            raise ValueError(
                f"action_space must be MultiDiscrete([K] * {b}) with one K >= 2 for all images, "
                f"got nvec={nvec.tolist()}"
            )
    return b


def _symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: keeps unbounded logit statistics O(1) for the MLP."""
    return torch.sign(x) * torch.log1p(x.abs())


def logits_summary(logits: torch.Tensor, top_probs: int = 3) -> torch.Tensor:
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


class PerImageExtractor(BaseFeaturesExtractor):
    """Embed every image of the batch separately with one shared MLP.

    Per-image input: the pooled saliency map flattened to g*g values and rescaled as
    ``log1p(g*g * s)`` (a uniform map gives log 2 everywhere, a one-cell map at most log(1 + g*g)),
    concatenated with :func:`logits_summary` of the image's logits.

    Args:
        observation_space: the env's ``Dict(saliency=(B, g, g), logits=(B, N))`` space; only g is
            baked into the weights.
        embed_dim: width of the per-image embedding (``features_dim``).
        activation_fn: activation class between and after the two linear layers.
        top_probs: number of sorted softmax probabilities in the logits summary.

    Forward: ``{"saliency": (n, B, g, g), "logits": (n, B, N)}`` -> (n, B, embed_dim), for any B, N.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_dim: int = 64,
        activation_fn: type[nn.Module] = nn.Tanh,
        top_probs: int = 3,
    ) -> None:
        check_spaces(observation_space)
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if top_probs < 1:
            raise ValueError(f"top_probs must be >= 1, got {top_probs}")
        super().__init__(observation_space, features_dim=embed_dim)
        self.grid = observation_space["saliency"].shape[-1]
        self.top_probs = top_probs
        in_dim = self.grid * self.grid + top_probs + 4
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, embed_dim),
            activation_fn(),
            nn.Linear(embed_dim, embed_dim),
            activation_fn(),
        )

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        sal = observations["saliency"]
        sal = torch.log1p(sal.flatten(-2) * (self.grid * self.grid))
        summary = logits_summary(observations["logits"], self.top_probs)
        return self.mlp(torch.cat([sal, summary], dim=-1))


class PerImageNetwork(nn.Module):
    """SB3 ``mlp_extractor``: batch pooling plus the actor and critic trunks.

    Args:
        embed_dim: width of the per-image features from the extractor.
        hidden: width of both trunks (``latent_dim_pi`` and ``latent_dim_vf``).
        activation_fn: activation class.

    ``forward_actor``: (n, B, embed_dim) -> (n, B, hidden), from ``[e_i, mean_j e_j]``.
    ``forward_critic``: (n, B, embed_dim) -> (n, hidden), from ``mean_j e_j`` only.
    """

    def __init__(self, embed_dim: int, hidden: int, activation_fn: type[nn.Module]) -> None:
        super().__init__()
        self.latent_dim_pi = hidden
        self.latent_dim_vf = hidden
        # the first actor layer W [e_i; m] + b, split as W_i e_i + b + W_m m (W_m m once per batch)
        self.pi_image = nn.Linear(embed_dim, hidden)
        self.pi_batch = nn.Linear(embed_dim, hidden, bias=False)
        self.policy_net = nn.Sequential(activation_fn(), nn.Linear(hidden, hidden), activation_fn())
        self.value_net = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            activation_fn(),
            nn.Linear(hidden, hidden),
            activation_fn(),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=-2, keepdim=True)
        return self.policy_net(self.pi_image(features) + self.pi_batch(pooled))

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features.mean(dim=-2))


class PerImageCategoricalDistribution(CategoricalDistribution):
    """B independent K-way categoricals from logits of shape (n, B, K), one per image.

    Same law as SB3's ``MultiCategoricalDistribution`` over ``MultiDiscrete([K] * B)``, but held as
    a single ``Categorical`` with batch shape (n, B), so nothing loops over images and B is free.
    ``self.distribution.probs`` is (n, B, K). ``log_prob`` and ``entropy`` sum over images: (n,).
    """

    def proba_distribution(self, action_logits: torch.Tensor) -> PerImageCategoricalDistribution:
        self.distribution = Categorical(logits=action_logits, validate_args=False)
        return self

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(actions.long()).sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        return self.distribution.entropy().sum(dim=-1)

    def mode(self) -> torch.Tensor:
        return self.distribution.logits.argmax(dim=-1)


class PerImagePolicy(ActorCriticPolicy):
    """SB3 actor-critic policy that shares one small network across the images of a batch.

    Use as ``PPO(PerImagePolicy, env, policy_kwargs={"embed_dim": 64, "hidden": 64})``; PPO.save /
    PPO.load need no extra code. See the module docstring for the architecture. Orthogonal init as
    in SB3 (gain sqrt(2) for the extractor and trunks, 1 for the value head, 0.01 for the action
    head, so the initial policy is near-uniform over the K choices of every image).

    Per-image action probabilities: ``policy.get_distribution(obs).distribution.probs``, shape
    (n_envs, B, K). ``get_distribution``, ``evaluate_actions`` and ``predict_values`` accept any B;
    ``forward`` and ``predict`` reshape actions to the action space's B.

    Args:
        observation_space: ``Dict(saliency=Box((B, g, g)), logits=Box((B, N)))``.
        action_space: ``MultiDiscrete([K] * B)``.
        lr_schedule: learning-rate schedule (SB3).
        embed_dim: per-image embedding width (passed to :class:`PerImageExtractor`).
        hidden: width of the actor and critic trunks.
        activation_fn: activation class (SB3's default ``nn.Tanh``).
        features_extractor_class: must output (n, B, features_dim); by default
            :class:`PerImageExtractor`, which also receives ``embed_dim`` and ``activation_fn``.
        features_extractor_kwargs: extra extractor kwargs (e.g. ``top_probs``).
        **kwargs: other :class:`ActorCriticPolicy` arguments (``ortho_init``, optimizer, ...);
            ``net_arch`` is not used and is rejected.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.MultiDiscrete,
        lr_schedule: Schedule,
        embed_dim: int = 64,
        hidden: int = 64,
        activation_fn: type[nn.Module] = nn.Tanh,
        features_extractor_class: type[BaseFeaturesExtractor] = PerImageExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        check_spaces(observation_space, action_space)
        if kwargs.pop("net_arch", None) is not None:
            raise TypeError(
                "net_arch is not used by PerImagePolicy: size it with embed_dim and hidden"
            )
        if kwargs.get("use_sde"):
            raise ValueError("use_sde must be False: PerImagePolicy has discrete actions")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        fe_kwargs = dict(features_extractor_kwargs or {})
        if issubclass(features_extractor_class, PerImageExtractor):
            if fe_kwargs.setdefault("embed_dim", embed_dim) != embed_dim:
                raise ValueError(
                    f"embed_dim is {embed_dim} but features_extractor_kwargs sets "
                    f"{fe_kwargs['embed_dim']}: set it once"
                )
            fe_kwargs.setdefault("activation_fn", activation_fn)
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.num_choices = int(action_space.nvec[0])
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=fe_kwargs,
            **kwargs,
        )

    def _build_mlp_extractor(self) -> None:
        """Replace SB3's flat MLP extractor with the pooled per-image trunks."""
        self.mlp_extractor = PerImageNetwork(self.features_dim, self.hidden, self.activation_fn)

    def _build(self, lr_schedule: Schedule) -> None:
        """Swap in the per-image distribution, so SB3's ``_build`` makes a (hidden -> K) head."""
        self.action_dist = PerImageCategoricalDistribution(self.num_choices)
        super()._build(lr_schedule)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        del data["net_arch"]
        data.update(embed_dim=self.embed_dim, hidden=self.hidden)
        return data
