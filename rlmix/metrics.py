"""Evaluation metrics: top-k accuracy, NLL, ECE, FGSM error and CAM localisation.

Images are float (B, C, H, W) in [0, 1] pixel space; models normalise inside (see
:class:`rlmix.models.base.Classifier`), so the FGSM step and its clamp act on pixels (the PuzzleMix
protocol). Every function that runs the model puts it (and all its submodules) in eval mode and
restores each module's previous mode afterwards.

Box convention: ``(x1, y1, x2, y2)`` in pixels with ``x2``/``y2`` exclusive, so a box covering pixel
rows and columns 0..3 is ``(0, 0, 4, 4)`` and its area is ``(x2 - x1) * (y2 - y1)``.

Localisation (:func:`cam_localization`) comes in the two usual flavours:

* ``require_correct=False`` (default): *GT-known* localisation, an image counts when the box from
  the ground-truth class's CAM has IoU >= ``iou_threshold`` with the ground-truth box.
* ``require_correct=True``: *top-1* localisation (ILSVRC / CutMix WSOL protocol), which also
  requires the top-1 prediction to be the ground-truth class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

# -- validation helpers ----------------------------------------------------------------------------


def _check_scores_labels(name: str, scores: torch.Tensor, labels: torch.Tensor) -> None:
    """Scores (M, N) floating with M >= 1, labels (M,) integer class indices in [0, N)."""
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} and labels must be torch tensors")
    if scores.dim() != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"{name} must have shape (M, N) with M, N >= 1, got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {scores.dtype}")
    if labels.dim() != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must have shape ({scores.shape[0]},) to match {name}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), got values outside it")


def _check_images(x: torch.Tensor) -> None:
    """x must be float (B, C, H, W) pixels in [0, 1]."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError("x must be a float tensor of shape (B, C, H, W)")
    if not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError("x must hold pixel images in [0, 1] (models normalise inside)")


def _check_batch_labels(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be class indices of shape ({x.shape[0]},)")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must be integer class indices, got {y.dtype}")


def _check_cam_model(model: nn.Module) -> None:
    for attr in ("forward_features", "forward_head", "get_classifier"):
        if not callable(getattr(model, attr, None)):
            raise TypeError(
                "model must provide forward_features(), forward_head() and get_classifier() "
                "(an rlmix.models.base.Classifier) for CAMs"
            )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for every submodule; each module's own previous mode is restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


# -- classification metrics ------------------------------------------------------------------------


def topk_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Fraction of samples whose label is among the k highest logits, for each k.

    Args:
        logits: (M, N) scores (logits or probabilities; only their order matters).
        labels: (M,) integer class indices.
        ks: positive integers; each k is capped at N (so ``top5`` with 3 classes is 1.0).

    Returns:
        ``{"top{k}": fraction in [0, 1]}`` for each k in ``ks``.
    """
    _check_scores_labels("logits", logits, labels)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    n_classes = logits.shape[1]
    # Rank positions of the labels: hits[i, r] is True when the label is the (r+1)-th best class.
    top = logits.topk(min(max(ks), n_classes), dim=1).indices
    hits = top == labels.to(top.device).view(-1, 1)
    return {f"top{k}": hits[:, : min(k, n_classes)].any(dim=1).double().mean().item() for k in ks}


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood (nats) of the labels under softmax(logits), in float64.

    Args:
        logits: (M, N) unnormalised scores.
        labels: (M,) integer class indices.
    """
    _check_scores_labels("logits", logits, labels)
    return F.cross_entropy(logits.double(), labels.long().to(logits.device)).item()


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15
) -> float:
    """Expected calibration error (Guo et al. 2017) with equal-width confidence bins.

    The confidence of a sample is its largest probability, its prediction the argmax. Bin b
    (0-based) holds confidences in ``(b / n_bins, (b + 1) / n_bins]``: a confidence exactly on an
    edge goes to the lower bin (a confidence of 0 goes to bin 0).
    ``ECE = sum_b |B_b| / M * |acc(B_b) - conf(B_b)|``; empty bins contribute nothing.

    Args:
        probs: (M, N) class probabilities, every entry in [0, 1] (rows need not sum exactly to 1).
        labels: (M,) integer class indices.
        n_bins: number of bins, >= 1.

    Returns:
        ECE as a fraction in [0, 1], computed in float64.
    """
    _check_scores_labels("probs", probs, labels)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if not bool(((probs >= 0) & (probs <= 1)).all()):
        raise ValueError("probs must hold probabilities in [0, 1] (finite)")
    conf, pred = probs.double().max(dim=1)
    correct = (pred == labels.to(pred.device)).double()
    inner_edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=conf.device)[1:-1]
    bins = torch.bucketize(conf, inner_edges, right=False)  # edges[b-1] < conf <= edges[b]
    # Per bin |sum(correct) - sum(conf)| / M equals |B_b|/M * |acc(B_b) - conf(B_b)|.
    gap = torch.zeros(n_bins, dtype=torch.float64, device=conf.device)
    gap.scatter_add_(0, bins, correct - conf)
    return min(1.0, gap.abs().sum().item() / conf.shape[0])


