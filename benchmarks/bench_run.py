"""Wall time of the default RL-Mix run: ``python -m rlmix.train_agent`` with no options.

    python -m benchmarks.bench_run                  # one run, about 95 s on a 2-core CPU
    python -m benchmarks.bench_run --repeats 3

Runs the command as a user would (a subprocess, fresh interpreter, imports and dataset loading
included) with ``--out`` a temporary directory and ``--no-progress``, nothing else (on a
``--device`` other than auto also ``--set trainer.device=...``). Reports the wall time in
seconds (median over ``--repeats`` runs) and the final figures the command prints.

Target: <= 180 s (3 minutes) on the 2-core CPU this project is measured on.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks import common

NAME = "run"
LIMIT_S = 180.0
FIGURES = {  # label in the command's summary -> key
    "final test top-1": "top1_pct",
    "final test ECE": "ece_pct",
    "FGSM error": "fgsm_error_pct",
    "mean reward": "mean_reward",
    "wall time": "reported_wall_s",
}


def build_parser() -> argparse.ArgumentParser:
    p = common.new_parser(
        "bench_run",
        "Wall time (s) of `python -m rlmix.train_agent` with no options, run as a "
        "subprocess into a temporary --out directory.",
        repeats=1,
        warmup=0,
        repeats_help="(here: runs, the median is reported; default 1)",
        warmup_help="(untimed runs first; default 0)",
    )
    p.add_argument(
        "--timeout", type=float, default=900, help="seconds before a run is killed (default 900)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="pass --epochs N to the command (a smoke run; the target applies to the default "
        "run only)",
    )
    return p


def run_once(args: argparse.Namespace) -> dict:
    """One timed run of the default command; its wall time and parsed summary."""
    with tempfile.TemporaryDirectory(prefix="rlmix-bench-run-") as out:
        cmd = [sys.executable, "-m", "rlmix.train_agent", "--out", out, "--no-progress"]
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs)]
        if args.device != "auto":
            cmd += ["--set", f"trainer.device={args.device}"]
        threads = {} if args.threads is None else {"OMP_NUM_THREADS": str(args.threads)}
        env = common.subprocess_env(**threads)
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, env=env, check=False
        )
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, **parse_summary(proc.stdout)}


def parse_summary(text: str) -> dict[str, float]:
    """The numbers of the command's final summary (``final test top-1   62.40 %`` ...)."""
    out = {}
    for label, key in FIGURES.items():
        m = re.search(rf"^\s*{re.escape(label)}\s+(-?[0-9.]+)", text, flags=re.MULTILINE)
        if m:
            out[key] = float(m.group(1))
    return out


HEADERS = ("command", "runs", "wall s", "top-1 %", "ECE %", "FGSM err %", "mean reward")


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Time the default run, print the table and target; returns the results."""
    what = "defaults" if args.epochs is None else f"--epochs {args.epochs}"
    print(f"[run] python -m rlmix.train_agent ({what}), {common.header_line(device)}", flush=True)
    for i in range(args.warmup):
        print(f"  warm-up run {i + 1}/{args.warmup}", flush=True)
        run_once(args)
    runs = []
    for i in range(args.repeats):
        runs.append(run_once(args))
        print(f"  run {i + 1}/{args.repeats}: {runs[-1]['wall_s']:.1f} s", flush=True)
    wall = common.median([r["wall_s"] for r in runs])
    last = runs[-1]
    row = [
        "python -m rlmix.train_agent" + ("" if args.epochs is None else f" --epochs {args.epochs}"),
        len(runs),
        f"{wall:.1f}",
        *(f"{last[k]:.2f}" if k in last else "-" for k in list(FIGURES.values())[:4]),
    ]
    targets = []
    if args.epochs is None:
        targets.append(common.Target("default train_agent run, wall time", wall, LIMIT_S, unit="s"))
    results = {"wall_s": wall, "runs": runs}
    return common.report(NAME, args, device, common.format_table(HEADERS, [row]), results, targets)


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse(build_parser, argv)
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    return run(args, device)


main = common.main_of(execute)


if __name__ == "__main__":
    sys.exit(main())
