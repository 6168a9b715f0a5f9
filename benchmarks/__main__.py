"""``python -m benchmarks`` (``make bench``): run every benchmark in turn, then a target summary.

    python -m benchmarks                                  # all, full settings (~10 min, 2-core CPU)
    python -m benchmarks --quick                          # smoke run, tiny repeats (~2 min)
    python -m benchmarks --device cuda --amp --json-dir out/
    python -m benchmarks --skip run,memory --json-dir benchmarks/results

Benchmarks (one module each, each also runnable alone with ``python -m benchmarks.bench_<name>
--help``): ``step`` (training step: vanilla / Mixup / CutMix / R-Mix), ``env`` (env epochs:
vanilla / R-Mix / RL-Mix), ``mix`` (mixing ops vs torchvision and the reference threshold),
``memory`` (peak memory, one process per variant), ``run`` (the default ``train_agent`` run),
``dist`` (env steps on 1 and 2 torchrun processes, and the agent's per-step exchange) and
``boundary`` (the epoch-boundary overhead of a 10-step epoch), ``rewards`` (each reward's
cost a step, without and with its counterfactual), ``loop`` (LearnedMix against RMix in a
plain training loop) and ``mixers`` (the paper's speed table: a training step with every mixer
of the comparison set against vanilla).
Benchmarks are not tests: they time things and report ratios measured in one process. With
``--json-dir DIR`` each writes ``DIR/<name>.json``, and ``DIR/summary.json`` collects every
target. The exit status is 1 if a benchmark failed (targets missed do not fail the run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from benchmarks import (
    bench_boundary,
    bench_distributed,
    bench_env,
    bench_loop,
    bench_memory,
    bench_mix,
    bench_mixers,
    bench_rewards,
    bench_run,
    bench_step,
)
from benchmarks.common import format_table, header_line, machine_info, resolve_device

BENCHES: dict[str, ModuleType] = {
    "step": bench_step,
    "env": bench_env,
    "mix": bench_mix,
    "memory": bench_memory,
    "run": bench_run,
    "dist": bench_distributed,
    "boundary": bench_boundary,
    "rewards": bench_rewards,
    "loop": bench_loop,
    "mixers": bench_mixers,
}
# Extra arguments per benchmark for --quick (smoke run: every code path, tiny repeats).
QUICK: dict[str, list[str]] = {
    "step": ["--repeats", "1", "--warmup", "0"],
    "env": ["--models", "resnet_tiny:2,preactresnet18:2", "--repeats", "1", "--warmup", "0"],
    "mix": ["--batches", "32,100", "--sides", "32,64", "--repeats", "1", "--warmup", "0"],
    "memory": ["--models", "resnet_tiny:2"],
    "run": ["--epochs", "1"],
    "dist": ["--steps", "3", "--warmup", "1"],
    "boundary": ["--repeats", "1", "--warmup", "0", "--epochs", "3"],
    "rewards": ["--repeats", "2", "--warmup", "0", "--rewards", "teach"],
    "loop": ["--repeats", "1", "--warmup", "0", "--batch-size", "20"],
    "mixers": ["--models", "resnet_tiny", "--batch-size", "20", "--repeats", "1", "--warmup", "0"],
}
AMP = {"step", "env", "memory", "rewards"}  # benchmarks that take --amp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the rlmix benchmarks in sequence (step, env, mix, memory, run, dist, "
        "boundary, rewards, loop, mixers) with "
        "their default settings, print each table and a summary of the targets.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: tiny repeats and short epochs")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N"
    )
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json-dir", metavar="DIR", help="write DIR/<name>.json and DIR/summary.json")
    p.add_argument(
        "--skip",
        default="",
        metavar="NAME[,NAME]",
        help=f"benchmarks to leave out, from {', '.join(BENCHES)}",
    )
    p.add_argument("--only", default="", metavar="NAME[,NAME]", help="run just these benchmarks")
    return p


def bench_argv(name: str, args: argparse.Namespace, step_ms: float | None) -> list[str]:
    """The command line one benchmark gets."""
    argv = ["--device", args.device]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.amp and name in AMP:
        argv.append("--amp")
    if args.json_dir:
        argv += ["--json", str(Path(args.json_dir) / f"{name}.json")]
    if name == "mix" and step_ms is not None:
        argv += ["--step-ms", f"{step_ms:.6g}"]
    if args.quick:
        argv += QUICK[name]
    return argv


def prn18_step_ms(results: dict) -> float | None:
    """The vanilla PreActResNet-18 step (ms) at batch 100, 32x32, if the step benchmark ran it."""
    for r in results.get("rows", []):
        if (r["model"], r["batch_size"], r["image_size"]) == ("preactresnet18", 100, 32):
            return float(r["vanilla_ms"])
    return None


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        p.error(str(e))
    names = _select(p, args)
    start = time.perf_counter()
    print(f"benchmarks: {', '.join(names)}; {header_line(device)}", flush=True)
    targets: list[dict] = []
    failed: list[str] = []
    step_ms: float | None = None
    for name in names:
        t0 = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        try:
            results = BENCHES[name].execute(bench_argv(name, args, step_ms))
        except (Exception, SystemExit):  # report it and go on with the other benchmarks
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
        if name == "step":
            step_ms = prn18_step_ms(results)
        targets += [{**t, "benchmark": name} for t in results.get("targets", [])]
    wall = time.perf_counter() - start
    print(f"\n=== targets ({wall / 60:.1f} min in all) ===", flush=True)
    rows = [
        [
            t["benchmark"],
            t["name"],
            _fmt(t["value"], t["unit"]),
            _fmt(t["limit"], t["unit"]),
            "met" if t["met"] else "NOT met",
        ]
        for t in targets
    ]
    print(format_table(("bench", "target", "value", "limit", "verdict"), rows, left=2))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    if args.json_dir:
        out = Path(args.json_dir) / "summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "machine": machine_info(device),
            "quick": args.quick,
            "wall_s": wall,
            "failed": failed,
            "targets": targets,
        }
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


def _select(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in skip + only if s not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    names = [n for n in BENCHES if (not only or n in only) and n not in skip]
    if not names:
        p.error("nothing left to run")
    return names


def _fmt(value: float, unit: str) -> str:
    return f"{value:.2f}x" if unit == "x" else f"{value:.3g} {unit}"


if __name__ == "__main__":
    sys.exit(main())
