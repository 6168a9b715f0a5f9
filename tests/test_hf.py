"""Hugging Face datasets (``data.name: hf``, the optional extra ``rlmix[hf]``): a ``save_to_disk``
folder converted once to the in-memory uint8 tensors every dataset uses, so that the budget, the
held-out split and the commands work on it unchanged; and one clear line for every bad input.
"""

import io
import sys

import numpy as np
import pytest
import torch

from rlmix.cli import run_main
from rlmix.config import load_config
from rlmix.data import carve, dataset_options, load_dataset
from rlmix.data.pipeline import build_loaders
from rlmix.errors import ConfigError, RlmixError
from rlmix.train import main as train_main

datasets = pytest.importorskip(
    "datasets", reason="the optional extra rlmix[hf] (Hugging Face datasets) is not installed"
)
from PIL import Image  # noqa: E402  (after the skip: only these tests need it)

CLASSES = ["cat", "dog", "owl"]


def pixels(c: int, i: int, size: int = 8, channels: int = 3) -> np.ndarray:
    """Image i of class c, (S, S, C) or (S, S) grey: a ramp whose offset differs per image."""
    base = np.arange(size * size * channels).reshape(size, size, channels)
    image = ((base + 7 * i + 61 * c) % 256).astype(np.uint8)
    return image[:, :, 0] if channels == 1 else image


def features(image=None, label=None):
    return datasets.Features(
        {
            "image": image or datasets.Image(),
            "label": label or datasets.ClassLabel(names=CLASSES),
        }
    )


def save(tmp_path, splits, name="ds", feats=None):
    """Save ``{split: (images, labels)}`` as a DatasetDict under tmp_path/name."""
    dd = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict({"image": x, "label": y}, features=feats or features())
            for s, (x, y) in splits.items()
        }
    )
    dd.save_to_disk(str(tmp_path / name))
    return name


def rgb_splits(n_train=4, n_test=2, size=8):
    """Train and test splits of 3 classes, PIL RGB images, labels class-major."""
    out = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 100)):
        arrays = [pixels(c, offset + i, size) for c in range(3) for i in range(n)]
        out[split] = ([Image.fromarray(a) for a in arrays], [c for c in range(3) for _ in range(n)])
    return out


def image_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def chw(arrays):
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def test_save_to_disk_round_trips_pixels_labels_and_class_names(tmp_path):
    assert dataset_options("hf") == [
        "hub",
        "image_column",
        "label_column",
        "path",
        "test_split",
        "train_split",
    ]
    path = save(tmp_path, rgb_splits())
    train, test, info = load_dataset("hf", root=tmp_path, path=path)
    assert torch.equal(train.images, chw([pixels(c, i) for c in range(3) for i in range(4)]))
    assert torch.equal(test.images, chw([pixels(c, 100 + i) for c in range(3) for i in range(2)]))
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.boxes is None
    assert (info.name, info.num_classes, info.image_size, info.channels) == ("hf", 3, 8, 3)
    assert info.class_names == CLASSES and not info.has_boxes
    expected_mean = train.images.double().div(255).mean(dim=(0, 2, 3))
    assert info.mean == pytest.approx(expected_mean.tolist())
    again = load_dataset("hf", root=tmp_path, path=str(tmp_path / path))  # absolute path too
    assert torch.equal(again[0].images, train.images)


def test_grey_images_stay_one_channel_and_mixed_modes_become_rgb(tmp_path):
    grey = [pixels(c, i, channels=1) for c in range(3) for i in range(2)]
    labels = [0, 0, 1, 1, 2, 2]
    path = save(tmp_path, {s: ([Image.fromarray(a) for a in grey], labels) for s in ("a", "b")})
    train, _, info = load_dataset("hf", root=tmp_path, path=path, train_split="a", test_split="b")
    assert info.channels == 1
    assert torch.equal(train.images, torch.from_numpy(np.stack(grey))[:, None])

    rgba = np.dstack([pixels(0, 9), np.full((8, 8), 17, np.uint8)])
    mixed = [Image.fromarray(grey[0]), Image.fromarray(rgba), Image.fromarray(pixels(2, 0))]
    path = save(tmp_path, {"train": (mixed, [0, 1, 2]), "test": (mixed[:1], [0])}, "mixed")
    train, test, info = load_dataset("hf", root=tmp_path, path=path)
    assert info.channels == 3
    assert torch.equal(train.images[0], torch.from_numpy(grey[0])[None].repeat(3, 1, 1))
    assert torch.equal(train.images[1], chw([pixels(0, 9)])[0])  # alpha dropped
    assert torch.equal(test.images, train.images[:1])  # the grey test split follows


