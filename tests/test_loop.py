"""rlmix.loop: the README's plain loop with LearnedMix and RMix over paired seeds."""

from __future__ import annotations

import csv
import json

import pytest

from rlmix.errors import ConfigError
from rlmix.loop import loop_study
from rlmix.stats import paired_difference


def test_both_mixers_paired_over_seeds(tiny_config, tmp_path):
    cfg = tiny_config(epochs=2, eval_fgsm=False, **{"env.reward": "teach"})
    table = loop_study(cfg, ["learned", "rmix"], [0, 1], tmp_path)
    with open(tmp_path / "runs.csv") as f:
        rows = {(r["mixer"], r["seed"]): r for r in csv.DictReader(f)}
    assert set(rows) == {(m, s) for m in ("learned", "rmix") for s in ("0", "1")}
    top1 = {k: 100 * float(r["top1"]) for k, r in rows.items()}
    d = paired_difference([top1["learned", s] for s in "01"], [top1["rmix", s] for s in "01"])
    assert "| learned | 2 | " in table and f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" in table
    learned = json.loads((tmp_path / "learned" / "seed1" / "metrics.json").read_text())
    assert len(learned["epochs"]) == 2 and "policy_gain" in learned["final"]
    assert (tmp_path / "results.md").read_text() == table
    again = loop_study(cfg, ["learned", "rmix"], [0, 1], tmp_path)  # read back, not rerun
    assert again.split("\n", 1)[1] == table.split("\n", 1)[1]


def test_a_run_resumes_exactly_from_its_last_checkpoint(tiny_config, tmp_path):
    """Stop after epoch 1 (its checkpoint kept, no metrics.json), run again: the same metrics
    as an uninterrupted run."""
    cfg = tiny_config(
        epochs=2, eval_fgsm=False, **{"env.reward": "teach", "trainer.checkpoint_every": 1}
    )
    loop_study(cfg, ["learned", "rmix"], [0], tmp_path / "straight")
    short = tiny_config(
        epochs=2, eval_fgsm=False, **{"env.reward": "teach", "trainer.checkpoint_every": 1}
    )
    from rlmix import loop

    original = loop.save_checkpoint
    calls = []

    def stop_after_first(path, state):
        original(path, state)
        calls.append(state["epoch"])
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    loop.save_checkpoint = stop_after_first
    try:
        for mixer in ("learned", "rmix"):
            with pytest.raises(KeyboardInterrupt):
                loop_study(short, [mixer], [0], tmp_path / "stopped")
    finally:
        loop.save_checkpoint = original
    loop_study(short, ["learned", "rmix"], [0], tmp_path / "stopped")
    for mixer in ("learned", "rmix"):
        a, b = (
            json.loads((tmp_path / d / mixer / "seed0" / "metrics.json").read_text())
            for d in ("straight", "stopped")
        )
        assert a == b


def test_unknown_mixer(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"--mixers: choose from learned, rmix \(got cutmix\)"):
        loop_study(tiny_config(), ["cutmix"], [0], tmp_path)


def test_a_stop_ends_the_loop_study_at_a_step_and_starts_no_other_run(data_root, tmp_path):
    """Ctrl-C on `rlmix.loop --jobs 2`: both runs stop at their next step (checkpoint kept), no
    queued run starts, one line says how to continue (the queued runs used to run to the end)."""
    from tests import conftest

    out = tmp_path / "loop"
    argv = [
        *conftest.tiny_args(data_root), "--epochs", "40", "--set", "env.eval_fgsm=false",
        "--seeds", "0", "1", "2", "--jobs", "2", "--out", str(out),
    ]  # fmt: skip
    first = [out / m / "seed0" / "checkpoint.pt" for m in ("learned", "rmix")]
    code, err = conftest.stop_when_written("rlmix.loop", argv, first)
    assert code == 130, err
    assert err.strip().splitlines() == [
        "error: study stopped by SIGINT: 0 of 6 runs finished; the others keep their last "
        "checkpoint: run the same command again to continue"
    ]
    assert sorted(p.name for p in (out / "learned").iterdir()) == ["seed0"]
    assert not (out / "learned" / "seed0" / "metrics.json").exists()
