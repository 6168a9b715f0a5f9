"""Fashion-MNIST and MNIST: 28x28 grey images, 10 classes, 60000 train / 10000 test.

The raw IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...``; plain
or ``.gz``) are read directly, offline, from the first of these folders that holds all four:

- ``ROOT`` itself, ``ROOT/FashionMNIST/raw`` or ``ROOT/MNIST/raw`` (torchvision's layout),
  ``ROOT/fashion-mnist`` or ``ROOT/mnist``;
- for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist``, where Debian's
  ``dataset-fashion-mnist`` package installs them (``apt-get install dataset-fashion-mnist``).

With ``download=True`` and no files found, ``torchvision.datasets`` downloads them under ROOT.
Images are zero-padded to ``image_size`` (default 32, so that the mixing grids 2, 4 and 8
divide the side) and kept as one channel; mean and std come from the training split.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlmix.data.base import DatasetInfo, ImageTensors, check_int, describe, register_dataset
from rlmix.errors import ConfigError, RlmixError

FASHION_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
# IDX type codes (the third byte of the magic number) -> numpy dtype (big-endian)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# name -> (title, torchvision class, folders under ROOT, system folders, class names)
_VARIANTS = {
    "fashion_mnist": (
        "Fashion-MNIST",
        "FashionMNIST",
        ("FashionMNIST/raw", "fashion-mnist", "fashion_mnist"),
        (DEBIAN_FASHION,),
        FASHION_CLASSES,
    ),
    "mnist": ("MNIST", "MNIST", ("MNIST/raw", "mnist"), (), DIGIT_CLASSES),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into an array of its stored shape.

    Raises:
        ValueError: the file is not a well-formed IDX file (bad magic, type or size).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file '{path}': {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"'{path}' is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"'{path}' is not an IDX file (truncated header)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"'{path}' has {len(data)} bytes, its header promises {expected} (shape {shape})"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find(folder: str) -> dict[str, str] | None:
    """The four files in ``folder`` (plain preferred over .gz), or None if any is missing."""
    found = {}
    for key, name in FILES.items():
        for candidate in (name, f"{name}.gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                found[key] = path
                break
        else:
            return None
    return found


def find_files(variant: str, root: str) -> dict[str, str] | None:
    """The IDX files of ``variant`` under ``root`` or the system folders, or None."""
    _, _, subdirs, system, _ = _VARIANTS[variant]
    for folder in (root, *(os.path.join(root, d) for d in subdirs), *system):
        files = _find(folder)
        if files is not None:
            return files
    return None


def _download(variant: str, root: str) -> dict[str, str]:
    from torchvision import datasets  # deferred: torchvision is slow to import

    title, cls_name, subdirs, _, _ = _VARIANTS[variant]
    try:
        getattr(datasets, cls_name)(root, train=True, download=True)
    except (OSError, RuntimeError) as e:  # no network (URLError), unwritable root
        raise RlmixError(f"could not download {title} to {root!r}: {e}") from e
    files = _find(os.path.join(root, subdirs[0]))
    if files is None:
        raise RlmixError(f"downloaded {title}, but its files are not in {root}/{subdirs[0]}")
    return files


def _split(files: dict[str, str], split: str, pad: int) -> ImageTensors:
    try:
        images = read_idx(files[f"{split}_images"])
        labels = read_idx(files[f"{split}_labels"])
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"IDX files '{files[f'{split}_images']}' and '{files[f'{split}_labels']}' do not "
            f"hold N images and N labels (shapes {images.shape} and {labels.shape})"
        )
    if images.dtype != np.uint8 or labels.min() < 0 or labels.max() > 9:
        raise ConfigError(
            f"IDX files of split '{split}' must hold uint8 images and labels 0-9 "
            f"(got {images.dtype}, labels {labels.min()}..{labels.max()})"
        )
    x = torch.from_numpy(images.copy())[:, None]
    if pad:
        x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    return ImageTensors(images=x, labels=torch.from_numpy(labels.astype(np.int64)))


def _load(variant: str, root: str, download: bool, image_size: int) -> tuple:
    title, _, subdirs, system, classes = _VARIANTS[variant]
    check_int("image_size", image_size, 28)
    files = find_files(variant, root)
    if files is None and download:
        files = _download(variant, root)
    if files is None:
        where = ", ".join([repr(root), *(repr(os.path.join(root, d)) for d in subdirs), *system])
        debian = (
            "install Debian's dataset-fashion-mnist package (apt-get install "
            "dataset-fashion-mnist), "
            if system
            else ""
        )
        raise ConfigError(
            f"{title} not found (looked for its four IDX files in {where}); {debian}pass "
            "data.download=true on a machine with network, or copy the files into data.root"
        )
    pad = image_size - 28
    train, test = _split(files, "train", pad), _split(files, "test", pad)
    return train, test, describe(variant, train, classes)


@register_dataset("fashion_mnist")
def fashion_mnist(
    *, root: str, download: bool, seed: int, image_size: int = 32
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    """Fashion-MNIST (Xiao et al. 2017), padded to ``image_size``; ``seed`` is unused."""
    return _load("fashion_mnist", root, download, image_size)


@register_dataset("mnist")
def mnist(
    *, root: str, download: bool, seed: int, image_size: int = 32
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    """MNIST digits, padded to ``image_size``; ``seed`` is unused."""
    return _load("mnist", root, download, image_size)


__all__ = ["DEBIAN_FASHION", "fashion_mnist", "find_files", "mnist", "read_idx"]