def test_numpy_arrays_and_integer_or_string_labels(tmp_path):
    arrays = [pixels(c, i) for c in range(3) for i in range(2)]
    array_features = features(datasets.Array3D((8, 8, 3), "uint8"), datasets.Value("int64"))
    splits = {"train": (arrays, [0, 0, 1, 1, 2, 2]), "test": (arrays[2:], [1, 1, 2, 2])}
    path = save(tmp_path, splits, "arrays", array_features)
    train, test, info = load_dataset("hf", root=tmp_path, path=path)
    assert torch.equal(train.images, chw(arrays))
    assert info.class_names == ["0", "1", "2"]
    assert test.labels.tolist() == [1, 1, 2, 2]

    # plain lists of grey rows, string labels: classes sorted, test labels by name
    grey = [a[:, :, 0] for a in arrays]
    string_features = features(datasets.Sequence(datasets.Sequence(datasets.Value("uint8"))))
    string_features["label"] = datasets.Value("string")
    splits = {"train": (grey, ["owl", "owl", "cat", "cat", "dog", "dog"]), "test": (grey[:2], ["dog", "cat"])}  # fmt: skip
    path = save(tmp_path, splits, "strings", string_features)
    train, test, info = load_dataset("hf", root=tmp_path, path=path)
    assert info.class_names == ["cat", "dog", "owl"] and info.channels == 1
    assert train.labels.tolist() == [2, 2, 0, 0, 1, 1]
    assert test.labels.tolist() == [1, 0]
    assert torch.equal(train.images, torch.from_numpy(np.stack(grey))[:, None])


def _loaders(tmp_path, path, *overrides):
    cfg = load_config(
        None,
        [
            "data.name=hf",
            f"data.root={tmp_path}",
            f"data.options.path={path}",
            "data.augment=false",
            *overrides,
        ],
    )
    return build_loaders(cfg.data, batch_size=2, seed=0, device=torch.device("cpu"))


def test_budget_held_out_split_and_determinism(tmp_path):
    path = save(tmp_path, rgb_splits(n_train=6))
    train, _, _ = load_dataset("hf", root=tmp_path, path=path)
    split = ["data.train_per_class=4", "data.val_size=3", "data.hold_out=always"]
    loaders = _loaders(tmp_path, path, *split)
    assert (loaders.train_images, loaders.held_out_images) == (9, 3)
    kept, held = loaders.train.data, loaders.held_out
    assert torch.bincount(kept.labels).tolist() == [3, 3, 3]
    assert torch.bincount(held.labels).tolist() == [1, 1, 1]
    assert len(loaders.test.data) == 6
    # every image is one of the dataset's, the held-out ones not among the trained-on
    rows = {bytes(x.numpy()): int(y) for x, y in zip(train.images, train.labels, strict=True)}
    kept_rows = [bytes(x.numpy()) for x in kept.images]
    held_rows = [bytes(x.numpy()) for x in held.images]
    assert all(rows[r] == int(y) for r, y in zip(kept_rows, kept.labels, strict=True))
    assert not set(kept_rows) & set(held_rows)
    # the split is the one carve draws, and the same split seed draws it again
    expected, expected_held = carve(train, val_size=3, per_class=4, seed=0)
    assert torch.equal(kept.images, expected.images) and torch.equal(
        held.images, expected_held.images
    )
    again = _loaders(tmp_path, path, *split)
    assert torch.equal(again.train.data.images, kept.images)
    other = _loaders(tmp_path, path, *split, "data.split_seed=1")
    assert not torch.equal(other.held_out.images, held.images)


