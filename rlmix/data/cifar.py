"""CIFAR-10 and CIFAR-100 through ``torchvision.datasets`` (python pickle format).

Files live under ``ROOT/cifar-10-batches-py`` or ``ROOT/cifar-100-python`` (the extracted official
archives); ``download=True`` fetches them there. CIFAR-100 uses the 100 fine labels.
"""

from __future__ import annotations

import os

import torch

from rlmix.data.base import DatasetInfo, ImageTensors, register_dataset
from rlmix.errors import ConfigError, RlmixError

# Per-channel pixel statistics of the training splits, as used in the mix-up literature.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _to_tensors(ds) -> ImageTensors:
    """torchvision CIFAR (``.data`` uint8 (N, 32, 32, 3), ``.targets``) -> ImageTensors."""
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images=images, labels=torch.as_tensor(ds.targets, dtype=torch.long))


# name -> (torchvision class name, display title, mean, std)
_VARIANTS = {
    "cifar10": ("CIFAR10", "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ("CIFAR100", "CIFAR-100", CIFAR100_MEAN, CIFAR100_STD),
}


def _load(
    variant: str, root: str, download: bool
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    from torchvision import datasets  # deferred: torchvision is slow to import

    class_name, title, mean, std = _VARIANTS[variant]
    cls = getattr(datasets, class_name)
    folder = os.path.join(root, cls.base_folder)
    try:
        train_ds = cls(root, train=True, download=download)
        test_ds = cls(root, train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
        raise ConfigError(
            f"{title} not found under {root!r} (expected {folder}, complete and uncorrupted); "
            "pass download=true (data.download: true) on a machine with network, or copy the "
            "extracted archive there"
        ) from e
    except OSError as e:  # download=True without network (URLError) or an unwritable root
        raise RlmixError(f"could not download {title} to {root!r}: {e}") from e
    info = DatasetInfo(
        name=variant,
        num_classes=len(train_ds.classes),
        image_size=32,
        channels=3,
        mean=mean,
        std=std,
        has_boxes=False,
        class_names=list(train_ds.classes),
    )
    return _to_tensors(train_ds), _to_tensors(test_ds), info


@register_dataset("cifar10")
def cifar10(
    *, root: str, download: bool, seed: int
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    """CIFAR-10: 50000 train / 10000 test 32x32 RGB images, 10 classes; ``seed`` is unused."""
    return _load("cifar10", root, download)


@register_dataset("cifar100")
def cifar100(
    *, root: str, download: bool, seed: int
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    """CIFAR-100: 50000 train / 10000 test 32x32 RGB images, 100 fine classes; ``seed`` unused."""
    return _load("cifar100", root, download)
