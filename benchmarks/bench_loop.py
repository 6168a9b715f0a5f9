"""What the learning mixer costs a plain training loop: LearnedMix against RMix, per step.

    python -m benchmarks.bench_loop                          # resnet_tiny, batch 100, 12 rounds
    python -m benchmarks.bench_loop --models resnet_tiny,preactresnet18 --repeats 4

The loop of the README (mix, forward, soft-target cross-entropy, backward, SGD step; with
LearnedMix also ``observe``) on fixed random batches of 32x32 images, one loop per variant, each
timed over whole rollouts: a sample is the mean step time over ``agent.n_steps`` (10) steps, the
PPO update at the rollout's end included, and the variants take turns sample by sample. The
mixer is the default: partner-aware ``teach`` with its EMA teacher, the same-batch counterfactual
every 10th step; it is also timed with the counterfactual off and on every step.

Target: LearnedMix (default) at most 1.15x the same loop with RMix. On a busy CPU, time it with
``--clock process --threads 1`` (CPU time of this process: what the work costs).
"""

from __future__ import annotations

import argparse
import sys

import torch

from agents import LearnedMix
from benchmarks import common
from rlmix.losses import soft_ce
from rlmix.mixing import RMix
from rlmix.models import create_model

NAME = "loop"
LIMIT = 1.15  # LearnedMix (default) / RMix
ROLLOUT = 10  # steps a sample: one rollout of the default agent (agent.n_steps)
VARIANTS = {  # LearnedMix's counterfactual every N steps (0: off)
    "LearnedMix": None,
    "LearnedMix, counterfactual off": 0,
    "LearnedMix, counterfactual every step": 1,
}


def build_parser() -> argparse.ArgumentParser:
    p = common.new_parser(
        "bench_loop",
        "Step time of a plain training loop with LearnedMix against the same loop with RMix, "
        "over whole rollouts (PPO updates included), alternating in one process.",
        repeats=12,
        warmup=1,
        repeats_help="(here: timed rollouts of 10 steps per variant; default 12)",
        warmup_help="(untimed rollouts first; default 1)",
    )
    common.add_models_arg(p, "resnet_tiny")
    p.add_argument("--batch-size", type=int, default=100, help="images a step (default 100)")
    common.add_clock_arg(p)
    return p


class _Loop:
    """One plain loop: its own model copy, optimiser and mixer, stepping through ``batches``."""

    def __init__(self, model: torch.nn.Module, batches: list, mixer, device: torch.device) -> None:
        self.model = model.to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        self.batches, self.mixer, self.i = batches, mixer, 0

    def rollout(self) -> None:
        for _ in range(ROLLOUT):
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            x_mix, y_mix = self.mixer(self.model, x, y)
            logits = self.model(x_mix)
            loss = soft_ce(logits, y_mix)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if isinstance(self.mixer, LearnedMix):
                self.mixer.observe(logits)


def run(args: argparse.Namespace, device: torch.device) -> dict:
    print(f"[loop] {common.header_line(device)}, {args.clock} clock", flush=True)
    rows = []
    for model_name, _ in common.parse_models(args.models):
        batches = []
        for seed in range(ROLLOUT):
            x, y, _ = common.random_batch(args.batch_size, 32, 10, seed, device)
            batches.append((x, y))
        torch.manual_seed(0)
        model = create_model(model_name, 10, image_size=32)
        loops = {"RMix": _Loop(_copy(model), batches, RMix(10, seed=0), device)}
        for label, every in VARIANTS.items():
            settings = {} if every is None else {"env.counterfactual_every": every}
            mixer = LearnedMix(10, steps_per_epoch=ROLLOUT, **settings)
            loops[label] = _Loop(_copy(model), batches, mixer, device)
        times = common.time_alternating(
            {k: loop.rollout for k, loop in loops.items()},
            repeats=args.repeats,
            warmup=args.warmup,
            device=device,
            clock=args.clock,
        )
        base = common.median(times["RMix"]) / ROLLOUT
        for label, samples in times.items():
            ms = common.median(samples) / ROLLOUT
            rows.append(
                {
                    "model": model_name,
                    "loop": label,
                    "ms_per_step": ms,
                    "ratio": ms / base,
                    "spread": common.spread(samples),
                    "rollouts": len(samples),
                }
            )
    table = common.format_table(
        ("model", "loop", "ms / step", "x RMix", "spread", "rollouts"),
        [
            [
                r["model"],
                r["loop"],
                f"{r['ms_per_step']:.1f}",
                f"{r['ratio']:.2f}",
                f"{100 * r['spread']:.0f}%",
                r["rollouts"],
            ]
            for r in rows
        ],  # fmt: skip
        left=2,
    )
    targets = [
        common.Target(f"{r['model']}: LearnedMix / RMix, per step", r["ratio"], LIMIT)
        for r in rows
        if r["loop"] == "LearnedMix"
    ]
    return common.report(NAME, args, device, table, rows, targets)


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    p, args, device = common.parse(build_parser, argv)
    try:
        common.parse_models(args.models)
    except ValueError as e:
        p.error(str(e))
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    common.check_clock(p, args, device)
    return run(args, device)


main = common.main_of(execute)

if __name__ == "__main__":
    sys.exit(main())
