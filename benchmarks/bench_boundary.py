"""Epoch-boundary overhead: a short epoch end to end against the training steps inside it.

    python -m benchmarks.bench_boundary                  # Fashion-MNIST 100/class (or shapes)
    python -m benchmarks.bench_boundary --repeats 5 --checkpoint-every 1,10

The regime of the headline study: 10-step epochs (1000 training images, batch 100), resnet_tiny
with widths 32-64-128, vanilla (no saliency pass), evaluation off between epochs. Each repeat
runs ``rlmix.train`` for a few epochs at every ``--checkpoint-every`` value. An epoch's time is
end to end (``timings.json``; the first epoch and the last, which evaluates, excluded), so it
includes the env and callbacks, the snapshot for rewinding, reseeding, the loader, logging and
the checkpoint when one is due. Its bare steps are the time the same run spent inside
``Trainer.observe``, ``Trainer.mix`` and ``Trainer.train_step`` during that epoch (timed in
place: on a shared machine a separately timed block of steps drifts more than the overhead).
Overhead = 1 - (bare steps) / epoch, the median over epochs and repeats.

Target: overhead <= 10 % of a 10-step epoch with the default checkpoint cadence of the study
(``trainer.checkpoint_every`` 25; 1 is measured too).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks import common

NAME = "boundary"
LIMIT = 0.10  # epoch-boundary overhead / epoch


def build_parser() -> argparse.ArgumentParser:
    p = common.new_parser(
        "bench_boundary",
        "Epoch-boundary overhead of a 10-step epoch against its bare steps.",
        repeats=3,
        warmup=1,
    )
    p.add_argument(
        "--checkpoint-every",
        default="1,25",
        help="trainer.checkpoint_every values to measure (default 1,25)",
    )
    p.add_argument("--epochs", type=int, default=8, help="epochs per timed run (default 8)")
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


@contextlib.contextmanager
def step_timer() -> Iterator[list[tuple[float, float]]]:
    """Patch the trainer's step methods and the run log; yields ``(epoch s, steps s)`` pairs,
    one per epoch, steps s being the time spent in observe, mix and train_step."""
    from rlmix.runlog import RunLog
    from rlmix.trainer import Trainer

    inside = [0.0]
    epochs: list[tuple[float, float]] = []

    def timed(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                inside[0] += time.perf_counter() - start

        return wrapper

    def end_epoch(self, row, seconds):
        epochs.append((seconds, inside[0]))
        inside[0] = 0.0
        return original_end(self, row, seconds)

    original_end = RunLog.end_epoch
    names = ("observe", "mix", "train_step")
    originals = {n: getattr(Trainer, n) for n in names}
    try:
        for n in names:
            setattr(Trainer, n, timed(originals[n]))
        RunLog.end_epoch = end_epoch
        yield epochs
    finally:
        for n in names:
            setattr(Trainer, n, originals[n])
        RunLog.end_epoch = original_end


def epoch_overheads(cfg) -> list[tuple[float, float]]:
    """``(epoch s, steps s)`` of a short ``rlmix.train`` run, first and last epoch excluded."""
    from rlmix.train import train_fixed

    with step_timer() as epochs:
        train_fixed(cfg, progress=False)
    return epochs[1:-1]


def run(args: argparse.Namespace, device: torch.device) -> dict:
    from rlmix.config import load_config

    cadences = [int(c) for c in args.checkpoint_every.split(",")]
    print(f"[boundary] {common.header_line(device)}", flush=True)
    epochs: dict[int, list[tuple[float, float]]] = {c: [] for c in cadences}
    with tempfile.TemporaryDirectory(prefix="rlmix-bench-") as tmp:
        base = base_config(device, str(Path("data").resolve()))
        for i in range(args.warmup + args.repeats):
            for c in cadences:
                cfg = load_config(
                    base,
                    {"out": f"{tmp}/run{i}_{c}", "trainer.epochs": args.epochs,
                     "trainer.checkpoint_every": c},
                )  # fmt: skip
                pairs = epoch_overheads(cfg)
                if i >= args.warmup:
                    epochs[c].extend(pairs)
            print(f"  repeat {i + 1}/{args.warmup + args.repeats}", flush=True)
    rows = [
        {
            "checkpoint_every": c,
            "epoch_s": common.median([e for e, _ in epochs[c]]),
            "steps_s": common.median([s for _, s in epochs[c]]),
            "overhead": common.median([1 - s / e for e, s in epochs[c]]),
            "epochs_timed": len(epochs[c]),
        }
        for c in cadences
    ]
    table = common.format_table(
        ("checkpoint every", "epochs timed", "bare steps s", "epoch s", "overhead"),
        [
            [
                r["checkpoint_every"],
                r["epochs_timed"],
                f"{r['steps_s']:.3f}",
                f"{r['epoch_s']:.3f}",
                f"{100 * r['overhead']:.1f}%",
            ]
            for r in rows
        ],  # fmt: skip
        left=2,
    )
    targets = [
        common.Target(
            f"epoch-boundary overhead, checkpoint every {r['checkpoint_every']} epochs",
            100 * r["overhead"],
            100 * LIMIT,
            unit="%",
        )
        for r in rows
        if r["checkpoint_every"] != 1
    ]
    return common.report(NAME, args, device, table, rows, targets)


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse(build_parser, argv)
    try:
        if min(int(c) for c in args.checkpoint_every.split(",")) < 1:
            raise ValueError
    except ValueError:
        p.error("--checkpoint-every takes comma-separated integers >= 1")
    if args.epochs < 3:
        p.error("--epochs must be >= 3 (the first and the last are not timed)")
    return run(args, device)


main = common.main_of(execute)

if __name__ == "__main__":
    sys.exit(main())
