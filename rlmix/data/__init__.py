"""Datasets held in memory as uint8 tensors, and a deterministic in-memory batch loader.

``load_dataset(name, root=..., download=..., seed=..., **options)`` returns ``(train, test, info)``
for ``"shapes"`` (embedded, generated), ``"cifar10"``, ``"cifar100"`` and ``"imagefolder"``.
"""

from rlmix.data import cifar, imagefolder, shapes  # noqa: F401  (builders register on import)
from rlmix.data.base import (
    DatasetInfo,
    ImageTensors,
    dataset_options,
    list_datasets,
    load_dataset,
    register_dataset,
)
from rlmix.data.loader import BatchLoader

__all__ = [
    "BatchLoader",
    "DatasetInfo",
    "ImageTensors",
    "dataset_options",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
