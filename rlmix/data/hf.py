"""Hugging Face ``datasets`` (the optional extra ``rlmix[hf]``): a ``save_to_disk`` folder or,
with a network, a dataset on the hub.

The images are converted once, at load time, to the uint8 (N, C, S, S) tensors every rlmix
dataset is held in: PIL images (grey modes ``1``/``L``/``LA`` become one channel, the others RGB,
alpha dropped) or integer arrays (H, W) / (H, W, C) with C 1-4 and values 0-255. C is 1 when every
image of both splits is grey, else 3 (grey images repeated). All images must share one square
size: they are not resized. Class names come from a ``ClassLabel`` label column; integer labels
are named ``"0"``, ``"1"``...; string labels are the classes, sorted. Test labels follow the train
split's classes. Mean and std come from the train split.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image

from rlmix.data.base import MAX_CLASSES, DatasetInfo, ImageTensors, describe, register_dataset
from rlmix.errors import ConfigError, RlmixError
from rlmix.hub import offline, unreachable

GREY_MODES = ("1", "L", "LA")
BATCH = 512  # rows decoded at a time


def _check_names(options: dict[str, object]) -> None:
    for option, value in options.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"hf: option {option!r} must be a non-empty string, got {value!r}")


def _reason(e: Exception) -> str:
    """The first line of an exception's message (its type when it has none)."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _open(path: str | None, hub: str | None, root: str) -> tuple[Any, str]:
    """The DatasetDict of ``path`` (relative to ``root``) or ``hub``, and how to name it."""
    try:
        import datasets
    except ImportError as e:
        raise ConfigError(
            "hf: the Hugging Face datasets package is not installed; "
            "install it with pip install 'rlmix[hf]'"
        ) from e
    if hub is not None:
        cache = os.path.join(root, "huggingface")
        away = unreachable()  # checked first: offline, the hub client retries for ~30 s
        try:
            with offline(away is not None):
                return datasets.load_dataset(hub, cache_dir=cache), hub
        except Exception as e:  # the hub raises many types: offline, unknown id, bad config
            why = (
                f" from the Hugging Face hub ({_reason(e)})"
                if away is None
                else f": the Hugging Face hub is out of reach ({away}) and the local cache "
                f"{cache!r} does not hold it"
            )
            raise RlmixError(
                f"hf: could not load {hub!r}{why}; the hub needs a network or a local cache: "
                "without either, pass a save_to_disk folder as data.options.path"
            ) from e
    folder = os.path.join(root, path)
    if not os.path.isdir(folder):
        raise ConfigError(f"hf: directory {folder!r} does not exist")
    empty = _empty_splits(folder)
    if empty:
        raise ConfigError(f"hf: split {empty[0]!r} of {folder!r} is empty")
    try:
        loaded = datasets.load_from_disk(folder)
    except FileNotFoundError as e:
        raise ConfigError(f"hf: {folder!r} holds no dataset written by save_to_disk") from e
    except Exception as e:  # damaged files: pyarrow and datasets raise many types
        raise ConfigError(f"hf: cannot read the dataset in {folder!r}: {_reason(e)}") from e
    if not isinstance(loaded, datasets.DatasetDict):
        raise ConfigError(
            f"hf: {folder!r} holds a single Dataset; save a DatasetDict of a train and a test "
            "split instead"
        )
    return loaded, folder


def _empty_splits(folder: str) -> list[str]:
    """The splits of a ``save_to_disk`` folder stored without a single row (``load_from_disk``
    fails on them with an IndexError); empty when there are none or the folder is not one."""
    try:
        with open(os.path.join(folder, "dataset_dict.json")) as f:
            splits = json.load(f)["splits"]
        empty = []
        for split in splits:
            with open(os.path.join(folder, split, "state.json")) as f:
                if not json.load(f)["_data_files"]:
                    empty.append(split)
    except (OSError, ValueError, KeyError, TypeError):
        return []  # not a DatasetDict folder: load_from_disk says what it is
    return empty


