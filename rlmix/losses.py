"""Losses on soft (mixed) targets, selectable by name (config key ``trainer.loss``).

``soft_ce`` (the default) is what the R-Mix reference code trains with; ``bce`` is the multi-label
binary cross-entropy the paper's text describes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from rlmix.registry import Registry

__all__ = ["LOSSES", "bce", "get_loss", "list_losses", "soft_ce"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Loss] = Registry("loss")


def _check(logits: torch.Tensor, target: torch.Tensor) -> torch.dtype:
    if logits.dim() != 2 or logits.shape != target.shape:
        raise ValueError(
            f"logits and target must both be (B, N), got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    return torch.promote_types(logits.dtype, torch.float32)


@LOSSES.register()
def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy: batch mean of ``-sum_n target_n * log_softmax(logits)_n``.

    Args:
        logits: (B, N); target: (B, N) soft labels (rows summing to 1).

    Returns:
        0-d tensor in nats, computed in at least float32.
    """
    dtype = _check(logits, target)
    log_p = F.log_softmax(logits.to(dtype), dim=1)
    return -(target.to(dtype) * log_p).sum(dim=1).mean()


@LOSSES.register()
def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-label binary cross-entropy with logits on soft targets.

    Reduction: the per-class BCE is *summed over the N classes* and *averaged over the batch*.

    Args:
        logits: (B, N); target: (B, N) in [0, 1].

    Returns:
        0-d tensor in nats, computed in at least float32.
    """
    dtype = _check(logits, target)
    per_class = F.binary_cross_entropy_with_logits(
        logits.to(dtype), target.to(dtype), reduction="none"
    )
    return per_class.sum(dim=1).mean()


def get_loss(name: str) -> Loss:
    """The loss registered under ``name``."""
    return LOSSES.get(name)


def list_losses() -> list[str]:
    """Registered loss names."""
    return LOSSES.names()
