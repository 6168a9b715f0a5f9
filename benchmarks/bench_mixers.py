"""The paper's speed table on this machine: a training step with every mixer, against vanilla.

    python -m benchmarks.bench_mixers                        # resnet_tiny and preactresnet18
    python -m benchmarks.bench_mixers --models resnet_tiny --repeats 10 --json mixers.json
    python -m benchmarks.bench_mixers --plot docs/mixer_speed.png

One training step per call (batch ``--batch-size`` of 3 x S x S images, SGD with Nesterov
momentum, soft-target CE), done as the training engine does it (:class:`rlmix.trainer.Trainer`):
the clean batch's input saliency where the mixer reads it (R-Mix, PuzzleMix in eval mode,
Co-Mixup in train mode with its graph kept for the clean-batch loss), the mixer's draws and mix,
the forward (inside the mixer's hook for Manifold Mixup), the loss (plus ``clean_lam`` times the
clean loss for Co-Mixup) and the optimiser step. All variants alternate within every repeat;
figures are medians in ms and ratios of medians to the vanilla step. PuzzleMix and Co-Mixup need
gco-wrapper (``rlmix[graphcut]``) and are left out, saying so, without it.

Beside them, the paper's figures (section 4.5 and Table 5, GPUs): CIFAR-100 on one RTX 2080Ti,
Co-Mixup 15 h and R-Mix 4.0 h; "all else equal" Co-Mixup 15 h, PuzzleMix 27 h and Vanilla/CutMix
about 2.5 h; ImageNet on 4 GPUs, per batch vanilla 0.40 s, R-Mix 0.77 s and Co-Mixup 1.32 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import common
from rlmix.losses import soft_ce
from rlmix.mixing import create_mixer, one_hot, sample_q
from rlmix.models import create_model, list_models
from rlmix.saliency import input_saliency

NAME = "mixers"
MIXERS = (
    "vanilla",
    "mixup",
    "cutmix",
    "rmix",
    "saliencymix",
    "puzzlemix",
    "comixup",
    "manifold_mixup",
)
LABELS = {
    "vanilla": "Vanilla",
    "mixup": "Mixup",
    "cutmix": "CutMix",
    "rmix": "R-Mix",
    "saliencymix": "SaliencyMix",
    "puzzlemix": "PuzzleMix",
    "comixup": "Co-Mixup",
    "manifold_mixup": "Manifold Mixup",
}
GRAPH_CUT = ("puzzlemix", "comixup")
# The paper's step-time ratios to vanilla: CIFAR-100 wall time "all else equal" (vanilla / CutMix
# about 2.5 h, PuzzleMix 27 h, Co-Mixup 15 h; R-Mix 4.0 h on one RTX 2080Ti) and ImageNet
# (Table 5's speed column: 1/1 for Mixup, Manifold Mixup, CutMix; per batch vanilla 0.40 s,
# R-Mix 0.77 s, Co-Mixup 1.32 s; PuzzleMix 2.8/1).
PAPER_CIFAR = {"vanilla": 1.0, "cutmix": 1.0, "rmix": 4.0 / 2.5, "puzzlemix": 27 / 2.5,
               "comixup": 15 / 2.5}  # fmt: skip
PAPER_IMAGENET = {"vanilla": 1.0, "mixup": 1.0, "cutmix": 1.0, "manifold_mixup": 1.0,
                  "rmix": 0.77 / 0.40, "puzzlemix": 2.8, "comixup": 1.32 / 0.40}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = common.new_parser(
        "bench_mixers",
        "Median training-step time (ms) of vanilla, Mixup, CutMix, R-Mix, SaliencyMix, "
        "PuzzleMix, Co-Mixup and Manifold Mixup on one batch, alternating within each repeat, "
        "as ratios to vanilla beside the paper's.",
        repeats=None,
        warmup=None,
        repeats_help="(default 10; 5 for models over 1M parameters on a CPU)",
        warmup_help="(default 2; 1 for models over 1M parameters on a CPU)",
    )
    common.add_models_arg(p, "resnet_tiny,preactresnet18")
    p.add_argument("--batch-size", type=int, default=100, help="images per step (default 100)")
    p.add_argument("--image-size", type=int, default=32, help="image side S in pixels (default 32)")
    p.add_argument("--num-classes", type=int, default=100, help="classes N (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and draws (default 0)")
    p.add_argument("--plot", metavar="PNG", help="also draw the ratios as a bar chart to PNG")
    common.add_clock_arg(p)
    return p


def mixer_step(
    name: str, model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
) -> Callable[[], None]:
    """One training step of ``model`` with mixer ``name`` per call, as the engine runs it."""
    n = model.get_classifier().out_features
    y = one_hot(labels, n)
    mixer = create_mixer("none" if name == "vanilla" else name, seed=0)
    opt = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4
    )

    def step() -> None:
        saliency = clean = None
        if mixer.needs_saliency:
            keep = mixer.clean_lam > 0
            saliency, logits = input_saliency(
                model, x, labels, mode=mixer.saliency_mode, keep_graph=keep
            )
            clean = soft_ce(logits, y) if keep else None
        params = mixer.sample(x, gen)
        q = sample_q(len(x), 10, gen) if mixer.uses_topk else None
        x_mix, y_mix = mixer.apply(x, y, params, saliency=saliency, q=q)
        model.train()
        opt.zero_grad(set_to_none=True)
        with mixer.forward_context(model, params):
            loss = soft_ce(model(x_mix), y_mix)
        if clean is not None:
            loss = loss + mixer.clean_lam * clean
        loss.backward()
        opt.step()

    return step


def bench_model(
    name: str, mixers: list[str], args: argparse.Namespace, device: torch.device
) -> dict:
    """Median step times (ms) of every mixer for one model, and the ratios to vanilla."""
    b, s, n = args.batch_size, args.image_size, args.num_classes
    x, labels, gen = common.random_batch(b, s, n, args.seed, device)
    models = {m: create_model(name, n).to(device) for m in mixers}  # one model (and optimiser)
    params = sum(p.numel() for p in models["vanilla"].parameters())  # per mixer, same weights
    for m in mixers[1:]:
        models[m].load_state_dict(models["vanilla"].state_dict())
    timed = {m: mixer_step(m, models[m], x, labels, gen) for m in mixers}
    repeats, warmup = common.plan_repeats(args, params, device, (10, 2))
    samples = common.time_alternating(
        timed,
        repeats=repeats,
        warmup=warmup,
        device=device,
        progress=lambda i: print(f"    repeat {i + 1}/{warmup + repeats}", flush=True),
        clock=args.clock,
    )
    med = common.medians(samples)
    return {
        "model": name,
        "params": params,
        "batch_size": b,
        "image_size": s,
        "repeats": repeats,
        "warmup": warmup,
        "ms": med,
        "ratio": {m: med[m] / med["vanilla"] for m in mixers},
        "spread": {m: common.spread(v) for m, v in samples.items()},
        "samples_ms": samples,
    }


def table(rows: list[dict], mixers: list[str]) -> str:
    headers = [
        "mixer",
        *(f"{r['model']} ms (x vanilla)" for r in rows),
        "paper CIFAR",
        "paper ImageNet",
    ]
    lines = []
    for m in mixers:
        cells = [f"{r['ms'][m]:.0f} ({r['ratio'][m]:.2f}x)" for r in rows]
        paper = [f"{t[m]:.2f}x" if m in t else "-" for t in (PAPER_CIFAR, PAPER_IMAGENET)]
        lines.append([LABELS[m], *cells, *paper])
    return common.format_table(headers, lines)


def plot(rows: list[dict], mixers: list[str], path: str) -> None:
    """Bars of each model's ratio to vanilla per mixer, with the paper's ratios as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(rows)
    xs = range(len(mixers))
    for k, r in enumerate(rows):
        offset = (k - (len(rows) - 1) / 2) * width
        bars = ax.bar([i + offset for i in xs], [r["ratio"][m] for m in mixers], width,
                      label=f"{r['model']} (batch {r['batch_size']}, CPU)")  # fmt: skip
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    for marker, paper, label in (("D", PAPER_CIFAR, "paper, CIFAR-100 wall time (GPU)"),
                                 ("o", PAPER_IMAGENET, "paper, ImageNet per batch (GPU)")):  # fmt: skip
        pts = [(i, paper[m]) for i, m in enumerate(mixers) if m in paper]
        ax.scatter(
            *zip(*pts, strict=True), marker=marker, color="black", zorder=3, label=label, s=22
        )
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(list(xs), [LABELS[m] for m in mixers], rotation=20)
    ax.set_ylabel("training step / vanilla step")
    ax.set_yscale("log")
    ax.set_title("Step time of each mixer relative to vanilla (ratios of medians)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Run the benchmark, print its table; returns the JSON document's results."""
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    mixers = list(MIXERS)
    if importlib.util.find_spec("gco") is None:
        mixers = [m for m in mixers if m not in GRAPH_CUT]
        print("[mixers] gco-wrapper absent (pip install 'rlmix[graphcut]'): no PuzzleMix, Co-Mixup")
    print(
        f"[mixers] batch {args.batch_size}x3x{args.image_size}x{args.image_size}, "
        f"{args.num_classes} classes; " + common.header_line(device),
        flush=True,
    )
    rows = []
    for name in names:
        print(f"  {name}:", flush=True)
        rows.append(bench_model(name, mixers, args, device))
    if args.plot:
        plot(rows, mixers, args.plot)
    return common.report(NAME, args, device, table(rows, mixers), rows, [])


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse(build_parser, argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in list_models()]
    if not names or unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(list_models())}")
    if args.batch_size < 2 or args.image_size < 16 or args.image_size % 16:
        p.error("--batch-size must be >= 2 and --image-size a multiple of 16 (PuzzleMix's grids)")
    common.check_clock(p, args, device)
    return run(args, device)


main = common.main_of(execute)


if __name__ == "__main__":
    sys.exit(main())
