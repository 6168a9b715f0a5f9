"""The one epoch loop's hooks: SB3 callbacks shared by the PPO agent and the fixed policies.

Chain them with ``CallbackList`` (in this order) and pass them to ``PPO.learn`` or
:meth:`baselines.PolicyRunner.learn`; both step an :class:`envs.ImageSlotVecEnv`, whose slots are
all done at a classifier epoch's end:

- :class:`EpochLogCallback`: per step, the step scalars and the epoch's statistics (with the
  policy diagnostics of :func:`policy_diagnostics`); per epoch, the history row.
- :class:`ProgressCallback`: a tqdm bar per epoch and one console line per epoch row.
- :class:`CheckpointCallback`: the checkpoint after every ``every``-th epoch (at the start of
  the next rollout, once the agent has learned from the epoch's last rollout) and at the end.
- :class:`StopCallback`: ends training at the next step once a signal arrived.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from rlmix.mixing import topk_space
from rlmix.runlog import RunLog

NEAR_UNIFORM = 0.98  # entropy fraction of ln K above which a policy counts as uniform


def policy_diagnostics(probs: np.ndarray, q_values: np.ndarray) -> dict[str, float]:
    """How a policy acts on one batch, from its per-image probabilities (B, K).

    Returns ``entropy`` (mean per-image entropy, nats), ``entropy_frac`` (over ln K),
    ``kl_uniform`` (mean KL from the uniform policy, nats: ln K - entropy), ``expected_q`` (mean
    of each image's expected top-k) and ``q_std`` (std over images of the expected top-k: 0 when
    the policy ignores the observation).
    """
    k = probs.shape[1]
    p = np.clip(probs, 1e-12, 1.0)
    entropy = -(probs * np.log(p)).sum(axis=1)
    expected_q = probs @ q_values
    return {
        "entropy": float(entropy.mean()),
        "entropy_frac": float(entropy.mean() / math.log(k)),
        "kl_uniform": float(math.log(k) - entropy.mean()),
        "expected_q": float(expected_q.mean()),
        "q_std": float(expected_q.std()),
    }


class EpochStats:
    """What one epoch's steps add up to."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.start = time.perf_counter()
        self.values: dict[str, list[float]] = {}
        self.counts = np.zeros(k, dtype=np.int64)

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.values.setdefault(key, []).append(value)

    def row(self, epoch: int) -> dict[str, Any]:
        """Means of the step values; for the policy gains also their standard error over
        steps (``<key>_se``) and the number of counterfactual steps (``<key>_n``, an int)."""
        row: dict[str, Any] = {"epoch": float(epoch)}
        for key, v in self.values.items():
            row[key] = float(np.mean(v))
            if key.startswith("policy_gain"):
                row[f"{key}_n"] = len(v)
                if len(v) > 1:
                    row[f"{key}_se"] = float(np.std(v, ddof=1) / math.sqrt(len(v)))
        if self.counts.any():
            row["q_hist"] = self.counts.tolist()
        return row


class EpochLogCallback(BaseCallback):
    """Step scalars, epoch statistics and the history row of every epoch.

    The step's reward is the env's (``info["reward_per_image"]``), whatever PPO is handed (a
    difference reward with ``agent.baseline: counterfactual``). A counterfactual step's
    ``policy_gain/<name>`` becomes ``policy_gain`` for the run's reward ``reward`` and
    ``policy_gain_<name>`` for a logged one.

    Args:
        log: the run log (history, TensorBoard).
        k: size of the top-k space.
        reward: the name of the run's reward (``env.reward``).
        diagnostics: compute the policy diagnostics each step (``model.action_probs`` of the
            observation the step acted on); off for mixers that ignore the action.
    """

    def __init__(self, log: RunLog, k: int, *, reward: str = "", diagnostics: bool = True) -> None:
        super().__init__()
        self.log, self.k, self.reward, self.diagnostics = log, k, reward, diagnostics
        self.q_values = topk_space(k).double().numpy()
        self.stats = EpochStats(k)

    def _on_training_start(self) -> None:
        self.stats = EpochStats(self.k)  # an epoch's wall time runs from the previous one's end

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        reward = float(np.mean(info["reward_per_image"]))
        step = {"train_loss": info["train_loss"], "reward": reward, "mean_q": info["mean_q"]}
        for key, value in info.items():
            if key.startswith("policy_gain/"):
                name = key[len("policy_gain/") :]
                step["policy_gain" if name == self.reward else f"policy_gain_{name}"] = value
        self.stats.add(**step)
        self.stats.add(**{f"reward_{k[7:]}": v for k, v in info.items() if k.startswith("reward/")})
        for key, value in (*step.items(), ("lr", info["lr"])):
            self.log.scalar(f"step/{key}", value)
        if self.diagnostics:
            probs = self.model.action_probs(self.model._last_obs)
            diag = policy_diagnostics(probs, self.q_values)
            self.stats.add(**{f"policy_{key}": value for key, value in diag.items()})
            self.stats.counts += np.bincount(
                np.asarray(self.locals["actions"]).ravel(), minlength=self.k
            )
        if self.locals["dones"][0]:
            self._end_epoch(info)
        return True

    def _end_epoch(self, info: dict[str, Any]) -> None:
        row = self.stats.row(int(info["epoch"]) + 1)
        row.update({key[5:]: float(v) for key, v in info.items() if key.startswith("test/")})
        self.log.end_epoch(row, time.perf_counter() - self.stats.start)
        if "q_hist" in row:
            counts = np.asarray(row["q_hist"])
            self.log.histogram(
                "policy/q", np.repeat(self.q_values, counts), np.append(self.q_values, 1.0)
            )
        self.stats = EpochStats(self.k)


