"""Run outputs: TensorBoard scalars, the per-epoch history and ``metrics.json``.

``metrics.json`` holds only quantities that are deterministic for a fixed seed on CPU (so a
resumed run's file equals an uninterrupted run's); wall times go to ``timings.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from rlmix.checkpoints import atomic_write_json


class EpochStats:
    """Accumulates the per-step ``info`` of one epoch."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.rewards: list[float] = []
        self.q: list[float] = []
        self.actions: list[np.ndarray] = []
        self.start = time.perf_counter()

    def add(self, info: dict[str, Any], reward: float, action: np.ndarray | None = None) -> None:
        self.losses.append(info["train_loss"])
        self.rewards.append(reward)
        self.q.append(info["mean_q"])
        if action is not None:
            self.actions.append(np.asarray(action).ravel())

    def summary(self) -> dict[str, float]:
        return {
            "train_loss": float(np.mean(self.losses)),
            "reward": float(np.mean(self.rewards)),
            "mean_q": float(np.mean(self.q)),
        }


class RunLog:
    """Writes a run directory's logs.

    Args:
        out: the run directory.
        tensorboard: write TensorBoard event files under ``out/tb``.
    """

    def __init__(self, out: str | Path, *, tensorboard: bool = True) -> None:
        self.out = Path(out)
        self.history: list[dict[str, float]] = []
        self.timings: list[float] = []
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def end_epoch(
        self, epoch: int, stats: EpochStats, info: dict[str, Any], step: int, k: int
    ) -> dict[str, float]:
        """Record epoch ``epoch`` (1-based); returns its history row."""
        row = {"epoch": float(epoch), **stats.summary()}
        row.update({k_[5:]: float(v) for k_, v in info.items() if k_.startswith("test/")})
        self.history.append(row)
        self.timings.append(time.perf_counter() - stats.start)
        for key, value in row.items():
            if key != "epoch":
                group = "charts" if key in ("train_loss", "reward", "mean_q") else "test"
                self.scalar(f"{group}/{key}", value, epoch)
        self.scalar("charts/epoch_time_s", self.timings[-1], epoch)
        if self.writer is not None and stats.actions:
            self.writer.add_histogram(
                "charts/topk_index",
                np.concatenate(stats.actions),
                epoch,
                bins=np.arange(k + 1) - 0.5,
            )
        return row

    def write(self, extra: dict[str, Any]) -> None:
        """Write ``metrics.json`` (history + ``extra``) and ``timings.json`` atomically."""
        final = self.history[-1] if self.history else {}
        atomic_write_json(
            self.out / "metrics.json", {**extra, "final": final, "epochs": self.history}
        )
        atomic_write_json(self.out / "timings.json", {"epoch_time_s": self.timings})
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
