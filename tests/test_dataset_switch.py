"""Switching dataset from the shipped default, as a new user would: ``--set data.name=X``.

The default config's ``data.options`` belong to the embedded ``shapes`` dataset; a switch must
drop them (options given explicitly for the wrong dataset still fail), for every command and
every registered dataset, and a held-out split is carved only where a reward reads it.
"""

import hashlib
import pickle

import numpy as np
import pytest
import torch

from rlmix.cli import run_main
from rlmix.compare import main as compare_main
from rlmix.config import load_config
from rlmix.errors import ConfigError
from rlmix.train import main as train_main
from rlmix.train_agent import main as agent_main
from tests.test_mnist import make_split_files

N_TRAIN, N_TEST = 200, 50


def _cifar10(root, monkeypatch):
    """Files in torchvision's CIFAR-10 format (checksums pointed at them, as in test_data)."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {f"data_batch_{i}": N_TRAIN // 5 for i in range(1, 6)} | {"test_batch": N_TEST}
    for name, n in sizes.items():
        data = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": list(range(10)) * (n // 10),
        }
        (folder / name).write_bytes(pickle.dumps(data))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
    )

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5(f)] for f in sizes if f != "test_batch"])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})


def _imagefolder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN // 2), ("test", N_TEST // 2)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture
def dataset_root(tmp_path, monkeypatch):
    def make(name):
        root = tmp_path / name
        if name in ("mnist", "fashion_mnist"):
            make_split_files(root, n_train=N_TRAIN, n_test=N_TEST)
        elif name == "cifar10":
            _cifar10(root, monkeypatch)
        else:
            _imagefolder(root)
        return root

    return make


COMMANDS = {
    "train": (train_main, []),
    "train_agent": (agent_main, []),
    "compare": (compare_main, ["--policies", "rmix", "--seeds", "0"]),
}


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "imagefolder", "cifar10"])
def test_every_command_switches_dataset_from_the_default(name, dataset_root, tmp_path, capsys):
    root = dataset_root(name)
    for command, (main, extra) in COMMANDS.items():
        argv = [
            "--set", f"data.name={name}", "--set", f"data.root={root}",  # nothing else
            "--epochs", "1", "--set", "env.eval_fgsm=false", "--no-progress",
            "--out", str(tmp_path / f"{name}_{command}"), *extra,
        ]  # fmt: skip
        code = run_main(main, argv)
        captured = capsys.readouterr()
        assert code == 0, (command, captured.err)
        if command != "compare":  # the summary says what it trained on
            assert f"{name}: trained on {N_TRAIN} images, 0 held out" in captured.out, command


def test_a_reward_that_reads_a_held_out_split_takes_it_from_the_budget(
    dataset_root, tmp_path, capsys
):
    root = dataset_root("fashion_mnist")
    argv = [
        "--set", "data.name=fashion_mnist", "--set", f"data.root={root}", "--epochs", "1",
        "--set", "env.eval_fgsm=false", "--no-progress", "--out", str(tmp_path / "vga"),
        "--reward", "val_grad_align",
    ]  # fmt: skip
    assert run_main(agent_main, argv) == 0
    assert "fashion_mnist: trained on 100 images, 100 held out" in capsys.readouterr().out


def test_options_for_the_wrong_dataset_still_fail():
    cfg = load_config(None, ["data.name=mnist"])
    assert cfg.data.options == {} and cfg.data.name == "mnist"
    kept = load_config(None, ["data.name=shapes"])  # the same dataset keeps its options
    assert kept.data.options["train_size"] == 500
    explicit = load_config(None, ["data.name=mnist", "data.options.object_size=[4, 8]"])
    assert explicit.data.options == {"object_size": [4, 8]}
    with pytest.raises(
        ConfigError, match=r"data: unknown option 'object_size' for dataset 'mnist'"
    ):
        from rlmix.data.pipeline import build_loaders

        build_loaders(explicit.data, batch_size=100, seed=0, device=torch.device("cpu"))
    section = load_config(None, {"data": {"name": "mnist"}})  # a whole-section override too
    assert section.data.options == {}
    model = load_config(
        {"model": {"name": "resnet_tiny", "options": {"widths": [8, 16, 32]}}},
        ["model.name=preactresnet18"],
    )
    assert model.model.options == {}
