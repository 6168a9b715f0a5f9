"""Wide ResNets for 32x32 images (Zagoruyko & Komodakis 2016), WRN-16-8 and WRN-28-10.

Matches the variant in the PuzzleMix / Co-Mixup / R-Mix reference code, so parameter counts agree
with the usual figures (WRN-28-10, 100 classes: 36,546,980): 3x3 stem convolution with 16 channels,
three stages of (depth - 4) / 6 pre-activation basic blocks with 16k, 32k, 64k channels (strides
1, 2, 2), convolutions *with* bias, the stride on the block's second convolution, 1x1 projection
shortcuts on the block input, and a final BN + ReLU. Dropout (default off) sits between the two
convolutions of each block, as in the original WRN.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlmix.models import register_model
from rlmix.models.base import Classifier, blocks_per_stage, residual_stages, stage_ends
from rlmix.models.preact_resnet import init_weights


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3(stride) plus identity or 1x1 projection shortcut.

    Maps (B, in_planes, H, W) to (B, planes, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + self.shortcut(x)


class WideResNet(Classifier):
    """WRN-depth-k for small images.

    Args:
        num_classes: number of logits N.
        **base: ``mean``, ``std`` (per-channel pixel statistics, length ``in_chans``) and
            ``in_chans`` (input channels C), for :class:`Classifier`.
        depth: total depth, 6n + 4 (n blocks per stage).
        widen_factor: width multiplier k.
        dropout: dropout probability inside each block, in [0, 1).

    The feature map is (B, 64k, H / 4, W / 4) (ceil division), i.e. (B, 64k, 8, 8) at 32x32.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
        **base: Any,
    ) -> None:
        n = blocks_per_stage(depth, 6, 4)
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        super().__init__(num_classes, widths[-1], **base)
        layers: list[nn.Module] = [nn.Conv2d(self.in_chans, 16, 3, padding=1, bias=True)]
        block = functools.partial(WideBasic, dropout=dropout)
        self.stage_ends = stage_ends(len(layers), (n, n, n))
        layers += residual_stages(block, 16, widths, (n, n, n), (1, 2, 2))
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.apply(init_weights)


@register_model
def wrn16_8(num_classes: int, **kwargs: Any) -> WideResNet:
    """WRN-16-8 (11,012,036 parameters for 100 classes).

    Options: ``dropout``, and ``mean``, ``std``, ``in_chans`` (see :class:`WideResNet`).
    """
    return WideResNet(num_classes, depth=16, widen_factor=8, **kwargs)


@register_model
def wrn28_10(num_classes: int, **kwargs: Any) -> WideResNet:
    """WRN-28-10 (36,546,980 parameters for 100 classes).

    Options: ``dropout``, and ``mean``, ``std``, ``in_chans`` (see :class:`WideResNet`).
    """
    return WideResNet(num_classes, depth=28, widen_factor=10, **kwargs)
