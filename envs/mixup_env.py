"""The Gymnasium environment: one classifier training epoch per episode, one batch per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs.rewards import RewardInputs, get_reward
from rlmix import distributed
from rlmix.config import Config, load_config
from rlmix.errors import ConfigError, RlmixError
from rlmix.mixing import topk_space
from rlmix.saliency import pool_saliency
from rlmix.trainer import Batch, Trainer


class MixupEnv(gym.Env):
    """Choose, per image of each training batch, the saliency percentile R-Mix thresholds at.

    An episode is one training epoch of a persistent classifier; a step is one mini-batch.

    **Observation** ``Dict``:
      - ``saliency``: ``Box(0, 1, (B, g, g), float32)``, each image's input saliency average-pooled
        to ``g x g`` (``env.obs_grid``, 8) and normalised to sum to 1;
      - ``logits``: ``Box(-L, L, (B, N), float32)``, the classifier's logits for the batch from the
        same forward pass, clipped to ``L`` (``env.logit_clip``).

    **Action** ``MultiDiscrete([K] * B)``: per image, an index into the top-k space
    ``linspace(0, 0.99, K)``. With ``mix.mixer`` other than ``rmix`` the action is accepted and
    ignored (that is how CutMix+, Mixup and vanilla run through the same env).

    **Step**: R-Mix the observed batch with those top-k (lam, perm and grid drawn per batch), take
    one optimiser + OneCycleLR step, compute the reward (``env.reward``, see
    :mod:`envs.rewards`), then observe the next batch.

    **Episode end**: after the epoch's last batch the step returns ``truncated=True`` (training
    goes on; nothing terminates). ``info`` holds plain floats: ``train_loss``, ``lr``, ``mean_q``,
    ``lam``, ``grid``, ``reward/<name>``; at an evaluated epoch end also ``test/<metric>`` from
    :func:`rlmix.metrics.evaluate` (every ``env.eval_every`` epochs and after the last one).

    **torchrun**: on W ranks each env holds one shard (B / W images) of every global batch and
    its spaces are the shard's; :class:`envs.distributed_env.DistributedMixupEnv` presents the
    global batch on rank 0.

    **Reset and seeding**: the classifier persists across episodes, so ``reset()`` starts the
    next epoch (a reset before any step of the current epoch restarts it rather than skipping
    it). Every random stream of an epoch (data order, augmentation, lam, perm, grid, dropout) is
    derived from ``(seed, epoch)``. ``reset(seed=s)`` makes ``s`` the run seed and, if the current
    epoch has already taken steps, first rewinds the classifier, optimiser and schedule to the
    state they had when that epoch began. Hence two seeded resets followed by the same actions
    produce identical observations and rewards, and a run resumed from an epoch-boundary
    checkpoint repeats the uninterrupted run exactly on CPU.

    Example::

        import gymnasium as gym, envs
        env = gym.make("rlmix/Mixup-v0", epochs=2, reward="grad_cosine_mean")
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    Args:
        config: a :class:`rlmix.config.Config`, a YAML path or ``configs/`` name, or None for the
            embedded default.
        **overrides: dotted keys (``**{"trainer.lr_max": 0.2}``), unique leaf names
            (``reward="loss_drop"``, ``epochs=2``) or whole sections (``mix={"k": 5}``).
    """

    metadata = {"render_modes": []}

    def __init__(self, config: Config | str | Path | None = None, **overrides: Any) -> None:
        super().__init__()
        if isinstance(config, Config):
            cfg = load_config(config.to_dict(), overrides) if overrides else config
        else:
            cfg = load_config(config, overrides)
        self.cfg = cfg
        try:
            self.reward_fn = get_reward(cfg.env.reward)
        except ValueError as e:
            raise ConfigError(f"config key 'env.reward': {e}") from e
        self.trainer = Trainer(cfg)
        self.topk_space = topk_space(cfg.mix.k)
        b = cfg.trainer.batch_size // self.trainer.dist.world_size  # this rank's shard
        n, g = self.trainer.info.num_classes, cfg.env.obs_grid
        clip = float(cfg.env.logit_clip)
        self.observation_space = spaces.Dict(
            {
                "saliency": spaces.Box(0.0, 1.0, (b, g, g), np.float32),
                "logits": spaces.Box(-clip, clip, (b, n), np.float32),
            }
        )
        self.action_space = spaces.MultiDiscrete(np.full(b, cfg.mix.k, dtype=np.int64))
        self.run_seed = cfg.seed
        needs_mixer = cfg.mix.mixer == "rmix"
        self.observe_saliency = (
            cfg.env.observe == "always" or needs_mixer or self.reward_fn.clean_saliency
        )
        self._uniform = np.full((b, g, g), 1.0 / (g * g), np.float32)
        self._batch: Batch | None = None
        self._prev_loss: float | None = None
        self.last_eval: dict[str, float] | None = None
        self.history: list[dict[str, float]] = []

    # -- gymnasium API ------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        t = self.trainer
        if seed is not None:
            self.run_seed = int(seed)
            if t.epoch_started and t.step_in_epoch > 0:
                t.rewind_epoch()
        elif t.epoch_started and t.step_in_epoch > 0:
            t.end_epoch()  # abandon the rest of an unfinished epoch
        t.begin_epoch(self.run_seed)
        self._prev_loss = None
        self._batch = t.observe(saliency=self.observe_saliency)
        return self._observation(self._batch), {"epoch": float(t.epoch)}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._batch is None:
            raise RuntimeError("call reset() before step()")
        t, r = self.trainer, self.reward_fn
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got {action.shape}"
            )
        q = self.topk_space[torch.as_tensor(action, dtype=torch.long)]
        x_mix, y_mix, lam, grid = t.mix(self._batch, q)
        loss_t, mixed_saliency = t.train_step(x_mix, y_mix, input_grad=r.mixed_saliency)
        loss = float(loss_t)
        info: dict[str, Any] = {
            "train_loss": loss,
            "lr": t.lr,
            "mean_q": float(q.mean()),
            "lam": float(lam),
            "grid": float(grid),
            "epoch": float(t.epoch),
        }
        truncated = t.epoch_done
        test_metrics = None
        if truncated:
            epoch = t.epoch + 1
            if epoch % self.cfg.env.eval_every == 0 or epoch >= self.cfg.trainer.epochs:
                test_metrics = t.evaluate()
                info.update({f"test/{k}": float(v) for k, v in test_metrics.items()})
        reward = r(
            RewardInputs(
                q=q,
                loss=loss,
                prev_loss=self._prev_loss,
                obs_grid=self.cfg.env.obs_grid,
                clean_saliency=self._batch.saliency,
                mixed_saliency=mixed_saliency,
                test_metrics=test_metrics,
                prev_test_metrics=self.last_eval,
            )
        )
        if not distributed.all_true(bool(np.isfinite(reward))):
            raise RlmixError(
                f"reward '{r.name}' is {reward} at epoch {t.epoch + 1}, step {t.step_in_epoch}; "
                "stopping"
            )
        info[f"reward/{r.name}"] = reward
        self._prev_loss = loss
        if truncated:
            if test_metrics is not None:
                self.last_eval = test_metrics
                self.history.append({"epoch": float(t.epoch + 1), **test_metrics})
            obs = self._observation(self._batch)
            t.end_epoch()
            self._batch = None
        else:
            self._batch = t.observe(saliency=self.observe_saliency)
            obs = self._observation(self._batch)
        return obs, float(reward), False, truncated, info

    # -- helpers ------------------------------------------------------------------------------

    def _observation(self, batch: Batch) -> dict[str, np.ndarray]:
        if batch.saliency is None:
            return {
                "saliency": self._uniform.copy(),
                "logits": np.zeros(self.observation_space["logits"].shape, np.float32),
            }
        clip = self.cfg.env.logit_clip
        pooled = pool_saliency(batch.saliency, self.cfg.env.obs_grid).clamp_(0.0, 1.0)
        logits = batch.logits.clamp(-clip, clip)
        return {
            "saliency": pooled.detach().to("cpu", torch.float32).numpy(),
            "logits": logits.detach().to("cpu", torch.float32).numpy(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Env state at the last epoch boundary: the trainer's plus the evaluation history."""
        return {
            "trainer": self.trainer.boundary_state(),
            "run_seed": self.run_seed,
            "last_eval": self.last_eval,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.run_seed = int(state["run_seed"])
        self.last_eval = state["last_eval"]
        self.history = list(state["history"])
        self._batch = None
