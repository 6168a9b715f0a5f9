"""rlmix.status: where a study stands, read from its run directories, and the time it has left."""

import json
import os
import re
import shutil

import pytest

from rlmix.cli import run_main
from rlmix.compare import compare
from rlmix.config import load_config
from rlmix.locks import LOCK_FILE, hold
from rlmix.status import main as status_main
from rlmix.status import seconds_left, study_progress
from tests.conftest import TINY


def _times(run, seconds):
    (run / "timings.json").write_text(json.dumps({"epoch_time_s": seconds}))


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, data_root):
    """A finished 2-epoch study: rmix and vanilla, seeds 0 and 1."""
    out = tmp_path_factory.mktemp("status") / "study"
    cfg = load_config({**TINY, "data": {**TINY["data"], "root": data_root}}, {"eval_fgsm": False})
    compare(cfg, ["rmix", "vanilla"], [0, 1], None, out, progress=False)
    return out


@pytest.fixture
def study(finished_study, tmp_path):
    """The finished study made to look half-run: rmix seed 1 has checkpointed 1 of its 2 epochs
    and vanilla seed 1 has not started; the epoch times are set to known values."""
    out = shutil.copytree(finished_study, tmp_path / "study")
    partial = out / "rmix" / "seed1"
    metrics = json.loads((partial / "metrics.json").read_text())
    metrics["epochs"] = metrics["epochs"][:1]
    (partial / "metrics.json").write_text(json.dumps(metrics))
    shutil.rmtree(out / "vanilla" / "seed1")
    _times(out / "rmix" / "seed0", [3.0, 5.0])
    _times(partial, [1.0])
    _times(out / "vanilla" / "seed0", [2.0, 2.0])
    return out


def test_each_run_is_finished_started_or_new_with_its_epochs(study):
    manifest, runs = study_progress(study)
    assert manifest["seeds"] == [0, 1]
    got = {(r.label, r.seed): (r.state, r.epochs_done, r.epochs) for r in runs}
    assert got == {
        ("rmix", 0): ("done", 2, 2),
        ("rmix", 1): ("partial", 1, 2),
        ("vanilla", 0): ("done", 2, 2),
        ("vanilla", 1): ("new", 0, 2),
    }


def test_time_left_is_the_remaining_epochs_at_each_arms_median(study):
    _, runs = study_progress(study)
    # rmix: median of 3, 5, 1 = 3 s, one epoch left; vanilla: 2 s, two epochs left
    assert seconds_left(runs, jobs=1) == (pytest.approx(3.0 + 4.0), 0)
    assert seconds_left(runs, jobs=2) == (pytest.approx(4.0), 0)  # vanilla seed 1 alone: 4 s
    assert seconds_left(runs, jobs=3) == (pytest.approx(4.0), 0)


def test_an_arm_not_timed_yet_is_left_out_of_the_estimate_and_counted(study):
    (study / "vanilla" / "seed0" / "timings.json").unlink()
    _, runs = study_progress(study)
    assert seconds_left(runs, jobs=1) == (pytest.approx(3.0), 1)


def test_the_command_prints_one_row_per_arm(study, capsys):
    assert run_main(status_main, [str(study), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 arms; 2 of 4 runs finished, 1 under way, 1 not started" in out
    assert "| rmix | 1/2 | seed 1 1/2 | — | 3.00 |" in out
    assert "| vanilla | 1/2 | — | seeds 1 | 2.00 |" in out
    assert "time left: under a minute at 2 jobs (each arm's median" in out


def test_a_study_in_the_background_says_how_to_look_in(tiny_config, tmp_path, capsys):
    cfg = tiny_config(epochs=1, eval_fgsm=False)
    compare(cfg, ["vanilla"], [0], None, tmp_path / "s", progress=False)
    out = capsys.readouterr().out
    assert (
        f"compare: 2 runs; see where they stand with python -m rlmix.status {tmp_path / 's'}\n"
        in out
    )


def test_a_finished_study_says_so(finished_study, capsys):
    assert run_main(status_main, [str(finished_study)]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 runs finished, 0 under way, 0 not started" in out
    assert f"finished: its tables are in {finished_study / 'results.md'} (compare" in out


@pytest.mark.parametrize(
    ("setup", "argv", "match"),
    [
        (None, [], r"holds no study \(study.json is missing\)"),
        ("{not json", [], r"study.json' is unreadable \(JSONDecodeError"),
        ('{"seeds": [0]}', [], r"study.json' is unreadable \(KeyError: 'config'\)"),
        (None, ["--jobs", "0"], r"--jobs must be >= 1, got 0"),
    ],
)
def test_bad_folders_and_options_are_one_line(tmp_path, capsys, setup, argv, match):
    if setup is not None:
        (tmp_path / "study.json").write_text(setup)
    assert run_main(status_main, [str(tmp_path), *argv]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(match, err)


def test_it_says_whether_a_compare_runs_the_study_now(study, capsys):
    with hold(study, "rlmix.compare"):
        run_main(status_main, [str(study)])
    assert f"\nrunning now: rlmix.compare pid {os.getpid()}" in capsys.readouterr().out
    run_main(status_main, [str(study)])
    assert "\nnot running: run the same rlmix.compare command again to continue it" in (
        capsys.readouterr().out
    )
    (study / LOCK_FILE).unlink()  # a study run before compare locked: nothing is said
    run_main(status_main, [str(study)])
    out = capsys.readouterr().out
    assert "running" not in out and out.rstrip().endswith(
        "(each arm's median seconds an epoch so far)"
    )


def test_studies_queued_behind_others_are_one_line_each(study, tmp_path, capsys):
    later = tmp_path / "later"
    assert run_main(status_main, [str(study), str(later), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 of 4 runs finished, 1 under way, 1 not started" in out
    assert out.rstrip().endswith(f"{later}: not started (study.json is missing)")
    assert run_main(status_main, [str(later), str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: none of {later}, {tmp_path / 'other'} holds a study (study.json)"]
