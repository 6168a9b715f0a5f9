"""Time a vanilla training step against an R-Mix step, on the same batch in one process.

    python -m benchmarks.bench_step                                  # resnet_tiny, preactresnet18
    python -m benchmarks.bench_step --models resnet_tiny --repeats 20 --json bench.json

Vanilla step: forward + backward + SGD step on a clean batch. R-Mix step: input saliency (a
forward and an input-only backward), sampling lam / perm / grid / q, pooling, ``rmix``, then the
same forward + backward + SGD step on the mixed batch. The mixing op (sampling + pooling + rmix,
no model call) is timed on its own. Each figure is the median over ``--repeats`` after
``--warmup`` untimed runs; the three measurements alternate within a repeat so that drift in the
machine's speed hits them alike. Times are wall-clock (``time.perf_counter``), in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rlmix.losses import soft_ce
from rlmix.mixing import one_hot, rmix, sample_grid, sample_lam, sample_perm, sample_q
from rlmix.models import create_model, list_models
from rlmix.saliency import input_saliency, pool_saliency


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_step",
        description="Median step time of vanilla training vs R-Mix training on one batch.",
    )
    p.add_argument("--models", default="resnet_tiny,preactresnet18", help="comma-separated names")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--grids", default="2,4", help="mixing grids drawn per step, default 2,4")
    p.add_argument("--saliency-mode", choices=("train", "eval"), default="train")
    p.add_argument("--warmup", type=int, default=2, help="untimed repeats first, default 2")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats, default 10")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs ``fn`` once and returns its wall time in ms (synchronising CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(fn: Callable[[], object]) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return (time.perf_counter() - start) * 1e3

    return run


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Median times (ms) of the vanilla step, the R-Mix step and its parts for one model."""
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    b, s, n = args.batch_size, args.image_size, args.num_classes
    grids = tuple(int(g) for g in args.grids.split(","))
    model = create_model(name, n).to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    x = torch.rand(b, 3, s, s, generator=gen).to(device)
    labels = torch.randint(n, (b,), generator=gen).to(device)
    y = one_hot(labels, n)

    def train_step(x_in: torch.Tensor, y_in: torch.Tensor) -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        soft_ce(model(x_in), y_in).backward()
        opt.step()

    def saliency() -> torch.Tensor:
        return input_saliency(model, x, labels, mode=args.saliency_mode)[0]

    def mix(sal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = sample_lam(1.0, gen)
        perm = sample_perm(b, gen, device=device)
        pooled = pool_saliency(sal, sample_grid(grids, gen))
        return rmix(x, y, pooled, sample_q(b, 10, gen).to(device), lam, perm)

    def rmix_step() -> None:
        train_step(*mix(saliency()))

    fixed_sal = saliency()
    timed = {
        "vanilla": lambda: train_step(x, y),
        "rmix": rmix_step,
        "saliency": saliency,
        "mixing": lambda: mix(fixed_sal),
    }
    run = _timer(device)
    samples: dict[str, list[float]] = {k: [] for k in timed}
    for i in range(args.warmup + args.repeats):
        for key, fn in timed.items():
            ms = run(fn)
            if i >= args.warmup:
                samples[key].append(ms)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "vanilla_ms": med["vanilla"],
        "rmix_ms": med["rmix"],
        "ratio": med["rmix"] / med["vanilla"],
        "saliency_ms": med["saliency"],
        "mixing_ms": med["mixing"],
        "mixing_share": med["mixing"] / med["vanilla"],
        "samples_ms": samples,
    }


HEADER = (
    f"{'model':<16}{'params':>11}{'vanilla ms':>12}{'rmix ms':>10}{'ratio':>8}"
    f"{'saliency ms':>13}{'mixing ms':>11}{'mix/vanilla':>13}"
)


def format_row(r: dict) -> str:
    return (
        f"{r['model']:<16}{r['params']:>11,}{r['vanilla_ms']:>12.1f}{r['rmix_ms']:>10.1f}"
        f"{r['ratio']:>7.2f}x{r['saliency_ms']:>13.1f}{r['mixing_ms']:>11.2f}"
        f"{100 * r['mixing_share']:>12.2f}%"
    )


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in list_models()]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(list_models())}")
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--repeats and --batch-size must be >= 1 and --warmup >= 0")
    device = torch.device(args.device)
    print(
        f"batch {args.batch_size}x3x{args.image_size}x{args.image_size}, {args.num_classes} "
        f"classes, device {device}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, median of {args.repeats} after {args.warmup} warm-up",
        flush=True,
    )
    print(HEADER + "\n" + "-" * len(HEADER), flush=True)
    rows = []
    for name in names:
        rows.append(bench_model(name, args, device))
        print(format_row(rows[-1]), flush=True)
    if args.json:
        info = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "args": vars(args),
            "results": rows,
        }
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
