"""One training run, shared by ``rlmix.train`` (a fixed policy) and ``rlmix.train_agent`` (PPO).

A :class:`Run` owns what both commands share: the run directory and its resolved config, the
env stack (:class:`envs.MixupEnv`, :class:`envs.DistributedMixupEnv` on rank 0 of a torchrun job,
:class:`envs.ImageSlotVecEnv` on top), one :class:`rlmix.runlog.RunLog` (one TensorBoard writer,
which SB3's logger writes through), the checkpoint payload, signal handling and the summary.
Both commands are then "drive algorithm X through the slot env": :meth:`Run.drive` runs the one
epoch loop of :mod:`agents.callbacks` with PPO or with :class:`baselines.PolicyRunner`.

Run directory: ``config.yaml``, ``checkpoint.pt`` (atomic, every ``trainer.checkpoint_every``
epochs and after the last), ``metrics.json``, ``timings.json``, ``accuracy.png``, ``tb/``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from agents.callbacks import (
    NEAR_UNIFORM,
    CheckpointCallback,
    EpochLogCallback,
    ProgressCallback,
    StopCallback,
)
from envs import DistributedMixupEnv, ImageSlotVecEnv, MixupEnv, follow
from rlmix import distributed
from rlmix.checkpoints import load_checkpoint, save_checkpoint
from rlmix.cli import overrides_from_args, run_training
from rlmix.config import Config, load_config, save_config
from rlmix.errors import ConfigError, FollowerExit, RlmixError
from rlmix.io import check_writable
from rlmix.plots import plot_curves
from rlmix.runlog import RunLog
from rlmix.seeding import numpy_rng_state, set_numpy_rng_state
from rlmix.signals import StopFlag


class Algorithm(Protocol):
    """What :meth:`Run.drive` needs: SB3's ``learn`` (PPO and :class:`baselines.PolicyRunner`)."""

    def learn(
        self, total_timesteps: int, callback: BaseCallback, reset_num_timesteps: bool
    ) -> Any: ...


