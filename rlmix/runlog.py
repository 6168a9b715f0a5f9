"""Run outputs: one TensorBoard writer, the per-epoch history, ``metrics.json`` and timings.

Every scalar goes through :meth:`RunLog.scalar` against one step axis, the global env step (one
classifier batch), under one of these tag groups:

- ``step/...``: per batch (``train_loss``, ``lr``, ``reward``, ``mean_q``);
- ``epoch/...``: per epoch (``train_loss``, ``reward``, ``reward_<name>`` for every computed
  reward, ``mean_q``, ``time_s``);
- ``policy/...``: per epoch, how the policy acts (entropy, KL from uniform, q; histogram ``q``)
  and what it gains over random top-k on the same batches (``gain_vs_random``, with ``_se``);
- ``test/...``: the test evaluation (``top1``, ``ece``, ``fgsm_error``...);
- ``train/...``, ``time/...``: Stable-Baselines3's PPO logger (``approx_kl``, ``clip_fraction``,
  ``entropy_loss``...), written through :class:`SB3Writer`.

``metrics.json`` holds only quantities that are deterministic for a fixed seed on CPU (so a
resumed run's file equals an uninterrupted run's); wall times go to ``timings.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import KVWriter, Logger

from rlmix.io import atomic_write_json

TEST_PREFIX = "test/"


class RunLog:
    """Writes a run directory's logs.

    Args:
        out: the run directory.
        step: returns the current global env step (the x axis of every scalar).
        tensorboard: write TensorBoard event files under ``out/tb``.
        writer: write through this ``SummaryWriter`` instead (the caller's; left open).
    """

    def __init__(
        self,
        out: str | Path,
        step: Callable[[], int],
        *,
        tensorboard: bool = True,
        writer: Any = None,
    ) -> None:
        self.out = Path(out)
        self.step = step
        self.history: list[dict[str, Any]] = []
        self.timings: list[float] = []
        self.writer = writer  # a SummaryWriter of the caller's (not closed here), or ours
        self._owns_writer = writer is None and tensorboard
        if self._owns_writer:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))

    def scalar(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.step())

    def histogram(self, tag: str, values: np.ndarray, bins: np.ndarray) -> None:
        if self.writer is not None and values.size:
            self.writer.add_histogram(tag, values, self.step(), bins=bins)

    def end_epoch(self, row: dict[str, Any], seconds: float) -> None:
        """Record one epoch's history row (``epoch`` 1-based, floats, lists for histograms)."""
        self.history.append(row)
        self.timings.append(seconds)
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, float):
                continue
            if key.startswith("policy_gain"):
                self.scalar(f"policy/gain_vs_random{key[len('policy_gain') :]}", value)
            elif key.startswith("policy_"):
                self.scalar(f"policy/{key[7:]}", value)
            elif key in ("train_loss", "mean_q") or key.startswith("reward"):
                self.scalar(f"epoch/{key}", value)
            else:
                self.scalar(f"{TEST_PREFIX}{key}", value)
        self.scalar("epoch/time_s", seconds)

    def sb3_logger(self) -> Logger:
        """An SB3 logger whose numbers land in this run's TensorBoard file."""
        return Logger(folder=str(self.out), output_formats=[SB3Writer(self)])

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
        if self.writer is not None and self._owns_writer:
            self.writer.close()


class SB3Writer(KVWriter):
    """Stable-Baselines3 ``KVWriter`` that writes numeric values through a :class:`RunLog`, at
    the run's global env step (SB3's own step counts decisions: B per batch)."""

    def __init__(self, log: RunLog) -> None:
        self.log = log

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0
    ) -> None:
        for key, value in key_values.items():
            excluded = key_excluded.get(key) or ()
            if "tensorboard" in excluded or isinstance(value, bool):
                continue
            if isinstance(value, (int, float, np.integer, np.floating)):
                self.log.scalar(key, float(value))

    def close(self) -> None:
        pass


__all__ = ["RunLog", "SB3Writer"]
