"""Training-step time: vanilla, Mixup, CutMix and R-Mix on the same batch, in one process.

    python -m benchmarks.bench_step                          # resnet_tiny and preactresnet18
    python -m benchmarks.bench_step --models resnet_tiny --repeats 20 --json step.json
    python -m benchmarks.bench_step --device cuda --amp

Steps (batch ``--batch-size`` of 3 x S x S images, SGD with Nesterov momentum, soft-target CE):

- vanilla: forward + backward + optimiser step on the clean batch;
- mixup / cutmix: draw lam and perm (and the box), mix, then the same training step;
- rmix: input saliency (a forward and an input-only backward), draw lam / perm / grid / q, pool
  the saliency to the grid, ``rmix``, then the same training step.

Two parts of the R-Mix step are also timed on their own: ``saliency`` and ``mixing`` (drawing,
pooling and ``rmix``, no model call). All six alternate within every repeat. Figures are medians
in milliseconds; ratios are to the vanilla step.

Targets (PreActResNet-18, batch 100): R-Mix step <= 1.75x vanilla (the paper reports 2x), and
the mixing op <= 3 % of a vanilla step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from benchmarks import common
from rlmix import mixing
from rlmix.models import create_model, list_models
from rlmix.saliency import input_saliency

NAME = "step"
VARIANTS = ("vanilla", "mixup", "cutmix", "rmix", "saliency", "mixing")
RMIX_LIMIT = 1.75  # R-Mix step / vanilla step, PreActResNet-18
MIX_SHARE_LIMIT = 0.03  # mixing op / vanilla step, PreActResNet-18
TARGET_MODEL = "preactresnet18"


def build_parser() -> argparse.ArgumentParser:
    p = common.new_parser(
        "bench_step",
        "Median training-step time (ms) of vanilla, Mixup, CutMix and R-Mix on one "
        "batch, alternating within each repeat, with the R-Mix saliency and mixing parts.",
        repeats=None,
        warmup=None,
        amp=True,
        repeats_help="(default 20; 5 for models over 1M parameters on a CPU)",
        warmup_help="(default 3; 1 for models over 1M parameters on a CPU)",
    )
    common.add_models_arg(p, "resnet_tiny,preactresnet18")
    p.add_argument("--batch-size", type=int, default=100, help="images per step (default 100)")
    p.add_argument("--image-size", type=int, default=32, help="image side S in pixels (default 32)")
    p.add_argument("--num-classes", type=int, default=100, help="classes N (default 100)")
    p.add_argument("--grids", default="2,4", help="R-Mix grids drawn per step (default 2,4)")
    p.add_argument("--k", type=int, default=10, help="size of the top-k space (default 10)")
    p.add_argument(
        "--saliency-mode",
        choices=("train", "eval"),
        default="train",
        help="model mode of the saliency pass (default train)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data and draws (default 0)")
    return p


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Median times (ms) of every variant for one model, and the ratios to vanilla."""
    b, s, n = args.batch_size, args.image_size, args.num_classes
    x, labels, gen = common.random_batch(b, s, n, args.seed, device)
    y = mixing.one_hot(labels, n)
    model = create_model(name, n).to(device)
    params = sum(p.numel() for p in model.parameters())
    amp = bool(getattr(args, "amp", False))
    train_step = common.training_step(model, device, amp)
    grids = tuple(int(g) for g in args.grids.split(","))
    draws = common.MixDraws(x, y, gen, grids, args.k)

    def saliency() -> torch.Tensor:
        with common.autocast(device, amp):
            sal = input_saliency(model, x, labels, mode=args.saliency_mode)[0]
        return sal.float()

    fixed_sal = saliency()
    timed: dict[str, Callable[[], object]] = {
        "vanilla": lambda: train_step(x, y),
        "mixup": lambda: train_step(*draws.mixup()),
        "cutmix": lambda: train_step(*draws.cutmix()),
        "rmix": lambda: train_step(*draws.rmix(saliency())),
        "saliency": saliency,
        "mixing": lambda: draws.rmix(fixed_sal),
    }
    repeats, warmup = common.plan_repeats(args, params, device, (20, 3))
    samples = common.time_alternating(timed, repeats=repeats, warmup=warmup, device=device)
    med = common.medians(samples)
    van = med["vanilla"]
    return {
        "model": name,
        "params": params,
        "batch_size": b,
        "image_size": s,
        "repeats": repeats,
        "warmup": warmup,
        **{f"{k}_ms": v for k, v in med.items()},
        **{f"{k}_ratio": med[k] / van for k in ("mixup", "cutmix", "rmix")},
        "mixing_share": med["mixing"] / van,
        "spread": {k: common.spread(v) for k, v in samples.items()},
        "samples_ms": samples,
    }


HEADERS = (
    "model",
    "params",
    "vanilla ms",
    "mixup ms",
    "cutmix ms",
    "rmix ms",
    "rmix/van",
    "saliency ms",
    "mixing ms",
    "mix/van",
)


def table_rows(rows: list[dict]) -> list[list[object]]:
    return [
        [
            r["model"],
            f"{r['params']:,}",
            f"{r['vanilla_ms']:.1f}",
            f"{r['mixup_ms']:.1f} ({r['mixup_ratio']:.2f}x)",
            f"{r['cutmix_ms']:.1f} ({r['cutmix_ratio']:.2f}x)",
            f"{r['rmix_ms']:.1f}",
            f"{r['rmix_ratio']:.2f}x",
            f"{r['saliency_ms']:.1f}",
            f"{r['mixing_ms']:.2f}",
            f"{100 * r['mixing_share']:.2f}%",
        ]
        for r in rows
    ]


def targets_for(rows: list[dict]) -> list[common.Target]:
    out = []
    for r in rows:
        if r["model"] == TARGET_MODEL and r["batch_size"] == 100:
            out.append(
                common.Target(
                    "R-Mix step / vanilla step, PreActResNet-18", r["rmix_ratio"], RMIX_LIMIT
                )
            )
            out.append(
                common.Target(
                    "mixing op / vanilla step, PreActResNet-18",
                    100 * r["mixing_share"],
                    100 * MIX_SHARE_LIMIT,
                    unit="%",
                    note=f"batch 100, {r['image_size']}x{r['image_size']}",
                )
            )
    return out


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Run the benchmark, print its table and targets; returns the JSON document's results."""
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    print(
        f"[step] batch {args.batch_size}x3x{args.image_size}x{args.image_size}, "
        f"{args.num_classes} classes, amp {bool(args.amp) and device.type == 'cuda'}; "
        + common.header_line(device),
        flush=True,
    )
    rows = []
    for name in names:
        rows.append(bench_model(name, args, device))
        r = rows[-1]
        print(
            f"  {name}: median of {r['repeats']} after {r['warmup']} warm-up; "
            f"vanilla {r['vanilla_ms']:.1f} ms, rmix {r['rmix_ms']:.1f} ms",
            flush=True,
        )
    return common.report(
        NAME, args, device, common.format_table(HEADERS, table_rows(rows)), rows, targets_for(rows)
    )


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse(build_parser, argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in list_models()]
    if not names or unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(list_models())}")
    if args.batch_size < 2 or args.image_size < 1:
        p.error("--batch-size must be >= 2 and --image-size >= 1")
    grids = [int(g) for g in args.grids.split(",")]
    if any(g < 1 or args.image_size % g for g in grids):
        p.error(f"every grid in --grids must divide --image-size {args.image_size}")
    return run(args, device)


main = common.main_of(execute)


if __name__ == "__main__":
    sys.exit(main())
