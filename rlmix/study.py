"""The runs of a comparison study: what each is, where it lives, and how it is (re)started.

A study is every (arm, seed) run of :mod:`rlmix.compare`; an arm is a fixed policy or an agent
variant (a reward and agent settings). Each run has its own directory under the study's, and
:func:`run_job` is the one way a run is executed, by every launcher (this process, local worker
processes, Ray tasks): a finished run is read back from its ``metrics.json``, an interrupted one
resumes from its ``checkpoint.pt``, a new one starts. So a study that is run again, after an
interruption or a crash, or a Ray task that is retried, continues where it stopped and gives the
tables an uninterrupted study gives.

``study.json`` records what a study is (config, arms, seeds, reference): running a different
study into the same directory is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlmix.checkpoints import config_difference
from rlmix.config import Config, leaf_keys, load_config
from rlmix.errors import ConfigError, RlmixError
from rlmix.io import atomic_write_json
from rlmix.locks import hold

MANIFEST = "study.json"
HELD_OUT = "held-out"  # label suffix of the reference run on the agents' training set
SEARCH = "search"  # label suffix of a transfer arm's search run
# (key in the final metrics, column title, scale)
METRICS = [
    ("top1", "top-1 (%)", 100.0),
    ("nll", "NLL", 1.0),
    ("ece", "ECE (%)", 100.0),
    ("fgsm_error", "FGSM err (%)", 100.0),
    ("loc_acc", "CAM loc (%)", 100.0),
]


# An arm's name is a path component of its run directories: letters, digits and _ . + - only.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# Keys the study sets for every run itself: an arm that overrode them would write into another
# run's directory, repeat one seed, or train on something other than its label says.
STUDY_KEYS = (
    "seed",
    "out",
    "policy",
    "env.reward",
    "env.log_rewards",
    "data.hold_out",
    "frozen_agent.path",
)


def _parse_arm(text: str, flag: str, example: str) -> tuple[str, str, list[str], bool]:
    """``NAME:HEAD[,KEY=VALUE...]`` -> name, head, overrides and ``transfer``; refuses a name
    that is not a plain path component and an override of a key the study owns."""
    name, sep, rest = text.partition(":")
    parts = [p.strip() for p in rest.split(",")] if sep else [name]
    name = name.strip()
    if not name or not parts[0] or "=" in parts[0]:
        raise ConfigError(f"{flag} '{text}' must look like {example}")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{flag} '{text}': the name '{name}' may hold only letters, digits and _ . + - "
            "(it names the arm's run directories), and starts with a letter or digit"
        )
    bad = [p for p in parts[1:] if "=" not in p]
    if bad:
        raise ConfigError(f"{flag} '{text}': '{bad[0]}' is not a KEY=VALUE override")
    leaves = leaf_keys()
    overrides, transfer = [], False
    for part in parts[1:]:
        key, _, value = (x.strip() for x in part.partition("="))
        if key == "transfer":
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"{flag} '{text}': transfer must be true or false")
            transfer = value.lower() == "true"
            continue
        dotted = key if "." in key else leaves.get(key, key)
        if dotted in STUDY_KEYS:
            raise ConfigError(
                f"{flag} '{text}': '{key}' is set by the study for every run (seeds by --seeds, "
                f"the reward after the colon, directories under --out); drop it from the arm"
            )
        overrides.append(f"{key}={value}")
    return name, parts[0], overrides, transfer


@dataclass(frozen=True)
class AgentSpec:
    """One agent arm: a reward and agent settings, labelled ``agent[name]`` in the tables.

    Parsed from ``NAME:REWARD[,KEY=VALUE...]`` (``--agent``), e.g.
    ``diff:val_grad_align,agent.baseline=counterfactual``; ``--reward R`` is ``R:R``. The
    option ``transfer=true`` makes it search-then-transfer: per seed, the agent learns (the
    search run, holding out what its reward reads), then a fresh classifier trains on the whole
    budget mixed by the search run's frozen policy (the transfer run, the arm's row).
    """

    name: str
    reward: str
    overrides: tuple[str, ...] = ()
    transfer: bool = False

    @classmethod
    def parse(cls, text: str) -> AgentSpec:
        name, reward, overrides, transfer = _parse_arm(
            text,
            "--agent",
            "NAME:REWARD[,KEY=VALUE...], e.g. diff:val_grad_align,agent.baseline=counterfactual",
        )
        return cls(name, reward, tuple(overrides), transfer)


@dataclass(frozen=True)
class ArmSpec:
    """A fixed policy with its own settings, labelled ``POLICY[NAME]`` in the tables.

    Parsed from ``NAME:POLICY[,KEY=VALUE...]`` (``--arm``), e.g. ``420ep:cutmix_plus,
    trainer.epochs=420``: CutMix+ trained for 420 epochs beside the study's own arms (equal
    compute), on the same seeds.
    """

    name: str
    policy: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.policy}[{self.name}]"

    @classmethod
    def parse(cls, text: str) -> ArmSpec:
        name, policy, overrides, transfer = _parse_arm(
            text, "--arm", "NAME:POLICY[,KEY=VALUE...], e.g. 420ep:cutmix_plus,trainer.epochs=420"
        )
        if transfer:
            raise ConfigError(f"--arm '{text}': transfer=true is an --agent option")
        return cls(name, policy, tuple(overrides))


@dataclass(frozen=True)
class Job:
    """One run of a study. A transfer run (``search`` set) applies the frozen policy of its
    search run, which runs first in the same task (:func:`run_job`)."""

    label: str  # "rmix", "agent[grad_cosine]", "rmix[held-out]"
    policy: str
    seed: int
    cfg: Config
    search: Job | None = None

    @property
    def reward(self) -> str:
        return self.cfg.env.reward

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)


@dataclass
class Result:
    """What one run gives the tables: final metrics, the history, epoch times and data sizes."""

    label: str
    policy: str
    seed: int
    reward: str
    final: dict[str, float]
    history: list[dict[str, Any]]
    epoch_times: list[float]
    data: dict[str, int] = field(default_factory=dict)
    search: Result | None = None  # a transfer run's search run

    @functools.cached_property
    def values(self) -> dict[str, float]:
        """The run's numbers for the tables (:func:`run_values`)."""
        return run_values(self)


