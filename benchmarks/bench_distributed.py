"""Step time of the environment on 1 and N torchrun processes, and the agent's exchange cost.

    python -m benchmarks.bench_distributed                     # 1 and 2 processes, this CPU
    python -m benchmarks.bench_distributed --nprocs 1,2,4 --device cuda

For each process count N this launches ``torchrun --nproc_per_node=N`` on the embedded default
(R-Mix with random top-k, ``reward=none``, global batch ``--batch-size``) and times env steps
on rank 0 through :class:`envs.DistributedMixupEnv`, the same path the agent and the fixed
policies take. With N > 1 it also times the exchange alone: the op broadcast, the action
scatter, the reward all-reduce and the observation gather of one step, without training. CPU
threads are split evenly between processes (``OMP_NUM_THREADS`` = cores / N). Times are medians
of ``--steps`` steps after ``--warmup``, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_distributed",
        description="Env step time on 1..N torchrun processes and the per-step exchange cost.",
    )
    p.add_argument("--nprocs", default="1,2", help="comma-separated process counts")
    p.add_argument("--model", default="resnet_tiny", help="classifier (rlmix.models)")
    p.add_argument("--batch-size", type=int, default=100, help="global batch")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", default="cpu", help="trainer.device (cpu, cuda, auto)")
    p.add_argument("--threads", type=int, help="torch threads per process (default cores / N)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return p


def _median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def worker(args: argparse.Namespace) -> None:
    """Runs on every rank under torchrun; rank 0 writes ``args.worker``."""
    from envs import DistributedMixupEnv, MixupEnv, follow
    from rlmix import distributed
    from rlmix.config import load_config
    from rlmix.train import resolve_fixed_config

    d = distributed.setup()
    cfg = load_config(
        None,
        {
            "model.name": args.model,
            "trainer.batch_size": args.batch_size,
            "trainer.device": args.device,
            "env.reward": "none",
            "out": tempfile.mkdtemp(),
        },
    )
    env = MixupEnv(resolve_fixed_config(cfg, "rmix"))
    if not d.is_main:
        follow(env)
        _exchange(env, args.steps)
        distributed.teardown()
        return
    denv = DistributedMixupEnv(env) if d.enabled else env
    rng = np.random.default_rng(0)
    denv.reset(seed=0)
    times = []
    for i in range(args.warmup + args.steps):
        action = rng.integers(0, cfg.mix.k, size=denv.action_space.shape)
        start = time.perf_counter()
        truncated = denv.step(action)[3]
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
        if truncated:  # the default's epochs are short: go on into the next one
            denv.reset()
    if d.enabled:
        denv.close(0)
    result = {"nprocs": d.world_size, "step_ms": _median_ms(times)}
    if d.enabled:
        result["exchange_ms"] = _exchange(env, args.steps)
    args.worker.write_text(json.dumps(result))
    distributed.teardown()


def _exchange(env, repeats: int) -> float:
    """Median time of one step's collectives alone (rank 0's view), in milliseconds."""
    from envs.distributed_env import STEP
    from rlmix import distributed

    d = distributed.current()
    b = env.action_space.shape[0]
    width = env.cfg.env.obs_grid**2 + env.trainer.info.num_classes + 1  # + per-image reward
    local = torch.zeros(b, width, dtype=torch.float64)
    action = torch.zeros(b * d.world_size, dtype=torch.int64) if d.is_main else None
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        distributed.broadcast_ints([STEP, 0] if d.is_main else None, 2)
        distributed.scatter_interleaved(action, (b,), torch.int64)
        distributed.all_reduce_mean(torch.zeros(1, dtype=torch.float64))  # mean q
        distributed.gather_interleaved(local)
        times.append(time.perf_counter() - start)
    return _median_ms(times[3:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, nproc: int) -> dict:
    threads = args.threads or max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    backend = "gloo" if args.device == "cpu" or not torch.cuda.is_available() else "nccl"
    if backend == "nccl" and nproc > torch.cuda.device_count():
        backend = "gloo"  # NCCL needs one GPU per rank; gloo lets ranks share one
    if nproc > 1:
        env["RLMIX_DIST_BACKEND"] = backend
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
            "-m", "benchmarks.bench_distributed", "--worker", str(result),
            "--model", args.model, "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
        ]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"torchrun with {nproc} processes failed:\n{proc.stderr[-2000:]}")
        row = json.loads(result.read_text())
        return {**row, "threads_per_process": threads, "backend": backend if nproc > 1 else "-"}


def main(argv: list[str] | None = None) -> int:
    execute(argv)
    return 0


def execute(argv: list[str] | None = None) -> dict:
    """Run the benchmark (or, with ``--worker``, one rank of it); return the results."""
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        worker(args)
        return {}
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [launch(args, int(n)) for n in args.nprocs.split(",")]
    base = rows[0]["step_ms"]
    print(f"Env step, {args.model}, global batch {args.batch_size}, device {args.device}")
    print("| processes | backend | threads each | step (ms) | speed-up | exchange (ms) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ex = f"{r['exchange_ms']:.2f}" if "exchange_ms" in r else "-"
        print(
            f"| {r['nprocs']} | {r['backend']} | {r['threads_per_process']} | {r['step_ms']:.1f} | "
            f"{base / r['step_ms']:.2f}x | {ex} |"
        )
    if args.json:
        payload = {"config": vars(args), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return {"rows": rows, "targets": []}


if __name__ == "__main__":
    raise SystemExit(main())