def test_one_training_epoch_from_the_shipped_default(tmp_path, capsys):
    path = save(tmp_path, rgb_splits(n_train=12, n_test=4, size=32))
    argv = [
        "--set", "data.name=hf", "--set", f"data.root={tmp_path}", "--set", f"data.options.path={path}",
        "--set", "data.train_per_class=10", "--set", "trainer.batch_size=10",
        "--epochs", "1", "--set", "env.eval_fgsm=false", "--no-progress", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    code = run_main(train_main, argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "hf: trained on 30 images, 0 held out" in captured.out


def test_a_bad_path_is_one_line_on_the_command_line(tmp_path, capsys):
    argv = ["--set", "data.name=hf", "--set", f"data.root={tmp_path}", "--set", "data.options.path=nope", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    assert run_main(train_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: hf: directory '{tmp_path / 'nope'}' does not exist"


def test_option_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^hf: give one of the options path .* and hub "):
        load_dataset("hf", root=tmp_path)
    with pytest.raises(ValueError, match=r"^hf: give one of the options path"):
        load_dataset("hf", root=tmp_path, path="a", hub="b")
    with pytest.raises(ValueError, match=r"^hf: option 'test_split' must be a non-empty string"):
        load_dataset("hf", root=tmp_path, path="a", test_split=3)
    with pytest.raises(ValueError, match=r"^hf: option 'path' must be a non-empty string, got ''"):
        load_dataset("hf", root=tmp_path, path="")


def test_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^hf: directory '.*/nope' does not exist$"):
        load_dataset("hf", root=tmp_path, path="nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^hf: '.*/empty' holds no dataset written by save_to"):
        load_dataset("hf", root=tmp_path, path="empty")
    splits = rgb_splits()
    datasets.Dataset.from_dict(
        {"image": splits["train"][0], "label": splits["train"][1]}, features=features()
    ).save_to_disk(str(tmp_path / "single"))
    with pytest.raises(ConfigError, match=r"^hf: '.*/single' holds a single Dataset; save a Data"):
        load_dataset("hf", root=tmp_path, path="single")
    path = save(tmp_path, {"train": splits["train"], "validation": splits["test"]})
    with pytest.raises(ConfigError, match=r"^hf: '.*/ds' has no split 'test'; its splits: train, validation$"):  # fmt: skip
        load_dataset("hf", root=tmp_path, path=path)
    with pytest.raises(ConfigError, match=r"^hf: split 'train' of '.*/ds' has no column 'img'; its columns: image, label$"):  # fmt: skip
        load_dataset("hf", root=tmp_path, path=path, test_split="validation", image_column="img")
    arrow = next((tmp_path / path / "train").glob("*.arrow"))
    arrow.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"^hf: cannot read the dataset in '.*/ds': .+"):
        load_dataset("hf", root=tmp_path, path=path)


def test_an_empty_split_is_named(tmp_path, monkeypatch):
    splits = rgb_splits()
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"image": splits["train"][0], "label": splits["train"][1]}, features=features()
            )
        }
    )
    dd["test"] = dd["train"].select([])  # save_to_disk cannot write an empty split: no folder
    monkeypatch.setattr(datasets, "load_from_disk", lambda folder: dd)
    (tmp_path / "ds").mkdir()
    with pytest.raises(ConfigError, match=r"^hf: split 'test' of '.*/ds' is empty$"):
        load_dataset("hf", root=tmp_path, path="ds")


