"""Compare the RL-Mix agent with fixed policies on one code path, over paired seeds.

    python -m rlmix.compare                                  # all policies, 3 seeds, default config
    python -m rlmix.compare --policies rmix,cutmix_plus --seeds 0 1 2 3 4 --jobs 2
    python -m rlmix.compare --policies agent,rmix --reward grad_cosine --reward grad_cosine_mean
    python -m rlmix.compare --config fashion_mnist_study     # the README's headline (make study)

Every run goes through :class:`envs.MixupEnv` with the same config, epochs and seeds; a seed
fixes the data order, initialisation and augmentation for every policy, so policies are compared
by per-seed differences: mean ± std over seeds, and for every policy its paired difference to a
reference policy (``--reference``, default ``rmix``) with a Student-t confidence interval
(``--confidence``, default 95 %), marked ``*`` when it excludes 0 (a difference beyond seed
noise). The agent runs once per ``--reward``; the reference policy then computes those rewards
too (``env.log_rewards``: logged, not acted on), so the agent's reward is compared with random
top-k's on the same reward and the same seeds. Other fixed policies run with ``env.reward=none``.

Writes under ``--out``: ``results.md`` (the tables), ``runs.csv`` (one row per policy and seed),
``summary.csv`` (one row per policy), ``accuracy.png`` and ``ece.png`` (mean over seeds with a
± std band) and ``entropy.png`` (the agents' policy entropy); each run keeps its own directory.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from baselines import list_policies
from envs.rewards import get_reward
from rlmix.checkpoints import atomic_write_text, check_writable
from rlmix.cli import ArgumentParser, add_config_args, overrides_from_args, run_main
from rlmix.config import MAX_SEED, Config, load_config
from rlmix.errors import ConfigError
from rlmix.plots import plot_curves
from rlmix.stats import PairedDifference, mean_std, paired_difference

FIXED = [p for p in list_policies() if p != "agent"]  # "agent" here is the learning agent
POLICIES = ["agent", *FIXED]
# (key in the final metrics, column title, scale)
METRICS = [
    ("top1", "top-1 (%)", 100.0),
    ("nll", "NLL", 1.0),
    ("ece", "ECE (%)", 100.0),
    ("fgsm_error", "FGSM err (%)", 100.0),
    ("loc_acc", "CAM loc (%)", 100.0),
]
PAIRED = ("top1", "ece")  # metrics whose paired difference to the reference is tabulated


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.compare",
        description="Run the RL-Mix agent and fixed policies (R-Mix, constant top-k, CutMix+, "
        "Mixup, vanilla) for the same epochs and paired seeds through the same env; write "
        "tables with paired confidence intervals and plots.",
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
        help="agent reward; repeat to run the agent once per reward (default: the config's)",
    )
    p.add_argument(
        "--reference", default="rmix", help="policy the others are compared with (default rmix)"
    )
    p.add_argument(
        "--confidence", type=float, default=0.95, help="confidence level of the intervals"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs in parallel processes (default 1; with several GPUs, one run per GPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


@dataclass(frozen=True)
class Job:
    """One run of the comparison."""

    label: str  # "rmix", "agent", "agent[grad_cosine]"
    policy: str
    seed: int
    cfg: Config

    @property
    def reward(self) -> str:
        return self.cfg.env.reward


@dataclass
class Result:
    """What one run gives the tables: final metrics, rewards, the history and epoch times."""

    label: str
    policy: str
    seed: int
    reward: str
    final: dict[str, float]
    history: list[dict[str, Any]]
    epoch_times: list[float]

    @functools.cached_property
    def values(self) -> dict[str, float]:
        """The run's numbers for the tables (:func:`run_values`)."""
        return run_values(self)