def format_row(row: dict[str, Any]) -> str:
    """One console line per epoch."""
    parts = [f"epoch {int(row['epoch'])}", f"loss {row['train_loss']:.4f}"]
    for key, label in (("top1", "top1"), ("ece", "ECE"), ("fgsm_error", "FGSM err")):
        if key in row:
            parts.append(f"{label} {100 * row[key]:.2f}%")
    parts.append(f"reward {row['reward']:.4f}")
    if "policy_gain" in row:
        parts.append(f"gain vs random {row['policy_gain']:+.4f}")
    if "policy_entropy_frac" in row:
        parts.append(f"entropy {100 * row['policy_entropy_frac']:.1f}% of ln K")
    return " | ".join(parts)


class ProgressCallback(BaseCallback):
    """A tqdm bar per epoch (loss and reward as postfix) and a console line per epoch.

    Args:
        log: the run log, whose last history row is printed at each epoch's end.
        epochs: the run's epoch count (for the bar's label).
        label: what is training (``"R-Mix"``, ``"RL-Mix"``...).
    """

    def __init__(self, log: RunLog, epochs: int, label: str) -> None:
        super().__init__()
        self.log, self.epochs, self.label = log, epochs, label
        self.bar: tqdm | None = None

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        if self.bar is None:  # the epoch's first step
            t = self.training_env.unwrapped.trainer
            self.bar = tqdm(
                total=t.steps_per_epoch,
                leave=False,
                desc=f"epoch {int(info['epoch']) + 1}/{self.epochs} ({self.label})",
            )
        self.bar.update()
        self.bar.set_postfix(
            loss=f"{info['train_loss']:.3f}", r=f"{np.mean(self.locals['rewards']):.3f}"
        )
        if self.locals["dones"][0]:
            self._close()
            tqdm.write(format_row(self.log.history[-1]))
        return True

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _on_training_end(self) -> None:
        self._close()


class CheckpointCallback(BaseCallback):
    """Save after every ``every``-th epoch and after the last one.

    The save runs at the start of the rollout that follows an epoch's end (the PPO update of the
    epoch's last rollout has happened, the next epoch has not taken a step), and when training
    ends, unless it was stopped (``stopped()``) before reaching an epoch boundary.

    Args:
        save: writes the checkpoint (and whatever goes with it).
        epoch: the number of finished epochs now.
        every: checkpoint cadence in epochs.
        last: the final epoch of the run (always checkpointed).
        stopped: True when training is being stopped by a signal.
    """

    def __init__(
        self,
        save: Callable[[], None],
        epoch: Callable[[], int],
        *,
        every: int,
        last: int,
        stopped: Callable[[], bool],
    ) -> None:
        super().__init__()
        self.save, self.epoch, self.every, self.last, self.stopped = (
            save,
            epoch,
            every,
            last,
            stopped,
        )
        self._saved = epoch()

    def _maybe_save(self) -> None:
        e = self.epoch()
        if e > self._saved and (e % self.every == 0 or e >= self.last):
            self.save()
            self._saved = e

    def _on_rollout_start(self) -> None:
        self._maybe_save()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if not self.stopped():
            self._maybe_save()


class StopCallback(BaseCallback):
    """End training at the next step once ``stopped()`` is True (a signal arrived)."""

    def __init__(self, stopped: Callable[[], bool]) -> None:
        super().__init__()
        self.stopped = stopped

    def _on_step(self) -> bool:
        return not self.stopped()


__all__ = [
    "NEAR_UNIFORM",
    "CheckpointCallback",
    "EpochLogCallback",
    "EpochStats",
    "ProgressCallback",
    "StopCallback",
    "format_row",
    "policy_diagnostics",
]
