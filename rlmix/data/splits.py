"""Carving a training split: a held-out split and a class-balanced training subset.

:func:`carve` applies both, in this order: the held-out split (``val_size`` images, stratified by
class) comes out of the whole training split first, then the training subset (``per_class``
images of every class) is drawn from what remains, so the two never overlap and the held-out
images are never trained on. Both draws use the ``split`` stream of :mod:`rlmix.seeding` with
their own seed, so every run with the same ``split_seed`` sees the same images whatever its run
seed: paired comparisons over run seeds share their data.
"""

from __future__ import annotations

import torch

from rlmix.data.base import ImageTensors
from rlmix.seeding import stream_generator


def take(data: ImageTensors, index: torch.Tensor) -> ImageTensors:
    """The images ``index`` (1-D long) of ``data``, boxes included."""
    boxes = None if data.boxes is None else data.boxes[index]
    return ImageTensors(data.images[index], data.labels[index], boxes)


def _class_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random order of all indices in which the classes take turns (stratified)."""
    order = torch.randperm(labels.shape[0], generator=generator)
    shuffled = labels[order]
    # rank of each image within its class, in the shuffled order
    sort = torch.sort(shuffled, stable=True)
    counts = torch.bincount(shuffled)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[sort.indices] = torch.arange(order.shape[0]) - starts[sort.values]
    # take rank 0 of every class, then rank 1, ...: ties broken by the shuffled position
    key = rank * labels.shape[0] + torch.arange(order.shape[0])
    return order[torch.argsort(key)]


def carve(
    train: ImageTensors, *, val_size: int = 0, per_class: int = 0, seed: int = 0
) -> tuple[ImageTensors, ImageTensors | None]:
    """Split ``train`` into ``(train_subset, held_out)``.

    Args:
        train: the dataset's training split.
        val_size: images in the held-out split (0: none), stratified by class.
        per_class: training images kept per class (0: all that remain).
        seed: the split seed (not the run seed).

    Returns:
        The training subset and the held-out split (None when ``val_size`` is 0).

    Raises:
        ValueError: the split is too small for ``val_size``, or a class has fewer than
            ``per_class`` images left.
    """
    n = len(train)
    if val_size >= n:
        raise ValueError(f"val_size ({val_size}) must be smaller than the training split ({n})")
    rest = torch.arange(n)
    held_out = None
    if val_size:
        order = _class_order(train.labels, stream_generator(seed, "split", 0))
        held_out = take(train, order[:val_size].sort().values)
        rest = order[val_size:].sort().values
    if per_class:
        labels = train.labels[rest]
        counts = torch.bincount(labels)
        short = [c for c in range(counts.shape[0]) if 0 < counts[c] < per_class]
        if short:
            raise ValueError(
                f"train_per_class ({per_class}) exceeds the {int(counts[short[0]])} images of "
                f"class {short[0]} left for training"
            )
        order = rest[_class_order(labels, stream_generator(seed, "split", 1))]
        rest = order[: per_class * int((counts > 0).sum())].sort().values
    return take(train, rest), held_out


__all__ = ["carve", "take"]
