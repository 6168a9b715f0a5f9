"""Where a study stands while it runs, and about how long it has left.

    python -m rlmix.status runs/budget_50 runs/budget_25 --jobs 2

Reads a study's ``study.json`` and each run's ``metrics.json`` and ``timings.json`` (both written
at every checkpoint) and prints, per arm: the runs finished, the runs under way with the epochs
they have checkpointed, the runs not started, the median seconds an epoch so far, and an estimate
of the time left: each unfinished run's remaining epochs at its arm's median, over ``--jobs``
parallel runs (never less than the longest run left), and whether a ``compare`` runs the study
now (the lock it holds, :mod:`rlmix.locks`). It runs and writes nothing, so it can be read while
``rlmix.compare`` runs the study in another process (or after it was stopped: ``compare``
resumes it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlmix.cli import ArgumentParser, run_main
from rlmix.compare import make_jobs
from rlmix.config import load_config
from rlmix.errors import ConfigError
from rlmix.locks import holder
from rlmix.study import MANIFEST, Job, state_of


@dataclass(frozen=True)
class RunProgress:
    """One run of a study: its arm, seed, target and checkpointed epochs, and epoch times."""

    label: str
    seed: int
    epochs: int
    epochs_done: int
    epoch_times: list[float]
    state: str  # "done", "partial" (a checkpoint to resume) or "new"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or being replaced: nothing checkpointed
        return {}
    return data if isinstance(data, dict) else {}


def run_progress(job: Job) -> RunProgress:
    """What ``job``'s run directory says of it now."""
    state = state_of(job)
    metrics = _read_json(job.out / "metrics.json")
    times = _read_json(job.out / "timings.json").get("epoch_time_s", [])
    epochs = job.cfg.trainer.epochs
    done = epochs if state == "done" else min(len(metrics.get("epochs", [])), epochs)
    clean = [float(t) for t in times if isinstance(t, (int, float))]
    return RunProgress(job.label, job.seed, epochs, done, clean, state)


def study_progress(folder: Path) -> tuple[dict[str, Any], list[RunProgress]]:
    """The study in ``folder`` (its ``study.json``) and every run's progress, a transfer arm's
    search run included.

    Raises:
        ConfigError: ``folder`` holds no readable study.
    """
    path = folder / MANIFEST
    try:
        study = json.loads(path.read_text())
        cfg = load_config(study["config"])
        jobs = make_jobs(cfg, study["arms"], study["seeds"], folder)
    except FileNotFoundError as e:
        raise ConfigError(f"'{folder}' holds no study ({MANIFEST} is missing)") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"'{path}' is unreadable ({type(e).__name__}: {e})") from e
    runs = [run_progress(x) for j in jobs for x in (j.search, j) if x is not None]
    return study, runs


def seconds_left(runs: list[RunProgress], jobs: int) -> tuple[float, int]:
    """Estimated seconds left at ``jobs`` parallel runs and the unfinished runs of arms with no
    epoch timed yet, which the estimate leaves out. Each unfinished run's remaining epochs take
    its arm's median seconds an epoch so far; the runs share ``jobs`` slots, and the longest
    run left bounds the estimate from below (one run uses one slot)."""
    medians = _medians(runs)
    left, untimed = [], 0
    for r in runs:
        if r.state == "done":
            continue
        if r.label in medians:
            left.append((r.epochs - r.epochs_done) * medians[r.label])
        else:
            untimed += 1
    return max(sum(left) / jobs, max(left, default=0.0)), untimed


def _medians(runs: list[RunProgress]) -> dict[str, float]:
    times: dict[str, list[float]] = {}
    for r in runs:
        times.setdefault(r.label, []).extend(r.epoch_times)
    return {label: statistics.median(t) for label, t in times.items() if t}


def _duration(seconds: float) -> str:
    if seconds < 30:
        return "under a minute"
    minutes = round(seconds / 60)
    return (
        f"about {minutes // 60} h {minutes % 60:02d} min"
        if minutes >= 60
        else f"about {minutes} min"
    )


def report(folder: Path, jobs: int) -> str:
    """The text :func:`main` prints for one study."""
    study, runs = study_progress(folder)
    labels = list(dict.fromkeys(r.label for r in runs))
    medians = _medians(runs)
    count = {s: sum(r.state == s for r in runs) for s in ("done", "partial", "new")}
    seeds = " ".join(str(s) for s in study["seeds"])
    lines = [
        f"{folder}: seeds {seeds}, {len(labels)} arms; {count['done']} of {len(runs)} runs "
        f"finished, {count['partial']} under way, {count['new']} not started",
        "",
        "| arm | finished | under way (epochs checkpointed) | not started | s / epoch |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        mine = [r for r in runs if r.label == label]
        partial = ", ".join(
            f"seed {r.seed} {r.epochs_done}/{r.epochs}" for r in mine if r.state == "partial"
        )
        new = " ".join(str(r.seed) for r in mine if r.state == "new")
        finished = sum(r.state == "done" for r in mine)
        median = f"{medians[label]:.2f}" if label in medians else "—"
        lines.append(
            f"| {label} | {finished}/{len(mine)} | {partial or '—'} | "
            f"{'seeds ' + new if new else '—'} | {median} |"
        )
    left, untimed = seconds_left(runs, jobs)
    if count["done"] == len(runs):
        tables = folder / "results.md"
        where = f"its tables are in {tables}" if tables.is_file() else "no tables written yet"
        lines += ["", f"finished: {where} (compare ... --tables-only writes them again)"]
    else:
        unknown = f", plus {untimed} runs of arms not timed yet" if untimed else ""
        lines += [
            "",
            f"time left: {_duration(left)} at {jobs} job{'s' if jobs > 1 else ''}"
            f"{unknown} (each arm's median seconds an epoch so far)",
        ]
        lines += _running(folder)
    return "\n".join(lines)


def _running(folder: Path) -> list[str]:
    """Whether a compare runs the unfinished study now (nothing when it cannot be told)."""
    now = holder(folder)
    if now.running is None:
        return []
    if now.running:
        return [f"running now: {now.command or 'rlmix'}{f' pid {now.pid}' if now.pid else ''}"]
    return ["not running: run the same rlmix.compare command again to continue it"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.status",
        description="Where rlmix.compare studies stand: runs finished, under way (with their "
        "epochs) and not started per arm, seconds an epoch, and the time left. Runs nothing.",
    )
    p.add_argument("studies", nargs="+", help="the studies' folders (compare --out)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel runs the study goes on with, for the time left (default 1)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    folders = [Path(s) for s in args.studies]
    started = [f for f in folders if (f / MANIFEST).exists()]
    if len(folders) > 1 and not started:
        raise ConfigError(f"none of {', '.join(map(str, folders))} holds a study ({MANIFEST})")
    # Studies queued one after another (make budget-study): the ones not begun are one line.
    reports = [
        report(f, args.jobs)
        if f in started or len(folders) == 1
        else f"{f}: not started ({MANIFEST} is missing)"
        for f in folders
    ]
    print("\n\n".join(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
