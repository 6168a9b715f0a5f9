"""Statistics for comparisons over seeds: paired Student-t intervals and Holm's correction.

Runs with the same seed share data order, initialisation and augmentation, so two policies are
compared by the per-seed differences ``d_s = a_s - b_s``: their mean, the interval
``mean(d) ± t_{(1+c)/2, n-1} * std(d) / sqrt(n)`` (std with ddof 1) and the two-sided paired
t-test of ``mean(d) = 0``. Several policies compared with one reference form a family of tests;
:func:`holm_paired` applies Holm's step-down correction to it (see there for what its intervals
mean). The t distribution comes from SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _sp


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. 4.303 for
    ``p = 0.975, df = 2``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    return float(_sp.t.ppf(p, df))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _check_level(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired seeds with its confidence interval and t-test.

    Attributes:
        mean: mean difference.
        low, high: the interval bounds (NaN with fewer than two pairs).
        n: number of pairs.
        confidence: the interval's level.
        se: standard error of the mean, ``std / sqrt(n)`` (NaN with fewer than two pairs).
        p_value: two-sided paired t-test of a zero mean, ``n - 1`` degrees of freedom (NaN with
            fewer than two pairs). The interval at level ``c`` excludes 0 exactly when
            ``p_value < 1 - c``.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    se: float
    p_value: float

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or below 0: a difference beyond noise."""
        return self.n >= 2 and (self.low > 0.0 or self.high < 0.0)

    def at(self, confidence: float) -> PairedDifference:
        """The same difference with its interval at another confidence level."""
        _check_level("confidence", confidence)
        if self.n < 2:
            return PairedDifference(
                self.mean, math.nan, math.nan, self.n, confidence, self.se, self.p_value
            )
        half = t_quantile(0.5 + confidence / 2.0, self.n - 1) * self.se
        return PairedDifference(
            self.mean, self.mean - half, self.mean + half, self.n, confidence, self.se, self.p_value
        )


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """The paired Student-t interval and t-test of ``mean(a - b)``; ``a[i]`` and ``b[i]`` share
    seed i."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    _check_level("confidence", confidence)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, std = mean_std(diffs)
    n = len(diffs)
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, confidence, math.nan, math.nan)
    se = std / math.sqrt(n)
    if se == 0.0:  # identical differences: certain unless they are all 0
        p_value = 0.0 if mean != 0.0 else 1.0
    else:
        p_value = float(2.0 * _sp.t.sf(abs(mean / se), n - 1))
    return PairedDifference(mean, math.nan, math.nan, n, confidence, se, p_value).at(confidence)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """The Student-t interval of ``mean(values)`` (as a difference to 0: values that are
    themselves differences, such as a policy's gain over random top-k)."""
    return paired_difference(list(values), [0.0] * len(values), confidence)


# -- Holm's step-down correction ---------------------------------------------------------------


def _ranks(p_values: Sequence[float]) -> list[int]:
    """Validated p-values' positions in ascending order (ties keep their input order)."""
    if not p_values:
        raise ValueError("no p-values")
    bad = next((p for p in p_values if not 0.0 <= p <= 1.0), None)
    if bad is not None:
        raise ValueError(f"p-values must be in [0, 1], got {bad}")
    return sorted(range(len(p_values)), key=lambda i: p_values[i])


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test of ``m`` hypotheses at family-wise error rate ``alpha``: which are
    rejected, in input order. Going up the ascending p-values, the j-th smallest (j = 1..m) is
    rejected while ``p_(j) <= alpha / (m - j + 1)``; the first that fails stops the test."""
    _check_level("alpha", alpha)
    order = _ranks(p_values)
    m = len(order)
    rejected = [False] * m
    for j, i in enumerate(order):
        if p_values[i] > alpha / (m - j):
            break
        rejected[i] = True
    return rejected


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in input order: ``max over k <= j of min(1, (m - k + 1) p_(k))``
    for the j-th smallest. A hypothesis is rejected at level ``alpha`` when its adjusted
    p-value is ``<= alpha`` (the same decisions as :func:`holm`)."""
    order = _ranks(p_values)
    m = len(order)
    adjusted = [0.0] * m
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class HolmComparison:
    """One comparison of a Holm family (see :func:`holm_paired`).

    Attributes:
        difference: the paired difference, its interval at the comparison's step-down level
            (``difference.confidence``); ``difference.p_value`` is the unadjusted p-value.
        rank: position of its p-value in ascending order within the family (1 = smallest).
        p_adjusted: the Holm-adjusted p-value.
        rejected: Holm rejects a zero difference at the family's ``alpha``.
    """

    difference: PairedDifference
    rank: int
    p_adjusted: float
    rejected: bool


def holm_paired(
    differences: Mapping[str, PairedDifference], alpha: float = 0.05
) -> dict[str, HolmComparison]:
    """Holm's correction over a family of paired differences (e.g. every policy against one
    reference on one metric), keyed as given.

    Each comparison's p-value is its paired t-test (:attr:`PairedDifference.p_value`). The
    comparison of rank j (j-th smallest p-value of m) gets its interval at confidence
    ``1 - alpha / (m - j + 1)``, the level its own Holm step tests at: the interval excludes 0
    exactly when its p-value passes that step. It is a per-comparison interval, not a
    simultaneous one: Holm rejects a difference only when every smaller p-value passes its step
    too (``rejected``), so an interval can exclude 0 without a rejection, and family-wise
    coverage of all m intervals together is only guaranteed at the Bonferroni level
    ``1 - alpha / m`` (the rank-1 interval's).
    """
    _check_level("alpha", alpha)
    few = next((k for k, d in differences.items() if d.n < 2), None)
    if few is not None:
        raise ValueError(f"comparison '{few}' has fewer than two pairs: no t-test")
    names = list(differences)
    p_values = [differences[k].p_value for k in names]
    order = _ranks(p_values)
    m = len(names)
    rejected, adjusted = holm(p_values, alpha), holm_adjusted(p_values)
    out = {}
    for j, i in enumerate(order):
        level = 1.0 - alpha / (m - j)
        out[names[i]] = HolmComparison(
            differences[names[i]].at(level), j + 1, adjusted[i], rejected[i]
        )
    return {k: out[k] for k in names}


__all__ = [
    "HolmComparison",
    "PairedDifference",
    "holm",
    "holm_adjusted",
    "holm_paired",
    "mean_interval",
    "mean_std",
    "paired_difference",
    "t_quantile",
]
