"""rlmix.stats (hand-computed intervals) and rlmix.data.splits (held-out split, balanced subset)."""

import math

import pytest
import torch

from rlmix.data.base import ImageTensors
from rlmix.data.splits import carve
from rlmix.stats import mean_std, paired_difference, t_cdf, t_quantile


@pytest.mark.parametrize(
    ("p", "df", "value"),  # tables of Student's t (two-sided 95 %, 99 % and 90 %)
    [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 9, 2.2622),
     (0.975, 30, 2.0423), (0.995, 2, 9.9248), (0.95, 5, 2.0150), (0.975, 1000, 1.9623)],
)  # fmt: skip
def test_t_quantile_matches_tables(p, df, value):
    assert t_quantile(p, df) == pytest.approx(value, abs=1e-4)
    assert t_cdf(value, df) == pytest.approx(p, abs=1e-5)
    assert t_quantile(1 - p, df) == pytest.approx(-value, abs=1e-4)


def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(t^2 + 2))
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-10)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(t * t + 2)), abs=1e-10)


def test_paired_difference_hand_computed():
    # differences 0.5, 1.0, 0.8: mean 0.7667, sd 0.25166, t(0.975, 2) = 4.3027
    d = paired_difference([1.0, 2.0, 3.0], [0.5, 1.0, 2.2])
    half = 4.302653 * 0.2516611 / math.sqrt(3)
    assert d.mean == pytest.approx(0.766667, abs=1e-6) and d.n == 3
    assert (d.low, d.high) == (
        pytest.approx(0.766667 - half, abs=1e-5),
        pytest.approx(0.766667 + half, abs=1e-5),
    )
    assert d.excludes_zero
    wide = paired_difference([1.0, 2.0, 3.0], [1.5, 1.0, 3.2])  # differences -0.5, 1.0, -0.2
    assert wide.low < 0 < wide.high and not wide.excludes_zero
    one = paired_difference([1.0], [0.0])
    assert one.mean == 1.0 and math.isnan(one.low) and not one.excludes_zero
    assert mean_std([2.0, 4.0, 9.0]) == (5.0, pytest.approx(math.sqrt(13)))
    with pytest.raises(ValueError, match="paired samples need equal lengths, got 2 and 1"):
        paired_difference([1.0, 2.0], [1.0])


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