def _pixels(value: object) -> np.ndarray:
    """One image as uint8 (H, W) when grey, else (H, W, 3)."""
    if isinstance(value, Image.Image):
        if value.mode in ("I", "F") or value.mode.startswith("I;"):
            raise ValueError(f"has mode {value.mode!r}; rlmix reads 8-bit grey or colour images")
        return np.asarray(value.convert("L" if value.mode in GREY_MODES else "RGB"))
    array = np.asarray(value)
    if array.ndim == 3 and 1 <= array.shape[2] <= 4:
        array = array[:, :, 0] if array.shape[2] <= 2 else array[:, :, :3]  # alpha dropped
    if array.ndim not in (2, 3) or array.dtype.kind not in "ui":
        raise ValueError(
            f"is a {array.dtype} array of shape {np.shape(value)}; rlmix reads integer arrays "
            "(H, W) or (H, W, C) with C 1-4"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"has pixel values {array.min()}..{array.max()}, outside 0-255")
    return array.astype(np.uint8, copy=False)


def _decode(feature: Any, value: object, where: str) -> Image.Image:
    """One encoded image of an ``Image`` column, decoded as ``datasets`` does; an image that
    does not decode, or that PIL takes for a decompression bomb (more than
    ``Image.MAX_IMAGE_PIXELS`` pixels: its warning is an error here), is one ConfigError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return feature.decode_example(value)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ConfigError(
            f"hf: {where} is too large to decode safely ({_reason(e).split(', could be')[0]}); "
            "it may be a decompression bomb: remove it or shrink it first"
        ) from e
    except Image.UnidentifiedImageError as e:
        raise ConfigError(f"hf: {where} does not decode: PIL knows no such image format") from e
    except Exception as e:  # PIL and datasets raise many types for a damaged file
        raise ConfigError(f"hf: {where} does not decode as an image ({_reason(e)})") from e


def _images(ds: Any, column: str, split: str) -> list[np.ndarray]:
    import datasets

    feature = ds.features[column]
    rows = ds.select_columns([column])
    if isinstance(feature, datasets.Image):  # decoded one by one below, each error named
        rows = rows.cast_column(column, datasets.Image(decode=False))
    else:  # arrays, not encoded images
        rows = rows.with_format("numpy")
    out: list[np.ndarray] = []
    for batch in rows.iter(batch_size=BATCH):
        for value in batch[column]:
            where = f"image {len(out)} of split {split!r}"
            if isinstance(feature, datasets.Image):
                value = _decode(feature, value, where)
            try:
                out.append(_pixels(value))
            except ValueError as e:
                raise ConfigError(f"hf: {where} {e}") from e
    return out


def _stack(splits: dict[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    """uint8 (N, C, S, S) per split; every image of every split must have the first one's size."""
    first_split = next(iter(splits))
    h, w = splits[first_split][0].shape[:2]
    for split, arrays in splits.items():
        for i, a in enumerate(arrays):
            if a.shape[:2] != (h, w):
                raise ConfigError(
                    f"hf: the images differ in size: {h}x{w} (split {first_split!r}, image 0) "
                    f"and {a.shape[0]}x{a.shape[1]} (split {split!r}, image {i}); rlmix does "
                    "not resize: resize them first (e.g. with Dataset.map)"
                )
    if h != w:
        raise ConfigError(f"hf: the images are {h}x{w} (H x W); rlmix needs square images")
    colour = any(a.ndim == 3 for arrays in splits.values() for a in arrays)
    c = 3 if colour else 1

    def chw(a: np.ndarray) -> np.ndarray:
        return a.transpose(2, 0, 1) if a.ndim == 3 else np.broadcast_to(a, (c, h, w))

    return {s: torch.from_numpy(np.stack([chw(a) for a in arrays])) for s, arrays in splits.items()}


