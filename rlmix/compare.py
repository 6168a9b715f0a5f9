"""Compare the RL-Mix agent with fixed policies on one code path, over paired seeds.

    python -m rlmix.compare                                  # all policies, 3 seeds, default config
    python -m rlmix.compare --policies rmix,cutmix_plus --seeds 0 1 2 3 4 --jobs 2
    python -m rlmix.compare --policies agent,rmix --reward grad_cosine --reward val_grad_align
    python -m rlmix.compare --policies agent,rmix --agent diff:val_grad_align,agent.baseline=counterfactual
    python -m rlmix.compare --policies agent,rmix,cutmix_plus --arm 420ep:cutmix_plus,trainer.epochs=420
    python -m rlmix.compare --config fashion_mnist_study     # the README's headline (make study)
    python -m rlmix.compare ... --launcher ray [--address HOST:PORT]   # one Ray task per run

Every run goes through :class:`envs.MixupEnv` with the same config, epochs and seeds; a seed
fixes the data order, initialisation and augmentation for every policy, so policies are compared
by per-seed differences: mean ± std over seeds, and for every policy its paired difference to a
reference policy (``--reference``, default ``rmix``) with a Student-t confidence interval
(``--confidence``, default 95 %), marked ``*`` when it excludes 0 (a difference beyond seed
noise), and its p-value after Holm's correction over all policies compared with the reference
(marked ``*`` when the difference survives it).

The agent runs once per ``--reward`` (or ``--agent`` variant). Every policy that acts through
R-Mix's top-k (the reference, ``constant``, the agents) also scores the agents' rewards on a
same-batch counterfactual (random top-k on the same state), so the table gives each one's
**policy gain over random top-k** on each reward, with its interval over seeds; R-Mix's own gain
is 0 up to noise. An agent whose reward reads a held-out split trains on the training budget
minus that split; the reference then runs twice, on the whole budget (the same labelled budget)
and as ``<reference>[held-out]`` on the agents' training set (the held-out images carved and
unused), and the table gives both differences.

A study is resumable: its directory holds ``study.json`` and one directory per run; run the same
command again (or add ``--resume``) after an interruption and finished runs are read back,
interrupted ones resume from their last checkpoint. A different study in the same directory is
refused.

Writes under ``--out`` (rendered by :mod:`rlmix.report`): ``results.md`` (the tables), ``runs.csv``
(one row per policy and seed),
``summary.csv`` (one row per policy), ``accuracy.png`` and ``ece.png`` (mean over seeds with a
± std band), ``entropy.png`` and ``gain.png`` (the agents' policy entropy and same-batch gain).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from baselines import list_policies, policy_mixer
from envs.rewards import reward_for
from rlmix.cli import ArgumentParser, add_config_args, overrides_from_args, run_main
from rlmix.config import MAX_SEED, Config, load_config
from rlmix.errors import ConfigError
from rlmix.io import atomic_write_text, check_writable
from rlmix.launch import LAUNCHERS, run_jobs
from rlmix.locks import hold
from rlmix.plots import plot_curves
from rlmix.report import PAIRED, runs_csv, summary_csv, to_markdown
from rlmix.stats import holm_paired, mean_interval, mean_std, paired_difference
from rlmix.study import (
    HELD_OUT,
    SEARCH,
    AgentSpec,
    ArmSpec,
    Job,
    Result,
    job_config,
    manifest,
    open_study,
    run_dir,
    run_job,
    state_of,
)

FIXED = [p for p in list_policies() if p != "agent"]  # "agent" here is the learning agent
POLICIES = ["agent", *FIXED]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m rlmix.compare",
        description="Run the RL-Mix agent and fixed policies (R-Mix, constant top-k, CutMix+, "
        "Mixup, vanilla) for the same epochs and paired seeds through the same env; write "
        "tables with paired confidence intervals, same-batch policy gains and plots. Run it "
        "again on the same --out to continue an interrupted study.",
    )
    add_config_args(p, seed=False)  # --seeds
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
        "--agent",
        action="append",
        default=None,
        metavar="NAME:REWARD[,KEY=VALUE...]",
        help="an agent variant, tabulated as agent[NAME], e.g. "
        "diff:val_grad_align,agent.baseline=counterfactual (repeatable; with --reward too)",
    )
    p.add_argument(
        "--arm",
        action="append",
        default=None,
        metavar="NAME:POLICY[,KEY=VALUE...]",
        help="a fixed policy with its own settings, tabulated as POLICY[NAME], e.g. "
        "420ep:cutmix_plus,trainer.epochs=420 (equal compute; repeatable)",
    )
    p.add_argument(
        "--reference", default="rmix", help="policy the others are compared with (default rmix)"
    )
    p.add_argument(
        "--versus",
        default="",
        metavar="POLICY[,POLICY...]",
        help="also tabulate each policy's top-1 difference to these policies or --arm labels "
        "(e.g. cutmix_plus, the best fixed mixer), with Holm's correction over the agent variants",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="confidence level of the intervals (default 0.95)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="local runs in parallel processes (default 1; with several GPUs, one run per GPU)",
    )
    p.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local processes (--jobs) or ray: one Ray task per run (pip install 'rlmix[ray]')",
    )
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument(
        "--threads", type=int, help="torch threads per run (default: cpu_count // jobs; Ray: 1)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the study in --out (it resumes by default when --out holds this study; "
        "--resume also refuses to start a new one)",
    )
    p.add_argument(
        "--counterfactual-every",
        type=int,
        default=1,
        metavar="N",
        help="score the same-batch counterfactual every Nth step where it only reports (every "
        "arm but an agent learning from agent.baseline=counterfactual; default 1)",
    )
    p.add_argument(
        "--tables-only",
        action="store_true",
        help="run nothing: write the tables of the seeds whose runs have all finished (a study "
        "in progress, e.g. while another process runs it)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


# -- the study's arms -----------------------------------------------------------------------------


def arm_specs(texts: list[str] | None) -> list[ArmSpec]:
    """The fixed arms of ``--arm``: each a fixed policy and its settings, named once."""
    specs = [ArmSpec.parse(t) for t in texts or []]
    for spec in specs:
        if spec.policy not in FIXED:
            raise ConfigError(
                f"--arm '{spec.name}:{spec.policy}': unknown fixed policy '{spec.policy}'; "
                f"choose one of: {', '.join(FIXED)} (a learning agent is an --agent)"
            )
    labels = [s.label for s in specs]
    dup = next((n for n in labels if labels.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"--arm '{dup}' is given twice")
    return specs


def agent_specs(
    rewards: list[str] | None, agents: list[str] | None, default: str
) -> list[AgentSpec]:
    """The agent arms: one per ``--reward`` and ``--agent``; the config's reward if neither."""
    specs = [AgentSpec(r, r) for r in rewards or []]
    specs += [AgentSpec.parse(a) for a in agents or []]
    specs = specs or [AgentSpec(default, default)]
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"agent '{dup}' is given twice (--reward and --agent names are labels)")
    return specs


