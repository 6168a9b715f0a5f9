"""Studies survive and scale: a stopped study resumes to the tables of an uninterrupted one, a
different study in the same directory is refused, and Ray runs the same runs (retrying a worker
that dies) as local processes do."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlmix.compare import compare
from rlmix.errors import ConfigError
from tests import conftest

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"s_per_epoch"}  # the one column that is not a function of the seed


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _argv(data_root, out, *extra):
    return [
        *conftest.tiny_args(data_root), "--epochs", "2", "--set", "env.eval_fgsm=false",
        "--policies", "rmix,vanilla", "--seeds", "0", "1", "--no-progress", "--out", str(out),
        *extra,
    ]  # fmt: skip


def _compare(argv, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rlmix.compare", *argv]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **kwargs)


@pytest.mark.parametrize(("jobs", "signum"), [(1, signal.SIGINT), (2, signal.SIGTERM)])
def test_a_stopped_study_resumes_to_the_uninterrupted_tables(data_root, tmp_path, jobs, signum):
    reference = tmp_path / "whole"
    proc = _compare(_argv(data_root, reference, "--jobs", str(jobs)))
    assert proc.wait(timeout=600) == 0
    out = tmp_path / "stopped"
    proc = _compare(_argv(data_root, out, "--jobs", str(jobs)), stderr=subprocess.PIPE)
    started = out / "vanilla" / "seed0" / "config.yaml"  # the second run of seed 0 has begun
    deadline = time.monotonic() + 300
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == (130 if signum == signal.SIGINT else 143), err
    name = signal.Signals(signum).name
    assert f"error: study stopped by {name}:" in err and "run the same command again" in err
    assert not (out / "runs.csv").exists()
    proc = _compare(_argv(data_root, out, "--jobs", str(jobs)), stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert _rows(out / "runs.csv") == _rows(reference / "runs.csv")


def test_a_stop_starts_no_queued_run(data_root, tmp_path):
    """With --jobs 2 the pool hands a worker its next run before the current one ends: after a
    stop, those runs must not start (they used to, and ran to the end before the study exited)."""
    out = tmp_path / "stopped"
    argv = [
        *conftest.tiny_args(data_root), "--epochs", "40", "--set", "env.eval_fgsm=false",
        "--policies", "rmix,vanilla", "--seeds", "0", "1", "2", "--no-progress", "--out",
        str(out), "--jobs", "2",
    ]  # fmt: skip
    first = [out / p / "seed0" / "checkpoint.pt" for p in ("rmix", "vanilla")]
    code, err = conftest.stop_when_written("rlmix.compare", argv, first)
    assert code == 130, err
    assert "error: study stopped by SIGINT: 0 of 6 runs finished" in err
    for policy in ("rmix", "vanilla"):
        for seed in (1, 2):
            assert not (out / policy / f"seed{seed}").exists(), f"{policy} seed {seed} started"
        epochs = len(json.loads((out / policy / "seed0" / "metrics.json").read_text())["epochs"])
        assert 1 <= epochs < 40  # stopped mid-run, checkpoint kept


def test_a_different_study_in_the_same_directory_is_refused(tiny_config, tmp_path):
    cfg = tiny_config(epochs=1, eval_fgsm=False)
    compare(cfg, ["rmix"], [0], None, tmp_path, progress=False)
    with pytest.raises(
        ConfigError, match=r"holds a different study \(seeds: \[0\] there, \[0, 1\]"
    ):
        compare(cfg, ["rmix"], [0, 1], None, tmp_path, progress=False)
    other = tiny_config(epochs=1, eval_fgsm=False, **{"trainer.lr_max": 0.2})
    with pytest.raises(ConfigError, match=r"trainer.lr_max: 0.3 there, 0.2 now"):
        compare(other, ["rmix"], [0], None, tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"nothing to resume: '.*empty' holds no study"):
        compare(cfg, ["rmix"], [0], None, tmp_path / "empty", resume=True, progress=False)
    again = compare(cfg, ["rmix"], [0], None, tmp_path, resume=True, progress=False)
    assert again[0]["seeds"] == 1  # read back, not run again


def test_without_ray_the_launcher_says_how_to_install_it(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ConfigError, match=r"--launcher ray needs Ray: pip install 'rlmix\[ray\]'"):
        compare(tiny_config(epochs=1), ["rmix"], [0], None, tmp_path, launcher="ray")


def test_ray_runs_the_same_study_and_retries_a_dead_worker(data_root, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'rlmix[ray]'")
    marker = tmp_path / "crashed"
    agent = ["--policies", "agent,rmix", "--reward", "tests.reward_fixtures:crash_once"]
    local = _argv(data_root, tmp_path / "local", "--jobs", "2", "--threads", "1")
    ray = _argv(data_root, tmp_path / "ray", "--launcher", "ray", "--threads", "1")
    local = [*local[: local.index("--policies")], *local[local.index("--seeds") :], *agent]
    ray = [*ray[: ray.index("--policies")], *ray[ray.index("--seeds") :], *agent]
    assert _compare(local).wait(timeout=600) == 0
    env_marker = {"RLMIX_CRASH_MARKER": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlmix.compare", *ray],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env_marker},
        text=True,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert marker.exists()  # a worker died in epoch 2 ...
    assert _rows(tmp_path / "ray" / "runs.csv") == _rows(tmp_path / "local" / "runs.csv")  # ...
    # and its retried task resumed from the epoch-1 checkpoint to the same numbers