class Run:
    """A run directory with its env stack and logs (see the module docstring).

    Args:
        cfg: the resolved config of the run.
        resume: continue from ``cfg.out/checkpoint.pt`` (refused if written with another config).
        progress: show progress bars and one line per epoch.
        bootstrap: the slot env hands SB3 the terminal observations at epoch ends (the agent
            with ``agent.gamma > 0``; see :class:`envs.ImageSlotVecEnv`).
        difference_reward: the slot env hands SB3 each image's reward minus its counterfactual
            (the agent with ``agent.baseline: counterfactual``).

    Under torchrun every rank builds a Run; only rank 0 (``is_main``) has the VecEnv, the log and
    the files. The others call :meth:`follow`.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        resume: bool = False,
        progress: bool = True,
        bootstrap: bool = False,
        difference_reward: bool = False,
    ) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress
        self.is_main = distributed.current().is_main
        self.state = distributed.on_main(lambda: self._read(resume))
        self.env = distributed.together(lambda: MixupEnv(cfg))  # data, model: every rank's
        if self.state is not None:
            self.restore("env", self.env.load_state_dict)
        self.trainer = self.env.trainer
        if not self.is_main:
            return
        self.batch_env = (
            DistributedMixupEnv(self.env) if distributed.current().enabled else self.env
        )
        self.venv = ImageSlotVecEnv(
            self.batch_env, terminal_observations=bootstrap, difference_reward=difference_reward
        )
        self.log = RunLog(self.out, step=lambda: self.trainer.global_step)
        if self.state is not None:
            self.log.history = list(self.section("history", list))
            self.log.timings = list(self.section("timings", list))
        save_config(cfg, self.out / "config.yaml")

    def _read(self, resume: bool) -> dict[str, Any] | None:
        out = check_writable(self.out)
        return load_checkpoint(out / "checkpoint.pt", config=self.cfg.to_dict()) if resume else None

    def _refuse(self, problem: str) -> ConfigError:
        return ConfigError(
            f"checkpoint '{self.out / 'checkpoint.pt'}' {problem}; it cannot be resumed: run "
            "again without --resume to start over"
        )

    def section(self, key: str, kind: type = object) -> Any:
        """The resumed checkpoint's section ``key``; one :class:`ConfigError` when it is
        missing or not a ``kind`` (a checkpoint that was edited or damaged)."""
        assert self.state is not None, "not resumed"
        if key not in self.state:
            raise self._refuse(f"lacks its '{key}' section")
        value = self.state[key]
        if not isinstance(value, kind):
            raise self._refuse(f"holds a {type(value).__name__} as its '{key}' section")
        return value

    def restore(self, key: str, load: Callable[[Any], None]) -> None:
        """``load`` the resumed checkpoint's section ``key`` (a dict); one :class:`ConfigError`
        when it is missing, or lacks or mistypes what ``load`` reads."""
        value = self.section(key, dict)
        try:
            load(value)
        except KeyError as e:
            raise self._refuse(f"lacks {e.args[0]!r} in its '{key}' section") from e
        except (IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise self._refuse(f"has a damaged '{key}' section ({first})") from e

    @property
    def resumed(self) -> bool:
        return self.state is not None

    def follow(self) -> dict[str, int]:
        """On ranks > 0: mirror rank 0 until it stops; ``{"exit_code": c}``."""
        with StopFlag():  # rank 0 decides when to stop
            return {"exit_code": follow(self.env)}

    def drive(
        self,
        algo: Algorithm,
        *,
        label: str,
        payload: Callable[[], dict[str, Any]],
        on_save: Callable[[dict[str, Any]], None] | None = None,
        stop_after: int | None = None,
    ) -> dict[str, Any]:
        """Run ``algo`` on the slot env until the last epoch (or epoch ``stop_after``).

        Args:
            algo: PPO or a :class:`baselines.PolicyRunner` on :attr:`venv`.
            label: what trains, for progress bars and plots (``"R-Mix"``, ``"RL-Mix"``).
            payload: the algorithm's part of a checkpoint (policy or agent state).
            on_save: called with the saved state after each checkpoint (e.g. to export
                ``agent.zip`` from the payload).
            stop_after: stop after this epoch (checkpointed; continue with ``resume``).

        Returns:
            The metrics dict written to ``metrics.json``.
        """
        cfg, t, log = self.cfg, self.trainer, self.log
        last = min(cfg.trainer.epochs, stop_after or cfg.trainer.epochs)
        if self.resumed and t.epoch >= cfg.trainer.epochs:
            raise ConfigError(
                f"nothing to do: the run in '{self.out}' already has its {cfg.trainer.epochs} "
                "epochs (raise trainer.epochs in a new run to train longer)"
            )
        extra = {
            "policy": cfg.policy,
            "reward": cfg.env.reward,
            "seed": cfg.seed,
            "dataset": cfg.data.name,
            "train_images": t.train_images,
            "held_out_images": t.held_out_images,
        }

        def save() -> None:
            state = {
                "config": cfg.to_dict(),
                "env": self.batch_env.state_dict(),
                "history": log.history,
                "timings": log.timings,
                "np_random": numpy_rng_state(),
                **payload(),
            }
            save_checkpoint(self.out / "checkpoint.pt", state)
            if on_save is not None:
                on_save(state)
            log.write(extra)

        remaining = max(0, last - t.epoch) * t.steps_per_epoch * self.venv.num_envs
        code = 1
        try:
            with StopFlag() as stop:
                callbacks: list[BaseCallback] = [
                    EpochLogCallback(
                        log, cfg.mix.k, reward=cfg.env.reward, diagnostics=cfg.mix.mixer == "rmix"
                    )
                ]
                if self.progress:
                    callbacks.append(ProgressCallback(log, cfg.trainer.epochs, label))
                callbacks += [
                    CheckpointCallback(
                        save,
                        lambda: t.epoch,
                        every=cfg.trainer.checkpoint_every,
                        last=last,
                        stopped=lambda: stop.stopped,
                    ),
                    StopCallback(lambda: stop.stopped),
                ]
                if self.resumed:
                    self.restore("np_random", set_numpy_rng_state)
                if remaining:
                    algo.learn(
                        remaining,
                        callback=CallbackList(callbacks),
                        reset_num_timesteps=not self.resumed,
                    )
                stop.check(kept=(self.out / "checkpoint.pt").exists())
            code = 0
        except RlmixError as e:
            code = e.exit_code
            if isinstance(self.batch_env, DistributedMixupEnv):
                e.collective = True  # the followers are stopped with its code and leave with us
            raise
        finally:
            if isinstance(self.batch_env, DistributedMixupEnv):
                self.batch_env.close(code)
            log.close()
        log.write(extra)
        if log.history:
            plot_curves({label: [log.history]}, self.out / "accuracy.png")
        return {**extra, "final": log.history[-1] if log.history else {}, "epochs": log.history}


def run_command(
    train: Callable[..., dict[str, Any]],
    args: argparse.Namespace,
    *,
    command: str,
    files: Sequence[str],
    **flags: object,
) -> int:
    """``main`` of a training ``command`` (its name, e.g. ``rlmix.train``): config from ``args``
    (``flags`` are more shortcut overrides, e.g. ``policy``), ``train`` under torchrun if
    launched by it, then the summary (``files``: what the run directory holds besides its
    metrics)."""
    cfg = load_config(
        args.config, overrides_from_args(args, **{"env.reward": args.reward}, **flags)
    )
    start = time.perf_counter()
    metrics = run_training(train, cfg, args, command)
    if "exit_code" in metrics:  # a follower rank: rank 0 reports
        if metrics["exit_code"]:
            raise FollowerExit(metrics["exit_code"])
        return 0
    paths = {Path(name).stem.replace("_", " "): str(Path(cfg.out) / name) for name in files}
    print()
    wall = time.perf_counter() - start
    print(summary(metrics, cfg.out, wall, files=paths, epochs=cfg.trainer.epochs))
    return 0


def policy_gain(epochs: list[dict[str, Any]], key: str = "policy_gain") -> dict[str, float] | None:
    """The run's same-batch gain over random top-k from its epoch rows: ``mean`` and ``se`` over
    the epochs that scored a counterfactual, ``last`` (the last such epoch) with ``last_se``
    (over its steps), and ``epochs``; None when no epoch did."""
    rows = [row for row in epochs if key in row]
    if not rows:
        return None
    values = [row[key] for row in rows]
    mean = sum(values) / len(values)
    se = math.nan
    if len(values) > 1:
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        se = math.sqrt(var / len(values))
    last = rows[-1]
    return {
        "mean": mean,
        "se": se,
        "last": last[key],
        "last_se": last.get(f"{key}_se", math.nan),
        "epochs": float(len(rows)),
    }


def gain_sentence(gain: dict[str, float], reward: str) -> str:
    """The summary's policy-gain lines: the figure, then what it means."""
    value = f"{gain['mean']:+.4f} ± {gain['se']:.4f} ({reward}; mean ± SE over {int(gain['epochs'])} epochs)"
    if not math.isfinite(gain["se"]):
        verdict = "one epoch scored: too few to tell gain from noise"
    elif abs(gain["mean"]) <= 2 * gain["se"]:
        verdict = "within noise of 0: on this reward the policy does no better than random top-k"
    elif gain["mean"] > 0:
        verdict = "beyond noise: the policy beats random top-k on this reward"
    else:
        verdict = "beyond noise, below 0: random top-k scores higher on this reward"
    return f"{value}\n  {'':<18}{verdict}"