def _reward(name: str):
    return reward_for(name, "--reward")


def arms(
    cfg: Config,
    policies: list[str],
    specs: list[AgentSpec],
    reference: str,
    counterfactual_every: int = 1,
    fixed: Sequence[ArmSpec] = (),
) -> list[dict[str, Any]]:
    """Every arm of the study: ``label``, ``policy``, ``reward``, ``log_rewards``, ``hold_out``,
    the arm's ``overrides`` and, for a transfer arm, its ``search`` arm (see the module
    docstring); the ``fixed`` arms (``--arm``) follow the policies.
    ``counterfactual_every`` thins the counterfactual where it only reports (every arm but an
    agent learning from a difference reward)."""
    agent_rewards = [s.reward for s in specs] if "agent" in policies else []
    agent_rewards = list(dict.fromkeys(agent_rewards))
    budget_logs = [r for r in agent_rewards if not _reward(r).held_out]
    several = len(specs) > 1 or specs[0].name != specs[0].reward
    every = counterfactual_every
    out: list[dict[str, Any]] = []
    for policy in policies:
        if policy == "agent":
            for spec in specs:
                label = f"agent[{spec.name}]" if several else "agent"
                learns = load_config(cfg.to_dict(), list(spec.overrides)).agent
                # a difference reward learns from every step's counterfactual
                cf = 1 if learns.baseline == "counterfactual" else every
                learner = _arm(label, "agent", spec.reward, [], None, spec.overrides, cf)
                if spec.transfer:
                    out.append(_transfer_arm(label, spec, learner, every))
                else:
                    out.append(learner)
        else:
            logs = budget_logs if policy_mixer(policy) == "rmix" else []
            out.append(_arm(policy, policy, "none", logs, counterfactual_every=every))
    for spec in fixed:
        logs = budget_logs if policy_mixer(spec.policy) == "rmix" else []
        out.append(_arm(spec.label, spec.policy, "none", logs, None, spec.overrides, every))
    learners = [s.reward for s in specs if not s.transfer] if "agent" in policies else []
    if any(_reward(r).held_out for r in learners):
        label = f"{reference}[{HELD_OUT}]"
        out.append(_arm(label, reference, "none", agent_rewards, "always", (), every))
    return out


