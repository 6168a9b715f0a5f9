"""Carving a training split: the labelled training budget and a held-out split taken from it.

:func:`carve` first draws the **budget**: ``per_class`` images of every class (a class-balanced
subset; all images when 0). The **held-out** split (``val_size`` images, stratified by class) then
comes out of that budget, so a run that holds images out trains on ``budget - val_size`` images
and spends no more labels than one that does not: comparisons at the same labelled budget stay
honest. Both draws use the ``split`` stream of :mod:`rlmix.seeding` with their own seed, so every
run with the same ``split_seed`` sees the same images whatever its run seed: paired comparisons
over run seeds share their data, and the budget is the same with and without a held-out split.
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
    """Split ``train`` into ``(training images, held_out)`` (see the module docstring).

    Args:
        train: the dataset's training split.
        val_size: images held out of the budget (0: none), stratified by class.
        per_class: budget images per class (0: the whole split).
        seed: the split seed (not the run seed).

    Returns:
        The training images (the budget minus the held-out split) and the held-out split (None
        when ``val_size`` is 0).

    Raises:
        ValueError: a class has fewer than ``per_class`` images, or the budget is not larger
            than ``val_size``.
    """
    budget = torch.arange(len(train))
    if per_class:
        counts = torch.bincount(train.labels)
        short = [c for c in range(counts.shape[0]) if 0 < counts[c] < per_class]
        if short:
            raise ValueError(
                f"train_per_class ({per_class}) exceeds the {int(counts[short[0]])} images of "
                f"class {short[0]}"
            )
        order = _class_order(train.labels, stream_generator(seed, "split", 1))
        budget = order[: per_class * int((counts > 0).sum())].sort().values
    if not val_size:
        return take(train, budget), None
    if val_size >= budget.shape[0]:
        raise ValueError(
            f"val_size ({val_size}) must be smaller than the training budget "
            f"({budget.shape[0]} images)"
        )
    order = budget[_class_order(train.labels[budget], stream_generator(seed, "split", 0))]
    return take(train, order[val_size:].sort().values), take(train, order[:val_size].sort().values)


__all__ = ["carve", "take"]