PAPER_REWARD = "grad_cosine"  # the paper's reward (the agent's default is the study's best)


def summary(
    metrics: dict[str, Any],
    out: str | Path,
    wall: float,
    *,
    files: dict[str, str],
    epochs: int | None = None,
) -> str:
    """The end-of-run report both commands print: final metrics, the policy, where files went;
    a run stopped before its ``epochs`` says so and how to continue."""
    final, out = metrics["final"], Path(out)
    rows: list[tuple[str, str]] = []
    if "train_images" in metrics:
        rows.append(
            (
                "data",
                f"{metrics['dataset']}: trained on {metrics['train_images']} images, "
                f"{metrics['held_out_images']} held out",
            )
        )
    for key, label in (("top1", "test top-1"), ("ece", "test ECE"), ("fgsm_error", "FGSM error")):
        if key in final:
            rows.append((f"final {label}", f"{100 * final[key]:.2f} %"))
    rewards = [row["reward"] for row in metrics["epochs"]]
    if rewards:
        rows.append(("mean reward", f"{sum(rewards) / len(rewards):.4f} ({metrics['reward']})"))
    gain = policy_gain(metrics["epochs"])
    if gain is not None:
        rows.append(("gain vs random", gain_sentence(gain, metrics["reward"])))
    uniform = False
    if "policy_entropy_frac" in final:
        frac = final["policy_entropy_frac"]
        rows.append(("policy entropy", f"{100 * frac:.1f} % of ln K (last epoch)"))
        uniform = frac > NEAR_UNIFORM and metrics["policy"] == "agent"
    rows.append(("wall time", f"{wall:.1f} s"))
    rows.append(("metrics", str(out / "metrics.json")))
    rows += list(files.items())
    rows.append(("TensorBoard", f"tensorboard --logdir {out / 'tb'}"))
    n = len(metrics["epochs"])
    if epochs is not None and n < epochs:
        lines = [f"{metrics['policy']} stopped after epoch {n} of {epochs} (checkpointed; run it "
                 "again with --resume to continue)"]  # fmt: skip
    else:
        lines = [f"{metrics['policy']} finished ({n} epoch{'' if n == 1 else 's'})"]
    lines += [f"  {label:<18}{value}" for label, value in rows]
    if gain is None and metrics["policy"] == "agent":
        lines.append(
            f"  note: no same-batch counterfactual was scored (env.counterfactual_every 0, or "
            f"reward '{metrics['reward']}' needs the step's outcome), so nothing here says "
            "whether the policy beats random top-k"
        )
    if metrics["policy"] == "agent" and metrics["reward"] not in (PAPER_REWARD, "none"):
        lines.append(f"  note: the paper's reward is one flag away: --reward {PAPER_REWARD}")
    if uniform:
        lines.append(
            f"  note: the policy stayed near uniform: reward '{metrics['reward']}' gave the agent "
            "nothing it could learn (docs/agent.md: 'Does the agent learn?')"
        )
    return "\n".join(lines)


__all__ = ["Run", "gain_sentence", "policy_gain", "run_command", "summary"]