def _transfer_arm(label: str, spec: AgentSpec, search: dict, every: int) -> dict[str, Any]:
    """The transfer run of ``spec``: a fresh classifier on the whole budget, mixed by the
    search run's frozen agent, scoring the agent's reward where no held-out data is needed.
    It keeps the search's overrides but those of the agent's learning and data."""
    search = {**search, "label": f"{label}[{SEARCH}]"}
    overrides = [o for o in spec.overrides if not o.startswith(("agent.", "data."))]
    logs = [] if _reward(spec.reward).held_out else [spec.reward]
    return {**_arm(label, "agent", "none", logs, None, overrides, every), "search": search}


def _arm(
    label, policy, reward, logs=(), hold_out=None, overrides=(), counterfactual_every=1
) -> dict[str, Any]:
    scored = [reward, *logs] if policy == "agent" else list(logs)
    counterfactual = any(_reward(r).has_counterfactual for r in scored)
    return {
        "label": label,
        "policy": policy,
        "reward": reward,
        "log_rewards": list(logs),
        "hold_out": hold_out,
        "counterfactual_every": counterfactual_every if counterfactual else None,
        "overrides": list(overrides),
    }


def make_jobs(
    cfg: Config, study_arms: list[dict[str, Any]], seeds: list[int], out: Path
) -> list[Job]:
    """Every (arm, seed) run, seed-major, with its config and run directory.

    Raises:
        ConfigError: two arms would share a run directory.
    """
    jobs = [_job(cfg, arm, seed, out) for seed in seeds for arm in study_arms]
    seen: dict[Path, str] = {}
    for job in [*jobs, *(j.search for j in jobs if j.search is not None)]:
        other = seen.setdefault(job.out, job.label)
        if other != job.label:
            raise ConfigError(
                f"arms '{other}' and '{job.label}' would share the run directory "
                f"'{job.out}'; give them names that differ in more than brackets"
            )
    return jobs


def _job(cfg: Config, arm: dict[str, Any], seed: int, out: Path) -> Job:
    overrides = [f"env.reward={arm['reward']}", f"env.log_rewards={arm['log_rewards']}"]
    if arm["hold_out"] is not None:
        overrides.append(f"data.hold_out={arm['hold_out']}")
    if arm["counterfactual_every"] is not None:
        overrides.append(f"env.counterfactual_every={arm['counterfactual_every']}")
    search = None
    if arm.get("search"):
        search = _job(cfg, arm["search"], seed, out)
        overrides.append(f"frozen_agent.path={search.out / 'agent.zip'}")
    overrides += arm["overrides"]  # the arm's own settings win
    run_cfg = job_config(cfg, seed=seed, out=run_dir(out, arm["label"], seed), overrides=overrides)
    return Job(arm["label"], arm["policy"], seed, run_cfg, search)


def with_searches(results: list[Result]) -> list[Result]:
    """The results with each transfer run's search run after it, as a row of its own."""
    out: list[Result] = []
    for r in results:
        out.append(r)
        if r.search is not None:
            out.append(r.search)
    return out


