"""Shared fixtures: a tiny embedded-dataset config that trains in seconds."""

import pytest

from rlmix.config import load_config

TINY = {
    "data": {"name": "shapes", "options": {"train_size": 400, "test_size": 200}},
    "model": {"name": "resnet_tiny"},
    "trainer": {"epochs": 2, "batch_size": 50},
    "env": {"eval_fgsm": True},
    "agent": {"n_steps": 8, "batch_size": 100, "n_epochs": 2},
}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One dataset cache for the whole session."""
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture
def tiny_config(data_root, tmp_path):
    """Factory: the tiny config with dotted overrides; runs write under tmp_path."""

    def make(**overrides):
        base = {**TINY, "data": {**TINY["data"], "root": data_root}, "out": str(tmp_path / "run")}
        return load_config(base, overrides)

    return make


def tiny_args(data_root: str) -> list[str]:
    """The tiny config as command-line ``--set`` options (over the embedded default: no held-out
    split, an evaluation and a checkpoint every epoch, the paper's reward and observation)."""
    return [
        "--set", f"data.root={data_root}",
        "--set", "data.options={train_size: 400, test_size: 200}",
        "--set", "data.val_size=0", "--set", "env.eval_every=1",
        "--set", "env.reward=grad_cosine",  # the tests' reward (cheap, any model); --reward wins
        "--set", "env.partner_first=false",  # the paper's observation; torchrun refuses partners
        "--set", "trainer.checkpoint_every=1",
        "--set", "trainer.batch_size=50",
        "--set", "agent.n_steps=8", "--set", "agent.batch_size=100", "--set", "agent.n_epochs=2",
    ]  # fmt: skip


@pytest.fixture
def tiny_cli_args(data_root):
    """:func:`tiny_args` for this session's data root."""
    return tiny_args(data_root)


def stop_when_written(module: str, argv: list[str], files: list) -> tuple[int, str]:
    """Run ``python -m module argv``, send SIGINT once every path in ``files`` exists (the runs
    have begun), and return its exit status and stderr."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", module, *argv]
    proc = subprocess.Popen(cmd, cwd=root, env=env, text=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not all(f.exists() for f in files) and proc.poll() is None:
        assert time.monotonic() < deadline, f"never written: {files}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err
