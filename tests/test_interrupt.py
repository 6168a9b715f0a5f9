"""Issue 7: signals, SIGKILL and resumption never lose work, and resumed runs are exact on CPU."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlmix.checkpoints import load_checkpoint
from rlmix.cli import run_main
from rlmix.train import main as train_main
from rlmix.train_agent import main as agent_main
from tests.conftest import tiny_args

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 3
MAINS = {"train": train_main, "agent": agent_main}
MODULES = {"train": "rlmix.train", "agent": "rlmix.train_agent"}


def run_args(data_root, out):
    return [
        *tiny_args(data_root), "--set", "env.eval_fgsm=false",
        "--epochs", str(EPOCHS), "--out", str(out), "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    """metrics.json of one uninterrupted in-process run per entry point (computed on demand)."""
    cache: dict[str, str] = {}

    def get(entry: str) -> str:
        if entry not in cache:
            out = tmp_path_factory.mktemp(f"full_{entry}")
            assert MAINS[entry](run_args(data_root, out)) == 0
            cache[entry] = (out / "metrics.json").read_text()
        return cache[entry]

    return get


def start(entry, data_root, out, cwd):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", MODULES[entry], *run_args(data_root, out)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(proc, out, timeout=300.0):
    """Poll until the run's first checkpoint exists (the run must still be going)."""
    deadline = time.monotonic() + timeout
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("entry", "sig", "code"),
    [("train", signal.SIGTERM, 143), ("agent", signal.SIGINT, 130)],
)
def test_signal_keeps_checkpoint_and_resume_is_exact(
    entry, sig, code, data_root, tmp_path, uninterrupted, capsys
):
    out = tmp_path / "run"
    proc = start(entry, data_root, out, tmp_path)
    try:
        wait_for_checkpoint(proc, out)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (
        f"error: stopped by {sig.name}; the last epoch's checkpoint is kept (continue with --resume)"
    )
    state = load_checkpoint(out / "checkpoint.pt")
    done = len(state["history"])
    assert 1 <= done < EPOCHS and state["env"]["trainer"]["epoch"] == done
    assert run_main(MAINS[entry], [*run_args(data_root, out), "--resume"]) == 0
    assert (out / "metrics.json").read_text() == uninterrupted(entry)


def test_sigkill_mid_run_then_resume_is_exact(data_root, tmp_path, uninterrupted):
    """SIGKILL, preferably while a checkpoint is being written: the previous one stays loadable."""
    out = tmp_path / "run"
    proc = start("train", data_root, out, tmp_path)
    try:
        wait_for_checkpoint(proc, out)
        deadline = time.monotonic() + 2.0  # try to hit the next checkpoint's write
        while time.monotonic() < deadline and not list(out.glob(".checkpoint.pt.*.tmp")):
            if proc.poll() is not None:
                break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(out / "checkpoint.pt")
    assert 1 <= len(state["history"]) < EPOCHS
    assert run_main(train_main, [*run_args(data_root, out), "--resume"]) == 0
    assert (out / "metrics.json").read_text() == uninterrupted("train")


@pytest.mark.parametrize("entry", ["train", "agent"])
def test_resume_at_every_boundary_and_same_seed_are_exact(
    entry, data_root, tmp_path, uninterrupted, capsys
):
    """Stop after epoch 1, resume to epoch 2, resume to the end: the same metrics.json as one
    uninterrupted run, which itself equals a second uninterrupted run with the same seed. The
    summary of a stopped run says how far it got and how to continue."""
    out = tmp_path / "run"
    main = MAINS[entry]
    assert main([*run_args(data_root, out), "--stop-after-epoch", "1"]) == 0
    assert main([*run_args(data_root, out), "--resume", "--stop-after-epoch", "2"]) == 0
    assert len(load_checkpoint(out / "checkpoint.pt")["history"]) == 2
    assert f"stopped after epoch 2 of {EPOCHS} (checkpointed; run it again with --resume" in (
        capsys.readouterr().out
    )
    assert main([*run_args(data_root, out), "--resume"]) == 0
    assert f" finished ({EPOCHS} epochs)" in capsys.readouterr().out
    assert (out / "metrics.json").read_text() == uninterrupted(entry)
    again = tmp_path / "again"
    assert main(run_args(data_root, again)) == 0
    assert (again / "metrics.json").read_text() == uninterrupted(entry)


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        (True, "stopped by SIGTERM; the last epoch's checkpoint is kept (continue with --resume)"),
        (False, "stopped by SIGTERM before the first checkpoint: nothing to resume"),
    ],
)
def test_the_stop_message_says_whether_there_is_a_checkpoint(kept, message):
    from rlmix.signals import Interrupted, StopFlag

    flag = StopFlag()
    flag.check(kept=kept)  # no signal: nothing to raise
    flag.signum = signal.SIGTERM
    with pytest.raises(Interrupted, match=f"^{re.escape(message)}") as info:
        flag.check(kept=kept)
    assert info.value.exit_code == 143