# -- adversarial robustness ------------------------------------------------------------------------


def fgsm_attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255
) -> torch.Tensor:
    """One-step FGSM adversarial images in [0, 1] pixel space (no random start).

    ``x_adv = clamp(x + eps * sign(d CE(model(x), y) / dx), 0, 1)`` with the model in eval mode.
    The gradient is taken with respect to the input only (``torch.autograd.grad``): parameters'
    ``.grad`` are untouched and no graph is kept.

    Args:
        model: maps (B, C, H, W) pixels in [0, 1] to logits (B, N).
        x: (B, C, H, W) float images in [0, 1].
        y: (B,) integer class indices.
        eps: L-infinity step in pixel units (8/255 is the PuzzleMix protocol), finite and >= 0.

    Returns:
        Detached (B, C, H, W) adversarial images, same dtype and device as x.
    """
    _check_images(x)
    _check_batch_labels(x, y)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 <= eps < math.inf):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    x_in = x.detach().requires_grad_(True)
    with _eval_mode(model), torch.enable_grad():
        # Sum over the batch: per-sample gradients are not scaled by 1/B (no underflow to 0).
        loss = F.cross_entropy(model(x_in).float(), y.long(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_in)
    return (x.detach() + eps * grad.sign()).clamp(0, 1)


def fgsm_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255) -> int:
    """Number of FGSM adversarial images (:func:`fgsm_attack`) the model misclassifies (top-1).

    Images already misclassified before the attack count as errors if they stay misclassified.
    """
    x_adv = fgsm_attack(model, x, y, eps)
    with _eval_mode(model), torch.no_grad():
        pred = model(x_adv).argmax(dim=1)
    return int((pred != y.to(pred.device)).sum().item())


# -- class activation maps and localisation --------------------------------------------------------


def _cams_from_features(
    model: nn.Module, features: torch.Tensor, class_idx: torch.Tensor, size: Sequence[int]
) -> torch.Tensor:
    """CAMs (B, H, W) float32 of classes class_idx (B,) from features (B, F, h, w)."""
    weight = model.get_classifier().weight[class_idx].float()  # (B, F)
    maps = torch.einsum("bf,bfhw->bhw", weight, features.float())
    return F.interpolate(
        maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False
    ).squeeze(1)


