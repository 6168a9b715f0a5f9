"""Mixing operators alone (no model): ours vs torchvision's and vs the reference threshold.

    python -m benchmarks.bench_mix                                  # B 32/100/256 x S 32/64/224
    python -m benchmarks.bench_mix --batches 100 --sides 32 --repeats 20
    python -m benchmarks.bench_mix --device cuda --step-ms 12.5

On the same images (B, 3, S, S), labels and saliency maps (B, S, S), per call:

- ``rmix``: draw lam, perm, grid and q, ``pool_saliency`` to the grid, ``rlmix.mixing.rmix``
  (what the trainer does once the saliency is known);
- ``reference``: the same draws and pooling, then :func:`reference_threshold_rmix`: the reference
  code's thresholding (an O(B^2) table of quantiles, see there) and a plain float-mask blend;
- ``cutmix`` / ``mixup``: draw lam and perm, ``rlmix.mixing.cutmix`` / ``mixup``;
- ``tv_cutmix`` / ``tv_mixup``: ``torchvision.transforms.v2.CutMix`` / ``MixUp`` called on
  (images, int labels) with ``num_classes``: they draw lam (and the box) themselves and pair
  image i with i - 1 (``roll``).

Before timing, every size checks that the reference thresholds give exactly the same masks as
``rlmix.mixing.topk_masks`` and the same mixed batch up to float rounding. A sample is the mean
of enough calls to last about 20 ms; the figure is the median sample, in milliseconds per call,
the variants alternating within every repeat.

Targets, at every size: ``rmix`` <= 1.5x ``tv_cutmix``, and ``rmix`` <= 3 % of a vanilla
PreActResNet-18 training step on the same batch. That step is measured here once at batch 100,
32 x 32 (or given with ``--step-ms``) and scaled by B * S^2 (the network's work is linear in the
pixels) for the other sizes, so those are estimates.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from benchmarks import common
from rlmix.mixing import one_hot, rmix, sample_lam, sample_perm, sample_q, topk_masks
from rlmix.saliency import pool_saliency

NAME = "mix"
VARIANTS = ("rmix", "reference", "cutmix", "mixup", "tv_cutmix", "tv_mixup")
TV_LIMIT = 1.5  # rmix / torchvision CutMix
SHARE_LIMIT = 0.03  # rmix / vanilla PreActResNet-18 step
STEP_BATCH, STEP_SIDE = 100, 32  # where the PreActResNet-18 step is measured


# -- the reference code's threshold, written out ------------------------------------------------


def reference_thresholds(pooled: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-image thresholds (B,) as the reference R-Mix code computes them.

    It calls ``torch.quantile`` on the flattened maps with the whole vector of the batch's q, so
    every image's quantile is taken at every image's q: a (B, B) table (row k: all images at
    ``q[k]``), of which only the diagonal, image i at its own ``q[i]``, is used. O(B^2) work and
    memory where O(B) suffices.
    """
    flat = pooled.reshape(pooled.shape[0], -1)
    table = torch.quantile(flat, q.to(device=flat.device, dtype=flat.dtype), dim=1)
    return table.diagonal()


