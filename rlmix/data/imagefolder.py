"""Any ``ImageFolder`` directory: ``ROOT/<train_dir>/<class>/*.png|jpg`` and a test split beside it.

Images are resized (shorter side to ``image_size``, then a centre crop) and held in memory as
uint8; mean and std come from the train split. Test labels follow the train split's class order.
"""

from __future__ import annotations

import os

import torch

from rlmix.data.base import (
    DatasetInfo,
    ImageTensors,
    check_int,
    describe,
    register_dataset,
)
from rlmix.errors import ConfigError

DEFAULT_TEST_DIRS = ("val", "test")


def _read(path: str, image_size: int):
    """Load one split directory: (images uint8 (N, 3, S, S), targets (N,), class names)."""
    from torchvision import datasets, transforms  # deferred: torchvision is slow to import

    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.PILToTensor(),
        ]
    )
    try:
        ds = datasets.ImageFolder(path, transform=transform)
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise ConfigError(f"imagefolder: no usable images under {path!r}: {e}") from e
    images = []
    for path, _ in ds.samples:
        try:
            images.append(ds.transform(ds.loader(path)))
        except OSError as e:  # PIL's UnidentifiedImageError, truncated or unreadable files
            raise ConfigError(f"imagefolder: cannot read image '{path}': {e}") from e
    images = torch.stack(images)
    return images, torch.as_tensor(ds.targets, dtype=torch.long), ds.classes


@register_dataset("imagefolder")
def imagefolder(
    *,
    root: str,
    download: bool,
    seed: int,
    image_size: int = 32,
    train_dir: str = "train",
    test_dir: str | None = None,
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    """An image-folder dataset under ``root``; ``download`` and ``seed`` are unused.

    Options:
        image_size: side in pixels of the square images (>= 1).
        train_dir: train split folder, relative to ``root``.
        test_dir: test split folder; by default ``"val"``, else ``"test"``.
    """
    check_int("image_size", image_size, 1)
    train_path = os.path.join(root, train_dir)
    if not os.path.isdir(train_path):
        raise ConfigError(f"imagefolder: train directory {train_path!r} does not exist")
    candidates = DEFAULT_TEST_DIRS if test_dir is None else (test_dir,)
    test_paths = [os.path.join(root, d) for d in candidates]
    existing = [p for p in test_paths if os.path.isdir(p)]
    if not existing:
        raise ConfigError(
            f"imagefolder: test directory {' or '.join(repr(p) for p in test_paths)} does not exist"
        )
    train_images, train_labels, classes = _read(train_path, image_size)
    test_images, test_targets, test_classes = _read(existing[0], image_size)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise ConfigError(
            f"imagefolder: test classes {unknown} of {existing[0]!r} are not in {train_path!r}"
        )
    remap = torch.tensor([classes.index(c) for c in test_classes], dtype=torch.long)
    train = ImageTensors(images=train_images, labels=train_labels)
    info = describe("imagefolder", train, classes)
    test = ImageTensors(images=test_images, labels=remap[test_targets])
    return train, test, info
