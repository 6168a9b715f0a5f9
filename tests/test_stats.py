"""rlmix.stats (hand-computed intervals, t-tests and Holm's correction) and rlmix.data.splits
(held-out split, balanced subset)."""

import math

import pytest
import torch

from rlmix.compare import summarise, summary_csv, to_markdown
from rlmix.data.base import ImageTensors
from rlmix.data.splits import carve
from rlmix.stats import (
    holm,
    holm_adjusted,
    holm_paired,
    mean_std,
    paired_difference,
    t_quantile,
)
from rlmix.study import Result


@pytest.mark.parametrize(
    ("p", "df", "value"),  # tables of Student's t (two-sided 95 %, 99 % and 90 %)
    [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 9, 2.2622),
     (0.975, 30, 2.0423), (0.995, 2, 9.9248), (0.95, 5, 2.0150), (0.975, 1000, 1.9623)],
)  # fmt: skip
def test_t_quantile_matches_tables(p, df, value):
    assert t_quantile(p, df) == pytest.approx(value, abs=1e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-value, abs=1e-4)


def _p_df2(diffs):
    """Two-sided p-value of a 3-pair t-test by the df = 2 closed form of the t CDF,
    F(t) = 1/2 + t / (2 sqrt(t^2 + 2)): p = 1 - |t| / sqrt(t^2 + 2)."""
    mean, sd = mean_std(diffs)
    t = mean / (sd / math.sqrt(3))
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_paired_difference_hand_computed():
    # differences 0.5, 1.0, 0.8: mean 0.7667, sd 0.25166, t(0.975, 2) = 4.3027, t = 5.2766
    d = paired_difference([1.0, 2.0, 3.0], [0.5, 1.0, 2.2])
    half = 4.302653 * 0.2516611 / math.sqrt(3)
    assert d.mean == pytest.approx(0.766667, abs=1e-6) and d.n == 3
    assert d.se == pytest.approx(0.2516611 / math.sqrt(3))
    assert (d.low, d.high) == (
        pytest.approx(0.766667 - half, abs=1e-5),
        pytest.approx(0.766667 + half, abs=1e-5),
    )
    assert d.p_value == pytest.approx(0.034091, abs=1e-6)
    assert d.p_value == pytest.approx(_p_df2([0.5, 1.0, 0.8]), abs=1e-12)
    assert d.excludes_zero
    wide = paired_difference([1.0, 2.0, 3.0], [1.5, 1.0, 3.2])  # differences -0.5, 1.0, -0.2
    assert wide.low < 0 < wide.high and not wide.excludes_zero
    assert wide.p_value == pytest.approx(0.847501, abs=1e-6)
    # the same difference at 99 %: t(0.995, 2) = 9.9248; it no longer excludes 0 (p > 0.01)
    strict = d.at(0.99)
    assert (strict.mean, strict.p_value, strict.confidence) == (d.mean, d.p_value, 0.99)
    assert strict.high - strict.mean == pytest.approx(9.9248 * d.se, abs=1e-4)
    assert not strict.excludes_zero
    one = paired_difference([1.0], [0.0])
    assert one.mean == 1.0 and math.isnan(one.low) and not one.excludes_zero
    assert math.isnan(one.p_value) and math.isnan(one.at(0.9).high)
    same = paired_difference([3.0, 4.0], [1.0, 2.0])  # differences 2, 2: no spread
    assert (same.low, same.high, same.p_value) == (2.0, 2.0, 0.0) and same.excludes_zero
    assert paired_difference([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    assert mean_std([2.0, 4.0, 9.0]) == (5.0, pytest.approx(math.sqrt(13)))


def test_holm_known_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # ascending 0.005, 0.01, 0.03, 0.04 against 0.05/4, 0.05/3, 0.05/2, 0.05: the third fails
    assert holm(p) == [True, False, False, True]
    # 4 * 0.005 = 0.02; 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; max(0.06, 1 * 0.04) = 0.06
    assert holm_adjusted(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # at 0.1 every step passes (0.025, 0.0333, 0.05, 0.1)
    assert holm(p, alpha=0.1) == [True, True, True, True]
    assert holm([0.6, 0.7]) == [False, False]
    assert holm_adjusted([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm_adjusted([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties
    assert holm([0.02, 0.02], alpha=0.04) == [True, True]
    assert holm([0.04]) == [True] and holm_adjusted([0.04]) == [0.04]  # m = 1: a plain test


def test_holm_paired_intervals_at_the_step_down_levels():
    samples = {"a": [0.5, 1.0, 0.8], "b": [2.0, 2.1, 1.9], "c": [-0.5, 1.0, -0.2]}
    base = [0.0, 0.0, 0.0]
    diffs = {k: paired_difference(v, base) for k, v in samples.items()}
    p = {k: _p_df2(v) for k, v in samples.items()}  # 0.03409, 0.00083, 0.8475
    got = holm_paired(diffs)
    assert list(got) == ["a", "b", "c"]
    assert [got[k].rank for k in "abc"] == [2, 1, 3]
    # b passes 0.05 / 3; a fails 0.05 / 2 and stops the test
    assert [got[k].rejected for k in "abc"] == [False, True, False]
    assert got["b"].p_adjusted == pytest.approx(3 * p["b"])
    assert got["a"].p_adjusted == pytest.approx(2 * p["a"])  # 0.06818
    assert got["c"].p_adjusted == pytest.approx(p["c"])  # 0.8475 > 0.06818
    # intervals at 1 - 0.05/3, 1 - 0.05/2 and 0.95: t(1 - 0.05/6, 2) = 7.6488 (Bonferroni,
    # three comparisons), t(1 - 0.05/4, 2) = 6.2053, t(0.975, 2) = 4.3027
    for key, level, t in (("b", 1 - 0.05 / 3, 7.6488), ("a", 0.975, 6.2053), ("c", 0.95, 4.3027)):
        d = got[key].difference
        assert d.confidence == pytest.approx(level) and d.p_value == diffs[key].p_value
        assert (d.low, d.high) == (
            pytest.approx(diffs[key].mean - t * diffs[key].se, abs=1e-3),
            pytest.approx(diffs[key].mean + t * diffs[key].se, abs=1e-3),
        )
    # a excludes 0 at 95 % but not at its Holm level 97.5 % (p = 0.034 > 0.025)
    assert diffs["a"].excludes_zero and not got["a"].difference.excludes_zero
    assert got["b"].difference.excludes_zero
    # an interval can exclude 0 without a rejection: d (p = 0.0351 < 0.05) is ranked second, at
    # 95 %, but a (p = 0.0341 > 0.05 / 2) failed first
    pair = holm_paired({"a": diffs["a"], "d": paired_difference([1.0, 2.0, 1.5], base)})
    assert pair["d"].difference.excludes_zero and not pair["d"].rejected
    assert pair["d"].p_adjusted == pytest.approx(2 * diffs["a"].p_value)


def _result(label, seed, top1):
    final = {"top1": top1 / 100, "ece": 0.05}
    return Result(label, label, seed, "none", final, [{"epoch": 0}], [1.0])


def test_compare_marks_the_differences_that_survive_holm():
    # top-1 differences to rmix over seeds 0, 1, 2 (points): a 2.0, 2.1, 1.9 (p = 0.00083),
    # b 0.5, 1.0, 0.8 (p = 0.0341), c -0.5, 1.0, -0.2 (p = 0.8475); ECE equal everywhere (p = 1)
    ref = [80.0, 81.0, 82.0]
    steps = {"a": [2.0, 2.1, 1.9], "b": [0.5, 1.0, 0.8], "c": [-0.5, 1.0, -0.2]}
    results = [_result("rmix", s, v) for s, v in enumerate(ref)]
    results += [
        _result(k, s, v + d)
        for k, ds in steps.items()
        for s, (v, d) in enumerate(zip(ref, ds, strict=True))
    ]
    rows = {r["policy"]: r for r in summarise(results, "rmix", 0.95)}
    # Holm over three: a passes 0.05 / 3; b fails 0.05 / 2 (though its 95 % interval excludes 0)
    assert rows["a"]["top1_diff_holm"] and rows["a"]["top1_diff_holm_p"] == pytest.approx(
        3 * 0.000832, rel=1e-2
    )
    assert not rows["b"]["top1_diff_holm"] and rows["b"]["top1_diff"].excludes_zero
    assert rows["b"]["top1_diff_holm_p"] == pytest.approx(2 * 0.034091, abs=1e-5)
    assert rows["c"]["top1_diff_holm_p"] == pytest.approx(0.847501, abs=1e-5)
    assert rows["b"]["top1_diff_holm_ci"].confidence == pytest.approx(0.975)
    assert rows["c"]["ece_diff_holm_p"] == 1.0 and "top1_diff_holm_p" not in rows["rmix"]
    table = to_markdown(list(rows.values()), "t", "rmix", 0.95).splitlines()
    head = [c.strip() for c in table[2].strip("|").split("|")]
    cells = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
        for line in table[4:8]
    }
    holm_top1 = head.index("Holm, Δ top1")
    assert head[holm_top1 - 1] == "Δ top1 vs rmix [95 % CI]"
    holm = {k: v[holm_top1] for k, v in cells.items()}
    assert holm["rmix"] == "—"
    assert [holm[k].split(" p ")[1] for k in "abc"] == ["0.0025*", "0.068", "0.85"]
    b = rows["b"]["top1_diff_holm_ci"]  # the step-down interval beside the adjusted p
    assert holm["b"] == f"[{b.low:+.2f}, {b.high:+.2f}] p 0.068" and b.low < 0 < b.high
    assert cells["b"][holm_top1 - 1].endswith("]*")  # * at 95 %, not after Holm
    assert cells["a"][head.index("Holm, Δ ece")].endswith(" p 1")
    assert "Holm: Holm's step-down correction over the agent variants" in table[9]
    csv_head = summary_csv(list(rows.values())).splitlines()[0].split(",")
    assert {"top1_diff_holm_p", "top1_diff_holm", "top1_diff_holm_ci_low"} <= set(csv_head)


def test_stats_errors():
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\), got 1.0"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df must be > 0, got 0"):
        t_quantile(0.9, 0)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])
    with pytest.raises(ValueError, match="paired samples need equal lengths, got 2 and 1"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.0"):
        paired_difference([1.0, 2.0], [1.0, 1.0], confidence=1.0)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 0"):
        paired_difference([1.0, 2.0], [1.0, 1.0]).at(0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.5"):
        holm([0.1], alpha=1.5)
    with pytest.raises(ValueError, match="no p-values"):
        holm_adjusted([])
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\], got 1.2"):
        holm([0.5, 1.2])
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\], got nan"):
        holm_adjusted([math.nan])
    with pytest.raises(ValueError, match="comparison 'one' has fewer than two pairs: no t-test"):
        holm_paired(
            {
                "two": paired_difference([1.0, 2.0], [0.0, 0.0]),
                "one": paired_difference([1.0], [0.0]),
            }
        )


def _data(n_per_class=30, classes=4):
    labels = torch.arange(classes).repeat(n_per_class)
    images = torch.arange(labels.shape[0], dtype=torch.uint8)[:, None, None, None].expand(
        -1, 1, 2, 2
    )
    return ImageTensors(images.contiguous(), labels)


def _ids(split):
    return set(split.images[:, 0, 0, 0].tolist())


def test_carve_holds_out_of_the_budget_stratified_disjoint_and_seeded():
    data = _data()
    train, held = carve(data, val_size=20, per_class=10, seed=3)
    assert torch.bincount(held.labels).tolist() == [5, 5, 5, 5]
    assert torch.bincount(train.labels).tolist() == [5, 5, 5, 5]  # 10 per class in all
    assert not _ids(train) & _ids(held)  # held-out images are never trained on
    # the same labelled budget with and without a held-out split
    budget, none = carve(data, per_class=10, seed=3)
    assert none is None and torch.bincount(budget.labels).tolist() == [10, 10, 10, 10]
    assert _ids(train) | _ids(held) == _ids(budget)
    again = carve(data, val_size=20, per_class=10, seed=3)
    assert torch.equal(again[0].images, train.images) and torch.equal(again[1].images, held.images)
    other = carve(data, val_size=20, per_class=10, seed=4)
    assert not torch.equal(other[1].images, held.images)
    everything, none = carve(data)
    assert none is None and torch.equal(everything.images, data.images)
    rest, held = carve(data, val_size=20, seed=3)  # no budget: held out of the whole split
    assert len(rest) == 100 and _ids(rest) | _ids(held) == _ids(data)


def test_carve_errors():
    with pytest.raises(
        ValueError, match=r"val_size \(120\) must be smaller than the training budget \(120"
    ):
        carve(_data(), val_size=120)
    with pytest.raises(
        ValueError, match=r"val_size \(40\) must be smaller than the training budget \(40 images"
    ):
        carve(_data(), val_size=40, per_class=10)
    with pytest.raises(
        ValueError, match=r"train_per_class \(31\) exceeds the 30 images of class 0"
    ):
        carve(_data(), val_size=20, per_class=31)


def test_each_agent_against_every_fixed_policy_with_holm_over_them():
    # agent minus rmix 0.5, 0.6, 0.7 (p = 0.0091); minus cutmix_plus 1.0, 0.2, 0.6 (p = 0.12)
    rmix, cutmix = [80.0, 81.0, 82.0], [79.5, 81.4, 82.1]
    agent = [80.5, 81.6, 82.7]
    history = [
        {"epoch": 0, "reward": -0.4, "policy_entropy_frac": 0.5, "mean_q": 0.4, "policy_q_std": 0.1}
    ]
    results = [_result("rmix", s, v) for s, v in enumerate(rmix)]
    results += [_result("cutmix_plus", s, v) for s, v in enumerate(cutmix)]
    results += [
        Result("agent[t]", "agent", s, "none", {"top1": v / 100, "ece": 0.05}, history, [1.0])
        for s, v in enumerate(agent)
    ]
    rows = {r["policy"]: r for r in summarise(results, "rmix", 0.95)}
    versus = rows["agent[t]"]["versus_fixed"]
    assert list(versus) == ["rmix", "cutmix_plus"] and "versus_fixed" not in rows["rmix"]
    expected = {
        "rmix": paired_difference(agent, rmix),
        "cutmix_plus": paired_difference(agent, cutmix),
    }
    holm = holm_paired(expected)
    for other, (d, h) in versus.items():
        assert (d.mean, d.low, d.high) == pytest.approx(
            (expected[other].mean, expected[other].low, expected[other].high)
        )
        assert h.p_adjusted == pytest.approx(holm[other].p_adjusted)
    # Holm over the two: rmix's p doubles and survives, cutmix_plus's does not
    assert versus["rmix"][1].p_adjusted == pytest.approx(2 * expected["rmix"].p_value)
    assert versus["rmix"][1].rejected and not versus["cutmix_plus"][1].rejected
    table = to_markdown(list(rows.values()), "t", "rmix", 0.95)
    line = next(x for x in table.splitlines() if x.startswith("| agent[t] | rmix |"))
    p = versus["rmix"][1].p_adjusted
    assert f"| {p:.2g}* |" in line and "+0.60 [" in line
    csv_head = summary_csv(list(rows.values())).splitlines()[0].split(",")
    assert {"top1_diff_vs_cutmix_plus", "top1_diff_vs_cutmix_plus_holm_fixed_p"} <= set(csv_head)
