"""SaliencyMix (Uddin et al. 2021): CutMix with the box centred on the source image's saliency peak.

Per batch, as the authors' CIFAR code (``SaliencyMix_CIFAR/saliencymix.py``): with probability
``prob`` (``--salmix_prob`` 0.5) the batch is mixed, else trained clean; lam ~ Beta(alpha, alpha)
and one permutation; the saliency map of the *first* partner image ``x[perm[0]]`` gives one box
of side ``sqrt(1 - lam)`` around its maximum, and every image gets its partner's pixels in that
box (CutMix's paste and area-corrected labels, :func:`rlmix.mixing.cutmix`).

The saliency is Montabone and Soto's fine-grained static saliency, the detector the authors call
(OpenCV-contrib's ``StaticSaliencyFineGrained``), computed here in torch on the 8-bit grey image
(:func:`fine_grained_saliency`), so no OpenCV is needed. Two deliberate differences from the
authors' script, both bugs there: it hands OpenCV normalised *float* images, which the detector
reads as raw bytes (a noise map: SaliencyMix issue #1), and it multiplies the 8-bit map by 255 in
uint8, which wraps; here the detector sees the image it was written for and the box centres on
the true maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from rlmix.mixing import (
    MIXERS,
    Mixer,
    MixParams,
    _check_images,
    _check_lam_float,
    batch_lam_only,
    cutmix,
)

__all__ = ["SaliencyMix", "SaliencyMixParams", "fine_grained_saliency", "saliency_box"]

# Centre-surround half-widths of the six scales (OpenCV's StaticSaliencyFineGrained).
NEIGHBORHOODS = (12, 24, 48, 28, 56, 112)
# OpenCV's 8-bit BGR -> grey weights in 14-bit fixed point (B, G, R).
_GRAY_WEIGHTS = (1868, 9617, 4899)


def _gray8(x: torch.Tensor) -> torch.Tensor:
    """8-bit grey (B, H, W) int64 of [0, 1] images (B, C, H, W), as OpenCV's BGR2GRAY on the
    array the authors pass (channels in the tensor's RGB order, read as B, G, R)."""
    pixels = (x.double() * 255).round().clamp(0, 255).long()
    if pixels.shape[1] == 1:
        return pixels[:, 0]
    if pixels.shape[1] != 3:
        raise ValueError(f"fine-grained saliency needs 1- or 3-channel images, got {x.shape[1]}")
    weights = torch.tensor(_GRAY_WEIGHTS, device=x.device)
    return ((pixels * weights[None, :, None, None]).sum(dim=1) + (1 << 13)) >> 14


def _blur3(gray: torch.Tensor) -> torch.Tensor:
    """OpenCV's 3x3 Gaussian blur (sigma from the size: weights 1-2-1) of 8-bit maps, rounded,
    with reflect-101 borders."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64, device=gray.device)
    weights = (kernel[:, None] * kernel[None, :])[None, None]
    padded = F.pad(gray[:, None].double(), (1, 1, 1, 1), mode="reflect")
    return ((F.conv2d(padded, weights)[:, 0] + 8).floor_divide(16)).long()


def _scale255(total: torch.Tensor) -> torch.Tensor:
    """``trunc(255 * v / max v)`` per map (float32 ratio as OpenCV); 0 for an all-zero map."""
    top = total.amax(dim=(1, 2), keepdim=True).float()
    ratio = total.float() / torch.where(top > 0, top, torch.ones_like(top))
    return (255.0 * ratio.double()).trunc()


def fine_grained_saliency(x: torch.Tensor) -> torch.Tensor:
    """Montabone and Soto's fine-grained static saliency (OpenCV-contrib's
    ``StaticSaliencyFineGrained``) of [0, 1] images (B, C, H, W), C = 1 or 3.

    The 8-bit grey image, blurred twice (3x3 Gaussian), is compared with the mean of its
    surround at six scales through an integral image: "on" where the pixel is brighter than its
    surround, "off" where darker (each truncated to an integer). The on and off sums over the
    scales are each scaled to [0, 255] by their maximum, then added and scaled by the larger
    maximum.

    Returns:
        (B, H, W) float64 maps with integer values in [0, 255] (saturated at 255 where on + off
        exceed the larger maximum; all zero for a flat image).
    """
    _check_images(x)
    gray = _blur3(_blur3(_gray8(x)))
    b, h, w = gray.shape
    integral = F.pad(gray.cumsum(1).cumsum(2), (1, 0, 1, 0)).float()
    center = gray.float()
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    on_sum = torch.zeros_like(gray)
    off_sum = torch.zeros_like(gray)
    for n in NEIGHBORHOODS:
        top, bottom = (rows - n + 1).clamp(0, h), (rows + n + 1).clamp(0, h)
        left, right = (cols - n + 1).clamp(0, w), (cols + n + 1).clamp(0, w)
        window = (
            integral[:, bottom][:, :, right]
            + integral[:, top][:, :, left]
            - integral[:, bottom][:, :, left]
            - integral[:, top][:, :, right]
        )
        area = ((bottom - top)[:, None] * (right - left)[None, :] - 1).float()
        surround = (window - center) / area  # the surround's mean, the pixel left out
        on_sum += (center - surround).clamp(min=0).trunc().long()
        off_sum += (surround - center).clamp(min=0).trunc().long()
    on, off = _scale255(on_sum), _scale255(off_sum)
    top = torch.maximum(on.amax(dim=(1, 2), keepdim=True), off.amax(dim=(1, 2), keepdim=True))
    mixed = 255.0 * (on + off) / torch.where(top > 0, top, torch.ones_like(top))
    return mixed.trunc().clamp(max=255.0)


def saliency_box(source: torch.Tensor, lam: float) -> tuple[int, int, int, int]:
    """SaliencyMix's box ``(top, bottom, left, right)`` for one source image (C, H, W): sides
    ``int(side * sqrt(1 - lam))``, centred on the first maximum (row-major) of its fine-grained
    saliency, half-sides truncated and the box clipped to the image (as CutMix's box)."""
    lam = _check_lam_float(lam)
    saliency = fine_grained_saliency(source[None])[0]
    h, w = saliency.shape
    peak = int(saliency.flatten().argmax())
    cy, cx = divmod(peak, w)
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    return top, bottom, left, right


@dataclass(frozen=True)
class SaliencyMixParams(MixParams):
    """:class:`rlmix.mixing.MixParams` plus ``active``: whether this batch is mixed at all
    (drawn with probability ``prob``); an inactive batch trains clean (its lam is 1)."""

    active: bool = True


@MIXERS.register("saliencymix")
class SaliencyMix(Mixer):
    """SaliencyMix as a mixer: ``sample`` draws whether to mix, lam and the permutation;
    ``apply`` finds the box from the partner image ``x[perm[0]]`` and pastes it
    (:func:`saliency_box`, :func:`rlmix.mixing.cutmix`). No model pass.

    Args:
        num_classes: as :class:`rlmix.mixing.Mixer`, whose keywords (``alpha``, ``smoothing``,
            ``generator``, ``seed``) it takes; ``lam_mode`` must be ``batch``.
        prob: probability that a batch is mixed [0.5, the authors' ``--salmix_prob``].
    """

    def __init__(self, num_classes: int | None = None, *, prob: float = 0.5, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        batch_lam_only("saliencymix", self.lam_mode)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = prob

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> SaliencyMixParams:
        g = self._stream(generator)
        device = g.device if g is not None else None
        active = float(torch.rand((), generator=g, device=device)) < self.prob
        params = super().sample(x, generator)
        if not active:
            params = replace(params, lam=1.0)
        return SaliencyMixParams(params.lam, params.perm, active=active)

    def apply(self, x, y, params, **inputs):
        if not isinstance(params, SaliencyMixParams):
            raise TypeError("SaliencyMix.apply needs SaliencyMixParams from SaliencyMix.sample")
        if not params.active:
            return x, y
        box = saliency_box(x[params.perm[0]], params.lam)
        return cutmix(x, y, params.lam, params.perm, box=box)
