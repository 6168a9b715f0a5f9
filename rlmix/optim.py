"""The paper's optimiser and schedule from :class:`rlmix.config.TrainerConfig`.

SGD with (Nesterov) momentum and weight decay, and OneCycleLR stepped per batch, expressed as the
three learning rates the paper names: from ``lr_start`` up to ``lr_max`` over the first
``pct_start`` of the steps, then (cosine) down to ``lr_end``. PyTorch's ``final_div_factor``
divides the *initial* LR, so it is ``lr_start / lr_end`` here.
"""

from __future__ import annotations

import torch
from torch import nn

from rlmix.config import TrainerConfig


def build_optimizer(
    model: nn.Module, t: TrainerConfig, total_steps: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.OneCycleLR]:
    """``(optimizer, scheduler)`` for ``total_steps`` optimiser steps."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=t.lr_start,
        momentum=t.momentum,
        nesterov=t.nesterov and t.momentum > 0,
        weight_decay=t.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=t.lr_max,
        total_steps=total_steps,
        pct_start=t.pct_start,
        div_factor=t.lr_max / t.lr_start,
        final_div_factor=t.lr_start / t.lr_end,
        cycle_momentum=False,
    )
    return optimizer, scheduler


__all__ = ["build_optimizer"]