def reference_masks(pooled: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Top-salient cell masks, bool (B, gh, gw), from :func:`reference_thresholds`."""
    return pooled >= reference_thresholds(pooled, q)[:, None, None]


def reference_threshold_rmix(
    x: torch.Tensor,
    y: torch.Tensor,
    pooled: torch.Tensor,
    q: torch.Tensor,
    lam: float,
    perm: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """R-Mix with the reference thresholding and a plain float-mask blend (paper eqs. 4-7).

    Masks from :func:`reference_masks`, nearest-upsampled to pixels as float maps with
    ``F.interpolate``; ``x' = m_inter (lam x_i + (1 - lam) x_j) + (1 - m_inter) (mask_i x_i +
    mask_j x_j)``; labels weighted by the pixel fractions of the three regions. Same arguments
    and results as :func:`rlmix.mixing.rmix` (up to float rounding).
    """
    h, w = x.shape[2:]
    mask = reference_masks(pooled, q).to(x.dtype)[:, None]
    mask = F.interpolate(mask, size=(h, w), mode="nearest")  # (B, 1, H, W)
    partner = mask[perm]
    inter = (mask == partner).to(x.dtype)
    x_j = x[perm]
    x_mix = inter * (lam * x + (1 - lam) * x_j) + (1 - inter) * (mask * x + partner * x_j)
    f_inter = inter.mean(dim=(1, 2, 3))
    f_i = ((1 - inter) * mask).mean(dim=(1, 2, 3))
    f_j = ((1 - inter) * partner).mean(dim=(1, 2, 3))
    w_i = (f_inter * lam + f_i)[:, None]
    w_j = (f_inter * (1 - lam) + f_j)[:, None]
    return x_mix, w_i * y + w_j * y[perm]


# -- the benchmark ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = common.new_parser(
        "bench_mix",
        "Median time (ms per call) of the mixing operators alone: rlmix's R-Mix, "
        "CutMix and Mixup, torchvision's v2 CutMix and MixUp, and R-Mix with the reference "
        "code's O(B^2) threshold, over a grid of batch sizes and image sides.",
        repeats=7,
        warmup=1,
    )
    p.add_argument("--batches", default="32,100,256", help="batch sizes (default 32,100,256)")
    p.add_argument("--sides", default="32,64,224", help="image sides S (default 32,64,224)")
    p.add_argument("--num-classes", type=int, default=100, help="classes N (default 100)")
    p.add_argument("--grids", default="2,4", help="R-Mix grids drawn per call (default 2,4)")
    p.add_argument("--k", type=int, default=10, help="size of the top-k space (default 10)")
    p.add_argument(
        "--step-ms",
        type=float,
        help="vanilla PreActResNet-18 step (ms) at batch 100, 32x32 on this device; measured "
        "here when not given",
    )
    p.add_argument(
        "--no-step", action="store_true", help="skip the PreActResNet-18 step and its target"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data and draws (default 0)")
    return p


def check_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    sal: torch.Tensor,
    grids: tuple[int, ...],
    k: int,
    gen: torch.Generator,
    draws: int = 3,
) -> bool:
    """True when the reference masks equal ``topk_masks`` and the mixes agree, over ``draws``."""
    b, device = x.shape[0], x.device
    for _ in range(draws):
        for grid in grids:
            lam, perm = sample_lam(1.0, gen), sample_perm(b, gen, device=device)
            pooled = pool_saliency(sal, grid)
            q = sample_q(b, k, gen).to(device)
            if not torch.equal(reference_masks(pooled, q), topk_masks(pooled, q)):
                return False
            ours = rmix(x, y, pooled, q, lam, perm)
            ref = reference_threshold_rmix(x, y, pooled, q, lam, perm)
            for a, r in zip(ours, ref, strict=True):
                if not torch.allclose(a, r, rtol=0, atol=1e-5):
                    return False
    return True


def bench_size(b: int, s: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Median ms per call of every variant at batch ``b``, side ``s``."""
    n, k = args.num_classes, args.k
    grids = tuple(g for g in (int(t) for t in args.grids.split(",")) if s % g == 0)
    x, labels, gen = common.random_batch(b, s, n, args.seed, device)  # seeds torchvision's too
    y = one_hot(labels, n)
    sal = torch.rand(b, s, s, generator=gen).to(device)
    same = check_reference(x, y, sal, grids, k, gen)
    tv_cutmix, tv_mixup = v2.CutMix(num_classes=n), v2.MixUp(num_classes=n)
    draws = common.MixDraws(x, y, gen, grids, k)
    fns: dict[str, Callable[[], object]] = {
        "rmix": lambda: draws.rmix(sal),
        "reference": lambda: draws.rmix(sal, reference_threshold_rmix),
        "cutmix": draws.cutmix,
        "mixup": draws.mixup,
        "tv_cutmix": lambda: tv_cutmix(x, labels),
        "tv_mixup": lambda: tv_mixup(x, labels),
    }
    timer = common.make_timer(device)
    number = {}
    for key, fn in fns.items():  # first call untimed, then one timed call to size the samples
        fn()
        number[key] = common.calls_per_sample(timer(fn) / 1e3)
    samples = common.time_alternating(
        fns, repeats=args.repeats, warmup=args.warmup, device=device, number=number
    )
    med = common.medians(samples)
    return {
        "batch_size": b,
        "side": s,
        "masks_identical": same,
        **{f"{key}_ms": v for key, v in med.items()},
        "rmix_over_tv_cutmix": med["rmix"] / med["tv_cutmix"],
        "reference_over_rmix": med["reference"] / med["rmix"],
        "cutmix_over_tv_cutmix": med["cutmix"] / med["tv_cutmix"],
        "mixup_over_tv_mixup": med["mixup"] / med["tv_mixup"],
        "calls_per_sample": number,
        "spread": {key: common.spread(v) for key, v in samples.items()},
        "samples_ms": samples,
    }