def _gain_key(result: Result, reward: str) -> str:
    return "policy_gain" if reward == result.reward else f"policy_gain_{reward}"


def run_values(result: Result) -> dict[str, float]:
    """The per-run numbers of ``runs.csv``: final metrics (in table units), rewards, same-batch
    gains over random top-k (``gain_<reward>_run`` / ``_last``), entropy, data sizes."""
    out: dict[str, float] = {}
    for key, _, scale in METRICS:
        if key in result.final:
            out[key] = scale * result.final[key]
    history = result.history
    for key in {k for row in history for k in row if k.startswith("reward")}:
        series = [row[key] for row in history if key in row]
        out[f"{key}_run"] = sum(series) / len(series)
        out[f"{key}_last"] = history[-1].get(key, float("nan"))
    rewards = {k[len("reward_") :] for k in out if k.startswith("reward_") and k.endswith("_run")}
    for reward in sorted({result.reward, *(r[: -len("_run")] for r in rewards)} - {"none"}):
        key = _gain_key(result, reward)
        series = [row[key] for row in history if key in row]
        if series:
            out[f"gain_{reward}_run"] = sum(series) / len(series)
            out[f"gain_{reward}_last"] = series[-1]
    last = history[-1]
    if "policy_entropy_frac" in last:
        out["entropy_frac_last"] = 100.0 * last["policy_entropy_frac"]
        out["mean_q_last"] = last["mean_q"]
        out["q_std_last"] = last["policy_q_std"]
    out.update({k: float(v) for k, v in result.data.items()})
    out["s_per_epoch"] = sum(result.epoch_times) / max(len(result.epoch_times), 1)
    if result.search is not None:
        search = result.search.values
        for span in ("run", "last"):
            key = f"gain_{result.search.reward}_{span}"
            if key in search:
                out[f"search_gain_{span}"] = search[key]
        out["search_top1"] = search.get("top1", float("nan"))
        out["search_s_per_epoch"] = search["s_per_epoch"]
    return out


def job_config(cfg: Config, *, seed: int, out: Path, overrides: list[str] | None = None) -> Config:
    """``cfg`` for one run: its seed, directory and the arm's overrides (validated)."""
    return load_config({**cfg.to_dict(), "seed": seed, "out": str(out)}, overrides or [])


def run_dir(out: Path, label: str, seed: int) -> Path:
    return out / label.replace("[", "_").replace("]", "") / f"seed{seed}"


