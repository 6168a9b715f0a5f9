"""Mix-up operators: R-Mix (paper eqs. 4-7), CutMix (Yun et al. 2019) and input Mixup.

All operators are pure functions of their arguments (randomness only through a passed
``torch.Generator``), batched without Python loops over the images, and work on any device and
floating dtype. Images are (B, C, H, W) in [0, 1] pixel space; labels are (B, N) soft labels whose
rows sum to 1; image i is mixed with its partner ``perm[i]``. ``lam`` is a float (one for the
batch) or a (B,) tensor (one per image, timm's "elem" mode); a tensor whose entries all equal a
float mixes exactly as that float, bit for bit. The mixed labels are computed in at least float32
and returned in y's dtype.

Value checks (label row sums, q and lam ranges, that perm is a permutation) run for CPU tensors
only, so a GPU training step never waits on the host; shapes, dtypes and a float ``lam`` are
always checked.

``RMix``, ``CutMix``, ``Mixup`` and ``NoMix`` wrap the operators as objects that draw their random
parameters (:meth:`Mixer.sample`) apart from applying them (:meth:`Mixer.apply`), and as drop-in
callables with their own seeded generator, similar to ``timm.data.Mixup``. The training engine
uses the same objects, so the library and the environment share one sampling code path. The
paper's comparison set (SaliencyMix, PuzzleMix, Co-Mixup, Manifold Mixup) lives in
:mod:`rlmix.mixers` and registers in the same :data:`MIXERS` registry.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from rlmix.registry import Registry
from rlmix.saliency import input_saliency, pool_saliency

__all__ = [
    "CutMix",
    "MixParams",
    "Mixer",
    "Mixup",
    "NoMix",
    "RMix",
    "batch_lam_only",
    "create_mixer",
    "cutmix",
    "cutmix_box",
    "cutmix_boxes",
    "list_mixers",
    "mixer_options",
    "mixup",
    "one_hot",
    "rmix",
    "rmix_masks",
    "sample_grid",
    "sample_lam",
    "sample_lams",
    "sample_perm",
    "sample_q",
    "topk_masks",
    "topk_space",
]


# -- validation -----------------------------------------------------------------------------------


def _check_images(x: torch.Tensor) -> tuple[int, int, int, int]:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of images (B, C, H, W)")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D images (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    return b, c, h, w


def _check_batch(name: str, t: torch.Tensor, batch: int) -> None:
    if t.shape[0] != batch:
        raise ValueError(f"{name} has batch size {t.shape[0]} but x has {batch}")


def _check_labels(y: torch.Tensor, batch: int) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError("y must be a floating-point tensor of soft labels (B, N)")
    if y.dim() != 2:
        raise ValueError(f"y must be 2-D soft labels (B, N), got shape {tuple(y.shape)}")
    _check_batch("y", y, batch)
    if y.device.type == "cpu" and y.numel():
        tol = max(1e-5, 8 * torch.finfo(y.dtype).eps)
        lo, hi = torch.aminmax(y.sum(dim=1, dtype=torch.float64))
        if not (1 - float(lo) <= tol and float(hi) - 1 <= tol):  # NaN fails too
            raise ValueError(f"every row of y must sum to 1 (tolerance {tol:g} for {y.dtype})")


def _check_lam_float(lam: float | torch.Tensor) -> float:
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    return lam


def _check_lam(lam: float | torch.Tensor, batch: int) -> float | torch.Tensor:
    """A float (or 0-d tensor) as a float; a (B,) tensor as float64 on its device."""
    if not isinstance(lam, torch.Tensor) or lam.dim() == 0:
        return _check_lam_float(lam)
    if not lam.is_floating_point():
        raise TypeError("lam must be a float or a floating-point tensor (B,)")
    if lam.dim() != 1 or lam.shape[0] != batch:
        raise ValueError(
            f"lam must be a float or a tensor of shape ({batch},), got {tuple(lam.shape)}"
        )
    lam = lam.to(torch.float64)
    if lam.device.type == "cpu" and lam.numel():
        if not bool(torch.isfinite(lam).all()):
            raise ValueError("lam must be finite, got a non-finite entry")
        lo, hi = torch.aminmax(lam)
        if not (float(lo) >= 0 and float(hi) <= 1):
            raise ValueError(f"lam must be in [0, 1], got entries from {float(lo)} to {float(hi)}")
    return lam


def _check_perm(perm: torch.Tensor, batch: int) -> None:
    if not isinstance(perm, torch.Tensor) or perm.dtype != torch.long:
        raise TypeError("perm must be a long tensor of partner indices (B,)")
    if perm.dim() != 1:
        raise ValueError(f"perm must be 1-D (B,), got shape {tuple(perm.shape)}")
    if perm.shape[0] != batch:
        raise ValueError(f"perm has length {perm.shape[0]} but x has batch size {batch}")
    if perm.device.type == "cpu" and not torch.equal(perm.sort().values, torch.arange(batch)):
        raise ValueError("perm must be a permutation of 0..B-1")


def _check_mix(
    x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor, perm: torch.Tensor
) -> tuple[int, int, int, float | torch.Tensor]:
    """Check the arguments every operator takes; returns ``(B, H, W, lam)``."""
    b, _, h, w = _check_images(x)
    _check_labels(y, b)
    lam = _check_lam(lam, b)
    _check_perm(perm, b)
    return b, h, w, lam


def _check_pooled(pooled: torch.Tensor, batch: int, h: int, w: int) -> tuple[int, int]:
    if not isinstance(pooled, torch.Tensor) or not pooled.is_floating_point():
        raise TypeError("pooled must be a floating-point tensor of saliency grids (B, g, g)")
    if pooled.dim() != 3:
        raise ValueError(f"pooled must be 3-D grids (B, g, g), got shape {tuple(pooled.shape)}")
    _check_batch("pooled", pooled, batch)
    gh, gw = pooled.shape[1:]
    if h % gh or w % gw:
        raise ValueError(f"pooled grid {gh}x{gw} does not divide the image size {h}x{w}")
    return gh, gw


def _check_q(q: torch.Tensor | float, batch: int) -> torch.Tensor:
    if not isinstance(q, torch.Tensor):
        q = torch.full((batch,), float(q))
    if not q.is_floating_point():
        raise TypeError("q must be a floating-point tensor (B,) of quantiles")
    if q.dim() != 1:
        raise ValueError(f"q must be 1-D (B,), got shape {tuple(q.shape)}")
    _check_batch("q", q, batch)
    if q.device.type == "cpu" and q.numel():
        lo, hi = torch.aminmax(q)
        if not (float(lo) >= 0 and float(hi) < 1):  # NaN fails too
            raise ValueError("every q must be in [0, 1)")
    return q


# -- helpers --------------------------------------------------------------------------------------


def _check_grids(grids: Sequence[int]) -> tuple[int, ...]:
    grids = tuple(grids)
    if not grids or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in grids):
        raise ValueError(f"grids must be a non-empty sequence of positive integers, got {grids}")
    return grids


def _draw_int(high: int, generator: torch.Generator | None) -> int:
    """One integer uniform on [0, high) from ``generator`` (the default one when None)."""
    device = generator.device if generator is not None else None
    return int(torch.randint(high, (1,), generator=generator, device=device))


def one_hot(
    labels: torch.Tensor,
    num_classes: int,
    *,
    dtype: torch.dtype = torch.float32,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Soft labels (B, N) from class indices (B,); ``smoothing`` spreads that mass uniformly.

    The true class gets ``1 - smoothing + smoothing / N``, every other ``smoothing / N``.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ValueError("labels must be a 1-D tensor of class indices (B,)")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if labels.device.type == "cpu" and labels.numel():
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(
                f"labels must be in [0, {num_classes - 1}] for num_classes={num_classes}"
            )
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, dtype=dtype, device=labels.device)
    return out.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


def topk_space(k: int = 10) -> torch.Tensor:
    """The top-k space: ``k`` quantiles evenly spaced from 0 to 0.99, float32 (k,)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return torch.linspace(0.0, 0.99, k)


