"""SB3 callback tying PPO's rollouts to classifier epochs: logs, progress and checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from rlmix.cli import StopFlag
from rlmix.runlog import EpochStats, RunLog


class EpochCallback(BaseCallback):
    """Per step: collect info and update the progress bar. Per epoch: log a history row.

    At the start of each rollout that begins on an epoch boundary (after PPO's update), call
    ``save()`` so that the agent and the classifier are checkpointed together at a consistent
    point. A stop flag (SIGINT/SIGTERM) ends learning at the next step; the last checkpoint stays.

    Args:
        env: the unwrapped :class:`envs.MixupEnv`.
        log: the run log.
        save: writes the checkpoint.
        on_epoch: called with each epoch's history row.
        stop: a :class:`rlmix.cli.StopFlag` polled at checkpoint points.
        progress: show a tqdm bar per epoch.
    """

    def __init__(
        self,
        env,
        log: RunLog,
        save: Callable[[], None],
        on_epoch: Callable[[dict[str, float]], None],
        stop: StopFlag | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.env, self.log, self.save, self.on_epoch = env, log, save, on_epoch
        self.stop, self.progress = stop, progress
        self.stats = EpochStats()
        self.bar: tqdm | None = None
        self._dirty = False

    def _new_bar(self) -> None:
        t = self.env.trainer
        self.bar = tqdm(
            total=t.steps_per_epoch,
            leave=False,
            disable=not self.progress,
            desc=f"epoch {t.epoch + 1}/{self.env.cfg.trainer.epochs} (RL-Mix)",
        )

    def _on_rollout_start(self) -> None:
        t = self.env.trainer
        if self._dirty and t.step_in_epoch == 0:
            self.save()
            self._dirty = False

    def _on_step(self) -> bool:
        if self.stop is not None and self.stop.signum is not None:
            return False  # ends learn(); the caller reports the signal
        if self.bar is None:
            self._new_bar()
        info = self.locals["infos"][0]
        reward = float(self.locals["rewards"][0])
        action = np.asarray(self.locals["actions"][0])
        self.stats.add(info, reward, action)
        self.log.scalar("charts/lr", info["lr"], self.num_timesteps)
        self.log.scalar("charts/step_reward", reward, self.num_timesteps)
        self.bar.update()
        self.bar.set_postfix(loss=f"{info['train_loss']:.3f}", r=f"{reward:.3f}")
        if self.locals["dones"][0]:
            self.bar.close()
            self.bar = None
            epoch = int(info["epoch"]) + 1
            row = self.log.end_epoch(
                epoch, self.stats, info, self.num_timesteps, self.env.cfg.mix.k
            )
            self.stats = EpochStats()
            self._dirty = True
            self.on_epoch(row)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
        stopped = self.stop is not None and self.stop.signum is not None
        if self._dirty and not stopped:
            self.save()
            self._dirty = False
