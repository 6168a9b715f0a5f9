"""Epoch-boundary overhead: a short epoch end to end against its steps alone.

    python -m benchmarks.bench_boundary                  # Fashion-MNIST 100/class (or shapes)
    python -m benchmarks.bench_boundary --repeats 5 --checkpoint-every 1,10

The regime of the headline study: 10-step epochs (1000 training images, batch 100), resnet_tiny
with widths 32-64-128, vanilla (no saliency pass), evaluation off between epochs. Each repeat
alternates (a) 10 bare training steps on a :class:`rlmix.trainer.Trainer` (observe, mix, train
step) with (b) a ``rlmix.train`` run of a few epochs for every ``--checkpoint-every`` value;
an epoch's time is end to end (``timings.json``, the last epoch, which evaluates, excluded), so
it includes the env and callbacks, the snapshot for rewinding, reseeding, the loader, logging
and the checkpoint when one is due. Overhead = 1 - (10 bare steps) / epoch.

Target: overhead <= 10 % of a 10-step epoch with the default checkpoint cadence of the study
(``trainer.checkpoint_every`` 25; 1 is measured too).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import (
    Target,
    add_common_args,
    format_table,
    header_line,
    main_of,
    median,
    new_parser,
    parse,
    report,
)

NAME = "boundary"
LIMIT = 0.10  # epoch-boundary overhead / epoch


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(NAME, "Epoch-boundary overhead of a 10-step epoch against its bare steps.")
    p.add_argument(
        "--checkpoint-every",
        default="1,25",
        help="trainer.checkpoint_every values to measure (default 1,25)",
    )
    p.add_argument("--epochs", type=int, default=5, help="epochs per timed run (default 5)")
    add_common_args(p, repeats=3, warmup=1)
    return p


def base_config(device: torch.device, root: str) -> dict:
    """Fashion-MNIST 100/class when installed, else shapes with 1000 training images."""
    from rlmix.data.mnist import find_files

    if find_files("fashion_mnist", root) is not None:
        data = {"name": "fashion_mnist", "root": root, "train_per_class": 100}
    else:
        data = {"name": "shapes", "root": root, "options": {"train_size": 1000, "test_size": 500}}
    return {
        "data": data,
        "model": {"name": "resnet_tiny", "options": {"widths": [32, 64, 128]}},
        "trainer": {"batch_size": 100, "device": str(device)},
        "env": {"reward": "none", "eval_every": 10_000, "eval_fgsm": False},
        "mix": {"mixer": "none"},
        "policy": "vanilla",
    }


def bare_steps(cfg, steps: int = 10) -> float:
    """Seconds for ``steps`` training steps on a fresh trainer (after one warm-up step)."""
    from rlmix.trainer import Trainer

    t = Trainer(cfg)
    t.begin_epoch()
    batch = t.observe(saliency=False)
    t.train_step(*t.mix(batch, None)[:2])
    start = time.perf_counter()
    for _ in range(steps):
        batch = t.observe(saliency=False)
        t.train_step(*t.mix(batch, None)[:2])
    return time.perf_counter() - start


def epoch_seconds(cfg) -> float:
    """Median end-to-end epoch time of a short ``rlmix.train`` run (last, evaluated, excluded)."""
    from rlmix.train import train_fixed

    train_fixed(cfg, progress=False)
    times = json.loads((Path(cfg.out) / "timings.json").read_text())["epoch_time_s"]
    return median(times[1:-1])


def run(args: argparse.Namespace, device: torch.device) -> dict:
    from rlmix.config import load_config

    cadences = [int(c) for c in args.checkpoint_every.split(",")]
    print(f"[boundary] {header_line(device)}", flush=True)
    bare: list[float] = []
    epochs: dict[int, list[float]] = {c: [] for c in cadences}
    with tempfile.TemporaryDirectory(prefix="rlmix-bench-") as tmp:
        base = base_config(device, str(Path("data").resolve()))
        for i in range(args.warmup + args.repeats):
            timed = i >= args.warmup
            step_cfg = load_config(base, {"out": f"{tmp}/steps", "trainer.epochs": 1})
            s = bare_steps(step_cfg)
            for c in cadences:
                cfg = load_config(
                    base,
                    {"out": f"{tmp}/run{i}_{c}", "trainer.epochs": args.epochs,
                     "trainer.checkpoint_every": c},
                )  # fmt: skip
                e = epoch_seconds(cfg)
                if timed:
                    epochs[c].append(e)
            if timed:
                bare.append(s)
            print(f"  repeat {i + 1}/{args.warmup + args.repeats}", flush=True)
    steps_s = median(bare)
    rows = []
    for c in cadences:
        e = median(epochs[c])
        rows.append(
            {"checkpoint_every": c, "epoch_s": e, "steps_s": steps_s, "overhead": 1 - steps_s / e}
        )
    table = format_table(
        ("checkpoint every", "10 bare steps s", "epoch s", "overhead"),
        [
            [
                r["checkpoint_every"],
                f"{r['steps_s']:.3f}",
                f"{r['epoch_s']:.3f}",
                f"{100 * r['overhead']:.1f}%",
            ]
            for r in rows
        ],  # fmt: skip
        left=2,
    )
    targets = [
        Target(
            f"epoch-boundary overhead, checkpoint every {r['checkpoint_every']} epochs",
            100 * r["overhead"],
            100 * LIMIT,
            unit="%",
        )
        for r in rows
        if r["checkpoint_every"] != 1
    ]
    return report(NAME, args, device, table, rows, targets)


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = parse(build_parser, argv)
    try:
        if min(int(c) for c in args.checkpoint_every.split(",")) < 1:
            raise ValueError
    except ValueError:
        p.error("--checkpoint-every takes comma-separated integers >= 1")
    if args.epochs < 3:
        p.error("--epochs must be >= 3 (the first and the last are not timed)")
    return run(args, device)


main = main_of(execute)

if __name__ == "__main__":
    sys.exit(main())
