"""BatchNorm over the global batch of a ``torchrun`` job, on any backend (gloo included).

``torch.nn.SyncBatchNorm`` only runs on accelerators; :class:`GlobalBatchNorm2d` computes the
per-channel sum, sum of squares and count on each rank, adds them over ranks with a
differentiable all-reduce, and normalises with the global statistics. Its forward and backward therefore equal a plain ``BatchNorm2d`` on the
concatenated global batch, on the CPU (gloo) as on GPUs (NCCL). Running statistics are updated
with the global mean and unbiased variance, exactly as ``BatchNorm2d`` would. In eval mode, or
outside a process group of more than one rank, it is a plain ``BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's input is the sum of the output gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics span every rank's shard (same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sync = self.training and dist.is_available() and dist.is_initialized()
        if not sync or dist.get_world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        xf = x.float()
        local = torch.cat(
            [
                xf.sum(dim=(0, 2, 3)),
                xf.square().sum(dim=(0, 2, 3)),
                xf.new_full((1,), xf.numel() // c),
            ]
        )
        total = _AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:c] / count
        var = (total[c : 2 * c] / count - mean.square()).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            self.num_batches_tracked.add_(1)
            m = (
                self.momentum
                if self.momentum is not None
                else 1.0 / float(self.num_batches_tracked)
            )
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a :class:`GlobalBatchNorm2d` (in place for
    children; returns the converted root). Parameters and buffers are carried over."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        state = module.state_dict()
        if state:
            new.to(next(iter(state.values())).device)
        new.load_state_dict(state)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


__all__ = ["GlobalBatchNorm2d", "convert_batchnorm"]
