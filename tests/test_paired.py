"""rlmix.paired: two studies' runs.csv paired by policy and seed, intervals, Holm, errors."""

import csv
import json
import re

import pytest
from scipy import stats

from rlmix.cli import run_main
from rlmix.paired import main

# top-1 per (policy, seed) of study A, and B - A per seed
A = {("rmix", 0): 80.0, ("rmix", 1): 81.0, ("rmix", 2): 82.0, ("mixup", 0): 79.0,
     ("mixup", 1): 80.0, ("mixup", 2): 81.0, ("vanilla", 0): 70.0}  # fmt: skip
DIFF = {"rmix": [0.1, -0.2, 0.4], "mixup": [1.0, 1.5, 0.8]}


def write_study(folder, top1, lam_mode):
    folder.mkdir()
    with (folder / "runs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["policy", "seed", "top1", "ece"])
        w.writeheader()
        for (policy, seed), value in top1.items():
            w.writerow({"policy": policy, "seed": seed, "top1": value, "ece": 5.0 + seed})
    config = {"mix": {"lam_mode": lam_mode}}
    (folder / "study.json").write_text(json.dumps({"config": config}))


@pytest.fixture
def studies(tmp_path):
    b = {key: value + DIFF[key[0]][key[1]] for key, value in A.items() if key[0] in DIFF}
    b[("rmix", 3)] = 90.0  # a seed A does not have: not paired
    write_study(tmp_path / "a", A, "batch")
    write_study(tmp_path / "b", b, "elem")
    return tmp_path / "a", tmp_path / "b"


def test_paired_difference_interval_and_holm_match_scipy(studies, tmp_path, capsys):
    a, b = studies
    assert main([str(a), str(b), "--metrics", "top1,ece", "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "differ in mix.lam_mode: 'batch' in " in text and "'elem' in " in text
    rows = {r["policy"]: r for r in csv.DictReader((tmp_path / "out" / "paired.csv").open())
            if r["metric"] == "top1"}  # fmt: skip
    assert set(rows) == {"rmix", "mixup"}  # vanilla has one seed: no interval
    p_values = {}
    for policy, diffs in DIFF.items():
        row = rows[policy]
        assert int(row["seeds"]) == 3
        mean = sum(diffs) / 3
        low, high = stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(diffs))
        assert float(row["mean"]) == pytest.approx(mean)
        assert (float(row["low"]), float(row["high"])) == pytest.approx((low, high))
        p_values[policy] = stats.ttest_1samp(diffs, 0.0).pvalue
        assert float(row["p"]) == pytest.approx(p_values[policy])
    # Holm over two: the smaller p doubled, the larger kept if above it
    small, large = sorted(p_values.values())
    adjusted = {p: float(rows[p]["p_holm"]) for p in rows}
    assert sorted(adjusted.values()) == pytest.approx([2 * small, max(2 * small, large)])
    assert rows["mixup"]["survives_holm"] == str(2 * small <= 0.05)
    ece = [r for r in csv.DictReader((tmp_path / "out" / "paired.csv").open())
           if r["metric"] == "ece"]  # fmt: skip
    assert all(float(r["mean"]) == 0.0 for r in ece)  # same ECE per seed in both studies
    assert (tmp_path / "out" / "paired.png").stat().st_size > 0
    assert (tmp_path / "out" / "paired.md").read_text().startswith("## ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{a}", "{missing}"], "has no runs.csv: not a finished rlmix.compare study"),
        (["{a}", "{b}", "--metrics", "top5"], "unknown metric 'top5': runs.csv has policy"),
        (["{a}", "{b}", "--confidence", "1.5"], r"--confidence must be in \(0, 1\)"),
        (
            ["{a}", "{a_copy}", "--metrics", "top1"],
            "no policy has two or more seeds finished in both studies",
        ),
    ],
)
def test_bad_input_is_one_line(studies, tmp_path, capsys, args, message):
    a, b = studies
    write_study(tmp_path / "a_copy", {("other", 0): 1.0, ("other", 1): 2.0}, "batch")
    paths = {"a": a, "b": b, "missing": tmp_path / "nope", "a_copy": tmp_path / "a_copy"}
    argv = [x.format(**paths) for x in args]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.search(message, err)