def run_job(job: Job, threads: int | None = None) -> Result:
    """Train one policy with one seed in this process (with ``threads`` torch threads)."""
    import torch

    from rlmix.train import train_fixed
    from rlmix.train_agent import train_agent

    train = train_agent if job.policy == "agent" else train_fixed
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        metrics = train(dataclasses.replace(job.cfg, policy=job.policy), progress=False)
    finally:
        torch.set_num_threads(before)
    timings = json.loads((Path(job.cfg.out) / "timings.json").read_text())["epoch_time_s"]
    return Result(
        job.label, job.policy, job.seed, job.reward, metrics["final"], metrics["epochs"], timings
    )


def run_values(result: Result) -> dict[str, float]:
    """The per-run numbers of ``runs.csv``: final metrics (in table units), rewards, entropy."""
    out: dict[str, float] = {}
    for key, _, scale in METRICS:
        if key in result.final:
            out[key] = scale * result.final[key]
    history = result.history
    for key in {k for row in history for k in row if k.startswith("reward")}:
        series = [row[key] for row in history if key in row]
        out[f"{key}_run"] = sum(series) / len(series)
        out[f"{key}_last"] = history[-1].get(key, float("nan"))
    last = history[-1]
    if "policy_entropy_frac" in last:
        out["entropy_frac_last"] = 100.0 * last["policy_entropy_frac"]
        out["mean_q_last"] = last["mean_q"]
        out["q_std_last"] = last["policy_q_std"]
    out["s_per_epoch"] = sum(result.epoch_times) / max(len(result.epoch_times), 1)
    return out


def make_jobs(
    cfg: Config,
    policies: list[str],
    seeds: list[int],
    rewards: list[str],
    reference: str,
    out: Path,
) -> list[Job]:
    """Every (label, seed) run, seed-major, with its config and run directory."""
    several = len(rewards) > 1
    labels: list[tuple[str, str, str | None]] = []  # (label, policy, agent reward)
    for policy in policies:
        if policy == "agent":
            labels += [(f"agent[{r}]" if several else "agent", "agent", r) for r in rewards]
        else:
            labels.append((policy, policy, None))
    jobs = []
    for seed in seeds:
        for label, policy, reward in labels:
            env = dataclasses.replace(cfg.env, reward=reward or "none")
            if reward is None and policy == reference and "agent" in policies:
                env = dataclasses.replace(env, log_rewards=list(rewards))
            run_dir = out / label.replace("[", "_").replace("]", "") / f"seed{seed}"
            jobs.append(
                Job(
                    label,
                    policy,
                    seed,
                    dataclasses.replace(cfg, seed=seed, env=env, out=str(run_dir)),
                )
            )
    return jobs


def _devices(jobs: int) -> list[str | None]:
    """One CUDA device per parallel run when several GPUs are present."""
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{i % n}" for i in range(jobs)] if n > 1 else [None] * jobs


def run_jobs(jobs: list[Job], n_jobs: int, *, progress: bool) -> list[Result]:
    """Run ``jobs`` in this process (``n_jobs`` 1) or in ``n_jobs`` worker processes."""
    bar = tqdm(total=len(jobs), desc="compare", disable=not progress)
    results: list[Result] = []
    try:
        if n_jobs == 1:
            for job in jobs:
                bar.set_postfix_str(f"{job.label} seed {job.seed}")
                results.append(run_job(job))
                bar.update()
            return results
        threads = max(1, (os.cpu_count() or 1) // n_jobs)
        devices = _devices(n_jobs)
        with ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
            futures = []
            for i, job in enumerate(jobs):
                if devices[i % n_jobs] is not None and job.cfg.trainer.device in ("auto", "cuda"):
                    trainer = dataclasses.replace(job.cfg.trainer, device=devices[i % n_jobs])
                    job = dataclasses.replace(
                        job, cfg=dataclasses.replace(job.cfg, trainer=trainer)
                    )
                futures.append(pool.submit(run_job, job, threads))
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                bar.set_postfix_str(f"{result.label} seed {result.seed} done")
                bar.update()
        order = {(j.label, j.seed): i for i, j in enumerate(jobs)}
        return sorted(results, key=lambda r: order[(r.label, r.seed)])
    finally:
        bar.close()


def _cell(mean_sd: tuple[float, float]) -> str:
    return f"{mean_sd[0]:.2f} ± {mean_sd[1]:.2f}"


def _diff_cell(d: PairedDifference | None, digits: int = 2) -> str:
    """``+1.23 [+0.40, +2.06]*``: the mean difference, its interval, * when it excludes 0."""
    if d is None:
        return "—"
    if d.n < 2:
        return f"{d.mean:+.{digits}f}"
    mark = "*" if d.excludes_zero else ""
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]{mark}"


