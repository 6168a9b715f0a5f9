"""Peak memory of plain training, R-Mix and RL-Mix, each in a fresh process.

    python -m benchmarks.bench_memory                          # resnet_tiny, preactresnet18:2
    python -m benchmarks.bench_memory --models resnet_tiny --epochs 2
    python -m benchmarks.bench_memory --device cuda

Peak resident memory is per process, so every variant runs in its own subprocess (``python -m
benchmarks.bench_memory --worker ...``) that builds what that training command would (the env,
and for RL-Mix the PPO agent), runs ``--epochs`` epochs exactly as :mod:`benchmarks.bench_env`
does, and reports:

- ``peak_rss_mib``: the process's high-water resident set (``VmHWM`` in ``/proc/self/status``,
  else ``resource.getrusage`` ``ru_maxrss``), MiB, imports and data included;
- ``setup_rss_mib``: the resident set after building, before the first epoch, MiB;
- ``cuda_peak_mib``: ``torch.cuda.max_memory_allocated`` on a GPU, MiB.

Variants as in :mod:`benchmarks.bench_env`: vanilla (``env.reward=none``), rmix (random top-k),
rlmix (PPO: one ``learn`` call per epoch, update included); a model written ``name:N`` runs short
epochs of N steps without evaluation. Each worker imports only what its command needs (the R-Mix
process does not load Stable-Baselines3), as the real commands do.

Target: RL-Mix peak <= 1.3x R-Mix peak (resident memory; GPU memory too on CUDA).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import common

NAME = "memory"
VARIANTS = ("vanilla", "rmix", "rlmix")
LIMIT = 1.3  # RL-Mix peak / R-Mix peak


def build_parser() -> argparse.ArgumentParser:
    p = common.env_parser(
        "bench_memory",
        "Peak memory (MiB) of plain training, R-Mix and RL-Mix, each variant in a "
        "fresh subprocess running the same epochs through the environment.",
        repeats=1,
        warmup=0,
        amp=True,
        repeats_help="(here: processes per variant, the median peak is reported; default 1)",
        warmup_help="(unused here: a process's peak counts from its start)",
    )
    p.add_argument("--epochs", type=int, default=1, help="epochs per process (default 1)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per process (default 600)")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    return p


def rss_mib(field: str = "VmHWM") -> float:
    """A memory field of ``/proc/self/status`` in MiB (VmHWM: peak, VmRSS: now).

    Falls back to ``ru_maxrss`` (KiB on Linux, bytes on macOS) for the peak elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def worker(args: argparse.Namespace, device: torch.device) -> dict:
    """Runs inside the subprocess: build one variant, run its epochs, measure."""
    import tempfile

    ((model, short),) = common.parse_models(args.model)
    with tempfile.TemporaryDirectory(prefix="rlmix-bench-") as root:
        cfg = common.env_config(model, short, args, device, root)
        start = time.perf_counter()
        epoch, _ = common.epoch_runner(args.worker, cfg)
        setup = rss_mib("VmRSS")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.epochs):
            epoch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out = {
            "variant": args.worker,
            "model": args.model,
            "peak_rss_mib": rss_mib("VmHWM"),
            "setup_rss_mib": setup,
            "wall_s": time.perf_counter() - start,
        }
        if device.type == "cuda":
            out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def spawn(variant: str, model: str, args: argparse.Namespace) -> dict:
    """Run one worker subprocess and return its JSON result."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_memory",
        "--worker",
        variant,
        "--model",
        model,
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
    ]
    if args.amp:
        cmd.append("--amp")
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    for o in args.overrides:
        cmd += ["--set", o]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=args.timeout,
        env=common.subprocess_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"memory worker {variant}/{model} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    """The run with the median peak RSS (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["peak_rss_mib"])
    return {**ordered[(len(ordered) - 1) // 2], "processes": len(runs)}


HEADERS = ("model", "variant", "peak RSS MiB", "after setup MiB", "epoch growth MiB", "CUDA peak")


def table_rows(rows: list[dict]) -> list[list[object]]:
    return [
        [
            r["model"],
            r["variant"],
            f"{r['peak_rss_mib']:.0f}",
            f"{r['setup_rss_mib']:.0f}",
            f"{r['peak_rss_mib'] - r['setup_rss_mib']:.0f}",
            f"{r['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in r else "-",
        ]
        for r in rows
    ]


def targets_for(rows: list[dict]) -> list[common.Target]:
    by = {(r["model"], r["variant"]): r for r in rows}
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        rl, rm = by.get((model, "rlmix")), by.get((model, "rmix"))
        if rl is None or rm is None:
            continue
        out.append(
            common.Target(
                f"RL-Mix peak RSS / R-Mix peak RSS, {model}",
                rl["peak_rss_mib"] / rm["peak_rss_mib"],
                LIMIT,
            )
        )
        if "cuda_peak_mib" in rl and "cuda_peak_mib" in rm and rm["cuda_peak_mib"] > 0:
            out.append(
                common.Target(
                    f"RL-Mix CUDA peak / R-Mix CUDA peak, {model}",
                    rl["cuda_peak_mib"] / rm["cuda_peak_mib"],
                    LIMIT,
                )
            )
    return out


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Spawn every (model, variant) process, print the table and targets; returns the results."""
    print(f"[memory] {args.epochs} epoch(s) per process, {common.header_line(device)}", flush=True)
    rows = []
    for name, short in common.parse_models(args.models):
        model = name if short is None else f"{name}:{short}"
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:  # alternate, like the timed benchmarks
                runs[variant].append(spawn(variant, model, args))
                r = runs[variant][-1]
                print(
                    f"  {model} {variant}: peak {r['peak_rss_mib']:.0f} MiB ({r['wall_s']:.0f} s)",
                    flush=True,
                )
        for variant in VARIANTS:
            rows.append(_median_run(runs[variant]))
    table = common.format_table(HEADERS, table_rows(rows), left=2)
    return common.report(NAME, args, device, table, rows, targets_for(rows))


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse_env(build_parser, argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.worker:
        result = worker(args, device)
        print(json.dumps(result), flush=True)
        return result
    return run(args, device)


main = common.main_of(execute)


if __name__ == "__main__":
    sys.exit(main())
