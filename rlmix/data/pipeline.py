"""From a :class:`rlmix.config.DataConfig` to the loaders a run trains and evaluates with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlmix.config import DataConfig
from rlmix.data.base import DatasetInfo, ImageTensors, load_dataset
from rlmix.data.loader import BatchLoader
from rlmix.data.splits import carve
from rlmix.errors import ConfigError


@dataclass
class Loaders:
    """A run's data: the training, test and (optional) held-out loaders and the dataset info.

    ``val`` yields the held-out split (``data.val_size`` images carved from the training budget,
    never the test split) as one batch per rank; ``held_out`` is its split (None without one).
    """

    train: BatchLoader
    test: BatchLoader
    val: BatchLoader | None
    info: DatasetInfo
    held_out: ImageTensors | None = None

    @property
    def train_images(self) -> int:
        """Images the classifier trains on (the budget minus the held-out split)."""
        return len(self.train.data)

    @property
    def held_out_images(self) -> int:
        return 0 if self.held_out is None else len(self.held_out)


def build_loaders(
    d: DataConfig,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    localization: bool = True,
    hold_out: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Loaders:
    """Load ``d.name``, draw the training budget, hold ``d.val_size`` of it out when
    ``hold_out`` (something uses the held-out split, or ``data.hold_out`` is ``always``), and
    build the loaders.

    ``batch_size`` is the global training batch; under torchrun each loader yields this rank's
    shard of every batch. Raises :class:`ConfigError` naming the config key at fault.
    """
    try:
        train, test, info = load_dataset(
            d.name, root=d.root, download=d.download, seed=seed, **d.options
        )
        val_size = d.val_size if hold_out or d.hold_out == "always" else 0
        train, val = carve(train, val_size=val_size, per_class=d.train_per_class, seed=d.split_seed)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from e
    if batch_size > len(train):
        raise ConfigError(
            f"config key 'trainer.batch_size' ({batch_size}) is larger than the training set "
            f"({len(train)} images)"
        )
    if batch_size % world_size:
        raise ConfigError(
            f"config key 'trainer.batch_size' ({batch_size}) is the global batch and must be "
            f"divisible by the number of ranks ({world_size})"
        )
    shard = {"rank": rank, "world_size": world_size, "device": device}
    train_loader = BatchLoader(
        train, batch_size, shuffle=True, drop_last=True, augment=d.augment, seed=seed, **shard
    )
    test_loader = BatchLoader(
        test,
        d.eval_batch_size,
        shuffle=False,
        drop_last=False,
        augment=False,
        with_boxes=info.has_boxes and localization,
        **shard,
    )
    val_loader = None
    if val is not None:
        val_loader = BatchLoader(
            val, len(val), shuffle=False, drop_last=False, augment=False, **shard
        )
    return Loaders(train_loader, test_loader, val_loader, info, val)


__all__ = ["Loaders", "build_loaders"]
