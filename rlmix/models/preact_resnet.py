"""PreAct ResNet-18 for 32x32 images (He et al. 2016b, "Identity Mappings in Deep Residual Nets").

The CIFAR variant used by Manifold Mixup / PuzzleMix / Co-Mixup / R-Mix: a 3x3 stem convolution
(stride 1, 64 channels), four stages of two pre-activation basic blocks (64, 128, 256, 512 channels,
strides 1, 2, 2, 2), 1x1 projection shortcuts taken from the pre-activated input. Unlike the
PuzzleMix/Co-Mixup code, the body ends with the final BN + ReLU of the pre-activation design, so the
feature map that feeds the CAMs is normalised and rectified (+1,024 parameters).

Also home of :func:`init_weights`, the initialisation shared by every rlmix architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlmix.models import register_model
from rlmix.models.base import Classifier, residual_stages, stage_ends


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU gain) conv weights and zero conv biases; BN weight 1, bias 0.

    Use as ``model.apply(init_weights)``; linear layers keep PyTorch's default initialisation.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus identity (or 1x1 projection) shortcut.

    Maps (B, in_planes, H, W) to (B, planes, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection sees the pre-activated input; the identity sees the raw residual stream.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(Classifier):
    """Pre-activation ResNet with basic blocks for small (e.g. 32x32) images.

    Args:
        num_classes: number of logits N.
        **base: ``mean``, ``std`` (per-channel pixel statistics, length ``in_chans``) and
            ``in_chans`` (input channels C), for :class:`Classifier`.
        blocks: number of blocks in each of the four stages.
        width: channels of the stem and first stage; stage i has ``width * 2**i`` channels.

    The feature map is (B, 8 * width, H / 8, W / 8) (ceil division), i.e. (B, 512, 4, 4) at 32x32.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        **base: Any,
    ) -> None:
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive stage depths, got {tuple(blocks)}")
        super().__init__(num_classes, 8 * width, **base)
        widths = [width * 2**stage for stage in range(4)]
        layers: list[nn.Module] = [nn.Conv2d(self.in_chans, width, 3, padding=1, bias=False)]
        self.stage_ends = stage_ends(len(layers), blocks)
        layers += residual_stages(PreActBlock, width, widths, blocks, (1, 2, 2, 2))
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.apply(init_weights)


@register_model
def preactresnet18(num_classes: int, **kwargs: Any) -> PreActResNet:
    """PreAct ResNet-18 (11,218,340 parameters for 100 classes, 11,172,170 for 10).

    Options: ``mean``, ``std``, ``in_chans`` (see :class:`PreActResNet`).
    """
    return PreActResNet(num_classes, blocks=(2, 2, 2, 2), **kwargs)
