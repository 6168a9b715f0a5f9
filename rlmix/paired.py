"""Paired difference between two ``rlmix.compare`` studies run on the same seeds.

    python -m rlmix.paired runs/lam-batch runs/lam-elem            # elem - batch, per policy
    python -m rlmix.paired A B --metrics top1,ece --out runs/lam-paired

A study changed in one setting (``--set mix.lam_mode=elem``, another model, another budget) is
compared with the study it came from, policy by policy: for each policy both studies ran, the
seeds both finished are paired and the mean of ``B - A`` is reported with its Student-t
interval, and Holm's step-down correction over the policies says which differences survive
(one family per metric). The setting that differs is read from the two ``study.json`` files
and printed. ``--out`` also writes ``paired.md``, ``paired.csv`` and ``paired.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from rlmix.checkpoints import config_difference
from rlmix.cli import ArgumentParser, run_main
from rlmix.errors import ConfigError
from rlmix.io import atomic_write_text
from rlmix.plots import plot_differences
from rlmix.report import metric_label, paired_tables
from rlmix.stats import PairedDifference, paired_difference


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.paired",
        description="Paired difference B - A between two rlmix.compare studies on the same "
        "seeds, per policy, with Student-t intervals and Holm's correction over the policies.",
    )
    p.add_argument("a", help="the first study's folder (the reference: B - A is reported)")
    p.add_argument("b", help="the second study's folder")
    p.add_argument(
        "--metrics",
        default="top1,nll,ece",
        help="comma-separated runs.csv columns to pair (default top1,nll,ece)",
    )
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--out", help="also write paired.md, paired.csv and paired.png here")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def read_runs(folder: Path) -> list[dict[str, str]]:
    """The rows of a finished study's ``runs.csv``."""
    path = folder / "runs.csv"
    if not path.is_file():
        raise ConfigError(f"'{folder}' has no runs.csv: not a finished rlmix.compare study")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def what_differs(a: Path, b: Path) -> str:
    """The first config key the two studies differ in (``""`` when none or unknown)."""
    try:
        configs = [json.loads((d / "study.json").read_text())["config"] for d in (a, b)]
    except (OSError, ValueError, KeyError):
        return ""
    return config_difference(configs[0], configs[1], there=f"in {a}").replace(" now", f" in {b}")


def pair(
    runs_a: list[dict[str, str]],
    runs_b: list[dict[str, str]],
    metrics: Sequence[str],
    confidence: float = 0.95,
) -> dict[str, dict[str, tuple[list[int], PairedDifference]]]:
    """metric -> policy -> (paired seeds, mean of ``b - a`` with its interval), for every policy
    with at least two seeds finished in both studies, in the first study's order."""
    index_a = {(r["policy"], int(r["seed"])): r for r in runs_a}
    index_b = {(r["policy"], int(r["seed"])): r for r in runs_b}
    missing = [m for m in metrics if runs_a and m not in runs_a[0]]
    if missing:
        raise ConfigError(f"unknown metric '{missing[0]}': runs.csv has {', '.join(runs_a[0])}")
    policies = list(dict.fromkeys(p for p, _ in index_a))
    out: dict[str, dict[str, tuple[list[int], PairedDifference]]] = {m: {} for m in metrics}
    for policy in policies:
        seeds = sorted(s for p, s in index_a if p == policy and (p, s) in index_b)
        if len(seeds) < 2:
            continue
        for m in metrics:
            a = [_number(index_a[policy, s][m], m) for s in seeds]
            b = [_number(index_b[policy, s][m], m) for s in seeds]
            out[m][policy] = seeds, paired_difference(b, a, confidence)
    if not any(out.values()):
        raise ConfigError("no policy has two or more seeds finished in both studies")
    return out


def _number(text: str, metric: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"metric '{metric}' is not a number in runs.csv: {text!r}") from None
    if math.isnan(value):
        raise ConfigError(f"metric '{metric}' is missing (NaN) for a run: choose another")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not 0.0 < args.confidence < 1.0:
        raise ConfigError(f"--confidence must be in (0, 1), got {args.confidence}")
    a, b = Path(args.a), Path(args.b)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    paired = pair(read_runs(a), read_runs(b), metrics, args.confidence)
    table, csv_rows = paired_tables(paired)
    differs = what_differs(a, b)
    pct = f"{100 * args.confidence:g}"
    text = (
        f"## {b} - {a}\n\n"
        + (f"The studies differ in {differs}.\n\n" if differs else "")
        + table
        + f"\n\nMean of the per-seed differences B - A with its {pct} % Student-t interval (* "
        "when it excludes 0); Holm: the paired t-test's p-value adjusted over the policies, "
        "one family per metric (* when it is <= 0.05: the difference survives the correction).\n"
    )
    print(text)
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "paired.md", text)
        atomic_write_text(out / "paired.csv", csv_rows)
        plot_differences(
            {metric_label(m): {p: d for p, (_, d) in rows.items()} for m, rows in paired.items()},
            f"{b.name} - {a.name}" + (f" ({differs.split(':')[0]})" if differs else ""),
            out / "paired.png",
        )
        print(f"tables: {out / 'paired.md'}, {out / 'paired.csv'}; plot: {out / 'paired.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
