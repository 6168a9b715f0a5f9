"""Datasets held in memory as uint8 tensors, and a deterministic in-memory batch loader.

``load_dataset(name, root=..., download=..., seed=..., **options)`` returns ``(train, test, info)``
for ``"shapes"`` (embedded, generated), ``"cifar10"``, ``"cifar100"``, ``"fashion_mnist"``,
``"mnist"``, ``"imagefolder"`` and ``"hf"`` (Hugging Face); :func:`carve` takes a held-out split
and a class-balanced subset out of a training split.
"""

from rlmix.data import cifar, hf, imagefolder, mnist, shapes  # noqa: F401  (builders register)
from rlmix.data.base import (
    MAX_CLASSES,
    DatasetInfo,
    ImageTensors,
    dataset_options,
    list_datasets,
    load_dataset,
    register_dataset,
)
from rlmix.data.loader import BatchLoader
from rlmix.data.splits import carve

__all__ = [
    "MAX_CLASSES",
    "BatchLoader",
    "carve",
    "DatasetInfo",
    "ImageTensors",
    "dataset_options",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
