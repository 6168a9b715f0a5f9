"""The base class every rlmix classifier derives from.

Images enter ``forward`` in [0, 1] pixel space and are normalised inside the model, so saliency,
mixing and adversarial attacks all work on pixels (the PuzzleMix evaluation protocol).

Class activation maps use one hook on every model: ``forward_features`` gives the final feature
map (B, F, h, w) and ``get_classifier`` the final ``nn.Linear`` (N, F); the CAM of class c is
``sum_f fc.weight[c, f] * features[:, f]``. ``stages`` gives the modules whose outputs are the
hidden states after each residual stage (Manifold Mixup's layers, :mod:`rlmix.mixers.manifold`).

Also the helpers the built-in residual architectures share: :func:`blocks_per_stage`,
:func:`residual_stages` and :func:`conv_bn_shortcut`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def register_pixel_stats(
    module: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, in_chans: int
) -> None:
    """Register per-channel pixel statistics as ``module``'s (1, C, 1, 1) float32 buffers
    ``mean`` and ``std`` (default 0 and 1: no normalisation).

    Raises:
        ValueError: not ``in_chans`` values each, or a std that is not positive.
    """
    mean = [0.0] * in_chans if mean is None else list(mean)
    std = [1.0] * in_chans if std is None else list(std)
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean and std need {in_chans} values, got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {std}")
    module.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    module.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))


class Classifier(nn.Module):
    """Normalise -> ``features`` -> global average pool -> ``fc``.

    Subclasses build ``self.body`` (maps normalised images to the final feature map) and
    ``self.fc`` (``nn.Linear(num_features, num_classes)``).

    Args:
        num_classes: number of output logits N.
        num_features: channels F of the final feature map.
        mean: per-channel mean of the pixel values, length C (default zeros).
        std: per-channel standard deviation, length C (default ones).
        in_chans: input channels C.
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        register_pixel_stats(self, mean, std, in_chans)
        self.num_classes = num_classes
        self.num_features = num_features
        self.in_chans = in_chans
        self.body: nn.Module = nn.Identity()
        self.fc = nn.Linear(num_features, num_classes)
        self.stage_ends: tuple[int, ...] = ()  # index in ``body`` of each stage's last layer

    @property
    def stages(self) -> list[nn.Module]:
        """The last layer of each residual stage (in ``body``), stage 1 first: their outputs
        are the hidden states after each stage (the stem counts in stage 1)."""
        return [self.body[i] for i in self.stage_ends]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] pixels (B, C, H, W) to normalised inputs."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map (B, F, h, w) of pixel images x (B, C, H, W) in [0, 1]."""
        return self.body(self.normalize(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, N) from a feature map (B, F, h, w)."""
        return self.fc(features.mean(dim=(2, 3)))

    def get_classifier(self) -> nn.Linear:
        """The final linear layer; its weight (N, F) weights the feature map into CAMs."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def blocks_per_stage(depth: int, per_block: int, extra: int) -> int:
    """The blocks per stage n of a network ``depth = per_block * n + extra`` layers deep
    (``per_block``: the layers one more block in every stage adds).

    Raises:
        ValueError: ``depth`` is not of that form with n >= 1.
    """
    n, rest = divmod(depth - extra, per_block)
    if n < 1 or rest:
        raise ValueError(f"depth must be {per_block}n + {extra} with n >= 1, got {depth}")
    return n


def residual_stages(
    block: Callable[[int, int, int], nn.Module],
    in_planes: int,
    widths: Sequence[int],
    depths: Sequence[int],
    strides: Sequence[int],
) -> list[nn.Module]:
    """Stage i: ``depths[i]`` blocks ``block(in_planes, out_planes, stride)`` with ``widths[i]``
    output channels, the first with stride ``strides[i]``, the others 1; ``in_planes`` enter."""
    layers: list[nn.Module] = []
    for planes, depth, stride in zip(widths, depths, strides, strict=True):
        for i in range(depth):
            layers.append(block(in_planes, planes, stride if i == 0 else 1))
            in_planes = planes
    return layers


def stage_ends(first: int, depths: Sequence[int]) -> tuple[int, ...]:
    """Indices of each stage's last block in a layer list whose stages (``depths[i]`` blocks
    each, as :func:`residual_stages` builds them) start at index ``first``."""
    ends, end = [], first - 1
    for depth in depths:
        end += depth
        ends.append(end)
    return tuple(ends)


def conv_bn_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """A post-activation block's shortcut: identity, or 1x1 conv(stride) + BN where the shape
    changes."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )
