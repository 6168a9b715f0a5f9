"""Looking at the classifier without changing it: what rewards read besides the training step.

- :class:`MixedBatch`: what the last linear layer sees of a mixed batch (labels, logits, its
  inputs ``h`` and each example's logit gradient), captured from a forward pass by
  :func:`capture_last_layer` and :func:`logit_grad`;
- :class:`LastLayerGrad`: a held-out batch's mean loss gradient on that layer
  (:func:`last_layer_grad`, one eval-mode forward, no backward through the network);
- :func:`preserved`: a context that restores the model's buffers (BatchNorm statistics) and the
  global random streams afterwards, so a probing forward pass leaves training bit-identical.

Per example the last layer's gradient factorises: for logits ``z = W h + b`` and a per-example
loss ``l(z, y)``, ``dl/dW = d h^T`` and ``dl/db = d`` with ``d = dl/dz``. So per-example
alignments with any (N, F) direction need no per-example backward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


#: What a pass records of a mixed batch: its logits, or the last layer's inputs too.
MixedRecord = Literal["logits", "last_layer"]


@dataclass(frozen=True)
class MixedBatch:
    """What the classifier's last linear layer sees of a mixed batch (weights before the step).

    Attributes:
        labels: the mixed soft labels y' (B, N).
        logits: the classifier's logits (B, N) on the mixed images (train mode, as trained).
        features: the last linear layer's inputs h (B, F) (the pooled penultimate features);
            None when only the logits were recorded (no reward read the last layer).
        logit_grad: each example's own loss gradient with respect to its logits (B, N); with
            ``soft_ce`` it is ``softmax(logits) - labels``. The example's gradient on the last
            layer's weight is ``logit_grad_i (outer) h_i`` and on its bias ``logit_grad_i``.
    """

    labels: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor | None
    logit_grad: torch.Tensor


@dataclass(frozen=True)
class LastLayerGrad:
    """The mean loss gradient of a held-out batch on the last linear layer (weights before the
    step): ``weight`` (N, F) and ``bias`` (N,)."""

    weight: torch.Tensor
    bias: torch.Tensor


def last_layer(model: nn.Module) -> nn.Linear:
    """The classifier's final ``nn.Linear`` (``get_classifier()``, through a DDP wrapper)."""
    model = getattr(model, "module", model)
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(fc, nn.Linear):
        raise TypeError(
            f"{type(model).__name__} has no get_classifier() returning its last nn.Linear; "
            "last-layer rewards need one (every rlmix model has it)"
        )
    return fc


@contextlib.contextmanager
def capture_last_layer(model: nn.Module, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """Collect the inputs (B, F) of the model's last linear layer during the block (detached)."""
    seen: list[torch.Tensor] = []
    if not enabled:
        yield seen
        return
    handle = last_layer(model).register_forward_pre_hook(
        lambda _module, args: seen.append(args[0].detach())
    )
    try:
        yield seen
    finally:
        handle.remove()


def logit_grad(loss_fn: Loss, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's own loss gradient with respect to its logits (B, N), in float32.

    ``loss_fn`` is a batch mean of per-example losses (every rlmix loss is), so B times the
    gradient of the batch loss is the per-example gradient.
    """
    z = logits.detach().float().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(z, labels.float()) * z.shape[0]
        (grad,) = torch.autograd.grad(loss, z)
    return grad


def mixed_batch(
    loss_fn: Loss, labels: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None
) -> MixedBatch:
    """A :class:`MixedBatch` from a forward pass's logits and last-layer inputs (or None)."""
    logits = logits.detach().float()
    h = None if features is None else features.float()
    return MixedBatch(labels, logits, h, logit_grad(loss_fn, logits, labels))


@torch.no_grad()
def last_layer_grad(
    model: nn.Module, loss_fn: Loss, x: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> LastLayerGrad:
    """The mean loss gradient of the batch ``(x, labels)`` on the last linear layer, from one
    eval-mode forward (the model's modes are restored; nothing else changes)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with capture_last_layer(model) as seen:
            logits = model(x)
    finally:
        for module, training in modes:
            module.training = training
    y = nn.functional.one_hot(labels, num_classes).float()
    d = logit_grad(loss_fn, logits, y)
    h = seen[-1].float()
    n = max(x.shape[0], 1)
    return LastLayerGrad(d.T @ h / n, d.sum(0) / n)


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore the model's buffers (BatchNorm running statistics and counters) and torch's
    global random streams (CPU and CUDA) when the block ends."""
    saved = [b.detach().clone() for b in model.buffers()]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved, strict=True):
                buffer.copy_(value)


__all__ = [
    "LastLayerGrad",
    "MixedBatch",
    "MixedRecord",
    "capture_last_layer",
    "last_layer",
    "last_layer_grad",
    "logit_grad",
    "mixed_batch",
    "preserved",
]
