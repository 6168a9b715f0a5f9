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


@dataclass
class StepOutput:
    """What a forward (and backward) pass over a mixed batch gives the rewards.

    Attributes:
        loss: the 0-d detached loss (for a training step: the mean over ranks).
        mixed_saliency: RMS over channels of dLoss/dx_mix (B, H, W), or None.
        mixed: the last layer's view of the batch (:class:`MixedBatch`), or None.
    """

    loss: torch.Tensor
    mixed_saliency: torch.Tensor | None = None
    mixed: MixedBatch | None = None


def forward_mixed(
    net: nn.Module,
    model: nn.Module,
    loss_fn: Loss,
    x_mix: torch.Tensor,
    y_mix: torch.Tensor,
    *,
    input_grad: bool,
    last_layer: bool,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    inside: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The train-mode forward of a mixed batch through ``net`` (``model`` or its DDP wrapper):
    ``(x_in, logits, loss, last-layer inputs)``, x_in requiring grad with ``input_grad``, the
    last layer's inputs recorded with ``last_layer``; the forward runs under ``autocast()`` and
    ``inside`` (a mixer that mixes within the forward, as Manifold Mixup does)."""
    model.train()
    x_in = x_mix.detach().requires_grad_(input_grad)
    with (
        autocast(),
        capture_last_layer(model, last_layer) as seen,
        inside or contextlib.nullcontext(),
    ):
        logits = net(x_in)
    return x_in, logits, loss_fn(logits.float(), y_mix), seen


def step_output(
    loss_fn: Loss,
    loss: torch.Tensor,
    x_in: torch.Tensor,
    y_mix: torch.Tensor,
    logits: torch.Tensor,
    mixed: MixedRecord | None,
    seen: list[torch.Tensor],
) -> StepOutput:
    """The :class:`StepOutput` of a pass of :func:`forward_mixed` (after its backward, if any)."""
    out = StepOutput(loss)
    if x_in.requires_grad:
        out.mixed_saliency = x_in.grad.float().pow(2).mean(dim=1).sqrt()
    if mixed is not None:
        out.mixed = mixed_batch(loss_fn, y_mix, logits, seen[-1] if seen else None)
    return out


def probe_mix(
    model: nn.Module,
    loss_fn: Loss,
    x_mix: torch.Tensor,
    y_mix: torch.Tensor,
    *,
    input_grad: bool = False,
    mixed: MixedRecord | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> StepOutput:
    """The pass a training step would make on a mixed batch, changing nothing: no weight
    gradient, no optimiser step, BatchNorm statistics and torch's global random streams as they
    were (:func:`preserved`). The same-batch counterfactual of a step; the model is left in
    train mode."""
    with preserved(model), torch.set_grad_enabled(input_grad):
        x_in, logits, loss, seen = forward_mixed(
            model,
            model,
            loss_fn,
            x_mix,
            y_mix,
            input_grad=input_grad,
            last_layer=mixed == "last_layer",
            autocast=autocast,
        )
        if input_grad:
            (x_in.grad,) = torch.autograd.grad(loss, x_in)
        return step_output(loss_fn, loss.detach(), x_in, y_mix, logits, mixed, seen)


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
    "StepOutput",
    "capture_last_layer",
    "forward_mixed",
    "last_layer",
    "last_layer_grad",
    "logit_grad",
    "mixed_batch",
    "preserved",
    "probe_mix",
    "step_output",
]
