"""Compare the RL-Mix agent with fixed policies on one code path, over several seeds.

    python -m rlmix.compare                                  # all policies, 3 seeds, default config
    python -m rlmix.compare --policies rmix,cutmix_plus --seeds 0 1 2 3 4
    python -m rlmix.compare --policies agent --reward grad_cosine --reward loss_drop

Every run goes through :class:`envs.MixupEnv` with the same config, epochs and seeds. Fixed
policies run with ``env.reward=none`` so their wall time does not include a reward they do not
use. Writes ``results.md`` and ``results.csv`` (mean and std over seeds of test top-1, ECE,
FGSM error and wall time per epoch) and ``accuracy.png`` under ``--out``; each run keeps its own
directory below it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from baselines import list_policies
from rlmix.checkpoints import atomic_write_text, check_writable
from rlmix.cli import ArgumentParser, add_config_args, overrides_from_args, run_main
from rlmix.config import MAX_SEED, Config, load_config
from rlmix.errors import ConfigError
from rlmix.plots import plot_curves

POLICIES = ["agent", *list_policies()]
COLUMNS = [("top1", "top-1 (%)", 100), ("ece", "ECE (%)", 100), ("fgsm_error", "FGSM err (%)", 100)]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.compare",
        description="Run the RL-Mix agent and fixed policies (R-Mix, constant top-k, CutMix+, "
        "Mixup, vanilla) for the same epochs and seeds through the same env; write a table "
        "and accuracy plots.",
    )
    add_config_args(p)
    p.set_defaults(out=None)
    p.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help=f"comma-separated policies (default: {','.join(POLICIES)})",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument(
        "--reward",
        action="append",
        default=None,
        help="agent reward; repeat to compare rewards (default: the config's)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def run_one(cfg: Config, policy: str) -> tuple[dict[str, Any], list[float]]:
    """Train one policy with one seed; returns (metrics, epoch wall times)."""
    from rlmix.train import train_fixed
    from rlmix.train_agent import train_agent

    if policy == "agent":
        metrics = train_agent(cfg, progress=False)
    else:
        cfg = dataclasses.replace(
            cfg, policy=policy, env=dataclasses.replace(cfg.env, reward="none")
        )
        metrics = train_fixed(cfg, progress=False)
    timings = json.loads((Path(cfg.out) / "timings.json").read_text())
    return metrics, timings["epoch_time_s"]


def summarise(results: dict[str, list[tuple[dict, list[float]]]]) -> list[dict[str, Any]]:
    """One row per label: mean and std over seeds of the final metrics and epoch time."""
    rows = []
    for label, runs in results.items():
        row: dict[str, Any] = {"policy": label, "seeds": len(runs)}
        for key, _, scale in COLUMNS:
            vals = [scale * m["final"][key] for m, _ in runs if key in m["final"]]
            if vals:
                row[f"{key}_mean"], row[f"{key}_std"] = float(np.mean(vals)), float(np.std(vals))
        times = [float(np.mean(t)) for _, t in runs]
        row["epoch_time_s_mean"], row["epoch_time_s_std"] = (
            float(np.mean(times)),
            float(np.std(times)),
        )
        rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]], title: str) -> str:
    head = ["policy", "seeds", *[c[1] for c in COLUMNS], "s / epoch"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["policy"], str(r["seeds"])]
        for key, _, _ in COLUMNS:
            cells.append(
                f"{r[f'{key}_mean']:.2f} ± {r[f'{key}_std']:.2f}" if f"{key}_mean" in r else "n/a"
            )
        cells.append(f"{r['epoch_time_s_mean']:.2f} ± {r['epoch_time_s_std']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    keys = ["policy", "seeds"] + [f"{k}_{s}" for k, _, _ in COLUMNS for s in ("mean", "std")]
    keys += ["epoch_time_s_mean", "epoch_time_s_std"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def compare(
    cfg: Config,
    policies: list[str],
    seeds: list[int],
    rewards: list[str] | None,
    out: Path,
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every (policy, reward, seed) and write the table and plot; returns the table rows."""
    if not policies:
        raise ConfigError(f"--policies is empty; choose from: {', '.join(POLICIES)}")
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise ConfigError(f"unknown policy '{bad[0]}'; choose from: {', '.join(POLICIES)}")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"--seeds: seed {seed} is not in [0, {MAX_SEED}]")
    if "agent" in policies:  # fail before the fixed policies run, not after
        from envs.rewards import get_reward

        for reward in rewards or [cfg.env.reward]:
            try:
                get_reward(reward)
            except ValueError as e:
                raise ConfigError(f"--reward: {e}") from e
    check_writable(out)
    jobs = []
    for policy in policies:
        for reward in (rewards or [cfg.env.reward]) if policy == "agent" else [None]:
            label = (
                policy if reward is None or not rewards or len(rewards) == 1 else f"agent[{reward}]"
            )
            for seed in seeds:
                jobs.append((label, policy, reward, seed))
    results: dict[str, list] = {}
    start = time.perf_counter()
    for label, policy, reward, seed in tqdm(jobs, desc="compare", disable=not progress):
        env = cfg.env if reward is None else dataclasses.replace(cfg.env, reward=reward)
        run_cfg = dataclasses.replace(
            cfg,
            seed=seed,
            env=env,
            out=str(out / label.replace("[", "_").replace("]", "") / f"seed{seed}"),
        )
        results.setdefault(label, []).append(run_one(run_cfg, policy))
    rows = summarise(results)
    e = cfg.trainer.epochs
    title = (
        f"{cfg.data.name} / {cfg.model.name}, {e} epochs, seeds {seeds} "
        f"({time.perf_counter() - start:.0f} s in all)"
    )
    atomic_write_text(out / "results.md", to_markdown(rows, title))
    atomic_write_text(out / "results.csv", to_csv(rows))
    curves = {label: [m["epochs"] for m, _ in runs] for label, runs in results.items()}
    plot_curves(curves, out / "accuracy.png")
    plot_curves(curves, out / "ece.png", metric="ece", title="Test ECE per epoch")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "rlmix.compare runs in one process; under torchrun launch rlmix.train and "
            "rlmix.train_agent once per policy instead"
        )
    out = Path(args.out or "runs/compare")
    args.out = None
    cfg = load_config(args.config, overrides_from_args(args))
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    rows = compare(cfg, policies, args.seeds, args.reward, out, progress=not args.no_progress)
    print(to_markdown(rows, "results"))
    print(f"table: {out / 'results.md'}, {out / 'results.csv'}; plot: {out / 'accuracy.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
