"""rlmix.sweep: studies one setting apart, read as a curve with paired intervals."""

from __future__ import annotations

import csv

import pytest

from rlmix.cli import run_main
from rlmix.compare import compare
from rlmix.errors import ConfigError
from rlmix.stats import mean_interval, paired_difference
from rlmix.sweep import main as sweep_main
from rlmix.sweep import sweep


@pytest.fixture(scope="module")
def studies(tmp_path_factory, data_root):
    from rlmix.config import load_config
    from tests.conftest import TINY

    out = tmp_path_factory.mktemp("sweep")
    for epochs in (1, 2):
        cfg = load_config(
            {**TINY, "data": {**TINY["data"], "root": data_root}},
            {"epochs": epochs, "eval_fgsm": False},
        )
        compare(
            cfg, ["rmix", "vanilla"], [0, 1], None, out / f"e{epochs}", progress=False,
            fixed_arms=["3ep:vanilla,trainer.epochs=3"] if epochs == 1 else None,
        )  # fmt: skip
    return out


def _top1(folder, policy):
    with open(folder / "runs.csv") as f:
        return {
            int(r["seed"]): float(r["top1"]) for r in csv.DictReader(f) if r["policy"] == policy
        }


def test_one_row_per_value_and_policy_with_paired_intervals(studies):
    table, rows = sweep([studies / "e2", studies / "e1"])
    got = {(r["setting"], r["policy"]): r for r in rows}
    assert set(got) == {
        (1, "rmix"),
        (1, "vanilla"),
        (3, "vanilla[3ep]"),
        (2, "rmix"),
        (2, "vanilla"),
    }
    assert [r["setting"] for r in rows] == sorted(r["setting"] for r in rows)  # by the setting
    rmix, vanilla = _top1(studies / "e2", "rmix"), _top1(studies / "e2", "vanilla")
    d = got[2, "vanilla"]["diff"]
    expected = paired_difference([vanilla[0], vanilla[1]], [rmix[0], rmix[1]])
    assert (d.mean, d.low, d.high) == pytest.approx((expected.mean, expected.low, expected.high))
    m = got[2, "rmix"]["mean"]
    assert m.mean == pytest.approx(mean_interval([rmix[0], rmix[1]]).mean)
    assert "diff" not in got[2, "rmix"] and "holm_p" in got[2, "vanilla"]
    assert "## top1 against trainer.epochs" in table


def test_writes_table_csv_and_plot(studies, tmp_path, capsys):
    assert (
        run_main(sweep_main, [str(studies / "e1"), str(studies / "e2"), "--out", str(tmp_path)])
        == 0
    )
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    with open(tmp_path / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == 5


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["e1"], r"give two or more studies"),
        (["e1", "e1"], r"must differ in exactly one config key \(they differ in: none\)"),
        (["e1", "e2", "--reference", "mixup"], r"has no runs of --reference mixup"),
        (["e1", "e2", "--metric", "nope"], r"unknown metric 'nope'"),
        (["e1", "nowhere"], r"has no readable study.json"),
        (["e1", "e2", "--best-of", "mixup"], r"has no runs of --best-of mixup"),
    ],
)
def test_bad_input_is_one_line(studies, args, match):
    folders = [
        str(studies / a) if not a.startswith("-") and i < 2 else a for i, a in enumerate(args)
    ]
    folders = [str(studies / a) if a in ("e1", "e2", "nowhere") else a for a in args]
    with pytest.raises(ConfigError, match=match):
        sweep_main(folders)


def test_best_of_gives_each_other_policy_its_difference_to_the_best_fixed(studies):
    rmix, vanilla = _top1(studies / "e2", "rmix"), _top1(studies / "e2", "vanilla")
    _, rows = sweep([studies / "e1", studies / "e2"], best_of=["vanilla"])
    got = {(r["setting"], r["policy"]): r for r in rows}
    d = got[2, "rmix"]["diff_best"]
    expected = paired_difference([rmix[0], rmix[1]], [vanilla[0], vanilla[1]])
    assert (d.mean, d.low, d.high) == pytest.approx((expected.mean, expected.low, expected.high))
    assert got[2, "rmix"]["best"] == "vanilla" and "holm_p_best" in got[2, "rmix"]
    assert "diff_best" not in got[2, "vanilla"]  # a fixed policy of the set is not compared

    table, rows = sweep([studies / "e1", studies / "e2"], best_of=["rmix", "vanilla"])
    top = "rmix" if sum(rmix.values()) >= sum(vanilla.values()) else "vanilla"
    assert {r["best"] for r in rows if r["setting"] == 2} == {top}
    assert "| best fixed |" in table and "picked on the same seeds" in table


def test_key_names_the_setting_when_another_key_changes_with_it(studies, tmp_path):
    import json
    import shutil

    moved = tmp_path / "e2_budget"
    shutil.copytree(studies / "e2", moved)
    study = json.loads((moved / "study.json").read_text())
    study["config"]["data"]["train_per_class"] = 7
    (moved / "study.json").write_text(json.dumps(study))
    with pytest.raises(ConfigError, match=r"they differ in: data.train_per_class, trainer.epochs"):
        sweep([studies / "e1", moved])
    table, rows = sweep([studies / "e1", moved], key="data.train_per_class")
    assert {r["setting"] for r in rows if r["policy"] == "rmix"} == {
        study["config"]["data"]["train_per_class"],
        json.loads((studies / "e1" / "study.json").read_text())["config"]["data"][
            "train_per_class"
        ],
    }
    assert "Also changed with data.train_per_class: trainer.epochs = 1, 2." in table
    with pytest.raises(ConfigError, match=r"--key model.name is the same in every study"):
        sweep([studies / "e1", moved], key="model.name")


def test_the_plot_names_the_best_fixed_policy_at_each_value(studies, tmp_path, monkeypatch):
    from rlmix import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    _, rows = sweep([studies / "e1", studies / "e2"], best_of=["vanilla"])
    plots.plot_sweep(rows, "rmix", "top1", tmp_path / "sweep.png")
    axes = figures[0].axes
    assert [a.get_ylabel() for a in axes] == [
        "top1 (mean, 95 % CI)",
        "Δ top1 vs rmix\n(paired, 95 % CI)",
        "Δ top1 vs the best fixed policy\n(paired, 95 % CI)",
    ]
    diff = {(r["setting"], r["policy"]): r["diff_best"].mean for r in rows if "diff_best" in r}
    named = {(t.get_text(), t.xy) for t in axes[2].texts}  # one per value, at its first point
    assert named == {
        ("vs vanilla", (1.0, diff[1, "rmix"])),
        ("vs vanilla", (2.0, diff[2, "rmix"])),
        ("vs vanilla", (3.0, diff[3, "vanilla[3ep]"])),  # the arm at its own epochs
    }
