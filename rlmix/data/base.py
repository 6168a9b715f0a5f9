"""Dataset records, the dataset registry and :func:`load_dataset`.

Every dataset is held in memory as uint8 images; the :class:`~rlmix.data.loader.BatchLoader`
turns batches into float [0, 1] pixels. Box convention (as in :mod:`rlmix.metrics`):
``(x1, y1, x2, y2)`` in pixels with ``x2``/``y2`` exclusive.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlmix.registry import Registry

#: The most classes a dataset (and an agent file) may declare: more than ImageNet-21k's 21,841. A
#: label beyond it is a data error, and honouring it would allocate per-class memory in proportion.
MAX_CLASSES = 100_000

# Keyword arguments every builder receives from load_dataset; the rest are dataset options.
_COMMON_ARGS = ("root", "download", "seed")


@dataclass
class DatasetInfo:
    """What a model and a trainer need to know about a dataset.

    Attributes:
        name: registry name (e.g. ``"shapes"``).
        num_classes: number of classes N.
        image_size: image side in pixels (images are square).
        channels: image channels C.
        mean, std: per-channel pixel statistics in [0, 1] units (length C), for the model's
            input normalisation.
        has_boxes: whether the splits carry ground-truth object boxes.
        class_names: N names, index = label.
    """

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    has_boxes: bool
    class_names: list[str] = field(default_factory=list)


@dataclass
class ImageTensors:
    """One in-memory split.

    Attributes:
        images: uint8 (N, C, H, W).
        labels: int64 (N,) class indices.
        boxes: float32 (N, 4) xyxy pixel boxes (x2/y2 exclusive), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise TypeError("images must be a uint8 tensor of shape (N, C, H, W)")
        if self.images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.long:
            raise TypeError("labels must be an int64 (long) tensor of shape (N,)")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.boxes is not None:
            if not isinstance(self.boxes, torch.Tensor) or not self.boxes.is_floating_point():
                raise TypeError("boxes must be a float tensor of shape (N, 4) or None")
            if self.boxes.shape != (n, 4):
                raise ValueError(f"boxes must have shape ({n}, 4), got {tuple(self.boxes.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]


Split = tuple[ImageTensors, ImageTensors, DatasetInfo]
Builder = Callable[..., Split]
DATASETS: Registry[Builder] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under ``name``.

    A builder is called as ``builder(root=..., download=..., seed=..., **options)`` and returns
    ``(train, test, info)``. Its dataset options must be explicit keyword arguments: they are
    what :func:`load_dataset` accepts.
    """
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return DATASETS.names()


def dataset_options(name: str) -> list[str]:
    """The option names dataset ``name`` accepts, sorted."""
    params = inspect.signature(DATASETS.get(name)).parameters
    return sorted(p for p in params if p not in _COMMON_ARGS)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] = "data",
    download: bool = False,
    seed: int = 0,
    **options: object,
) -> Split:
    """Load (or generate) a dataset into memory.

    Args:
        name: one of :func:`list_datasets`.
        root: data directory (downloads and caches live under it).
        download: allow downloading (CIFAR); datasets that need no download ignore it.
        seed: generation seed for generated datasets; ignored by the others.
        **options: dataset options (see :func:`dataset_options`).

    Returns:
        ``(train, test, info)``.

    Raises:
        ValueError: unknown dataset name, unknown option or bad option value.
        rlmix.errors.ConfigError: data files missing from ``root``.
    """
    builder = DATASETS.get(name)
    valid = dataset_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for dataset {name!r}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    return builder(root=os.fspath(root), download=download, seed=seed, **options)


def channel_stats(
    images: torch.Tensor, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W), in [0, 1] units.

    Accumulates in float64 over chunks of ``chunk`` images to bound memory.
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = images.numel() // c
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def describe(name: str, train: ImageTensors, class_names: list[str]) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset from its training split (size, channels, pixel
    statistics, boxes) and class names."""
    mean, std = channel_stats(train.images)
    return DatasetInfo(
        name=name,
        num_classes=len(class_names),
        image_size=train.images.shape[-1],
        channels=train.images.shape[1],
        mean=mean,
        std=std,
        has_boxes=train.boxes is not None,
        class_names=list(class_names),
    )


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int in [low, high] (high None = unbounded).

    Raises ValueError for both a wrong type and a wrong range: options come from config files,
    where either is a bad value.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value