def _class_index(class_idx: int | torch.Tensor, batch: int, n_classes: int, device) -> torch.Tensor:
    if isinstance(class_idx, int) and not isinstance(class_idx, bool):
        class_idx = torch.full((batch,), class_idx, dtype=torch.long, device=device)
    if not isinstance(class_idx, torch.Tensor) or class_idx.shape != (batch,):
        raise ValueError(f"class_idx must be an int or a tensor of shape ({batch},)")
    if class_idx.is_floating_point() or class_idx.is_complex() or class_idx.dtype == torch.bool:
        raise TypeError(f"class_idx must hold integer class indices, got {class_idx.dtype}")
    if class_idx.min() < 0 or class_idx.max() >= n_classes:
        raise ValueError(f"class_idx must lie in [0, {n_classes})")
    return class_idx.long().to(device)


def cam(model: nn.Module, x: torch.Tensor, class_idx: int | torch.Tensor) -> torch.Tensor:
    """Class activation maps (Zhou et al. 2016) upsampled to the input size.

    ``cam_c = sum_f fc.weight[c, f] * features[:, f]`` on the final feature map (the fc bias is
    left out), then bilinearly upsampled (``align_corners=False``) to (H, W). Model in eval mode,
    no grad.

    Args:
        model: a :class:`rlmix.models.base.Classifier` (``forward_features`` + ``get_classifier``).
        x: (B, C, H, W) float images in [0, 1].
        class_idx: one class for the whole batch (int) or one per image ((B,) integer tensor).

    Returns:
        (B, H, W) float32 CAMs (unnormalised).
    """
    _check_cam_model(model)
    _check_images(x)
    fc = model.get_classifier()
    idx = _class_index(class_idx, x.shape[0], fc.weight.shape[0], fc.weight.device)
    with _eval_mode(model), torch.no_grad():
        return _cams_from_features(model, model.forward_features(x), idx, x.shape[-2:])


def cam_boxes(cams: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """One box per CAM: the tight box around all pixels at or above a fraction of the range.

    Each map is min-max normalised to [0, 1] (a constant map counts as all ones, giving the whole
    image); pixels with normalised value >= ``threshold`` are kept. As in the usual WSOL protocol
    the threshold is a fraction of the (normalised) maximum; for simplicity and speed the box
    encloses *all* kept pixels rather than only the largest connected component. The maximum is
    always kept, so the box is never empty.

    Args:
        cams: (B, H, W) activation maps, finite.
        threshold: fraction in [0, 1].

    Returns:
        (B, 4) float32 boxes ``(x1, y1, x2, y2)`` in pixels, x2/y2 exclusive.
    """
    if not isinstance(cams, torch.Tensor) or cams.dim() != 3 or not cams.is_floating_point():
        raise ValueError("cams must be a float tensor of shape (B, H, W)")
    if not bool(torch.isfinite(cams).all()):
        raise ValueError("cams must be finite")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    _, h, w = cams.shape
    low = cams.amin(dim=(1, 2), keepdim=True)
    span = cams.amax(dim=(1, 2), keepdim=True) - low
    norm = torch.where(span > 0, (cams - low) / span.clamp_min(1e-30), torch.ones_like(cams))
    mask = norm >= threshold
    rows, cols = mask.any(dim=2).int(), mask.any(dim=1).int()  # (B, H), (B, W)
    # argmax returns the first maximal index: first kept row/column from each side.
    y1, y2 = rows.argmax(dim=1), h - rows.flip(1).argmax(dim=1)
    x1, x2 = cols.argmax(dim=1), w - cols.flip(1).argmax(dim=1)
    return torch.stack([x1, y1, x2, y2], dim=1).float()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise intersection over union of xyxy boxes (x2/y2 exclusive, so area = w * h).

    Args:
        a, b: (B, 4) boxes. Negative widths/heights count as empty.

    Returns:
        (B,) IoU in [0, 1] (0 where the union is empty), float.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("a and b must be torch tensors")
    if a.dim() != 2 or a.shape[1] != 4 or a.shape != b.shape:
        raise ValueError(
            f"a and b must both have shape (B, 4), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a, b = a.float(), b.float().to(a.device)

    def area(box: torch.Tensor) -> torch.Tensor:
        return (box[:, 2] - box[:, 0]).clamp_min(0) * (box[:, 3] - box[:, 1]).clamp_min(0)

    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-30), torch.zeros_like(union))


