"""One process at a time in a study directory and in a run directory: the lock, what a second
process is told, and what rlmix.status reads from it."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlmix import locks
from rlmix.cli import run_main
from rlmix.compare import compare
from rlmix.compare import main as compare_main
from rlmix.errors import ConfigError
from rlmix.locks import LOCK_FILE, Holder, hold, holder
from rlmix.loop import loop_study
from rlmix.train import main as train_main

HOLD_AND_WAIT = """
import sys
from pathlib import Path
from rlmix.locks import hold
with hold(Path(sys.argv[1]), "rlmix.compare"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with hold(tmp_path, "rlmix.compare"):
        assert holder(tmp_path) == Holder(True, os.getpid(), "rlmix.compare")
        with pytest.raises(
            ConfigError,
            match=rf"^'{tmp_path}' is in use by another rlmix.compare \(pid {os.getpid()}\): "
            rf"wait for it to stop \(python -m rlmix.status {tmp_path} shows where it is\) or "
            r"use another --out$",
        ):
            with hold(tmp_path, "rlmix.compare"):
                pass
    assert holder(tmp_path) == Holder(False)


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with hold(tmp_path, "rlmix.compare"):
            raise RuntimeError("boom")
    with hold(tmp_path, "rlmix.compare"):
        assert holder(tmp_path).running is True


def test_a_killed_owner_leaves_no_stale_lock(tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_WAIT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline() == "held\n"
        assert holder(tmp_path) == Holder(True, owner.pid, "rlmix.compare")
        with pytest.raises(ConfigError, match=rf"\(pid {owner.pid}\)"):
            with hold(tmp_path, "rlmix.compare"):
                pass
    finally:
        owner.kill()
        owner.wait()
    assert holder(tmp_path) == Holder(False)
    with hold(tmp_path, "rlmix.compare"):
        pass


def test_without_a_lock_file_nothing_can_be_told(tmp_path):
    assert holder(tmp_path) == Holder(None)


def test_compare_refuses_a_study_another_compare_runs(tiny_config, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    with hold(out, "rlmix.compare"):
        with pytest.raises(ConfigError, match="is in use by another rlmix.compare"):
            compare(tiny_config(epochs=1), ["vanilla"], [0], None, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # it wrote nothing


def test_the_command_says_it_in_one_line(tmp_path, tiny_cli_args, capsys):
    out = tmp_path / "study"
    out.mkdir()
    argv = ["--policies", "vanilla", "--seeds", "0", "--epochs", "1", "--out", str(out)]
    with hold(out, "rlmix.compare"):
        assert run_main(compare_main, [*argv, *tiny_cli_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is in use by another rlmix.compare (pid {os.getpid()})" in err[0]


def test_a_loop_study_is_told_which_command_holds_its_folder(tiny_config, tmp_path):
    out = tmp_path / "loop"
    out.mkdir()
    with hold(out, "rlmix.compare"):
        with pytest.raises(ConfigError, match=r"in use by another rlmix.compare \(pid "):
            loop_study(tiny_config(epochs=1), ["rmix"], [0], out)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_finished_compare_leaves_the_study_free(tiny_config, tmp_path):
    out = tmp_path / "study"
    compare(tiny_config(epochs=1, eval_fgsm=False), ["vanilla"], [0], None, out, progress=False)
    assert holder(out) == Holder(False)


def test_a_file_system_without_locks_runs_with_a_warning(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match=r"\(its file system has no locks\): nothing stops a "):
        with hold(tmp_path, "rlmix.compare"):
            assert holder(tmp_path) == Holder(None)


# -- one process a run directory ------------------------------------------------------------------


def test_train_refuses_a_run_directory_another_process_trains(tmp_path, tiny_cli_args, capsys):
    out = tmp_path / "run"
    out.mkdir()
    argv = ["--policy", "vanilla", "--epochs", "1", "--out", str(out), "--no-progress"]
    with hold(out, "rlmix.compare", study=False):
        assert run_main(train_main, [*argv, *tiny_cli_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: '{out}' is in use by another rlmix.compare (pid {os.getpid()}): wait for it "
        "to stop or use another --out"
    ]
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # no config, log or checkpoint


def test_train_holds_its_run_directory_while_it_trains_and_frees_it(
    tmp_path, tiny_cli_args, monkeypatch
):
    seen = []
    real = train_main.__globals__["train_fixed"]

    def spying(cfg, **kwargs):
        seen.append(holder(Path(cfg.out)))
        return real(cfg, **kwargs)

    monkeypatch.setitem(train_main.__globals__, "train_fixed", spying)
    out = tmp_path / "run"
    argv = ["--policy", "vanilla", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert run_main(train_main, [*argv, *tiny_cli_args]) == 0
    assert seen == [Holder(True, os.getpid(), "rlmix.train")]
    assert holder(out) == Holder(False)


def test_a_study_does_not_train_a_run_another_process_trains(tiny_config, tmp_path):
    out = tmp_path / "study"
    run = out / "vanilla" / "seed0"
    run.mkdir(parents=True)
    with hold(run, "rlmix.train", study=False):
        with pytest.raises(
            ConfigError,
            match=rf"^'{run}' is in use by another rlmix.train \(pid {os.getpid()}\): wait for it "
            r"to stop or use another --out$",
        ):
            compare(
                tiny_config(epochs=1, eval_fgsm=False), ["vanilla"], [0], None, out, progress=False
            )
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # it trained nothing there
    compare(tiny_config(epochs=1, eval_fgsm=False), ["vanilla"], [0], None, out, progress=False)
    assert holder(run) == Holder(False) and (run / "metrics.json").is_file()