def test_image_errors(tmp_path):
    images, labels = rgb_splits()["train"]
    small = Image.fromarray(pixels(0, 0, size=6))
    path = save(tmp_path, {"train": (images, labels), "test": ([small], [0])}, "sizes")
    with pytest.raises(
        ConfigError,
        match=r"^hf: the images differ in size: 8x8 \(split 'train', image 0\) and 6x6 \(split "
        r"'test', image 0\); rlmix does not resize: resize them first",
    ):
        load_dataset("hf", root=tmp_path, path=path)
    wide = [Image.fromarray(pixels(0, 0)[:, :6])]
    path = save(tmp_path, {"train": (wide, [0]), "test": (wide, [0])}, "wide")
    with pytest.raises(ConfigError, match=r"^hf: the images are 8x6 \(H x W\); rlmix needs square"):
        load_dataset("hf", root=tmp_path, path=path)
    floats = [Image.fromarray(np.zeros((8, 8), np.float32))]
    path = save(tmp_path, {"train": (floats, [0]), "test": (floats, [0])}, "mode_f")
    with pytest.raises(ConfigError, match=r"^hf: image 0 of split 'train' has mode 'F'; rlmix reads 8-bit"):  # fmt: skip
        load_dataset("hf", root=tmp_path, path=path)
    for name, dtype, value, message in (
        ("float", "float32", 0.5, r"is a float\d+ array of shape \(8, 8, 3\); rlmix reads integer"),
        ("wide_int", "int16", 300, r"has pixel values 300\.\.300, outside 0-255"),
    ):
        feats = features(datasets.Array3D((8, 8, 3), dtype))
        arrays = [np.full((8, 8, 3), value, dtype)]
        path = save(tmp_path, {"train": (arrays, [0]), "test": (arrays, [0])}, name, feats)
        with pytest.raises(ConfigError, match=rf"^hf: image 0 of split 'train' {message}"):
            load_dataset("hf", root=tmp_path, path=path)


def test_label_errors(tmp_path):
    images, labels = rgb_splits()["train"]
    int_features = features(label=datasets.Value("int64"))
    path = save(tmp_path, {"train": (images, labels), "test": (images[:1], [-1])}, "unlabelled", int_features)  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"^hf: column 'label' of split 'test' holds label -1, which marks an unlabelled "
        r"example; rlmix needs a class for every image$",
    ):
        load_dataset("hf", root=tmp_path, path=path)
    str_features = features(label=datasets.Value("string"))
    splits = {"train": (images[:2], ["cat", "dog"]), "test": (images[:2], ["emu", "cat"])}
    path = save(tmp_path, splits, "unknown", str_features)
    with pytest.raises(ConfigError, match=r"^hf: classes \['emu'\] of split 'test' are not in split 'train'$"):  # fmt: skip
        load_dataset("hf", root=tmp_path, path=path)
    float_features = features(label=datasets.Value("float32"))
    path = save(tmp_path, {"train": (images[:1], [0.5]), "test": (images[:1], [0.5])}, "float", float_features)  # fmt: skip
    with pytest.raises(ConfigError, match=r"^hf: column 'label' of split 'train' holds .*float32.*, not class labels"):  # fmt: skip
        load_dataset("hf", root=tmp_path, path=path)


def _offline(monkeypatch, offline: bool) -> None:
    """HF_HUB_OFFLINE as ``offline``, whatever the machine's environment says."""
    import huggingface_hub.constants

    for module in (datasets.config, huggingface_hub.constants):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", offline, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", offline, raising=False)


def test_hub_without_a_network_fails_with_one_line(tmp_path, monkeypatch):
    _offline(monkeypatch, True)
    with pytest.raises(
        RlmixError,
        match=r"^hf: could not load 'nobody/no-such-dataset': the Hugging Face hub is out of reach "
        r"\(HF_HUB_OFFLINE is set\) and the local cache '.*/huggingface' does not hold it; the "
        r"hub needs a network or a local cache: without either, pass a save_to_disk folder as "
        r"data.options.path$",
    ):
        load_dataset("hf", root=tmp_path, hub="nobody/no-such-dataset")


def test_no_network_is_found_at_once_without_retries(tmp_path, monkeypatch, capfd):
    """Not marked offline and no network: one connection attempt finds it out, the load reads
    only the cache (no request, so none of the hub client's retry lines), and the offline switches
    are restored afterwards."""
    import huggingface_hub.constants

    from rlmix import hub

    _offline(monkeypatch, False)
    attempts = []

    def no_network(address, timeout=None, **kwargs):
        attempts.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(hub.socket, "create_connection", no_network)
    with pytest.raises(
        RlmixError,
        match=r"^hf: could not load 'nobody/no-such-dataset': the Hugging Face hub is out of reach "
        r"\(cannot reach huggingface.co: Network is unreachable\) and the local cache",
    ):
        load_dataset("hf", root=tmp_path, hub="nobody/no-such-dataset")
    assert attempts == [(("huggingface.co", 443), hub.HUB_TIMEOUT_S)]
    captured = capfd.readouterr()
    assert "Retry" not in captured.out + captured.err
    assert not huggingface_hub.constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE


