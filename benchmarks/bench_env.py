"""Environment epochs: vanilla vs R-Mix (random top-k) vs RL-Mix (PPO agent), same config, and
what the same-batch counterfactual adds to an RL-Mix epoch.

    python -m benchmarks.bench_env                                 # resnet_tiny, preactresnet18:2
    python -m benchmarks.bench_env --models resnet_tiny --repeats 5
    python -m benchmarks.bench_env --device cuda --models resnet_tiny,preactresnet18

Every variant drives its own :class:`envs.MixupEnv` built from the embedded default config
(``rlmix.config.load_config(None, overrides)``), exactly as the training commands do:

- vanilla: policy ``vanilla`` with ``env.reward=none`` (plain training: no saliency pass);
- rmix: policy ``rmix`` (R-Mix, uniformly random top-k) with the config's reward;
- rlmix: the PPO agent, its rollouts and the PPO updates that follow them, without the
  same-batch counterfactual (``env.counterfactual_every=0``), and rlmix_cf with it every step:
  the config's reward (``grad_cosine``, a gradient reward: the counterfactual adds a forward and
  input-gradient pass);
- rlmix_fwd / rlmix_fwd_cf: the same with the forward-only reward ``val_grad_align`` (a
  held-out split of one batch; the counterfactual adds one forward).

Each epoch is one ``learn`` call of one epoch of decisions on the image-slot env
(:func:`benchmarks.common.epoch_runner`: :class:`baselines.PolicyRunner` for the fixed policies,
``EpochPPO`` for the agent, as the training commands run them), including the test evaluation the
config asks for; no logging, progress bars or checkpoints. A model written ``name:N`` runs a
short epoch of N steps instead of the default epoch: ``data.options`` shrink the training split
to N batches, evaluation is off, and the agent's rollout is those N steps (``agent.n_steps = N``),
so its PPO update is amortised over N steps only, a pessimistic share. Figures are medians: seconds per epoch and
milliseconds per step (epoch time / steps), alternating the variants within every repeat.

Targets: RL-Mix epoch <= 1.15x R-Mix epoch (the paper reports 2.0x), for every model; the
counterfactual at every step <= 20 % of an RL-Mix epoch with a forward-only reward and <= 40 %
with a gradient reward.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import common
from rlmix.config import Config, load_config
from rlmix.errors import RlmixError

NAME = "env"
RLMIX_LIMIT = 1.15  # RL-Mix epoch / R-Mix epoch
CF_LIMITS = {"rlmix": 0.40, "rlmix_fwd": 0.20}  # the counterfactual's share of an RL-Mix epoch
VARIANTS = ("vanilla", "rmix", "rlmix", "rlmix_cf", "rlmix_fwd", "rlmix_fwd_cf")
FORWARD_REWARD = "val_grad_align"


def build_parser() -> argparse.ArgumentParser:
    return common.env_parser(
        "bench_env",
        "Median time of an environment epoch with plain training, the R-Mix random "
        "policy and the RL-Mix PPO agent (update included), same config, one process.",
        repeats=None,
        warmup=1,
        amp=True,
        repeats_help="(default 3 on a CPU, 5 on CUDA)",
    )


def _variant_configs(cfg: Config) -> dict[str, tuple[str, Config]]:
    """variant -> (what runs it, its config). The forward-reward variants hold one batch out of
    a training split grown by one batch, so that every variant has the same steps."""
    b = cfg.trainer.batch_size
    options = dict(cfg.data.options)
    if "train_size" in options:
        options["train_size"] += b
    fwd = {"env.reward": FORWARD_REWARD, "data.val_size": b, "data.options": options}
    return {
        "vanilla": ("vanilla", cfg),
        "rmix": ("rmix", cfg),
        "rlmix": ("rlmix", load_config(cfg.to_dict(), {"env.counterfactual_every": 0})),
        "rlmix_cf": ("rlmix", load_config(cfg.to_dict(), {"env.counterfactual_every": 1})),
        "rlmix_fwd": ("rlmix", load_config(cfg.to_dict(), {**fwd, "env.counterfactual_every": 0})),
        "rlmix_fwd_cf": (
            "rlmix",
            load_config(cfg.to_dict(), {**fwd, "env.counterfactual_every": 1}),
        ),
    }


def make_runners(cfg: Config) -> tuple[dict[str, Callable[[], object]], dict[str, Any]]:
    """One epoch-running function per variant, each with its own env; and shared facts."""
    runners, model = {}, None
    for name, (kind, variant_cfg) in _variant_configs(cfg).items():
        runners[name], algo = common.epoch_runner(kind, variant_cfg)
        if name == "rlmix":
            model = algo
    update_s: list[float] = []
    train = model.train

    def timed_train() -> None:  # PPO's update after each rollout, timed on its own
        start = time.perf_counter()
        train()
        update_s.append(time.perf_counter() - start)

    model.train = timed_train  # type: ignore[method-assign]
    return runners, {"steps": model.env.trainer.steps_per_epoch, "ppo_update_s": update_s}


def bench_model(
    model: str, short_steps: int | None, args: argparse.Namespace, device: torch.device
) -> dict:
    """Median epoch times (s) of every variant for one model, and the ratios to R-Mix."""
    repeats = args.repeats if args.repeats is not None else (5 if device.type == "cuda" else 3)
    with tempfile.TemporaryDirectory(prefix="rlmix-bench-") as root:
        cfg = common.env_config(model, short_steps, args, device, root)
        runners, facts = make_runners(cfg)
        steps = facts["steps"]
        if short_steps is not None and steps != short_steps:
            raise RlmixError(f"expected {short_steps} steps per epoch, the config gives {steps}")
        samples_ms = common.time_alternating(
            runners,
            repeats=repeats,
            warmup=args.warmup,
            device=device,
            progress=lambda i: print(f"    repeat {i + 1}/{args.warmup + repeats}", flush=True),
        )
    med = {k: v / 1e3 for k, v in common.medians(samples_ms).items()}
    updates = facts["ppo_update_s"][args.warmup :]
    update_s = sorted(updates)[len(updates) // 2] if updates else float("nan")
    return {
        "model": model,
        "epoch": "default" if short_steps is None else f"short ({short_steps} steps, no eval)",
        "steps": steps,
        "batch_size": cfg.trainer.batch_size,
        "repeats": repeats,
        "warmup": args.warmup,
        **{f"{k}_s": v for k, v in med.items()},
        **{f"{k}_ms_per_step": 1e3 * v / steps for k, v in med.items()},
        "ppo_update_s": update_s,
        "rlmix_ratio": med["rlmix"] / med["rmix"],
        "cf_share": med["rlmix_cf"] / med["rlmix"] - 1.0,
        "cf_share_fwd": med["rlmix_fwd_cf"] / med["rlmix_fwd"] - 1.0,
        "vanilla_ratio": med["vanilla"] / med["rmix"],
        "rmix_over_vanilla": med["rmix"] / med["vanilla"],
        "spread": {k: common.spread(v) for k, v in samples_ms.items()},
        "samples_s": {k: [t / 1e3 for t in v] for k, v in samples_ms.items()},
    }


HEADERS = (
    "model",
    "epoch",
    "vanilla s",
    "rmix s",
    "rlmix s",
    "ms/step van / rmix / rlmix",
    "PPO update s",
    "rlmix/rmix",
    "rmix/van",
    "counterfactual: grad / fwd reward",
)


def table_rows(rows: list[dict]) -> list[list[object]]:
    return [
        [
            r["model"],
            r["epoch"] if r["epoch"] != "default" else f"default ({r['steps']} steps + eval)",
            f"{r['vanilla_s']:.2f}",
            f"{r['rmix_s']:.2f}",
            f"{r['rlmix_s']:.2f}",
            " / ".join(f"{r[f'{k}_ms_per_step']:.0f}" for k in VARIANTS[:3]),
            f"{r['ppo_update_s']:.3f}",
            f"{r['rlmix_ratio']:.3f}x",
            f"{r['rmix_over_vanilla']:.2f}x",
            f"{100 * r['cf_share']:+.1f} % / {100 * r['cf_share_fwd']:+.1f} %",
        ]
        for r in rows
    ]


# (what, result key, limit, unit) of the targets, checked for every model
TARGETS = (
    ("RL-Mix epoch / R-Mix epoch", "rlmix_ratio", RLMIX_LIMIT, "x"),
    ("counterfactual / RL-Mix epoch, gradient reward", "cf_share", CF_LIMITS["rlmix"], "of the epoch"),
    ("counterfactual / RL-Mix epoch, forward-only reward", "cf_share_fwd", CF_LIMITS["rlmix_fwd"], "of the epoch"),
)  # fmt: skip


def targets_for(rows: list[dict]) -> list[common.Target]:
    return [
        common.Target(f"{what}, {r['model']}", r[key], limit, unit=unit)
        for r in rows
        for what, key, limit, unit in TARGETS
    ]


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Run the benchmark, print its table and targets; returns the results."""
    models = common.parse_models(args.models)
    print(f"[env] {common.header_line(device)}", flush=True)
    rows = []
    for name, short in models:
        print(f"  {name}{'' if short is None else f' ({short}-step epochs)'}:", flush=True)
        rows.append(bench_model(name, short, args, device))
    table = common.format_table(HEADERS, table_rows(rows), left=2)
    return common.report(NAME, args, device, table, rows, targets_for(rows))


def execute(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, check it, run the benchmark; returns its results (see :func:`run`)."""
    _, args, device = common.parse_env(build_parser, argv)
    return run(args, device)


main = common.main_of(execute)


if __name__ == "__main__":
    sys.exit(main())
