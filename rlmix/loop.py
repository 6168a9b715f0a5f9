"""The plain training loop of the README, as a command: RL-Mix and R-Mix in your own loop.

    python -m rlmix.loop                                       # the embedded default, both mixers
    python -m rlmix.loop --config fashion_mnist_study --seeds 0 1 2 3 4 --jobs 2 \\
        --set env.reward=teach --set env.partner_first=true --out runs/loop   (make loop-check)

Each run is the loop a user writes (rlmix's data, model, SGD and OneCycleLR, soft-target
cross-entropy), mixing with ``--mixers``: ``learned`` (:class:`agents.LearnedMix`, learning as
the classifier trains) or ``rmix`` (:class:`rlmix.mixing.RMix`, random top-k); a seed fixes the
data order, initialisation and augmentation for both, so they are compared by paired
differences: ``results.md`` gives each mixer's test top-1, ECE and seconds per epoch, and
learned minus rmix over the seeds with its 95 % Student-t interval. Every
``trainer.checkpoint_every`` epochs a run writes ``checkpoint.pt`` (model, optimiser, schedule,
mixer); running the same command again reads finished runs back and continues the others.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from agents import LearnedMix
from rlmix.checkpoints import load_checkpoint, save_checkpoint
from rlmix.cli import ArgumentParser, add_config_args, overrides_from_args, run_main
from rlmix.config import Config, load_config
from rlmix.data.pipeline import build_loaders
from rlmix.errors import ConfigError
from rlmix.io import atomic_write_json, atomic_write_text, check_writable
from rlmix.launch import map_stoppable
from rlmix.locks import hold
from rlmix.losses import get_loss
from rlmix.metrics import collect, summarize
from rlmix.mixing import RMix
from rlmix.models import create_model
from rlmix.optim import build_optimizer
from rlmix.report import csv_text
from rlmix.signals import StopFlag
from rlmix.stats import mean_std, paired_difference

MIXERS = ("learned", "rmix")


def _mixer(name: str, cfg: Config, num_classes: int, steps: int, optimizer) -> Any:
    if name == "learned":
        total = cfg.trainer.epochs * steps
        return LearnedMix(
            num_classes, config=cfg, steps_per_epoch=steps, total_steps=total, optimizer=optimizer
        )
    m = cfg.mix
    return RMix(
        num_classes, alpha=m.alpha, k=m.k, grids=m.grids, lam_mode=m.lam_mode, seed=cfg.seed
    )


def train_loop(cfg: Config, mixer: str) -> dict[str, Any]:
    """One run of the plain loop with ``mixer`` (resumed from ``cfg.out/checkpoint.pt`` if
    there); returns the metrics written to ``metrics.json``."""
    out = check_writable(Path(cfg.out))
    loaders = build_loaders(
        cfg.data, batch_size=cfg.trainer.batch_size, seed=cfg.seed, device=torch.device("cpu")
    )
    info = loaders.info
    torch.manual_seed(cfg.seed)
    options = {"in_chans": info.channels, **cfg.model.options}
    model = create_model(
        cfg.model.name, info.num_classes, mean=info.mean, std=info.std, image_size=info.image_size, **options
    )  # fmt: skip
    steps = len(loaders.train)
    optimizer, scheduler = build_optimizer(model, cfg.trainer, cfg.trainer.epochs * steps)
    mix = _mixer(mixer, cfg, info.num_classes, steps, optimizer)
    loss_fn = get_loss(cfg.trainer.loss)
    rows: list[dict[str, Any]] = []
    times: list[float] = []
    start = 0
    if (out / "checkpoint.pt").is_file():
        state = load_checkpoint(out / "checkpoint.pt", config=cfg.to_dict())
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if mixer == "learned":
            mix.load_state_dict(state["mixer"])
        else:
            mix.generator.set_state(state["mixer"])
        rows, times, start = list(state["rows"]), list(state["times"]), int(state["epoch"])
    with StopFlag() as stop:  # Ctrl-C stops at a step; the last epoch's checkpoint stays
        for epoch in range(start, cfg.trainer.epochs):
            began, losses = time.perf_counter(), []
            loaders.train.set_epoch(epoch)
            model.train()
            for x, y in loaders.train:  # the README's loop
                x_mix, y_mix = mix(model, x, y)
                logits = model(x_mix)
                loss = loss_fn(logits, y_mix)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if mixer == "learned":
                    mix.observe(logits)
                losses.append(float(loss.detach()))
                if stop.stopped:
                    stop.check(kept=(out / "checkpoint.pt").is_file())
            row = {"epoch": float(epoch + 1), "train_loss": sum(losses) / len(losses)}
            if mixer == "learned":
                row = dict(mix.history[-1])  # the same epoch mean, with rewards and diagnostics
            if (epoch + 1) % cfg.env.eval_every == 0 or epoch + 1 == cfg.trainer.epochs:
                records = collect(model, loaders.test, fgsm=cfg.env.eval_fgsm)
                row.update(
                    {k: float(v) for k, v in summarize([records], fgsm=cfg.env.eval_fgsm).items()}
                )
            rows.append(row)
            times.append(time.perf_counter() - began)
            if (epoch + 1) % cfg.trainer.checkpoint_every == 0 or epoch + 1 == cfg.trainer.epochs:
                save_checkpoint(
                    out / "checkpoint.pt",
                    {
                        "config": cfg.to_dict(),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "mixer": mix.state_dict()
                        if mixer == "learned"
                        else mix.generator.get_state(),
                        "rows": rows,
                        "times": times,
                        "epoch": epoch + 1,
                    },
                )
    metrics = {"mixer": mixer, "seed": cfg.seed, "final": rows[-1], "epochs": rows}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "timings.json", {"epoch_time_s": times})
    return metrics


def _run(args: tuple[dict, str, int]) -> dict[str, Any]:
    config, mixer, threads = args
    torch.set_num_threads(threads)
    cfg = load_config(config)
    done = Path(cfg.out) / "metrics.json"
    if done.is_file():
        metrics = json.loads(done.read_text())
        if len(metrics["epochs"]) == cfg.trainer.epochs:
            return metrics
    return train_loop(cfg, mixer)


def loop_study(
    cfg: Config, mixers: Sequence[str], seeds: Sequence[int], out: Path, jobs: int = 1
) -> str:
    """Run every (mixer, seed) of the plain loop and write ``results.md`` and ``runs.csv``."""
    bad = [m for m in mixers if m not in MIXERS]
    if bad or not mixers:
        raise ConfigError(f"--mixers: choose from {', '.join(MIXERS)} (got {','.join(mixers)})")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1 (got {jobs})")
    runs = []
    for seed in seeds:
        for mixer in mixers:
            run_cfg = {**cfg.to_dict(), "seed": seed, "out": str(out / mixer / f"seed{seed}")}
            runs.append((run_cfg, mixer, max(1, (os.cpu_count() or 1) // jobs)))
    with hold(out, "rlmix.loop"):  # one loop study at a time in a folder
        start = time.perf_counter()
        results = map_stoppable(_run, [(r,) for r in runs], jobs)
        table = _table(results, mixers, cfg, out, time.perf_counter() - start, jobs)
        rows = [
            {"mixer": r["mixer"], "seed": r["seed"], **{k: v for k, v in r["final"].items() if not isinstance(v, list)}}
            for r in results
        ]  # fmt: skip
        atomic_write_text(out / "results.md", table)
        atomic_write_text(out / "runs.csv", csv_text(rows))
    return table


def _table(
    results: list[dict], mixers: Sequence[str], cfg: Config, out: Path, wall: float, jobs: int
) -> str:
    by = {m: {r["seed"]: r for r in results if r["mixer"] == m} for m in mixers}
    lines = [
        f"## Plain loop: {cfg.data.name} / {cfg.model.name}, {cfg.trainer.epochs} epochs, "
        f"reward {cfg.env.reward}, seeds {sorted({r['seed'] for r in results})} "
        f"({wall:.0f} s, {jobs} job{'s' if jobs > 1 else ''})",
        "",
        "| mixer | seeds | top-1 (%) | ECE (%) | Δ top-1 vs rmix [95 % CI] | s / epoch |",
        "|---|---|---|---|---|---|",
    ]
    for mixer in mixers:
        runs = by[mixer]
        top1 = [100 * r["final"]["top1"] for r in runs.values()]
        ece = [100 * r["final"]["ece"] for r in runs.values()]
        times = [_seconds(out / mixer / f"seed{s}") for s in runs]
        diff = "—"
        if mixer != "rmix" and "rmix" in by:
            seeds = sorted(set(runs) & set(by["rmix"]))
            d = paired_difference(
                [100 * runs[s]["final"]["top1"] for s in seeds],
                [100 * by["rmix"][s]["final"]["top1"] for s in seeds],
            )
            mark = "*" if d.n > 1 and d.excludes_zero else ""
            diff = (
                f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]{mark}"
                if d.n > 1
                else f"{d.mean:+.2f}"
            )
        cells = [
            mixer,
            str(len(runs)),
            "{:.2f} ± {:.2f}".format(*mean_std(top1)),
            "{:.2f} ± {:.2f}".format(*mean_std(ece)),
            diff,
        ]
        cells.append("{:.2f} ± {:.2f}".format(*mean_std(times)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "mean ± std over seeds; Δ: paired difference to rmix on the same seeds (a seed fixes the "
        "data order, initialisation and augmentation), 95 % Student-t interval, * when it "
        "excludes 0. s / epoch includes the evaluations; runs ran side by side.",
    ]
    return "\n".join(lines) + "\n"


def _seconds(run: Path) -> float:
    times = json.loads((run / "timings.json").read_text())["epoch_time_s"]
    return sum(times) / len(times)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.loop",
        description="The README's plain training loop with the learning mixer (LearnedMix) and "
        "with R-Mix, over paired seeds: test top-1 and the paired difference with its 95 % "
        "interval. Run it again on the same --out to continue.",
    )
    add_config_args(p, seed=False)
    p.add_argument("--mixers", default="learned,rmix", help="comma-separated: learned, rmix")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out or "runs/loop")
    args.out = None
    cfg = load_config(args.config, overrides_from_args(args))
    cfg = load_config({**cfg.to_dict(), "out": str(out / "run")})
    mixers = [m.strip() for m in args.mixers.split(",") if m.strip()]
    print(loop_study(cfg, mixers, args.seeds, out, args.jobs))
    print(f"tables: {out / 'results.md'}, {out / 'runs.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
