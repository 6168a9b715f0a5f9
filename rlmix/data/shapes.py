"""The embedded ``shapes`` dataset: one object per image whose *shape* is the class.

Each 32x32 RGB image holds one object (circle, square, triangle, ...) of random colour, position,
scale (10-20 px across) and small rotation (+-10 degrees), drawn over a cluttered background: a
random texture (smooth noise, stripes or a checkerboard in two random colours, plus colour noise)
and a few distractors (small blobs and thin lines) behind the object, then Gaussian pixel noise.
Colour carries no class information (it is drawn to contrast with the background); the object's
ground-truth box is stored, so CAM localisation can be scored.

The object mask is rendered at twice the resolution and average-pooled (anti-aliased edges).
Generation is vectorised over chunks of images, deterministic per seed, and cached under
``ROOT/shapes/<hash of the options>.pt`` (written atomically) so later runs load it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from rlmix.data.base import (
    DatasetInfo,
    ImageTensors,
    check_int,
    describe,
    register_dataset,
)
from rlmix.errors import ConfigError
from rlmix.seeding import derive_seed

IMAGE_SIZE = 32
SUPERSAMPLE = 2
OBJECT_SIZE = (10.0, 20.0)  # default object extent range, px (diameter of its enclosing disk)
MAX_ROTATION = math.radians(10.0)  # keeps squares and diamonds apart
NUM_DISTRACTORS = 5  # distractor slots per image
# Clutter at the default ``clutter=1`` (the option scales all three; the first two cap at 1):
DISTRACTOR_P = 0.6  # probability that a slot holds a distractor
TEXTURE_CONTRAST = 0.5  # the texture's second colour: this fraction of the way to a random one
TINT = 0.3  # amplitude of the smooth per-channel colour noise on the background
PIXEL_NOISE = 0.02  # std of the Gaussian pixel noise, in [0, 1] units
CHUNK = 1000  # images rendered at once (bounds memory)
CACHE_FORMAT = 1  # bump when the generator changes, so old caches are not reused

# Cache file entries: key -> (split, ImageTensors field).
_CACHE_KEYS = {f"{s}_{f}": (s, f) for s in ("train", "test") for f in ("images", "labels", "boxes")}

Mask = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Upward triangle with apex (0, -0.95) and base at v = 0.48 (y points down).
    return (v <= 0.48) & (u.abs() <= (v + 0.95) * (0.82 / 1.43))


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Five points up: radius goes linearly (in angle) from 0.95 at a point to 0.4 between points.
    sector = 2 * math.pi / 5
    phi = torch.remainder(torch.atan2(v, u) + math.pi / 2 + sector / 2, sector) - sector / 2
    radius = 0.4 + 0.55 * (1 - phi.abs() / (sector / 2))
    return u.square() + v.square() <= radius.square()


# Each mask takes object coordinates (u, v) in units of the object radius (v points down) and
# stays inside the unit disk, so the object fits the box its centre was drawn for.
SHAPES: dict[str, Mask] = {
    "circle": lambda u, v: u.square() + v.square() <= 0.9**2,
    "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.7,
    "triangle": _triangle,
    "cross": lambda u, v: (
        ((u.abs() <= 0.25) & (v.abs() <= 0.92)) | ((v.abs() <= 0.25) & (u.abs() <= 0.92))
    ),
    "ring": lambda u, v: (u.square() + v.square() - 0.6).abs() <= 0.25,
    "diamond": lambda u, v: u.abs() + v.abs() <= 0.95,
    "star": _star,
    "bar": lambda u, v: (u.abs() <= 0.92) & (v.abs() <= 0.25),
    "l_shape": lambda u, v: (torch.maximum(u.abs(), v.abs()) <= 0.7) & ((u <= -0.2) | (v >= 0.2)),
    "crescent": lambda u, v: (
        (u.square() + v.square() <= 0.9**2) & ((u - 0.45).square() + v.square() >= 0.7**2)
    ),
    "t_shape": lambda u, v: (
        (torch.maximum(u.abs(), v.abs()) <= 0.7) & ((v <= -0.35) | (u.abs() <= 0.18))
    ),
    "semicircle": lambda u, v: (v >= -0.4) & (u.square() + (v + 0.4).square() <= 0.9**2),
}
SHAPE_NAMES = tuple(SHAPES)
MAX_CLASSES = len(SHAPE_NAMES)


def _uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def _smooth_noise(n: int, channels: int, cells: int, side: int, g: torch.Generator) -> torch.Tensor:
    """Bilinear upsampling of a ``cells x cells`` uniform grid: (n, channels, side, side)."""
    coarse = torch.rand(n, channels, cells, cells, generator=g)
    return F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def _rotate(
    x: torch.Tensor, y: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates x (1, 1, S), y (1, S, 1) in frames centred at (cx, cy), rotated by angle.

    ``cx``, ``cy`` (pixels), ``angle`` (radians): (n,) -> ``(along, across)``, each (n, S, S).
    """
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _background(
    n: int, x: torch.Tensor, y: torch.Tensor, clutter: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Textured backgrounds (n, 3, S, S), unclamped, and their two base colours, each (n, 3)."""
    side = x.shape[-1]
    noise = _smooth_noise(n, 1, 5, side, g)[:, 0]
    lo, hi = noise.amin(dim=(1, 2), keepdim=True), noise.amax(dim=(1, 2), keepdim=True)
    noise = (noise - lo) / (hi - lo)
    angle = _uniform((n,), 0.0, math.pi, g)
    along, across = _rotate(x, y, torch.zeros(n), torch.zeros(n), angle)
    period = _uniform((n, 1, 1), 3.0, 9.0, g)
    phase = _uniform((n, 1, 1), 0.0, 2 * math.pi, g)
    sharp = _uniform((n, 1, 1), 1.0, 8.0, g)
    stripes = torch.sigmoid(sharp * torch.sin(2 * math.pi * along / period + phase))
    cell = _uniform((n, 1, 1), 3.0, 8.0, g)
    checker = torch.sigmoid(
        4 * sharp * torch.sin(math.pi * along / cell) * torch.sin(math.pi * across / cell + phase)
    )
    kind = torch.randint(0, 3, (n,), generator=g)
    texture = torch.stack([noise, stripes, checker], dim=1)[torch.arange(n), kind]
    c1 = torch.rand(n, 3, generator=g)
    c2 = c1 + min(1.0, TEXTURE_CONTRAST * clutter) * (torch.rand(n, 3, generator=g) - c1)
    tint = _smooth_noise(n, 3, 4, side, g) - 0.5
    bg = (
        c1[:, :, None, None]
        + texture[:, None] * (c2 - c1)[:, :, None, None]
        + TINT * clutter * tint
    )
    return bg, c1, c2


def _distractors(
    n: int, x: torch.Tensor, y: torch.Tensor, clutter: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distractor alphas (n, D, S, S) in {0, 1} and colours (n, D, 3): small blobs, thin lines."""
    d = NUM_DISTRACTORS
    cx, cy = _uniform((n * d,), 0.0, IMAGE_SIZE, g), _uniform((n * d,), 0.0, IMAGE_SIZE, g)
    angle = _uniform((n * d,), 0.0, math.pi, g)
    along, across = _rotate(x, y, cx, cy, angle)
    radii = _uniform((n * d, 2, 1, 1), 1.5, 4.0, g)
    blob = (along / radii[:, 0]).square() + (across / radii[:, 1]).square() <= 1
    length = _uniform((n * d, 1, 1), 6.0, 14.0, g)
    width = _uniform((n * d, 1, 1), 0.5, 1.0, g)
    line = (along.abs() <= length / 2) & (across.abs() <= width)
    is_blob = torch.rand(n * d, 1, 1, generator=g) < 0.5
    present = torch.rand(n * d, 1, 1, generator=g) < min(1.0, DISTRACTOR_P * clutter)
    alpha = (torch.where(is_blob, blob, line) & present).float()
    colours = torch.rand(n, d, 3, generator=g)
    return alpha.view(n, d, *alpha.shape[1:]), colours


def _object_colour(c1: torch.Tensor, c2: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per image the most contrasting of 8 uniform random colours vs the background colours."""
    candidates = torch.rand(c1.shape[0], 8, 3, generator=g)
    dist = torch.minimum(
        (candidates - c1[:, None]).norm(dim=-1), (candidates - c2[:, None]).norm(dim=-1)
    )
    return candidates[torch.arange(c1.shape[0]), dist.argmax(dim=1)]


def _boxes(alpha: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes (n, 4), x2/y2 exclusive, of the pixels with alpha >= 0.5 (n, H, W)."""
    inside = alpha >= 0.5
    cols, rows = inside.any(dim=1).to(torch.uint8), inside.any(dim=2).to(torch.uint8)
    side_w, side_h = alpha.shape[2], alpha.shape[1]
    x1, y1 = cols.argmax(dim=1), rows.argmax(dim=1)
    x2, y2 = side_w - cols.flip(1).argmax(dim=1), side_h - rows.flip(1).argmax(dim=1)
    return torch.stack([x1, y1, x2, y2], dim=1).float()


def _grid(side: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (in output pixels) of a ``side * scale`` grid: (1,1,S), (1,S,1)."""
    coords = (torch.arange(side * scale, dtype=torch.float32) + 0.5) / scale
    return coords.view(1, 1, -1), coords.view(1, -1, 1)


def _render(
    labels: torch.Tensor, clutter: float, size: tuple[float, float], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render images for ``labels`` (n,): uint8 (n, 3, 32, 32) and boxes (n, 4).

    Only the object mask is supersampled; background and distractors are drawn at 32x32.
    """
    n = labels.shape[0]
    x, y = _grid(IMAGE_SIZE, 1)
    img, c1, c2 = _background(n, x, y, clutter, g)
    alpha, colours = _distractors(n, x, y, clutter, g)
    for k in range(NUM_DISTRACTORS):
        a = alpha[:, k, None]
        img = img * (1 - a) + colours[:, k, :, None, None] * a
    radius = _uniform((n,), size[0] / 2, size[1] / 2, g)
    cx = radius + (IMAGE_SIZE - 2 * radius) * torch.rand(n, generator=g)
    cy = radius + (IMAGE_SIZE - 2 * radius) * torch.rand(n, generator=g)
    angle = _uniform((n,), -MAX_ROTATION, MAX_ROTATION, g)
    u, v = _rotate(*_grid(IMAGE_SIZE, SUPERSAMPLE), cx, cy, angle)
    u, v = u / radius[:, None, None], v / radius[:, None, None]
    mask = torch.zeros(u.shape, dtype=torch.bool)
    for k, draw in enumerate(SHAPES.values()):
        sel = labels == k
        mask[sel] = draw(u[sel], v[sel])
    a = F.avg_pool2d(mask[:, None].float(), SUPERSAMPLE)  # coverage (n, 1, 32, 32)
    shade = 0.15 * (_smooth_noise(n, 3, 3, IMAGE_SIZE, g) - 0.5)
    colour = _object_colour(c1, c2, g)[:, :, None, None] + shade
    img = img * (1 - a) + colour * a + PIXEL_NOISE * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1).mul(255).round().to(torch.uint8), _boxes(a[:, 0])


def generate_shapes(
    n: int,
    num_classes: int,
    seed: int,
    split: str = "train",
    *,
    clutter: float = 1.0,
    object_size: tuple[float, float] = OBJECT_SIZE,
) -> ImageTensors:
    """Generate ``n`` images of the first ``num_classes`` shapes, balanced to within one image.

    Deterministic per ``(seed, split, clutter)``. ``clutter`` scales the background texture
    contrast, colour noise and distractor rate (0: plain backgrounds, 1: default, up to 2).
    Returns uint8 images (n, 3, 32, 32), labels (n,) and boxes (n, 4) xyxy in pixels (x2/y2
    exclusive).
    """
    g = torch.Generator().manual_seed(derive_seed("shapes", seed, split))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    size = (float(object_size[0]), float(object_size[1]))
    parts = [_render(labels[i : i + CHUNK], clutter, size, g) for i in range(0, n, CHUNK)]
    images = torch.cat([p[0] for p in parts])
    boxes = torch.cat([p[1] for p in parts])
    return ImageTensors(images=images, labels=labels, boxes=boxes)


def cache_path(root: str, **options: float) -> Path:
    """Where the splits for these options (all of them, and the seed) are cached.

    ``ROOT/shapes/<hash>.pt``; the hash also covers the generator's format version.
    """
    key = json.dumps({"format": CACHE_FORMAT, **options}, sort_keys=True)
    return Path(root) / "shapes" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _read_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when absent or unreadable (then it is regenerated)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        warnings.warn(f"ignoring unreadable shapes cache {str(path)!r} ({e})", stacklevel=3)
        return None
    if not isinstance(payload, dict) or set(payload) != set(_CACHE_KEYS):
        warnings.warn(f"ignoring shapes cache {str(path)!r} with unexpected contents", stacklevel=3)
        return None
    return payload


def _write_cache(path: Path, payload: dict[str, torch.Tensor]) -> None:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        os.close(fd)
        try:
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is plain shared data
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as e:
        raise ConfigError(f"cannot write the shapes cache under {str(path.parent)!r}: {e}") from e


@register_dataset("shapes")
def shapes(
    *,
    root: str,
    download: bool,
    seed: int,
    num_classes: int = 10,
    train_size: int = 5000,
    test_size: int = 2000,
    clutter: float = 1.0,
    object_size: list[float] = list(OBJECT_SIZE),  # noqa: B006  (read, never mutated)
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    """The generated shapes dataset (see the module docstring); ``download`` is ignored.

    Options:
        num_classes: number of shape classes, 2..12 (the first of :data:`SHAPE_NAMES`).
        train_size, test_size: images per split (>= 1).
        clutter: background clutter in [0, 2]: 0 plain backgrounds without distractors,
            1 the default, 2 full-contrast textures and more distractors.
        object_size: ``[min, max]`` extent of the object in pixels (uniform), within [4, 32].
    """
    check_int("num_classes", num_classes, 2, MAX_CLASSES)
    check_int("train_size", train_size, 1)
    check_int("test_size", test_size, 1)
    check_int("seed", seed, 0)
    if isinstance(clutter, bool) or not isinstance(clutter, (int, float)) or not 0 <= clutter <= 2:
        raise ValueError(f"clutter must be a number in [0, 2], got {clutter!r}")
    clutter = float(clutter)
    ok = isinstance(object_size, (list, tuple)) and len(object_size) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in object_size)
    if not ok or not 4 <= object_size[0] <= object_size[1] <= IMAGE_SIZE:
        raise ValueError(
            f"object_size must be [min, max] pixels with 4 <= min <= max <= {IMAGE_SIZE}, "
            f"got {object_size!r}"
        )
    object_size = [float(object_size[0]), float(object_size[1])]
    path = cache_path(
        root,
        num_classes=num_classes,
        train_size=train_size,
        test_size=test_size,
        clutter=clutter,
        object_size=object_size,
        seed=seed,
    )
    payload = _read_cache(path)
    if payload is None:
        splits = {
            split: generate_shapes(
                size, num_classes, seed, split, clutter=clutter, object_size=object_size
            )
            for split, size in (("train", train_size), ("test", test_size))
        }
        payload = {key: getattr(splits[s], f) for key, (s, f) in _CACHE_KEYS.items()}
        _write_cache(path, payload)
    train, test = (
        ImageTensors(payload[f"{s}_images"], payload[f"{s}_labels"], payload[f"{s}_boxes"])
        for s in ("train", "test")
    )
    return train, test, describe("shapes", train, SHAPE_NAMES[:num_classes])