def test_undecodable_and_oversized_images(tmp_path, monkeypatch):
    images, labels = rgb_splits()["train"]
    encoded = [{"bytes": image_bytes(i), "path": None} for i in images]
    garbage = [*encoded[:-1], {"bytes": b"\x89PNG garbage", "path": None}]
    path = save(tmp_path, {"train": (garbage, labels), "test": (encoded[:1], [0])}, "garbage")
    with pytest.raises(
        ConfigError,
        match=r"^hf: image 11 of split 'train' does not decode: PIL knows no such image",
    ):
        load_dataset("hf", root=tmp_path, path=path)
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    half = image_bytes(Image.fromarray(noise))[:134]  # the header and half the pixel data
    truncated = [*encoded[:-1], {"bytes": half, "path": None}]
    path = save(tmp_path, {"train": (truncated, labels), "test": (encoded[:1], [0])}, "cut")
    with pytest.raises(
        ConfigError,
        match=r"^hf: image 11 of split 'train' does not decode as an image \(image file is truncated",
    ):
        load_dataset("hf", root=tmp_path, path=path)
    # PIL warns above MAX_IMAGE_PIXELS and refuses above twice that: rlmix refuses both
    path = save(tmp_path, rgb_splits(), "fine")
    for limit, pixels_limit in ((40, 40), (20, 40)):  # 64-pixel images: a warning, an error
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(
            ConfigError,
            match=r"^hf: image 0 of split 'train' is too large to decode safely \(Image size \(64 "
            rf"pixels\) exceeds limit of {pixels_limit} pixels\); it may be a decompression bomb",
        ):
            load_dataset("hf", root=tmp_path, path=path)


def test_labels_beyond_the_classes(tmp_path):
    images, _ = rgb_splits()["train"]
    int_features = features(label=datasets.Value("int64"))
    for split, message in (("test", "holds label 5"), ("train", "holds label 3")):
        bad = {"train": (images[:3], [0, 1, 2]), "test": (images[:2], [0, 1])}
        bad[split] = (bad[split][0], [*bad[split][1][:-1], 5 if split == "test" else 3])
        name = f"classlabel_{split}"
        save(tmp_path, bad, name, int_features)
        dd = datasets.load_from_disk(str(tmp_path / name))
        dd = dd.cast_column("label", datasets.ClassLabel(names=CLASSES))  # no range check
        dd.save_to_disk(str(tmp_path / f"{name}_cast"))
        with pytest.raises(
            ConfigError,
            match=rf"^hf: column 'label' of split '{split}' {message}, beyond its ClassLabel's 3 "
            r"names \(labels 0-2\); fix the labels",
        ):
            load_dataset("hf", root=tmp_path, path=f"{name}_cast")
    path = save(tmp_path, {"train": (images[:2], [0, 10**12]), "test": (images[:1], [0])}, "huge", int_features)  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"^hf: column 'label' of split 'train' holds label 1000000000000; integer labels "
        r"are class indices 0..N-1 and rlmix takes at most 100000 classes",
    ):
        load_dataset("hf", root=tmp_path, path=path)


def test_an_empty_split_on_disk_is_named(tmp_path):
    splits = rgb_splits()
    train = datasets.Dataset.from_dict(
        {"image": splits["train"][0], "label": splits["train"][1]}, features=features()
    )
    try:
        datasets.DatasetDict({"train": train, "test": train.select([])}).save_to_disk(
            str(tmp_path / "ds")
        )
    except Exception:  # older datasets cannot write an empty split (see the test above)
        pytest.skip("this datasets version cannot save an empty split")
    with pytest.raises(ConfigError, match=r"^hf: split 'test' of '.*/ds' is empty$"):
        load_dataset("hf", root=tmp_path, path="ds")


def test_without_the_extra_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(
        ConfigError,
        match=r"^hf: the Hugging Face datasets package is not installed; install it with pip "
        r"install 'rlmix\[hf\]'$",
    ):
        load_dataset("hf", root=tmp_path, path="ds")