def _labels(ds: Any, column: str, split: str) -> tuple[list[str], torch.Tensor]:
    """The split's class names (index = label) and its labels."""
    import datasets

    feature = ds.features[column]
    values = ds[column][:]  # a list (a lazy Column in datasets >= 4)
    where = f"column {column!r} of split {split!r}"
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        beyond = max(values, default=-1)
        if beyond >= len(names):
            raise ConfigError(
                f"hf: {where} holds label {beyond}, beyond its ClassLabel's {len(names)} names "
                f"(labels 0-{len(names) - 1}); fix the labels or the ClassLabel's names"
            )
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        largest = max(values, default=-1)
        if largest >= MAX_CLASSES:
            raise ConfigError(
                f"hf: {where} holds label {largest}; integer labels are class indices 0..N-1 "
                f"and rlmix takes at most {MAX_CLASSES} classes: map the labels to 0..N-1 "
                "(or give the column a ClassLabel)"
            )
        names = [str(c) for c in range(largest + 1)]
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        names = sorted(set(values))
        index = {name: i for i, name in enumerate(names)}
        values = [index[v] for v in values]
    else:
        raise ConfigError(
            f"hf: {where} holds {feature}, not class labels (a ClassLabel, integers or strings)"
        )
    if len(names) > MAX_CLASSES:
        raise ConfigError(
            f"hf: {where} names {len(names)} classes; rlmix takes at most {MAX_CLASSES}"
        )
    labels = torch.tensor(values, dtype=torch.long)
    if labels.min() < 0:  # the split is not empty
        raise ConfigError(
            f"hf: {where} holds label {int(labels.min())}, which marks an unlabelled example; "
            "rlmix needs a class for every image"
        )
    return names, labels


@register_dataset("hf")
def hf(
    *,
    root: str,
    download: bool,
    seed: int,
    path: str | None = None,
    hub: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    image_column: str = "image",
    label_column: str = "label",
) -> tuple[ImageTensors, ImageTensors, DatasetInfo]:
    """A Hugging Face dataset (see the module docstring); ``download`` and ``seed`` are unused.

    Options:
        path: a folder written by ``DatasetDict.save_to_disk``, relative to ``root``.
        hub: a hub dataset id (needs a network; cached under ``root/huggingface``). Give one
            of ``path`` and ``hub``.
        train_split, test_split: the split names.
        image_column, label_column: the column names.
    """
    source = {k: v for k, v in (("path", path), ("hub", hub)) if v is not None}
    if len(source) != 1:
        raise ValueError(
            "hf: give one of the options path (a save_to_disk folder) and hub (a hub dataset id)"
        )
    _check_names(
        {
            **source,
            "train_split": train_split,
            "test_split": test_split,
            "image_column": image_column,
            "label_column": label_column,
        }
    )
    loaded, where = _open(path, hub, root)
    for split in (train_split, test_split):
        if split not in loaded:
            raise ConfigError(
                f"hf: {where!r} has no split {split!r}; its splits: {', '.join(loaded)}"
            )
        for column in (image_column, label_column):
            if column not in loaded[split].column_names:
                raise ConfigError(
                    f"hf: split {split!r} of {where!r} has no column {column!r}; its columns: "
                    f"{', '.join(loaded[split].column_names)}"
                )
        if not len(loaded[split]):
            raise ConfigError(f"hf: split {split!r} of {where!r} is empty")
    images = _stack({s: _images(loaded[s], image_column, s) for s in (train_split, test_split)})
    classes, train_labels = _labels(loaded[train_split], label_column, train_split)
    test_names, test_labels = _labels(loaded[test_split], label_column, test_split)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({test_names[i] for i in test_labels.tolist()} - set(index))
    if unknown:
        raise ConfigError(
            f"hf: classes {unknown} of split {test_split!r} are not in split {train_split!r}"
        )
    remap = torch.tensor([index.get(name, -1) for name in test_names], dtype=torch.long)
    train = ImageTensors(images=images[train_split], labels=train_labels)
    test = ImageTensors(images=images[test_split], labels=remap[test_labels])
    return train, test, describe("hf", train, classes)


__all__ = ["hf"]
