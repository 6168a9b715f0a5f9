"""Input saliency (paper eq. 2) and its pooled, normalised grid (eq. 3).

Saliency is the gradient of the batch-mean cross-entropy with respect to the *input* pixels only:
weight gradients are never computed, which is what makes R-Mix cheaper than two full training
passes. Images are in [0, 1] pixel space, so the saliency is per pixel of that space.

:func:`input_saliency` is a function of its arguments but for one side effect: in train mode
(the reference code's and the default) the forward updates BatchNorm's running statistics, as
any training forward does; ``mode="eval"`` leaves the model untouched.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["input_saliency", "pool_saliency"]


def input_saliency(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mode: Literal["train", "eval"] = "train",
    keep_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel input saliency ``s = sqrt(mean_c g_c^2)`` with ``g = dCE(model(x), y) / dx``.

    Args:
        model: classifier mapping (B, C, H, W) images to (B, N) logits.
        x: images (B, C, H, W), floating point, [0, 1] pixel space. Not modified.
        y: (B,) long class indices, or (B, N) soft labels (rows summing to 1).
        mode: module mode for the pass, ``"train"`` (as the reference code; BatchNorm uses batch
            statistics and updates its running ones) or ``"eval"``. Every submodule's own mode
            is restored afterwards.
        keep_graph: return the logits attached to the forward's graph, so that a loss on them
            (PuzzleMix's and Co-Mixup's clean-batch loss) can be backpropagated to the weights
            later, before the weights change.

    Returns:
        ``(saliency, logits)``: saliency (B, H, W) in x's dtype (non-negative, units of loss per
        pixel intensity, batch-mean loss), and the logits (B, N) of the same forward, detached
        unless ``keep_graph``. Parameters' ``.grad`` are untouched; no graph is kept unless
        ``keep_graph``.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of images (B, C, H, W)")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D images (B, C, H, W), got shape {tuple(x.shape)}")
    if not isinstance(y, torch.Tensor):
        raise TypeError("y must be a tensor of (B,) long labels or (B, N) soft labels")
    hard = y.dim() == 1 and y.dtype == torch.long
    soft = y.dim() == 2 and y.is_floating_point()
    if not (hard or soft):
        raise ValueError(
            f"y must be (B,) long labels or (B, N) floating soft labels, got {y.dtype} of "
            f"shape {tuple(y.shape)}"
        )
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has batch size {y.shape[0]} but x has {x.shape[0]}")

    modes = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_in)
            if soft and y.shape[1] != logits.shape[1]:
                raise ValueError(
                    f"y has {y.shape[1]} classes but the model returns {logits.shape[1]} logits"
                )
            dtype = torch.promote_types(logits.dtype, torch.float32)
            target = y.to(dtype) if soft else y
            loss = F.cross_entropy(logits.to(dtype), target)
            (grad,) = torch.autograd.grad(loss, x_in, retain_graph=keep_graph)
    finally:
        for module, training in modes:
            module.training = training
    saliency = grad.to(dtype).pow(2).mean(dim=1).sqrt().to(x.dtype)
    return saliency, logits if keep_graph else logits.detach()


def pool_saliency(saliency: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool each saliency map to ``grid x grid`` cells and normalise it to sum 1.

    Args:
        saliency: non-negative, finite maps (B, H, W); ``grid`` must divide H and W.
        grid: cells per side; the pooling kernel is (H // grid, W // grid) with the same stride.

    Returns:
        (B, grid, grid) in saliency's dtype, each map summing to 1 (a cell holds its share of the
        image's saliency). An all-zero map becomes uniform, 1 / grid**2 per cell; never NaN/inf.
    """
    if not isinstance(saliency, torch.Tensor) or not saliency.is_floating_point():
        raise TypeError("saliency must be a floating-point tensor (B, H, W)")
    if saliency.dim() != 3:
        raise ValueError(f"saliency must be 3-D maps (B, H, W), got shape {tuple(saliency.shape)}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    b, h, w = saliency.shape
    if h % grid or w % grid:
        raise ValueError(f"grid {grid} does not divide the saliency map size {h}x{w}")
    dtype = torch.promote_types(saliency.dtype, torch.float32)
    pooled = saliency.to(dtype).reshape(b, grid, h // grid, grid, w // grid).mean(dim=(2, 4))
    # Scale by the maximum first so tiny (subnormal) or huge maps normalise without under/overflow.
    peak = pooled.amax(dim=(1, 2), keepdim=True)
    pooled = pooled / torch.where(peak > 0, peak, torch.ones_like(peak))
    total = pooled.sum(dim=(1, 2), keepdim=True)
    uniform = torch.full_like(pooled, 1.0 / grid**2)
    pooled = torch.where(total > 0, pooled / torch.where(total > 0, total, 1.0), uniform)
    return pooled.to(saliency.dtype)