def measure_step_ms(device: torch.device, seed: int = 0) -> float:
    """Median vanilla PreActResNet-18 training step (ms), batch 100, 32x32, 100 classes: the
    step of :mod:`benchmarks.bench_step`."""
    from rlmix.models import create_model

    x, labels, _ = common.random_batch(STEP_BATCH, STEP_SIDE, 100, seed, device)
    step = common.training_step(create_model("preactresnet18", 100).to(device), device)
    y = one_hot(labels, 100)
    repeats = 3 if device.type == "cpu" else 20
    samples = common.time_alternating(
        {"step": lambda: step(x, y)}, repeats=repeats, warmup=1, device=device
    )
    return common.medians(samples)["step"]


def step_estimate_ms(step_ms: float, b: int, s: int) -> float:
    """The vanilla step scaled from batch 100, 32x32 to batch b, side s (work ~ B * S^2)."""
    return step_ms * (b / STEP_BATCH) * (s / STEP_SIDE) ** 2


HEADERS = (
    "B",
    "S",
    "rmix",
    "reference",
    "cutmix",
    "mixup",
    "tv CutMix",
    "tv MixUp",
    "rmix/tvCut",
    "ref/rmix",
    "cut/tvCut",
    "mixup/tvMix",
    "rmix/PRN18 step",
    "same masks",
)


def table_rows(rows: list[dict], step_ms: float | None) -> list[list[object]]:
    out = []
    for r in rows:
        b, s = r["batch_size"], r["side"]
        share = "-"
        if step_ms is not None:
            est = "" if (b, s) == (STEP_BATCH, STEP_SIDE) else "~"
            share = f"{est}{100 * r['rmix_ms'] / step_estimate_ms(step_ms, b, s):.3f}%"
        out.append(
            [
                b,
                s,
                *(f"{r[f'{v}_ms']:.3g}" for v in VARIANTS),
                f"{r['rmix_over_tv_cutmix']:.2f}x",
                f"{r['reference_over_rmix']:.2f}x",
                f"{r['cutmix_over_tv_cutmix']:.2f}x",
                f"{r['mixup_over_tv_mixup']:.2f}x",
                share,
                "yes" if r["masks_identical"] else "NO",
            ]
        )
    return out


def targets_for(rows: list[dict], step_ms: float | None) -> list[common.Target]:
    out = []
    for r in rows:
        b, s = r["batch_size"], r["side"]
        out.append(
            common.Target(f"R-Mix op / tv CutMix, B={b} S={s}", r["rmix_over_tv_cutmix"], TV_LIMIT)
        )
    if step_ms is not None:
        for r in rows:
            b, s = r["batch_size"], r["side"]
            measured = (b, s) == (STEP_BATCH, STEP_SIDE)
            out.append(
                common.Target(
                    f"R-Mix op / vanilla PreActResNet-18 step, B={b} S={s}",
                    100 * r["rmix_ms"] / step_estimate_ms(step_ms, b, s),
                    100 * SHARE_LIMIT,
                    unit="%",
                    note="measured step" if measured else "step scaled from B=100 S=32",
                )
            )
    return out


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Run the benchmark, print its table and targets; returns the results."""
    batches = [int(t) for t in args.batches.split(",")]
    sides = [int(t) for t in args.sides.split(",")]
    print(f"[mix] ms per call, {common.header_line(device)}", flush=True)
    step_ms = None if args.no_step else args.step_ms
    if step_ms is None and not args.no_step:
        start = time.perf_counter()
        step_ms = measure_step_ms(device, args.seed)
        print(
            f"  vanilla PreActResNet-18 step, batch 100, 32x32: {step_ms:.1f} ms "
            f"(measured in {time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    rows = []
    for b in batches:
        for s in sides:
            rows.append(bench_size(b, s, args, device))
            r = rows[-1]
            print(
                f"  B={b} S={s}: rmix {r['rmix_ms']:.3g} ms, tv CutMix {r['tv_cutmix_ms']:.3g} ms",
                flush=True,
            )
    table = common.format_table(HEADERS, table_rows(rows, step_ms))
    results = {"step_ms": step_ms, "rows": rows}
    return common.report(NAME, args, device, table, results, targets_for(rows, step_ms))


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse(build_parser, argv)
    try:
        batches = [int(t) for t in args.batches.split(",")]
        sides = [int(t) for t in args.sides.split(",")]
        grids = [int(t) for t in args.grids.split(",")]
    except ValueError:
        p.error("--batches, --sides and --grids take comma-separated integers")
    if min(batches) < 2 or min(sides) < 1 or min(grids) < 1 or args.k < 1:
        p.error("batch sizes must be >= 2, sides, grids and --k >= 1")
    bad = [s for s in sides if not any(s % g == 0 for g in grids)]
    if bad:
        p.error(f"no grid in --grids divides the side(s) {bad}")
    return run(args, device)


main = common.main_of(execute)


if __name__ == "__main__":
    sys.exit(main())