def summarise(results: list[Result], reference: str, confidence: float) -> list[dict[str, Any]]:
    """One row per label: mean and std over seeds of every run value, and the paired differences
    to the reference policy (``<key>_diff``: a :class:`PairedDifference`)."""
    by_label: dict[str, list[Result]] = {}
    for r in results:
        by_label.setdefault(r.label, []).append(r)
    ref = {r.seed: r.values for r in by_label.get(reference, [])}
    rows = []
    for label, runs in by_label.items():
        row: dict[str, Any] = {"policy": label, "seeds": len(runs), "kind": runs[0].policy}
        keys = sorted({k for r in runs for k in r.values})
        for key in keys:
            vals = [r.values[key] for r in runs if key in r.values]
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(vals)
        paired = [r for r in runs if r.seed in ref]
        if label != reference and paired:
            for key in PAIRED:
                if all(key in r.values and key in ref[r.seed] for r in paired):
                    row[f"{key}_diff"] = paired_difference(
                        [r.values[key] for r in paired],
                        [ref[r.seed][key] for r in paired],
                        confidence,
                    )
            if runs[0].policy == "agent":
                reward = runs[0].reward
                for span in ("run", "last"):
                    key = f"reward_{reward}_{span}"
                    if all(key in ref[r.seed] for r in paired):
                        row[f"reward_{span}_diff"] = paired_difference(
                            [r.values[f"reward_{span}"] for r in paired],
                            [ref[r.seed][key] for r in paired],
                            confidence,
                        )
        rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]], title: str, reference: str, confidence: float) -> str:
    level = f"{100 * confidence:g} %"
    present = [m for m in METRICS if any(f"{m[0]}_mean" in r for r in rows)]
    head = ["policy", "seeds"]
    for key, name, _ in present:
        head.append(name)
        if key in PAIRED:
            head.append(f"Δ {key} vs {reference} [{level} CI]")
    head.append("s / epoch")
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["policy"], str(r["seeds"])]
        for key, _, _ in present:
            cells.append(
                _cell((r[f"{key}_mean"], r[f"{key}_std"])) if f"{key}_mean" in r else "n/a"
            )
            if key in PAIRED:
                cells.append(_diff_cell(r.get(f"{key}_diff")))
        cells.append(_cell((r["s_per_epoch_mean"], r["s_per_epoch_std"])))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"mean ± std over seeds; Δ: paired difference to {reference} (same seeds), {level} "
        "Student-t interval, * when it excludes 0."
    )
    agents = [r for r in rows if r["kind"] == "agent"]
    if agents:
        lines += ["", f"### Agent vs {reference} on the agent's reward", ""]
        head = [
            "agent",
            "seeds",
            "reward (run mean)",
            f"Δ vs {reference} (run) [{level} CI]",
            "reward (last epoch)",
            f"Δ vs {reference} (last epoch) [{level} CI]",
            "entropy, last epoch (% of ln K)",
            "mean q, last epoch",
            "std of E[q] over images",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in agents:
            cells = [
                r["policy"],
                str(r["seeds"]),
                f"{r['reward_run_mean']:.4f} ± {r['reward_run_std']:.4f}",
                _diff_cell(r.get("reward_run_diff"), 4),
                f"{r['reward_last_mean']:.4f} ± {r['reward_last_std']:.4f}",
                _diff_cell(r.get("reward_last_diff"), 4),
                _cell((r["entropy_frac_last_mean"], r["entropy_frac_last_std"])),
                _cell((r["mean_q_last_mean"], r["mean_q_last_std"])),
                _cell((r["q_std_last_mean"], r["q_std_last_std"])),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def runs_csv(results: list[Result]) -> str:
    """One row per policy and seed."""
    return _csv([{"policy": r.label, "seed": r.seed, **r.values} for r in results])


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """One row per policy; each paired difference as ``<key>_diff``, ``_low``, ``_high``."""
    flat = []
    for row in rows:
        out = {}
        for key, value in row.items():
            if isinstance(value, PairedDifference):
                out.update({key: value.mean, f"{key}_low": value.low, f"{key}_high": value.high})
            else:
                out[key] = value
        flat.append(out)
    return _csv(flat)


def compare(
    cfg: Config,
    policies: list[str],
    seeds: list[int],
    rewards: list[str] | None,
    out: Path,
    *,
    reference: str = "rmix",
    confidence: float = 0.95,
    jobs: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every (policy, reward, seed), write the tables and plots; returns the summary rows."""
    if not policies:
        raise ConfigError(f"--policies is empty; choose from: {', '.join(POLICIES)}")
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise ConfigError(f"unknown policy '{bad[0]}'; choose one of: {', '.join(POLICIES)}")
    if reference not in FIXED:
        raise ConfigError(
            f"--reference: unknown policy '{reference}'; choose one of: {', '.join(FIXED)}"
        )
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1 (got {jobs})")
    if not 0 < confidence < 1:
        raise ConfigError(f"--confidence must be in (0, 1) (got {confidence})")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: each seed once, please (got {seeds})")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"--seeds: seed {seed} is not in [0, {MAX_SEED}]")
    rewards = rewards or [cfg.env.reward]
    if "agent" in policies:  # fail before any run, not after the fixed policies
        for reward in rewards:
            try:
                needs_val = get_reward(reward).val_loss
            except ValueError as e:
                raise ConfigError(f"--reward: {e}") from e
            if needs_val and cfg.data.val_size == 0:
                raise ConfigError(
                    f"--reward {reward} needs a held-out split: set data.val_size (it is carved "
                    "for every policy, so the runs stay paired)"
                )
    if reference not in policies:
        policies = [*policies, reference]
    check_writable(out)
    start = time.perf_counter()
    results = run_jobs(
        make_jobs(cfg, policies, seeds, rewards, reference, out), jobs, progress=progress
    )
    rows = summarise(results, reference, confidence)
    title = (
        f"{cfg.data.name} / {cfg.model.name}, {cfg.trainer.epochs} epochs, seeds {seeds} "
        f"({time.perf_counter() - start:.0f} s in all, {jobs} job{'s' if jobs > 1 else ''})"
    )
    atomic_write_text(out / "results.md", to_markdown(rows, title, reference, confidence))
    atomic_write_text(out / "runs.csv", runs_csv(results))
    atomic_write_text(out / "summary.csv", summary_csv(rows))
    curves: dict[str, list] = {}
    for r in results:
        curves.setdefault(r.label, []).append(r.history)
    plot_curves(curves, out / "accuracy.png")
    plot_curves(curves, out / "ece.png", metric="ece", title="Test ECE per epoch")
    agents = {k: v for k, v in curves.items() if k.startswith("agent")}
    if agents:
        plot_curves(
            agents,
            out / "entropy.png",
            metric="policy_entropy_frac",
            title="Agent policy entropy per epoch",
            ylabel="entropy (% of ln K)",
        )
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
    rows = compare(
        cfg,
        policies,
        args.seeds,
        args.reward,
        out,
        reference=args.reference,
        confidence=args.confidence,
        jobs=args.jobs,
        progress=not args.no_progress,
    )
    print(to_markdown(rows, "results", args.reference, args.confidence))
    print(f"tables: {out / 'results.md'}, {out / 'runs.csv'}, {out / 'summary.csv'}")
    print(f"plots: {out / 'accuracy.png'}, {out / 'ece.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