def sample_lam(alpha: float, generator: torch.Generator | None = None) -> float:
    """One mixing coefficient ``lam ~ Beta(alpha, alpha)`` drawn through ``generator``."""
    alpha = float(alpha)
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")
    device = generator.device if generator is not None else None
    concentration = torch.full((2,), alpha, dtype=torch.float64, device=device)
    # Beta(a, a) = G1 / (G1 + G2) with G ~ Gamma(a, 1).
    g1, g2 = torch._standard_gamma(concentration, generator=generator).tolist()
    if g1 + g2 > 0:
        return g1 / (g1 + g2)
    # Both gammas underflowed (alpha << 1): Beta(a, a) tends to a fair coin on {0, 1}.
    return float(_draw_int(2, generator))


def sample_lams(
    alpha: float, batch_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One ``lam ~ Beta(alpha, alpha)`` per image: (B,) float64 on the generator's device.

    Draws the B Gamma pairs in one call (image i's pair, then image i + 1's), then one fair coin
    per image whose pair underflowed, as :func:`sample_lam` does for one lam.
    """
    alpha = float(alpha)
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = generator.device if generator is not None else None
    concentration = torch.full((batch_size, 2), alpha, dtype=torch.float64, device=device)
    gammas = torch._standard_gamma(concentration, generator=generator)
    total = gammas.sum(dim=1)
    lam = gammas[:, 0] / total
    underflow = total == 0
    if bool(underflow.any()):
        coins = torch.randint(2, (int(underflow.sum()),), generator=generator, device=device)
        lam[underflow] = coins.to(lam.dtype)
    return lam


def sample_perm(
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A uniformly random permutation (B,) long of the batch, on ``device``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    gen_device = generator.device if generator is not None else None
    return torch.randperm(batch_size, generator=generator, device=gen_device).to(device)


def sample_q(
    batch_size: int, k: int = 10, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image quantiles (B,) float32, each uniform over :func:`topk_space` ``(k)``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    space = topk_space(k)
    device = generator.device if generator is not None else None
    index = torch.randint(k, (batch_size,), generator=generator, device=device)
    return space.to(index.device)[index]


def sample_grid(grids: Sequence[int] = (2, 4), generator: torch.Generator | None = None) -> int:
    """One mixing grid size drawn uniformly from ``grids``."""
    grids = _check_grids(grids)
    return grids[_draw_int(len(grids), generator)]


_ROW_GRAIN = 32768  # elements: ATen's parallel grain size (at::internal::GRAIN_SIZE)


def _rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` along dim 0 (same values), in t's memory format (e.g. channels-last).

    For rows below ATen's parallel grain size ``index_select`` is used: it copies whole rows,
    several times faster on CPU than advanced indexing, which computes an offset per element.
    Larger rows use advanced indexing, one parallel region for the whole copy, because
    ``index_select`` copies each large row in its own parallel region, which costs a
    thread-pool round trip per row (ruinous when the threads share busy cores).
    """
    index = index.to(t.device)
    if t.numel() >= _ROW_GRAIN * t.shape[0]:  # rows of _ROW_GRAIN elements or more
        return t[index]
    if t.is_contiguous() or (t.requires_grad and torch.is_grad_enabled()):
        return t.index_select(0, index)
    return torch.index_select(t, 0, index, out=torch.empty_like(t))


def _blend(
    x: torch.Tensor, perm: torch.Tensor, w_i: torch.Tensor, w_j: torch.Tensor
) -> torch.Tensor:
    """``w_i * x + w_j * x[perm]`` with per-cell weights (B, gh, gw), in at least float32.

    A weight is constant over its cell of (H // gh) x (W // gw) pixels, so it is repeated along
    the width only (a (B, gh, W) tensor, tiny) and broadcast over channels and the cell's rows
    through a (B, C, gh, H // gh, W) view of the images; it is never upsampled to pixels. The
    result is built in one buffer: ``x[perm]`` is gathered, scaled in place by ``w_j``, and the
    product ``w_i * x`` added in place (two full-size allocations, four passes). Every element is
    the same two products and one sum as the plain expression, so the result is identical bit
    for bit. Mixup (gh = gw = 1) and R-Mix share this, so R-Mix with every q = 0 reproduces
    Mixup exactly.
    """
    b, c, h, w = x.shape
    gh, gw = w_i.shape[1:]
    dtype = torch.promote_types(x.dtype, torch.float32)
    x_c = x.to(dtype)
    if gh == gw == 1:
        shape, w_shape = (b, c, h, w), (b, 1, 1, 1)
    else:
        # Splitting H is a view for any strides (channels-last included).
        shape, w_shape = (b, c, gh, h // gh, w), (b, 1, gh, 1, w)
        w_i, w_j = (t[..., None].expand(b, gh, gw, w // gw).reshape(b, gh, w) for t in (w_i, w_j))
    w_i, w_j = (t.to(dtype).reshape(w_shape) for t in (w_i, w_j))
    out = _rows(x_c, perm).view(shape).mul_(w_j)
    out.add_(x_c.view(shape) * w_i)
    return out.view(b, c, h, w).to(x.dtype)


def _mix_labels(
    y: torch.Tensor, perm: torch.Tensor, w_i: torch.Tensor, w_j: torch.Tensor
) -> torch.Tensor:
    """``w_i * y + w_j * y[perm]`` row-wise (weights (B,)), in at least float32, y's dtype out."""
    dtype = torch.promote_types(y.dtype, torch.float32)
    y_c = y.to(dtype)
    out = w_i.to(dtype)[:, None] * y_c + w_j.to(dtype)[:, None] * _rows(y_c, perm)
    return out.to(y.dtype)


def _lam_pair(
    lam: float | torch.Tensor, batch: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lam, 1 - lam)`` per image, each (B,) in ``dtype`` on ``device``.

    ``1 - lam`` is taken in float64 before the cast, as Python does for a float, so a tensor of
    equal entries gives the float's bits.
    """
    if isinstance(lam, torch.Tensor):
        lam = lam.to(device=device, dtype=torch.float64)
        return lam.to(dtype), (1.0 - lam).to(dtype)
    return (
        torch.full((batch,), lam, dtype=dtype, device=device),
        torch.full((batch,), 1.0 - lam, dtype=dtype, device=device),
    )


# -- R-Mix ----------------------------------------------------------------------------------------


def topk_masks(
    pooled: torch.Tensor, q: torch.Tensor, size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Top-salient regions (eq. 4): ``pooled_i >= quantile(pooled_i.flatten(), q_i)``.

    The quantile uses linear interpolation exactly as ``torch.quantile``, per image and
    vectorised (sort each flattened map, interpolate at rank ``q_i * (n - 1)``).

    Args:
        pooled: saliency grids (B, gh, gw).
        q: quantiles (B,) in [0, 1); q = 0 marks every cell.
        size: None for cell masks, else the image size ``H`` or ``(H, W)`` (multiples of the
            grid) to nearest-upsample the masks to.

    Returns:
        bool (B, gh, gw), or (B, H, W) with ``size``; every map marks at least its maximum.
    """
    b = pooled.shape[0]
    dtype = pooled.dtype if pooled.dtype in (torch.float32, torch.float64) else torch.float32
    flat = pooled.reshape(b, -1).to(dtype)
    n = flat.shape[1]
    values = flat.sort(dim=1).values
    rank = q.to(device=flat.device, dtype=dtype)[:, None] * (n - 1)
    below = rank.long()  # rank >= 0, so truncation is the floor
    above = rank.ceil().long().clamp_(max=n - 1)
    threshold = values.gather(1, below).lerp(values.gather(1, above), rank - below)
    mask = (flat >= threshold).reshape(pooled.shape)
    if size is None:
        return mask
    h, w = (size, size) if isinstance(size, int) else size
    gh, gw = pooled.shape[1:]
    if h % gh or w % gw:
        raise ValueError(f"size {h}x{w} is not a multiple of the grid {gh}x{gw}")
    kh, kw = h // gh, w // gw
    return mask[:, :, None, :, None].expand(b, gh, kh, gw, kw).reshape(b, h, w)


def rmix_masks(
    pooled: torch.Tensor,
    q: torch.Tensor,
    perm: torch.Tensor,
    q_partner: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell masks of R-Mix at grid resolution, each bool (B, gh, gw).

    Returns ``(mask, partner, m_inter)``: image i's top-salient mask, its partner's
    ``mask[perm[i]]``, and ``m_inter = (mask == partner)`` (eq. 5: both top or both least salient,
    where the pair is interpolated with lam). With ``q_partner`` the partner masks are
    thresholded at ``q_partner`` instead of ``q`` (``partner[i]`` at ``q_partner[perm[i]]``).
    """
    mask = topk_masks(pooled, q)
    partner = _rows(mask if q_partner is None else topk_masks(pooled, q_partner), perm)
    return mask, partner, mask == partner


def rmix(
    x: torch.Tensor,
    y: torch.Tensor,
    pooled: torch.Tensor,
    q: torch.Tensor,
    lam: float | torch.Tensor,
    perm: torch.Tensor,
    *,
    q_partner: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """R-Mix a batch with its permutation (paper eqs. 4-7).

    Cell masks (see :func:`rmix_masks`) apply to every pixel of their cell (nearest
    upsampling, done by broadcasting over a cell view of x). Where ``m_inter`` the pixel is
    ``lam * x_i + (1 - lam) * x_j``; elsewhere it is copied (weights 1 and 0) from whichever of
    the pair marks it top-salient. The label weights are the pixel fractions of
    those regions: ``y' = f_inter * (lam y_i + (1 - lam) y_j) + f_i * y_i + f_j * y_j`` with
    ``f_inter + f_i + f_j = 1``, so every row sums to 1. With every q = 0 this is exactly
    :func:`mixup`.

    Args:
        x: images (B, C, H, W), floating.
        y: soft labels (B, N), rows summing to 1.
        pooled: saliency grids (B, gh, gw) with gh | H and gw | W (e.g. :func:`pool_saliency`).
        q: per-image quantiles (B,) in [0, 1) (a float applies to every image).
        lam: mixing coefficient in [0, 1]: a float for the batch, or (B,) for image i's own.
        perm: partner indices (B,) long, a permutation.
        q_partner: optional quantiles (B,) for the partners' masks: mixed example i then uses
            its own mask at ``q[i]`` and its partner's at ``q_partner[perm[i]]`` (one image's
            top-k varied with its partner's held fixed); None means ``q``.

    Returns:
        ``(x_mix, y_mix)`` with x's and y's shapes and dtypes.
    """
    b, h, w, lam = _check_mix(x, y, lam, perm)
    _check_pooled(pooled, b, h, w)
    q = _check_q(q, b)
    if q_partner is not None:
        q_partner = _check_q(q_partner, b)

    mask, partner, inter = rmix_masks(pooled, q, perm.to(pooled.device), q_partner)
    mask, partner, inter = mask.to(x.device), partner.to(x.device), inter.to(x.device)
    # Per-cell weights of x_i and x_j: (lam, 1 - lam) where m_inter, else (1, 0) or (0, 1) from
    # whichever image marks the cell top-salient; broadcast over the cell's pixels in _blend.
    x_dtype = torch.promote_types(x.dtype, torch.float32)
    lam_i, lam_j = (t[:, None, None] for t in _lam_pair(lam, b, x_dtype, x.device))
    w_i = torch.where(inter, lam_i, mask.to(x_dtype))
    w_j = torch.where(inter, lam_j, partner.to(x_dtype))
    x_mix = _blend(x, perm, w_i, w_j)

    # Every cell covers the same number of pixels, so cell fractions are pixel fractions.
    # (mask & ~inter is mask & ~partner: the cells only image i marks, and vice versa.)
    y_dtype = torch.promote_types(y.dtype, torch.float32)
    regions = torch.stack((inter, mask > partner, partner > mask))
    f_inter, f_i, f_j = regions.to(y_dtype).mean(dim=(2, 3))
    lam_i, lam_j = _lam_pair(lam, b, y_dtype, y.device)
    y_mix = _mix_labels(y, perm, f_inter * lam_i + f_i, f_inter * lam_j + f_j)
    return x_mix, y_mix


# -- CutMix and Mixup -----------------------------------------------------------------------------


def cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """The CutMix box ``(top, bottom, left, right)`` in pixels (half-open ranges).

    Side ratio ``sqrt(1 - lam)`` (sides truncated to whole pixels), centre uniform over the pixel
    grid (column first, then row, both through ``generator``), box clipped to the image as in
    Yun et al. 2019.
    """
    lam = _check_lam_float(lam)
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cx = _draw_int(width, generator)
    cy = _draw_int(height, generator)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def cutmix_boxes(
    height: int, width: int, lam: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One CutMix box per image: (B, 4) long rows ``(top, bottom, left, right)``.

    Row i is :func:`cutmix_box` for ``lam[i]`` with its own centre; every centre column is drawn,
    then every centre row (so with B = 1 this draws exactly what :func:`cutmix_box` does). On the
    generator's device.
    """
    if not isinstance(lam, torch.Tensor) or lam.dim() != 1:
        raise TypeError("lam must be a 1-D tensor (B,) of per-image coefficients")
    lam = _check_lam(lam, lam.shape[0])
    device = generator.device if generator is not None else lam.device
    ratio = torch.sqrt(1.0 - lam.to(device))
    cut_h, cut_w = (height * ratio).long() // 2, (width * ratio).long() // 2  # half sides
    cx = torch.randint(width, lam.shape, generator=generator, device=device)
    cy = torch.randint(height, lam.shape, generator=generator, device=device)
    top, bottom = (cy - cut_h).clamp_(min=0), (cy + cut_h).clamp_(max=height)
    left, right = (cx - cut_w).clamp_(min=0), (cx + cut_w).clamp_(max=width)
    return torch.stack((top, bottom, left, right), dim=1)


def _check_boxes(box: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    if box.dtype != torch.long:
        raise TypeError("box must be a (top, bottom, left, right) tuple or a (B, 4) long tensor")
    if box.shape != (batch, 4):
        raise ValueError(f"box must have shape ({batch}, 4), got {tuple(box.shape)}")
    if box.device.type == "cpu" and batch:
        top, bottom, left, right = box.unbind(1)
        rows_ok = (0 <= top) & (top <= bottom) & (bottom <= height)
        if not bool((rows_ok & (0 <= left) & (left <= right) & (right <= width)).all()):
            raise ValueError(
                f"every box must have 0 <= top <= bottom <= {height} "
                f"and 0 <= left <= right <= {width}"
            )
    return box


def cutmix(
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | torch.Tensor,
    perm: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    box: tuple[int, int, int, int] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix: paste a box of ``x[perm]`` into x, one for the batch or one per image.

    A float lam draws one box for the batch (:func:`cutmix_box`), a (B,) lam one box per image
    (:func:`cutmix_boxes`, pasted through a (B, 1, H, W) mask built by broadcasting). The label
    weight of image i is its corrected ``lam = 1 - box area / (H * W)``, i.e. the fraction of its
    own pixels left; its partner gets the pasted fraction.

    Args:
        x: images (B, C, H, W); y: soft labels (B, N); lam: float or (B,), in [0, 1];
        perm: (B,) long;
        generator: draws the box centres (the default generator when None).
        box: boxes drawn beforehand (then nothing is drawn and lam is only checked): a tuple
            ``(top, bottom, left, right)`` for the batch, or a (B, 4) long tensor of such rows.

    Returns:
        ``(x_mix, y_mix)`` with x's and y's shapes and dtypes.
    """
    b, h, w, lam = _check_mix(x, y, lam, perm)
    if box is None:
        draw = cutmix_box if isinstance(lam, float) else cutmix_boxes
        box = draw(h, w, lam, generator)
    if isinstance(box, torch.Tensor):
        top, bottom, left, right = _check_boxes(box, b, h, w).to(x.device)[:, :, None].unbind(1)
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        in_rows = (top <= rows) & (rows < bottom)  # (B, H)
        in_cols = (left <= cols) & (cols < right)  # (B, W)
        x_mix = torch.where(
            in_rows[:, None, :, None] & in_cols[:, None, None, :], _rows(x, perm), x
        )
        area = ((bottom - top) * (right - left))[:, 0].to(device=y.device, dtype=torch.float64)
        w_i = 1.0 - area / (h * w)
    else:
        top, bottom, left, right = box
        x_mix = x.clone()
        x_mix[:, :, top:bottom, left:right] = _rows(x[:, :, top:bottom, left:right], perm)
        kept = 1.0 - (bottom - top) * (right - left) / (h * w)
        w_i = torch.full((b,), kept, dtype=torch.float64, device=y.device)
    return x_mix, _mix_labels(y, perm, w_i, 1.0 - w_i)


def mixup(
    x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input Mixup: ``lam * x + (1 - lam) * x[perm]``, labels likewise.

    Args:
        x: images (B, C, H, W); y: soft labels (B, N); lam: float or (B,), in [0, 1];
        perm: (B,) long.

    Returns:
        ``(x_mix, y_mix)`` with x's and y's shapes and dtypes.
    """
    b, _, _, lam = _check_mix(x, y, lam, perm)
    x_dtype = torch.promote_types(x.dtype, torch.float32)
    w_i, w_j = (t[:, None, None] for t in _lam_pair(lam, b, x_dtype, x.device))
    x_mix = _blend(x, perm, w_i, w_j)
    y_dtype = torch.promote_types(y.dtype, torch.float32)
    return x_mix, _mix_labels(y, perm, *_lam_pair(lam, b, y_dtype, y.device))


# -- mixer objects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixParams:
    """The random parameters of one mixed batch, drawn by :meth:`Mixer.sample`.

    Attributes:
        lam: mixing coefficient ~ Beta(alpha, alpha) as drawn (CutMix's labels use its box's
            area instead): a float for the batch (``lam_mode="batch"``; 1.0 for
            :class:`NoMix`), or a (B,) float64 tensor, image i's own (``lam_mode="elem"``), on
            the generator's device.
        perm: partner indices (B,) long.
        grid: R-Mix grid side (0 for the other mixers).
        box: CutMix box ``(top, bottom, left, right)`` for the batch, or in ``elem`` mode a
            (B, 4) long tensor of such rows, one per image (None for the other mixers).
    """

    lam: float | torch.Tensor
    perm: torch.Tensor
    grid: int = 0
    box: tuple[int, int, int, int] | torch.Tensor | None = None

    @property
    def lam_per_image(self) -> torch.Tensor:
        """Each image's lam, (B,) float64 on the CPU (the batch's lam repeated in batch mode)."""
        lam = torch.as_tensor(self.lam, dtype=torch.float64, device="cpu")
        return lam.expand(self.perm.shape[0]).clone()

    @property
    def lam_mean(self) -> float:
        """The batch mean of lam (exactly the float in batch mode)."""
        return float(self.lam.mean()) if isinstance(self.lam, torch.Tensor) else float(self.lam)


MIXERS: Registry[type[Mixer]] = Registry("mixer")


class Mixer:
    """Base of the mixer objects: parameters drawn apart from applying them (torchvision v2
    style), and a drop-in ``__call__`` that does both with the mixer's own generator, similar to
    ``timm.data.Mixup``.

    :meth:`sample` draws lam (one, or in ``elem`` mode the B lams of :func:`sample_lams`), then
    perm, then what the mixer adds (grid, or box: in ``elem`` mode one per image), from the
    generator passed (the training engine passes its per-epoch stream) or the mixer's own.
    :meth:`apply` mixes soft labels (B, N) deterministically from those parameters.

    Args:
        num_classes: N, needed when ``__call__`` gets integer class labels.
        alpha: Beta concentration [1.0 CIFAR, 0.2 ImageNet].
        smoothing: label smoothing applied to integer labels.
        lam_mode: ``batch``, one lam per batch, or ``elem``, one per image (timm's modes;
            labels follow each image's own lam).
        generator, seed: the own random stream; by default a new generator seeded from ``seed``
            (or from the global torch RNG when None).
    """

    needs_saliency = False  # apply() reads the clean batch's input saliency (``saliency``)
    uses_topk = False  # apply() reads a top-k per image (``q``): the environment's action
    saliency_mode: Literal["train", "eval"] = "train"  # model mode of the saliency pass
    clean_lam = 0.0  # weight of the clean batch's loss, added to the mixed batch's

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        alpha: float = 1.0,
        smoothing: float = 0.0,
        lam_mode: Literal["batch", "elem"] = "batch",
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a positive finite number, got {alpha}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if lam_mode not in ("batch", "elem"):
            raise ValueError(f"lam_mode must be 'batch' or 'elem', got {lam_mode!r}")
        if generator is not None and seed is not None:
            raise ValueError("pass either generator or seed, not both")
        if generator is None:
            generator = torch.Generator()
            # Without a seed, derive one from the global RNG so torch.manual_seed governs it.
            generator.manual_seed(int(torch.randint(2**62, (1,))) if seed is None else seed)
        self.num_classes = num_classes
        self.alpha = alpha
        self.smoothing = smoothing
        self.lam_mode = lam_mode
        self.generator = generator

    def soft_labels(self, y: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, N) soft labels from long labels (one-hot, smoothed) or soft labels as given."""
        if y.is_floating_point():
            return y
        if self.num_classes is None:
            raise ValueError("num_classes must be set to mix integer class labels")
        return one_hot(y, self.num_classes, dtype=dtype, smoothing=self.smoothing)

    def _stream(self, generator: torch.Generator | None) -> torch.Generator | None:
        """The generator to draw from: ``generator``, or the mixer's own when None."""
        return self.generator if generator is None else generator

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MixParams:
        """Draw the parameters for the batch ``x`` (B, C, H, W)."""
        b = _check_images(x)[0]
        g = self._stream(generator)
        lam = (
            sample_lam(self.alpha, g) if self.lam_mode == "batch" else sample_lams(self.alpha, b, g)
        )
        return MixParams(lam, sample_perm(b, g, device=x.device))

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, params: MixParams, **inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix images (B, C, H, W) and soft labels (B, N) with ``params``."""
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ValueError`` if the mixer cannot train ``model`` (every model by default)."""

    def forward_context(
        self, model: nn.Module, params: MixParams
    ) -> contextlib.AbstractContextManager[None]:
        """A context for the training forward of the mixed batch: mixers that mix inside the
        model (Manifold Mixup) hook it there; nothing for the others."""
        return contextlib.nullcontext()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix images (B, C, H, W) with labels (B,) long or (B, N) soft."""
        return self.apply(x, self.soft_labels(y, x.dtype), self.sample(x))


def batch_lam_only(name: str, lam_mode: str) -> None:
    """Raise ``ValueError`` unless ``lam_mode`` is ``batch`` (mixers whose authors draw one lam,
    or one mixing draw, per batch)."""
    if lam_mode != "batch":
        raise ValueError(
            f"{name} draws its mixing parameters once per batch, as its authors do; "
            f"lam_mode must be 'batch', got {lam_mode!r}"
        )


@MIXERS.register("none")
class NoMix(Mixer):
    """No mixing (vanilla training); ``sample`` draws nothing."""

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MixParams:
        b = _check_images(x)[0]
        return MixParams(1.0, torch.arange(b, device=x.device))

    def apply(self, x, y, params, **inputs):
        return x, y


@MIXERS.register("mixup")
class Mixup(Mixer):
    """Input Mixup (:func:`mixup`) as an object; ``__call__(x, y)`` is the drop-in form."""

    def apply(self, x, y, params, **inputs):
        return mixup(x, y, params.lam, params.perm)


@MIXERS.register("cutmix")
class CutMix(Mixer):
    """CutMix (:func:`cutmix`); ``sample`` also draws the box (in ``elem`` mode one per
    image, each from its own lam)."""

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MixParams:
        params = super().sample(x, generator)
        h, w = x.shape[-2:]
        draw = cutmix_box if self.lam_mode == "batch" else cutmix_boxes
        return replace(params, box=draw(h, w, params.lam, self._stream(generator)))

    def apply(self, x, y, params, **inputs):
        return cutmix(x, y, params.lam, params.perm, box=params.box)


@MIXERS.register("rmix")
class RMix(Mixer):
    """R-Mix (:func:`rmix`): ``sample`` also draws the grid; ``apply`` takes the clean batch's
    ``saliency`` (B, H, W) and the per-image top-k ``q`` (B,).

    The drop-in call is ``rmix(model, x, y)``: input saliency of the clean batch, one grid from
    ``grids``, one lam ~ Beta(alpha, alpha) (one per image with ``lam_mode="elem"``), one
    permutation and a q per image uniform over ``topk_space(k)`` (R-Mix's random top-k).

    Args:
        num_classes: as :class:`Mixer`; ``alpha``, ``smoothing``, ``lam_mode``, ``generator``,
            ``seed`` are passed to it as keywords.
        k: size of the top-k space.
        grids: mixing grid sizes to draw from; each must divide the image side.
        saliency_mode: model mode for the saliency pass, "train" or "eval".
    """

    needs_saliency = True
    uses_topk = True

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        k: int = 10,
        grids: Sequence[int] = (2, 4),
        saliency_mode: Literal["train", "eval"] = "train",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        topk_space(k)  # validates k
        if saliency_mode not in ("train", "eval"):
            raise ValueError(f"saliency_mode must be 'train' or 'eval', got {saliency_mode!r}")
        self.k = k
        self.grids = _check_grids(grids)
        self.saliency_mode = saliency_mode

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MixParams:
        params = super().sample(x, generator)
        grid = sample_grid(self.grids, self._stream(generator))
        return replace(params, grid=grid)

    def apply(
        self,
        x,
        y,
        params,
        *,
        saliency: torch.Tensor,
        q: torch.Tensor,
        q_partner: torch.Tensor | None = None,
        **inputs,
    ):
        pooled = pool_saliency(saliency, params.grid)
        if q_partner is not None:
            q_partner = q_partner.to(x.device)
        return rmix(x, y, pooled, q.to(x.device), params.lam, params.perm, q_partner=q_partner)

    def __call__(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix images (B, C, H, W) with labels (B,) long or (B, N) soft."""
        soft = self.soft_labels(y, x.dtype)
        params = self.sample(x)
        saliency, _ = input_saliency(model, x, y, mode=self.saliency_mode)
        q = sample_q(x.shape[0], self.k, self.generator)
        return self.apply(x, soft, params, saliency=saliency, q=q)


# R-Mix's settings, which the training engine passes to every mixer (config keys mix.k, ...).
_RMIX_KEYS = ("k", "grids", "saliency_mode")


def mixer_options(cls: type[Mixer]) -> list[str]:
    """The keyword options of a mixer class: its constructor's and :class:`Mixer`'s."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is object or not issubclass(klass, Mixer):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in names]
    return sorted(names)


def create_mixer(name: str, **kwargs: Any) -> Mixer:
    """A mixer by name (:func:`list_mixers`); kwargs reach its constructor. R-Mix's ``k``,
    ``grids`` and ``saliency_mode`` reach only the mixers that take them; any other unknown
    option raises ``TypeError`` naming the mixer's options."""
    cls = MIXERS.get(name)
    options = mixer_options(cls)
    kwargs = {k: v for k, v in kwargs.items() if k in options or k not in _RMIX_KEYS}
    unknown = [k for k in kwargs if k not in options and k != "num_classes"]
    if unknown:
        raise TypeError(
            f"mixer '{name}' has no option '{unknown[0]}'; its options: {', '.join(options)}"
        )
    return cls(**kwargs)


def list_mixers() -> list[str]:
    """Names accepted by :func:`create_mixer`."""
    return MIXERS.names()


# The paper's comparison set registers on import (it builds on the names above).
from rlmix import mixers  # noqa: E402, F401
