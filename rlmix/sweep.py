"""One ``rlmix.compare`` study per value of a setting, read as a curve: where does a win hold?

    python -m rlmix.sweep runs/epochs_200 runs/epochs_400 runs/epochs_800 --out docs/sweep
    python -m rlmix.sweep runs/budget_25 runs/budget_50 runs/budget_100 \
        --key data.train_per_class --best-of vanilla,cutmix_plus,rmix

The studies differ in one config key (``trainer.epochs``, ``data.train_per_class``...), read
from their ``study.json`` files; ``--key`` names the one to plot against when others change with
it (the budget study scales the epochs to keep the number of steps). An ``--arm`` that sets that
key itself (``420ep:cutmix_plus,trainer.epochs=420``) is placed at its own value. For each value
and policy: test top-1 (mean over seeds, 95 % Student-t interval), its paired difference to
``--reference`` on the seeds both finished, with Holm's correction over the other policies at
that value, and the seconds per epoch it ran at. With ``--best-of``, each other policy also gets
its paired difference to the best of those fixed policies at that value (the highest mean, picked
on the same seeds, which favours the best fixed one), with Holm over the policies compared.
``--out`` writes ``sweep.md``, ``sweep.csv`` and ``sweep.png`` (top-1 and the differences against
the setting, with their intervals).
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


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The config keys whose values differ between the studies."""
    flats = [_flat(c) for c in configs]
    return sorted({k for f in flats for k in f if len({json.dumps(g.get(k)) for g in flats}) > 1})