def _localization_pass(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    boxes: torch.Tensor,
    iou_threshold: float,
    cam_threshold: float,
    require_correct: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass (caller sets eval mode): logits (B, N) and (B,) bool localisation hits."""
    _check_cam_model(model)
    _check_images(x)
    _check_batch_labels(x, y)
    if not isinstance(boxes, torch.Tensor) or boxes.shape != (x.shape[0], 4):
        raise ValueError(f"boxes must have shape ({x.shape[0]}, 4) (xyxy pixels)")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    y = _class_index(y, x.shape[0], model.get_classifier().weight.shape[0], x.device)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        cams = _cams_from_features(model, features, y, x.shape[-2:])
    hits = box_iou(cam_boxes(cams, cam_threshold), boxes.to(cams.device)) >= iou_threshold
    if require_correct:
        hits &= logits.argmax(dim=1).to(hits.device) == y.to(hits.device)
    return logits, hits


def cam_localization(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    boxes: torch.Tensor,
    iou_threshold: float = 0.5,
    cam_threshold: float = 0.15,
    require_correct: bool = False,
) -> int:
    """Number of images localised by the CAM of their ground-truth class.

    Box from :func:`cam_boxes` (``cam_threshold``), scored with :func:`box_iou` against ``boxes``;
    an image counts when IoU >= ``iou_threshold``. ``require_correct=False`` is GT-known
    localisation; ``True`` is top-1 localisation (the top-1 prediction must also equal y).

    Args:
        model: a :class:`rlmix.models.base.Classifier`.
        x: (B, C, H, W) float images in [0, 1].
        y: (B,) integer ground-truth classes.
        boxes: (B, 4) ground-truth boxes, xyxy pixels, x2/y2 exclusive.
        iou_threshold: minimum IoU in [0, 1].
        cam_threshold: :func:`cam_boxes` threshold in [0, 1].
        require_correct: top-1 localisation instead of GT-known.
    """
    with _eval_mode(model):
        _, hits = _localization_pass(
            model, x, y, boxes, iou_threshold, cam_threshold, require_correct
        )
    return int(hits.sum().item())


# -- whole-loader evaluation -----------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass
class EvalRecords:
    """What :func:`evaluate` accumulates over a loader; records from data shards combine with
    :func:`summarize` into the metrics of their union.

    Attributes:
        logits: clean logits (n, N), float64 on the CPU.
        labels: class indices (n,).
        adv_errors: images misclassified after FGSM (if computed).
        loc_hits: images whose CAM box has IoU >= 0.5 with the ground truth.
        loc_seen: images evaluated for localisation.
        boxless: batches that came without boxes.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    adv_errors: int = 0
    loc_hits: int = 0
    loc_seen: int = 0
    boxless: int = 0


def collect(
    model: nn.Module,
    loader: Iterable,
    *,
    fgsm: bool = True,
    eps: float = 8 / 255,
    localization: bool = True,
    progress: bool = False,
    desc: str = "eval",
    device: torch.device | str | None = None,
) -> EvalRecords:
    """Run the evaluation passes of :func:`evaluate` and return the raw records."""
    device = _model_device(model) if device is None else torch.device(device)
    all_logits: list[torch.Tensor] = []
    all_labels: list[torch.Tensor] = []
    rec = EvalRecords(torch.empty(0, 0, dtype=torch.float64), torch.empty(0, dtype=torch.long))
    cam_missing = getattr(model, "cam_unavailable", None)  # why a wrapped user model has no CAMs
    with _eval_mode(model):
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise TypeError("loader must yield (x, y) or (x, y, boxes) tuples")
            x, y = batch[0].to(device), batch[1].to(device)
            boxes = batch[2] if len(batch) == 3 else None
            _check_images(x)
            _check_batch_labels(x, y)
            rec.boxless += boxes is None
            if localization and boxes is not None and cam_missing is not None:
                warnings.warn(f"CAM localisation skipped: {cam_missing}", stacklevel=2)
                localization = False
            if localization and boxes is not None:
                logits, hits = _localization_pass(model, x, y, boxes, 0.5, 0.15, False)
                rec.loc_hits += int(hits.sum().item())
                rec.loc_seen += x.shape[0]
            else:
                with torch.no_grad():
                    logits = model(x)
            all_logits.append(logits.detach().to("cpu", torch.float64))
            all_labels.append(y.detach().to("cpu", torch.long))
            if fgsm:
                rec.adv_errors += fgsm_error(model, x, y, eps)
    if all_logits:
        rec.logits, rec.labels = torch.cat(all_logits), torch.cat(all_labels)
    return rec


def summarize(
    records: EvalRecords | Sequence[EvalRecords], *, fgsm: bool = True
) -> dict[str, float]:
    """Metrics of the union of ``records`` (see :func:`evaluate` for the keys)."""
    parts = [records] if isinstance(records, EvalRecords) else list(records)
    parts = [r for r in parts if r.labels.numel()]
    if not parts:
        raise ValueError("loader yielded no batches")
    loc_seen = sum(r.loc_seen for r in parts)
    if loc_seen and sum(r.boxless for r in parts):
        raise ValueError("loader yielded boxes for some batches only; localisation needs all")
    logits = torch.cat([r.logits for r in parts])
    labels = torch.cat([r.labels for r in parts])
    total = labels.shape[0]
    acc = topk_accuracy(logits, labels, ks=(1, 5))
    results = {
        "top1": acc["top1"],
        "top5": acc["top5"],
        "nll": nll(logits, labels),
        "ece": expected_calibration_error(logits.softmax(dim=1), labels, n_bins=15),
    }
    if fgsm:
        results["fgsm_error"] = sum(r.adv_errors for r in parts) / total
    if loc_seen:
        results["loc_acc"] = sum(r.loc_hits for r in parts) / total
    return {k: float(v) for k, v in results.items()}


def evaluate(model: nn.Module, loader: Iterable, **options: Any) -> dict[str, float]:
    """Test metrics over a loader, as plain Python floats.

    The loader yields ``(x, y)`` or ``(x, y, boxes)`` batches: x (B, C, H, W) float in [0, 1],
    y (B,) class indices, boxes (B, 4) xyxy pixels (x2/y2 exclusive) or None. Clean logits are
    gathered on the CPU in float64 for the accuracy, NLL and ECE (15 bins).

    Args:
        model: classifier taking [0, 1] pixels; evaluated in eval mode, each module's previous mode
            restored afterwards.
        loader: any iterable of batches (e.g. ``rlmix.data.BatchLoader`` or a list).
        **options: those of :func:`collect`: ``fgsm`` (also compute the FGSM error rate at
            ``eps``, pixel units), ``localization`` (GT-known CAM localisation accuracy, IoU >=
            0.5, when the loader yields boxes; needs a :class:`rlmix.models.base.Classifier`;
            skipped with a warning for a wrapped user model whose ``cam_unavailable`` says why),
            ``progress`` and ``desc`` (a tqdm bar), ``device`` (default: the model's).

    Returns:
        ``top1``, ``top5``, ``ece``, ``fgsm_error`` (if fgsm), ``loc_acc`` (if localization and
        boxes) as fractions in [0, 1]; ``nll`` in nats.
    """
    return summarize(collect(model, loader, **options), fgsm=options.get("fgsm", True))


__all__ = [
    "EvalRecords",
    "box_iou",
    "cam",
    "cam_boxes",
    "cam_localization",
    "collect",
    "evaluate",
    "expected_calibration_error",
    "fgsm_attack",
    "fgsm_error",
    "nll",
    "summarize",
    "topk_accuracy",
]
