"""One ``rlmix.compare`` study per value of a setting, read as a curve: where does a win hold?

    python -m rlmix.sweep runs/epochs_200 runs/epochs_400 runs/epochs_800 --out docs/sweep
    python -m rlmix.sweep runs/budget_25 runs/budget_50 runs/budget_100 --reference rmix

The studies differ in one config key (``trainer.epochs``, ``data.train_per_class``...), read
from their ``study.json`` files; an ``--arm`` that sets that key itself (``420ep:cutmix_plus,
trainer.epochs=420``) is placed at its own value. For each value and policy: test top-1 (mean
over seeds, 95 % Student-t interval), its paired difference to ``--reference`` on the seeds both
finished, with Holm's correction over the other policies at that value, and the seconds per
epoch it ran at. ``--out`` writes ``sweep.md``, ``sweep.csv`` and ``sweep.png`` (top-1 and the
difference against the setting, with their intervals).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlmix.cli import ArgumentParser, run_main
from rlmix.config import parse_override
from rlmix.errors import ConfigError
from rlmix.io import atomic_write_text
from rlmix.paired import read_runs
from rlmix.plots import plot_sweep
from rlmix.report import csv_text
from rlmix.stats import PairedDifference, holm_paired, mean_interval, paired_difference


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_study(folder: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A finished study's ``study.json`` and ``runs.csv`` rows."""
    try:
        study = json.loads((folder / "study.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"'{folder}' has no readable study.json: not an rlmix.compare study"
        ) from e
    return study, read_runs(folder)


def swept_key(configs: list[dict[str, Any]]) -> str:
    """The one config key whose value differs between the studies."""
    flats = [_flat(c) for c in configs]
    keys = sorted({k for f in flats for k in f if len({json.dumps(g.get(k)) for g in flats}) > 1})
    if len(keys) != 1:
        what = ", ".join(keys) if keys else "none"
        raise ConfigError(
            f"the studies must differ in exactly one config key (they differ in: {what}); "
            "compare studies of one sweep"
        )
    return keys[0]


def _value(study: dict[str, Any], label: str, key: str) -> Any:
    """The swept key's value for one arm: its own override, else the study's."""
    for arm in study["arms"]:
        if arm["label"] == label:
            for override in arm.get("overrides", []):
                k, v = parse_override(override)
                if k == key:
                    return v
    return _flat(study["config"])[key]


def sweep(
    folders: Sequence[Path], reference: str = "rmix", metric: str = "top1", confidence: float = 0.95
) -> tuple[str, list[dict[str, Any]]]:
    """The sweep's markdown table and rows (one per value and policy)."""
    if len(folders) < 2:
        raise ConfigError("give two or more studies, one per value of the setting")
    studies = [read_study(f) for f in folders]
    key = swept_key([s["config"] for s, _ in studies])
    rows: list[dict[str, Any]] = []
    for (study, runs), folder in zip(studies, folders, strict=True):
        if runs and metric not in runs[0]:
            raise ConfigError(f"unknown metric '{metric}': runs.csv has {', '.join(runs[0])}")
        by = {}
        for r in runs:
            by.setdefault(r["policy"], {})[int(r["seed"])] = r
        if reference not in by:
            raise ConfigError(f"'{folder}' has no runs of --reference {reference}")
        base = by[reference]
        family: dict[int, PairedDifference] = {}
        for label, seeds in by.items():
            values = [float(seeds[s][metric]) for s in sorted(seeds)]
            row = {
                "key": key,
                "setting": _value(study, label, key),
                "policy": label,
                "seeds": len(values),
                "mean": mean_interval(values, confidence),
                "s_per_epoch": sum(float(r["s_per_epoch"]) for r in seeds.values()) / len(seeds),
                "study": str(folder),
            }
            shared = sorted(set(seeds) & set(base))
            if label != reference and len(shared) >= 2:
                row["diff"] = paired_difference(
                    [float(seeds[s][metric]) for s in shared],
                    [float(base[s][metric]) for s in shared],
                    confidence,
                )
                family[len(rows)] = row["diff"]
            rows.append(row)
        for i, h in holm_paired(family, alpha=1.0 - confidence).items():
            rows[i]["holm_p"], rows[i]["holm"] = h.p_adjusted, h.rejected
    rows.sort(key=lambda r: (_order(r["setting"]), r["policy"] != reference, r["policy"]))
    return _markdown(rows, key, reference, metric, confidence), rows


def _order(value: Any) -> tuple:
    """Numbers in numeric order, then anything else by its text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _markdown(rows, key: str, reference: str, metric: str, confidence: float) -> str:
    level = f"{100 * confidence:g} %"
    lines = [
        f"## {metric} against {key}",
        "",
        f"| {key} | policy | seeds | {metric} [{level} CI] | Δ vs {reference} [{level} CI] | "
        "Holm p | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, d = r["mean"], r.get("diff")
        diff = (
            "—"
            if d is None
            else f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" + ("*" if d.excludes_zero else "")
        )
        holm = "—" if "holm_p" not in r else f"{r['holm_p']:.2g}" + ("*" if r["holm"] else "")
        lines.append(
            f"| {r['setting']} | {r['policy']} | {r['seeds']} | {m.mean:.2f} [{m.low:.2f}, "
            f"{m.high:.2f}] | {diff} | {holm} | {r['s_per_epoch']:.2f} |"
        )
    lines += [
        "",
        f"Δ: paired difference to {reference} in the same study (same seeds), * when its "
        f"interval excludes 0; Holm: adjusted p over the policies compared with {reference} at "
        "that value, * when the difference survives. s / epoch is what the runs ran at (side by "
        "side with other work: not a benchmark).",
    ]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    flat = []
    for r in rows:
        out = {k: v for k, v in r.items() if not isinstance(v, PairedDifference)}
        for name in ("mean", "diff"):
            if name in r:
                d = r[name]
                out.update({name: d.mean, f"{name}_low": d.low, f"{name}_high": d.high})
        flat.append(out)
    return csv_text(flat)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.sweep",
        description="Read rlmix.compare studies that differ in one setting as a curve: each "
        "policy's metric with its interval and its paired difference to the reference, against "
        "the setting.",
    )
    p.add_argument("studies", nargs="+", help="the studies' folders, one per value")
    p.add_argument("--reference", default="rmix", help="policy the others are compared with")
    p.add_argument("--metric", default="top1", help="a runs.csv column (default top1)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--out", help="also write sweep.md, sweep.csv and sweep.png here")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 < args.confidence < 1.0:
        raise ConfigError(f"--confidence must be in (0, 1), got {args.confidence}")
    folders = [Path(s) for s in args.studies]
    table, rows = sweep(folders, args.reference, args.metric, args.confidence)
    print(table)
    if args.out:
        out = Path(args.out)
        atomic_write_text(out / "sweep.md", table)
        atomic_write_text(out / "sweep.csv", _csv(rows))
        plot_sweep(rows, args.reference, args.metric, out / "sweep.png")
        print(f"wrote {out / 'sweep.md'}, {out / 'sweep.csv'}, {out / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
