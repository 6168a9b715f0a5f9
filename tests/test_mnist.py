"""Fashion-MNIST / MNIST: the IDX reader on files the test writes, the folders searched, and the
real Debian-packaged Fashion-MNIST when it is installed."""

import gzip
import os

import numpy as np
import pytest
import torch

from rlmix.data import load_dataset
from rlmix.data import mnist as mnist_mod
from rlmix.data.mnist import DEBIAN_FASHION, FILES, read_idx
from rlmix.errors import ConfigError


def write_idx(path, array: np.ndarray, *, gz: bool = False) -> None:
    """An IDX file (big-endian header: 0, 0, type code, ndim, then each dimension)."""
    codes = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def make_split_files(folder, n_train=20, n_test=10, *, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, array in arrays.items():
        name = FILES[key] + (".gz" if gz else "")
        write_idx(os.path.join(folder, name), array, gz=gz)
    return arrays


def test_read_idx_plain_and_gzip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a)
    write_idx(tmp_path / "a.gz", a, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    big = np.array([1, -2, 70000], dtype=">i4")
    write_idx(tmp_path / "i", big)
    np.testing.assert_array_equal(read_idx(tmp_path / "i"), [1, -2, 70000])


def test_read_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="is not an IDX file \\(bad magic number\\)"):
        read_idx(tmp_path / "bad")
    a = np.zeros((4, 4), np.uint8)
    write_idx(tmp_path / "short", a)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="has 25 bytes, its header promises 28"):
        read_idx(tmp_path / "short")
    (tmp_path / "notgz.gz").write_bytes(b"plain")
    with pytest.raises(ValueError, match="cannot read IDX file"):
        read_idx(tmp_path / "notgz.gz")


@pytest.mark.parametrize("layout", ["root", "FashionMNIST/raw", "fashion-mnist"])
def test_fashion_mnist_from_raw_files_is_padded_grey(tmp_path, layout):
    folder = tmp_path if layout == "root" else tmp_path / layout
    arrays = make_split_files(folder, gz=layout == "fashion-mnist")
    train, test, info = load_dataset("fashion_mnist", root=tmp_path)
    assert train.images.shape == (20, 1, 32, 32) and test.images.shape == (10, 1, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.long
    # 28x28 centred in 32x32 with 2 zero pixels each side
    np.testing.assert_array_equal(train.images[:, 0, 2:30, 2:30].numpy(), arrays["train_images"])
    assert int(train.images[:, :, :2].sum()) == 0 and int(train.images[:, :, :, 30:].sum()) == 0
    assert (info.channels, info.image_size, info.num_classes) == (1, 32, 10)
    assert info.class_names[0] == "t-shirt" and len(info.mean) == 1


def test_missing_dataset_names_both_ways_to_get_it(tmp_path, monkeypatch):
    no_system = {**mnist_mod._VARIANTS}
    title, cls, subdirs, _, classes = no_system["fashion_mnist"]
    no_system["fashion_mnist"] = (title, cls, subdirs, (str(tmp_path / "nowhere"),), classes)
    monkeypatch.setattr(mnist_mod, "_VARIANTS", no_system)
    with pytest.raises(
        ConfigError,
        match=r"Fashion-MNIST not found .*apt-get install dataset-fashion-mnist.*data.download=true",
    ):
        load_dataset("fashion_mnist", root=tmp_path)
    with pytest.raises(ConfigError, match=r"MNIST not found .*pass data.download=true"):
        load_dataset("mnist", root=tmp_path)


def test_malformed_files_are_one_error(tmp_path):
    make_split_files(tmp_path)
    write_idx(tmp_path / FILES["train_labels"], np.arange(5, dtype=np.uint8))  # 5 labels, 20 images
    with pytest.raises(ConfigError, match="do not hold N images and N labels"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_trains_through_the_env(tmp_path, tiny_config):
    from envs import MixupEnv

    make_split_files(tmp_path, n_train=200, n_test=40)
    cfg = tiny_config(
        **{"data.name": "mnist", "data.root": str(tmp_path), "data.options": {}},
        eval_fgsm=False,
        epochs=1,
    )
    env = MixupEnv(cfg)
    assert env.trainer.model.in_chans == 1
    obs, _ = env.reset()
    _, reward, _, truncated, info = env.step(np.zeros(50, dtype=np.int64))
    assert obs["saliency"].shape == (50, 8, 8) and np.isfinite(reward)


@pytest.mark.skipif(
    mnist_mod.find_files("fashion_mnist", "/nonexistent") is None,
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION} missing); "
    "apt-get install dataset-fashion-mnist",
)
def test_real_fashion_mnist_from_the_debian_package():
    train, test, info = load_dataset("fashion_mnist", root="/nonexistent")
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # Fashion-MNIST's published pixel mean is 0.2860 at 28x28; zero padding to 32x32 scales it
    assert info.mean[0] == pytest.approx(0.2860 * 28**2 / 32**2, abs=1e-3)
    assert 0.25 < info.std[0] < 0.40