# -- tables -----------------------------------------------------------------------------------------


def summarise(
    results: list[Result],
    reference: str,
    confidence: float,
    versus: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per label: mean and std over seeds of every run value; the paired differences to
    the reference policy (``<key>_diff``: a :class:`PairedDifference`) and, for runs that hold
    images out, to the reference on their training set (``<key>_diff_same``); the top-1
    difference to each policy of ``versus`` (``top1_diff_vs_<policy>``); and each same-batch
    gain (and a transfer run's search run's gain) with its interval over seeds
    (``gain_<reward>_<span>_ci``, ``search_gain_<span>_ci``)."""
    by_label: dict[str, list[Result]] = {}
    for r in results:
        by_label.setdefault(r.label, []).append(r)
    ref = {r.seed: r.values for r in by_label.get(reference, [])}
    same = {r.seed: r.values for r in by_label.get(f"{reference}[{HELD_OUT}]", [])}
    rows = []
    for label, runs in by_label.items():
        row: dict[str, Any] = {"policy": label, "seeds": len(runs), "kind": runs[0].policy}
        keys = sorted({k for r in runs for k in r.values})
        for key in keys:
            vals = [r.values[key] for r in runs if key in r.values]
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(vals)
            if key.startswith(("gain_", "search_gain_")) and len(vals) == len(runs):
                row[f"{key}_ci"] = mean_interval(vals, confidence)
        if label != reference:
            _paired(row, runs, ref, "_diff", confidence)
        for other in versus:
            base = {r.seed: r.values for r in by_label.get(other, [])}
            if label != other:
                _paired(row, runs, base, f"_diff_vs_{other}", confidence, keys=("top1",))
        holds_out = runs[0].values.get("held_out_images", 0) > 0
        if holds_out and not label.endswith(f"[{HELD_OUT}]"):
            _paired(row, runs, same, "_diff_same", confidence)
        if runs[0].policy == "agent" and runs[0].reward != "none":  # not a transfer run
            reward = runs[0].reward
            base = same if holds_out and same else ref
            for span in ("run", "last"):
                key = f"reward_{reward}_{span}"
                paired = [r for r in runs if r.seed in base and key in base[r.seed]]
                if paired and len(paired) == len(runs):
                    row[f"reward_{span}_diff"] = paired_difference(
                        [r.values[f"reward_{span}"] for r in paired],
                        [base[r.seed][key] for r in paired],
                        confidence,
                    )
        rows.append(row)
    _holm(rows, confidence, [f"top1_diff_vs_{other}" for other in versus])
    _versus_fixed(rows, by_label, reference, confidence)
    return rows


def _versus_fixed(
    rows: list[dict[str, Any]], by_label: dict[str, list[Result]], reference: str, confidence
) -> None:
    """Each agent variant's top-1 difference to every fixed policy of the study, with Holm's
    correction over those policies (``versus_fixed``: label -> (its :class:`PairedDifference`,
    its :class:`HolmComparison`)): does the agent beat each of them, once every comparison made
    is counted?"""
    fixed = [r["policy"] for r in rows if r["kind"] != "agent"]
    for row in rows:
        if not _is_variant(row):
            continue
        family = {}
        for other in fixed:
            base = {r.seed: r.values for r in by_label[other]}
            paired = [r for r in by_label[row["policy"]] if r.seed in base]
            if len(paired) >= 2 and all("top1" in base[r.seed] for r in paired):
                family[other] = paired_difference(
                    [r.values["top1"] for r in paired],
                    [base[r.seed]["top1"] for r in paired],
                    confidence,
                )
        if family:
            holm = holm_paired(family, alpha=1.0 - confidence)
            row["versus_fixed"] = {k: (family[k], holm[k]) for k in family}


def _is_variant(row: dict[str, Any]) -> bool:
    """An agent variant at its own budget: the rows Holm's correction is taken over."""
    return row["kind"] == "agent" and not row["policy"].endswith(f"[{SEARCH}]")


def _holm(rows: list[dict[str, Any]], confidence: float, extra: Sequence[str] = ()) -> None:
    """Holm's correction at ``1 - confidence`` over the agent variants' paired differences (over
    every policy's when the study has no agent), one family per column (``top1_diff``,
    ``ece_diff``, ``top1_diff_same`` and ``extra``): adds ``<column>_holm_p`` (the adjusted
    p-value), ``<column>_holm`` (True when the difference survives) and ``<column>_holm_ci``
    (its interval at its step-down level, see :func:`rlmix.stats.holm_paired`). Policies with
    one paired seed are left out."""
    variants = [r for r in rows if _is_variant(r)] or rows
    for column in [f"{key}_diff" for key in PAIRED] + ["top1_diff_same", *extra]:
        family = {
            i: r[column]
            for i, r in enumerate(rows)
            if column in r and r[column].n >= 2 and any(r is v for v in variants)
        }
        if not family:
            continue
        for i, h in holm_paired(family, alpha=1.0 - confidence).items():
            rows[i][f"{column}_holm_p"] = h.p_adjusted
            rows[i][f"{column}_holm"] = h.rejected
            rows[i][f"{column}_holm_ci"] = h.difference


def _paired(
    row, runs: list[Result], base: dict[int, dict[str, float]], suffix, confidence, keys=PAIRED
) -> None:
    paired = [r for r in runs if r.seed in base]
    if not paired:
        return
    for key in keys:
        if all(key in r.values and key in base[r.seed] for r in paired):
            row[f"{key}{suffix}"] = paired_difference(
                [r.values[key] for r in paired], [base[r.seed][key] for r in paired], confidence
            )


# -- the command ------------------------------------------------------------------------------------


def _check(cfg, policies, seeds, specs, reference, jobs, confidence) -> None:
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
    if "agent" in policies:  # fail before any run, not after the fixed policies
        for spec in specs:
            if _reward(spec.reward).held_out and cfg.data.val_size == 0:
                raise ConfigError(
                    f"--reward {spec.reward} needs a held-out split: set data.val_size (images "
                    "held out of the training budget)"
                )


def compare(
    cfg: Config,
    policies: list[str],
    seeds: list[int],
    rewards: list[str] | None,
    out: Path,
    *,
    agents: list[str] | None = None,
    fixed_arms: list[str] | None = None,
    reference: str = "rmix",
    confidence: float = 0.95,
    jobs: int = 1,
    launcher: str = "local",
    address: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    progress: bool = True,
    counterfactual_every: int = 1,
    versus: Sequence[str] = (),
    tables_only: bool = False,
) -> list[dict[str, Any]]:
    """Run (or continue) every (arm, seed), write the tables and plots; returns the summary
    rows. With ``tables_only``, run nothing: tabulate the seeds whose runs have all finished."""
    specs = agent_specs(rewards, agents, cfg.env.reward)
    fixed = arm_specs(fixed_arms)
    _check(cfg, policies, seeds, specs, reference, jobs, confidence)
    if counterfactual_every < 1:
        raise ConfigError(f"--counterfactual-every must be >= 1 (got {counterfactual_every})")
    labels = [p for p in policies if p != "agent"] + [f.label for f in fixed]
    missing = [v for v in versus if v not in labels]
    if missing:
        raise ConfigError(
            f"--versus {missing[0]}: name a fixed policy that --policies runs, or an --arm label"
        )
    if reference not in policies:
        policies = [*policies, reference]
    study_arms = arms(cfg, policies, specs, reference, counterfactual_every, fixed)
    study_jobs = make_jobs(cfg, study_arms, seeds, out)  # validates every arm's config
    check_writable(out)
    study = manifest(cfg, study_arms, seeds, reference)
    if tables_only:
        open_study(out, study, resume=True)
        done = finished(study_jobs)
        if not done:
            raise ConfigError(f"no seed of the study in '{out}' has finished all its runs yet")
        return _tables(cfg, done, out, reference, confidence, versus, "tables only")
    with hold(out, "rlmix.compare"):  # one compare at a time in a study
        resumed = open_study(out, study, resume=resume)
        results, when = _run_study(
            study_jobs,
            out,
            resumed=resumed,
            progress=progress,
            jobs=jobs,
            launcher=launcher,
            address=address,
            threads=threads,
        )
        return _tables(cfg, results, out, reference, confidence, versus, when)


def _run_study(
    study_jobs: list[Job],
    out: Path,
    *,
    resumed: bool,
    progress: bool,
    jobs: int,
    launcher: str,
    address: str | None,
    threads: int | None,
) -> tuple[list[Result], str]:
    """Run (or continue) the study's runs with a progress bar; their results and a line on the
    wall time they took."""
    start = time.perf_counter()
    bar = tqdm(total=len(study_jobs), desc="compare", disable=not progress)
    if resumed:
        bar.write(f"compare: continuing the study in {out}")
    if not progress:  # in the background: say how to look in
        where = f" --jobs {jobs}" if launcher == "local" and jobs > 1 else ""
        print(
            f"compare: {len(study_jobs)} runs; see where they stand with "
            f"python -m rlmix.status {out}{where}",
            flush=True,
        )

    def report(result: Result) -> None:
        bar.set_postfix_str(f"{result.label} seed {result.seed} done")
        bar.update()

    try:
        results = run_jobs(
            study_jobs,
            launcher=launcher,
            n_jobs=jobs,
            threads=threads,
            address=address,
            on_result=report,
        )
    finally:
        bar.close()
    where = f"{jobs} job{'s' if jobs > 1 else ''}" if launcher == "local" else launcher
    return results, f"{time.perf_counter() - start:.0f} s{' this time' if resumed else ''}, {where}"


def finished(jobs: list[Job]) -> list[Result]:
    """The results of the seeds whose every run has finished (the others are left out, so every
    paired difference is over the same seeds)."""
    done = {
        (j.label, j.seed) for j in jobs if all(state_of(x) == "done" for x in (j, j.search) if x)
    }
    seeds = [
        s
        for s in dict.fromkeys(j.seed for j in jobs)
        if all((j.label, j.seed) in done for j in jobs if j.seed == s)
    ]
    return [run_job(j) for j in jobs if j.seed in seeds]


def _tables(
    cfg: Config,
    results: list[Result],
    out: Path,
    reference: str,
    confidence: float,
    versus: Sequence[str],
    when: str,
) -> list[dict[str, Any]]:
    """Write the tables, CSVs and plots of ``results``; returns the summary rows."""
    results = with_searches(results)
    rows = summarise(results, reference, confidence, versus)
    seeds = sorted({r.seed for r in results})
    title = (
        f"{cfg.data.name} / {cfg.model.name}, {cfg.trainer.epochs} epochs, seeds {seeds} ({when})"
    )
    table = to_markdown(rows, title, reference, confidence, versus)
    atomic_write_text(out / "results.md", table)
    atomic_write_text(out / "runs.csv", runs_csv(results))
    atomic_write_text(out / "summary.csv", summary_csv(rows))
    _plots(results, out)
    return rows


def _plots(results: list[Result], out: Path) -> None:
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
        plot_curves(
            agents,
            out / "gain.png",
            metric="policy_gain",
            title="Agent's same-batch gain over random top-k per epoch",
            ylabel="gain (x 100)",
        )


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
    versus = [p.strip() for p in args.versus.split(",") if p.strip()]
    rows = compare(
        cfg,
        policies,
        args.seeds,
        args.reward,
        out,
        agents=args.agent,
        fixed_arms=args.arm,
        reference=args.reference,
        confidence=args.confidence,
        jobs=args.jobs,
        launcher=args.launcher,
        address=args.address,
        threads=args.threads,
        resume=args.resume,
        progress=not args.no_progress,
        counterfactual_every=args.counterfactual_every,
        versus=versus,
        tables_only=args.tables_only,
    )
    print(to_markdown(rows, "results", args.reference, args.confidence, versus))
    print(f"tables: {out / 'results.md'}, {out / 'runs.csv'}, {out / 'summary.csv'}")
    print(f"plots: {out / 'accuracy.png'}, {out / 'ece.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