def swept_key(configs: list[dict[str, Any]], key: str | None = None) -> str:
    """``key`` when the studies differ in it, else the one config key whose value differs."""
    keys = differing_keys(configs)
    if key is not None:
        if key not in keys:
            raise ConfigError(
                f"--key {key} is the same in every study (they differ in: "
                f"{', '.join(keys) if keys else 'none'})"
            )
        return key
    if len(keys) != 1:
        what = ", ".join(keys) if keys else "none"
        raise ConfigError(
            f"the studies must differ in exactly one config key (they differ in: {what}); "
            "compare studies of one sweep, or name the one to plot against with --key"
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


def _paired(seeds: dict, base: dict, metric: str, confidence: float) -> PairedDifference | None:
    shared = sorted(set(seeds) & set(base))
    if len(shared) < 2:
        return None
    return paired_difference(
        [float(seeds[s][metric]) for s in shared],
        [float(base[s][metric]) for s in shared],
        confidence,
    )


def _holm(rows: list[dict[str, Any]], family: dict[int, PairedDifference], suffix: str, alpha):
    if not family:
        return
    for i, h in holm_paired(family, alpha=alpha).items():
        rows[i][f"holm_p{suffix}"], rows[i][f"holm{suffix}"] = h.p_adjusted, h.rejected


def sweep(
    folders: Sequence[Path],
    reference: str = "rmix",
    metric: str = "top1",
    confidence: float = 0.95,
    key: str | None = None,
    best_of: Sequence[str] = (),
) -> tuple[str, list[dict[str, Any]]]:
    """The sweep's markdown table and rows (one per value and policy)."""
    if len(folders) < 2:
        raise ConfigError("give two or more studies, one per value of the setting")
    studies = [read_study(f) for f in folders]
    configs = [s["config"] for s, _ in studies]
    key = swept_key(configs, key)
    also = {
        k: [_flat(c)[k] for c in configs]
        for k in differing_keys(configs)
        if k != key and k != "out"
    }
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
        fixed = {p: by[p] for p in best_of if p in by}
        if best_of and not fixed:
            raise ConfigError(f"'{folder}' has no runs of --best-of {', '.join(best_of)}")
        best = max(
            fixed, key=lambda p: mean_interval([float(r[metric]) for r in fixed[p].values()]).mean,
            default=None,
        )  # fmt: skip
        family: dict[int, PairedDifference] = {}
        family_best: dict[int, PairedDifference] = {}
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
            d = _paired(seeds, base, metric, confidence) if label != reference else None
            if d is not None:
                row["diff"] = family[len(rows)] = d
            if best is not None:
                row["best"] = best
                d = _paired(seeds, by[best], metric, confidence) if label not in best_of else None
                if d is not None:
                    row["diff_best"] = family_best[len(rows)] = d
            rows.append(row)
        _holm(rows, family, "", 1.0 - confidence)
        _holm(rows, family_best, "_best", 1.0 - confidence)
    rows.sort(key=lambda r: (_order(r["setting"]), r["policy"] != reference, r["policy"]))
    return _markdown(rows, key, reference, metric, confidence, also), rows


def _order(value: Any) -> tuple:
    """Numbers in numeric order, then anything else by its text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _interval(d: PairedDifference | None) -> str:
    if d is None:
        return "—"
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" + ("*" if d.excludes_zero else "")


def _holm_cell(row: dict[str, Any], suffix: str = "") -> str:
    if f"holm_p{suffix}" not in row:
        return "—"
    return f"{row[f'holm_p{suffix}']:.2g}" + ("*" if row[f"holm{suffix}"] else "")


def _markdown(rows, key: str, reference: str, metric: str, confidence: float, also) -> str:
    level = f"{100 * confidence:g} %"
    best = any("best" in r for r in rows)
    head = f"| {key} | policy | seeds | {metric} [{level} CI] | Δ vs {reference} [{level} CI] | Holm p |"
    rule = "|---|---|---|---|---|---|"
    if best:
        head += f" best fixed | Δ vs best fixed [{level} CI] | Holm p |"
        rule += "---|---|---|"
    lines = [f"## {metric} against {key}", "", head + " s / epoch |", rule + "---|"]
    for r in rows:
        m = r["mean"]
        line = (
            f"| {r['setting']} | {r['policy']} | {r['seeds']} | {m.mean:.2f} [{m.low:.2f}, "
            f"{m.high:.2f}] | {_interval(r.get('diff'))} | {_holm_cell(r)} |"
        )
        if best:
            line += (
                f" {r.get('best', '—')} | {_interval(r.get('diff_best'))} | "
                f"{_holm_cell(r, '_best')} |"
            )
        lines.append(line + f" {r['s_per_epoch']:.2f} |")
    lines += [
        "",
        f"Δ: paired difference to {reference} in the same study (same seeds), * when its "
        f"interval excludes 0; Holm: adjusted p over the policies compared with {reference} at "
        "that value, * when the difference survives. s / epoch is what the runs ran at (side by "
        "side with other work: not a benchmark).",
    ]
    if best:
        lines.append(
            "\nBest fixed: the fixed policy with the highest mean at that value, picked on the "
            "same seeds (which favours it); the others' paired difference to it, Holm over them."
        )
    for k, values in also.items():
        lines.append(f"\nAlso changed with {key}: {k} = {', '.join(str(v) for v in values)}.")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    flat = []
    for r in rows:
        out = {k: v for k, v in r.items() if not isinstance(v, PairedDifference)}
        for name in ("mean", "diff", "diff_best"):
            if name in r:
                d = r[name]
                out.update({name: d.mean, f"{name}_low": d.low, f"{name}_high": d.high})
        flat.append(out)
    return csv_text(flat)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.sweep",
        description="Read rlmix.compare studies that differ in one setting as a curve: each "
        "policy's metric with its interval and its paired difference to the reference (and to "
        "the best fixed policy), against the setting.",
    )
    p.add_argument("studies", nargs="+", help="the studies' folders, one per value")
    p.add_argument("--reference", default="rmix", help="policy the others are compared with")
    p.add_argument(
        "--key",
        help="the config key to plot against when the studies differ in more than one "
        "(e.g. data.train_per_class, with the epochs scaled to keep the steps)",
    )
    p.add_argument(
        "--best-of",
        default="",
        help="comma-separated fixed policies: also give every other policy's paired difference "
        "to the best of them at each value",
    )
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
    best_of = [b for b in args.best_of.split(",") if b]
    table, rows = sweep(folders, args.reference, args.metric, args.confidence, args.key, best_of)
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
