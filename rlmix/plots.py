"""PNG plots of run histories (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlmix.io import atomic_write  # noqa: E402
from rlmix.stats import PairedDifference  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Render ``fig`` to PNG and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def plot_curves(
    runs: dict[str, list[list[dict[str, float]]]],
    path: str | Path,
    metric: str = "top1",
    title: str = "Test accuracy per epoch",
    ylabel: str | None = None,
) -> Path:
    """Plot ``metric`` per epoch for each label: the mean over seeds with a ± std band.

    Args:
        runs: label -> one history per seed; a history is a list of per-epoch rows
            (``{"epoch": 1.0, "top1": 0.42, ...}``).
        path: the PNG to write.
        metric: the row key to plot; fractions are shown in percent.
        ylabel: the y axis label (default ``test <metric> (%)``).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, histories in runs.items():
        rows = [[r for r in h if metric in r] for h in histories]
        rows = [h for h in rows if h]
        if not rows:
            continue
        n = min(len(h) for h in rows)
        epochs = np.array([r["epoch"] for r in rows[0][:n]])
        values = 100 * np.array([[r[metric] for r in h[:n]] for h in rows])
        mean = values.mean(0)
        ax.plot(epochs, mean, marker="o", markersize=3, label=f"{label} (n={len(rows)})")
        if len(rows) > 1:
            std = values.std(0, ddof=1)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or f"test {metric} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:  # nothing evaluated yet: an empty plot, no legend
        ax.legend()
    return save_figure(fig, path)


def plot_headroom(rows: list[dict], path: str | Path) -> Path:
    """Bars per (reward, observation): the best constants' (every image, one image), the
    learnable policy's and the oracle's gain over random top-k, with their 95 % intervals (rows
    of :mod:`rlmix.headroom`)."""
    keys = (
        ("best_constant_everyone", "best constant, every image"),
        ("best_constant", "best constant, one image"),
        ("learnable", "learnable"),
        ("oracle", "oracle"),
    )
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(rows)), 4.0))
    width = 0.8 / len(keys)
    x = np.arange(len(rows))
    for i, (key, label) in enumerate(keys):
        means = np.array([r[f"{key}_gain"] for r in rows])
        lows = np.array([r[f"{key}_gain_ci"][0] for r in rows])
        highs = np.array([r[f"{key}_gain_ci"][1] for r in rows])
        err = np.nan_to_num(np.stack([means - lows, highs - means]), nan=0.0)
        ax.bar(
            x + (i - (len(keys) - 1) / 2) * width, means, width, yerr=err, capsize=3, label=label
        )
    ax.set_xticks(x, [f"{r['reward']}\n{r['observation']}" for r in rows], fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel("gain over random top-k")
    ax.set_title("Reward headroom on the same states")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return save_figure(fig, path)


def plot_differences(
    panels: dict[str, dict[str, PairedDifference]], title: str, path: str | Path
) -> Path:
    """One panel per metric (its axis label -> name -> difference): each difference's mean with
    its interval, and 0."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False, sharey=True
    )
    for ax, (label, diffs) in zip(axes[0], panels.items(), strict=True):
        names = list(diffs)
        means = [diffs[n].mean for n in names]
        errors = [[diffs[n].mean - diffs[n].low for n in names],
                  [diffs[n].high - diffs[n].mean for n in names]]  # fmt: skip
        ax.errorbar(means, range(len(names)), xerr=errors, fmt="o", capsize=4)
        ax.axvline(0.0, color="grey", linewidth=1)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.5, len(names) - 0.5)
        ax.set_xlabel(f"Δ {label}")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_sweep(rows: list[dict], reference: str, metric: str, path: str | Path) -> Path:
    """``rlmix.sweep``'s rows as panels against the swept setting: each policy's ``metric`` with
    its interval, its paired difference to ``reference``, and (when the rows have one) to the best
    fixed policy at each value, with their intervals."""
    panels = [("mean", f"{metric} (mean, 95 % CI)"), ("diff", f"Δ {metric} vs {reference}")]
    if any("diff_best" in r for r in rows):
        panels.append(("diff_best", f"Δ {metric} vs the best fixed policy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    values = list(dict.fromkeys(r["setting"] for r in rows))
    try:
        where = {v: float(v) for v in values}
    except (TypeError, ValueError):  # a setting that is not a number: evenly spaced, labelled
        where = {v: float(i) for i, v in enumerate(values)}
        for ax in axes:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
    for i, policy in enumerate(policies):
        mine = [r for r in rows if r["policy"] == policy]
        x = np.array([where[r["setting"]] for r in mine])
        color = f"C{i % 10}"
        for ax, (key, _) in zip(axes, panels, strict=True):
            have = [(xi, r[key]) for xi, r in zip(x, mine, strict=True) if key in r]
            if not have:
                continue
            xs, ds = zip(*have, strict=True)
            means = np.array([d.mean for d in ds])
            err = np.array([[d.mean - d.low for d in ds], [d.high - d.mean for d in ds]])
            ax.errorbar(xs, means, yerr=np.nan_to_num(err), fmt="o-", color=color, capsize=3,
                        label=policy, markersize=4)  # fmt: skip
    setting = rows[0].get("key", "setting")
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.set_ylabel(label if key == "mean" else f"{label}\n(paired, 95 % CI)")
        if key != "mean":
            ax.axhline(0.0, color="grey", linewidth=1)
        ax.set_xlabel(setting)
        ax.grid(alpha=0.3)
    if len(values) > 1 and all(isinstance(v, int | float) for v in values) and min(values) > 0:
        if max(values) / min(values) >= 8:
            for ax in axes:
                ax.set_xscale("log")
                ax.set_xticks([where[v] for v in values], [str(v) for v in values])
                ax.minorticks_off()
    if panels[-1][0] == "diff_best":  # name the best fixed policy at each value
        named = {}
        for r in rows:
            if "diff_best" in r and r["setting"] not in named:
                named[r["setting"]] = (where[r["setting"]], r["diff_best"].mean, r["best"])
        for x, y, best in named.values():
            axes[-1].annotate(f"vs {best}", (x, y), xytext=(5, 5), textcoords="offset points",
                              fontsize=7)  # fmt: skip
    axes[0].legend(fontsize=7)
    fig.tight_layout()  # room for each panel's y label
    return save_figure(fig, path)
