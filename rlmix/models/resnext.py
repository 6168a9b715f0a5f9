"""ResNeXt-29 (4 x 24d) for 32x32 images (Xie et al. 2017), as in the PuzzleMix / Co-Mixup code.

3x3 stem convolution (64 channels) + BN + ReLU, three stages of (depth - 2) / 9 bottleneck blocks
(1x1 reduce, grouped 3x3, 1x1 expand; post-activation) with output channels 256, 512, 1024 (strides
1, 2, 2). Stage i's grouped convolution has ``cardinality * floor(64 * 2**i * base_width / 64)``
channels; shortcuts are identity or 1x1 conv + BN. The last block's ReLU ends the body.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlmix.models import register_model
from rlmix.models.base import (
    Classifier,
    blocks_per_stage,
    conv_bn_shortcut,
    residual_stages,
    stage_ends,
)
from rlmix.models.preact_resnet import init_weights


class ResNeXtBottleneck(nn.Module):
    """conv1x1-BN-ReLU, grouped conv3x3(stride)-BN-ReLU, conv1x1-BN; add shortcut; ReLU.

    Maps (B, in_planes, H, W) to (B, out_planes, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self, in_planes: int, group_width: int, out_planes: int, cardinality: int, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_planes, group_width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(group_width)
        self.conv_group = nn.Conv2d(
            group_width, group_width, 3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.bn_group = nn.BatchNorm2d(group_width)
        self.conv_expand = nn.Conv2d(group_width, out_planes, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_planes)
        self.shortcut = conv_bn_shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn_group(self.conv_group(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + self.shortcut(x))


class ResNeXt(Classifier):
    """CIFAR ResNeXt-depth (cardinality x base_width d).

    Args:
        num_classes: number of logits N.
        **base: ``mean``, ``std`` (per-channel pixel statistics, length ``in_chans``) and
            ``in_chans`` (input channels C), for :class:`Classifier`.
        depth: total depth, 9n + 2 (n blocks per stage).
        cardinality: number of groups of the 3x3 convolutions.
        base_width: channels per group in the first stage (doubling per stage).

    The feature map is (B, 1024, H / 4, W / 4) (ceil division), i.e. (B, 1024, 8, 8) at 32x32.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        depth: int = 29,
        cardinality: int = 4,
        base_width: int = 24,
        **base: Any,
    ) -> None:
        n = blocks_per_stage(depth, 9, 2)
        if cardinality < 1 or base_width < 1:
            raise ValueError(
                f"cardinality and base_width must be >= 1, got {cardinality} and {base_width}"
            )
        super().__init__(num_classes, 1024, **base)

        def bottleneck(in_planes: int, out_planes: int, stride: int) -> ResNeXtBottleneck:
            group_width = cardinality * (out_planes // 4 * base_width // 64)  # 4x expansion
            return ResNeXtBottleneck(in_planes, group_width, out_planes, cardinality, stride)

        layers: list[nn.Module] = [
            nn.Conv2d(self.in_chans, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        ]
        self.stage_ends = stage_ends(len(layers), (n, n, n))
        layers += residual_stages(bottleneck, 64, (256, 512, 1024), (n, n, n), (1, 2, 2))
        self.body = nn.Sequential(*layers)
        self.apply(init_weights)


@register_model
def resnext29_4_24(num_classes: int, **kwargs: Any) -> ResNeXt:
    """ResNeXt-29, cardinality 4, base width 24 (4,937,252 parameters for 100 classes).

    Options: ``mean``, ``std``, ``in_chans`` (see :class:`ResNeXt`).
    """
    return ResNeXt(num_classes, depth=29, cardinality=4, base_width=24, **kwargs)