def state_of(job: Job) -> str:
    """``done`` (all epochs in ``metrics.json``), ``partial`` (a checkpoint to resume) or
    ``new``."""
    metrics = job.out / "metrics.json"
    if metrics.is_file():
        try:
            saved = json.loads(metrics.read_text())
        except (OSError, ValueError):
            saved = {}
        same = all(saved.get(k) == v for k, v in (("policy", job.policy), ("seed", job.seed)))
        if same and len(saved.get("epochs", [])) >= job.cfg.trainer.epochs:
            return "done"
    return "partial" if (job.out / "checkpoint.pt").is_file() else "new"


def _run_file(job: Job, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object ``name`` of a finished run, holding ``keys``.

    Raises:
        RlmixError: it is missing, unreadable or lacks a key (one line naming the run and the
            file: a run is read back only when its ``metrics.json`` says it finished).
    """
    path = job.out / name
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        problem = "is missing"
    except (OSError, ValueError) as e:
        problem = f"is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    else:
        missing = [k for k in keys if not isinstance(data, dict) or k not in data]
        if not missing:
            return data
        problem = f"lacks '{missing[0]}'"
    raise RlmixError(
        f"run {job.label} seed {job.seed} cannot be read back: its {name} {problem} "
        f"(its metrics.json says it finished); remove '{job.out}' and run the study again to "
        "redo that run"
    )


def read_result(job: Job) -> Result:
    """The :class:`Result` of a finished run, from its ``metrics.json`` and ``timings.json``.

    Raises:
        RlmixError: one of them is missing, unreadable or incomplete.
    """
    metrics = _run_file(job, "metrics.json", ("final", "epochs"))
    timings = _run_file(job, "timings.json", ("epoch_time_s",))["epoch_time_s"]
    data = {k: int(metrics[k]) for k in ("train_images", "held_out_images") if k in metrics}
    return Result(
        job.label,
        job.policy,
        job.seed,
        job.reward,
        metrics["final"],
        metrics["epochs"],
        timings,
        data,
    )


def run_job(job: Job, threads: int | None = None) -> Result:
    """Run (or finish, or read back) one run in this process with ``threads`` torch threads;
    a transfer run's search run first."""
    search = None if job.search is None else run_job(job.search, threads)
    if state_of(job) != "done":
        import torch

        from rlmix.train import train_fixed
        from rlmix.train_agent import train_agent

        learns = job.policy == "agent" and job.search is None
        train = train_agent if learns else train_fixed
        resume = state_of(job) == "partial"
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            with hold(job.out, "rlmix.compare", study=False):
                train(
                    dataclasses.replace(job.cfg, policy=job.policy), resume=resume, progress=False
                )
        finally:
            torch.set_num_threads(before)
    return dataclasses.replace(read_result(job), search=search)


def manifest(cfg: Config, arms: list[dict[str, Any]], seeds: list[int], reference: str) -> dict:
    """What makes a study this study (written to ``study.json``)."""
    config = {k: v for k, v in cfg.to_dict().items() if k != "out"}
    return {"config": config, "arms": arms, "seeds": list(seeds), "reference": reference}


def open_study(out: Path, study: dict[str, Any], *, resume: bool) -> bool:
    """Check ``out`` against ``study`` and record it; True when ``out`` already held it.

    Raises:
        ConfigError: ``out`` holds a different study, or ``resume`` and it holds none.
    """
    path = out / MANIFEST
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"'{path}' is unreadable ({e}); remove it or use another --out"
            ) from e
        same_config = not config_difference(saved.get("config", {}), study["config"])
        if {**saved, "config": study["config"]} != study or not same_config:
            raise ConfigError(
                f"'{out}' holds a different study ({_difference(saved, study)}); use another "
                "--out, or remove the directory to start over"
            )
        return True
    if resume:
        raise ConfigError(f"nothing to resume: '{out}' holds no study ({MANIFEST} is missing)")
    atomic_write_json(path, study)
    return False


def _difference(saved: dict[str, Any], now: dict[str, Any]) -> str:
    for key in ("arms", "seeds", "reference"):
        if saved.get(key) != now.get(key):
            return f"{key}: {saved.get(key)!r} there, {now.get(key)!r} now"
    return (
        config_difference(saved.get("config", {}), now.get("config", {}), there="there") or "format"
    )


__all__ = [
    "HELD_OUT",
    "MANIFEST",
    "METRICS",
    "SEARCH",
    "STUDY_KEYS",
    "AgentSpec",
    "ArmSpec",
    "Job",
    "Result",
    "job_config",
    "manifest",
    "open_study",
    "read_result",
    "run_dir",
    "run_job",
    "run_values",
    "state_of",
]
