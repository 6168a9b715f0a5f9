"""RL-Mix in your own training loop: R-Mix whose per-image top-k policy learns as you train.

    from agents import LearnedMix
    from rlmix.losses import soft_ce

    mix = LearnedMix(num_classes=10, steps_per_epoch=len(loader),
                     total_steps=epochs * len(loader), optimizer=optimizer)
    for epoch in range(epochs):
        for x, y in loader:                    # x in [0, 1], y class ids
            x_mix, y_mix = mix(model, x, y)    # saliency, observation, policy, R-Mix
            logits = model(x_mix)              # your forward, loss, AMP, schedule, EMA...
            loss = soft_ce(logits, y_mix)
            optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
            mix.observe(logits)                # per-image reward; PPO on rlmix's schedule
    mix.save("agent.zip")                      # agents.AgentMix.load, rlmix.train --policy agent

Per step it does what :class:`envs.MixupEnv` under ``rlmix.train_agent`` does, through the same
functions: the clean batch's input saliency and logits, each image's slot observation
(:func:`envs.slots.slot_observation`; with ``env.partner_first`` its partner, lam and grid,
drawn first), the per-image PPO policy's top-k, R-Mix; after your step, every reward of the
registry that reads the batch, the mix and the logits (``teach`` by default, with its EMA
teacher of your model, updated after each step), the same-batch counterfactual every
``env.counterfactual_every`` steps (the gain over random top-k; every 10th step unless set,
where ``rlmix.train_agent`` scores every step), and Stable-Baselines3's PPO
update on the same schedule: a rollout of at most ``agent.n_steps`` steps, ended at an epoch's
end (``steps_per_epoch``, or :meth:`LearnedMix.end_epoch`). A plain loop built from rlmix's own
data, model, optimiser and schedule with this mixer trains exactly as ``rlmix.train_agent``
does on the same seed (tests/test_learned_mix.py).

Settings are the config's (:mod:`rlmix.config`): the embedded default's ``mix``, ``env`` and
``agent`` sections unless ``config=`` or keyword overrides say otherwise
(``LearnedMix(10, reward="hardness", **{"agent.n_steps": 20})``).

Randomness: the mixer draws from its own streams, derived from ``seed`` and the epoch
(:mod:`rlmix.seeding`), and swaps them into torch's and numpy's global generators only while
Stable-Baselines3 samples actions or shuffles minibatches: your loop draws exactly what it
would without the mixer.

Under DDP (a process group initialised by ``torchrun`` or by your code), each rank mixes its
own shard (partners, lam and grid drawn within it, as timm and torchvision do); the shards'
observations are gathered so that every rank's policy acts on the global batch and learns from
every rank's decisions, and every rank holds the same policy after each update.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.callbacks import EpochStats, policy_diagnostics
from agents.ppo import EpochPPO
from agents.rollout import StepRollout
from agents.serialize import agent_state, write_agent
from envs.rewards import Reward, RewardInputs, RewardNeeds, reward_for
from envs.slots import slot_observation
from envs.spaces import batch_observation
from rlmix import distributed
from rlmix.checkpoints import config_difference
from rlmix.config import Config, load_config
from rlmix.errors import ConfigError, RlmixError
from rlmix.losses import get_loss
from rlmix.mixing import MixParams, RMix, topk_space
from rlmix.probe import StepOutput, capture_last_layer, last_layer_grad, mixed_batch, probe_mix
from rlmix.runlog import RunLog
from rlmix.saliency import input_saliency
from rlmix.seeding import stream_generator, stream_seed
from rlmix.trainer import ema_decay_at, update_ema

STATE_FORMAT = "rlmix-learned-mix"
COUNTERFACTUAL_EVERY = 10  # the default env.counterfactual_every of the mixer (train_agent: 1)
STATE_VERSION = 1


@dataclass
class _Step:
    """What :meth:`LearnedMix.__call__` leaves for :meth:`LearnedMix.observe`."""

    x_mix: torch.Tensor
    y_mix: torch.Tensor
    q: torch.Tensor
    action: torch.Tensor
    params: MixParams
    state: dict[str, Any]
    obs: dict[str, np.ndarray]
    batch: dict[str, np.ndarray]
    actions: np.ndarray
    values: torch.Tensor
    log_probs: torch.Tensor
    teacher_probs: torch.Tensor | None
    counterfactual: RewardInputs | None
    features: list[torch.Tensor]
    hook: Any
    progress: float


def _as_config(config: Config | str | Path | None, overrides: dict[str, Any]) -> Config:
    if isinstance(config, Config):
        return load_config(config.to_dict(), overrides) if overrides else config
    return load_config(config, overrides)


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


class LearnedMix(RMix):
    """R-Mix whose per-image top-k a PPO agent learns in your loop (see the module docstring).

    Args:
        num_classes: N, the classifier's number of classes.
        config: a :class:`rlmix.config.Config`, a YAML path or a shipped config's name, or None
            for the embedded default; its ``mix``, ``env``, ``agent``, ``seed`` and
            ``trainer.loss`` apply (``trainer.loss`` is the loss the rewards score the mix with:
            train with the same one).
        steps_per_epoch: batches per epoch: an epoch ends after that many steps (else call
            :meth:`end_epoch`); rollouts never cross an epoch's end.
        total_steps: optimiser steps of the whole run, for the policy's ``progress`` context
            (else pass ``progress=`` to each call).
        optimizer: your optimiser: its first group's ``lr`` over ``lr_max`` is the policy's
            ``lr`` context.
        lr_max: the peak learning rate (default: the group's ``max_lr`` under OneCycleLR, else
            the largest ``lr`` seen).
        held_out: batches ``(x, y)`` not trained on, cycled one a step, for rewards that read a
            held-out gradient (``val_grad_align``, ``val_grad_dot``).
        writer: a TensorBoard ``SummaryWriter`` for the same tags ``rlmix.train_agent`` writes
            (``step/``, ``epoch/``, ``policy/``, PPO's ``train/``), against the mixer's step.
        **overrides: config keys, dotted or unique leaf names (``reward="hardness"``,
            ``partner_first=False``, ``**{"agent.n_steps": 20}``).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        config: Config | str | Path | None = None,
        steps_per_epoch: int | None = None,
        total_steps: int | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_max: float | None = None,
        held_out: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
        writer: Any = None,
        **overrides: Any,
    ) -> None:
        cfg = _as_config(config, overrides)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        _check_count("steps_per_epoch", steps_per_epoch)
        _check_count("total_steps", total_steps)
        if lr_max is not None and not (lr_max > 0 and math.isfinite(lr_max)):
            raise ValueError(f"lr_max must be a positive number, got {lr_max!r}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer)}")
        m = cfg.mix
        super().__init__(
            num_classes,
            k=m.k,
            grids=m.grids,
            alpha=m.alpha,
            lam_mode=m.lam_mode,
            saliency_mode=m.saliency_mode,
            seed=cfg.seed,
        )
        self.cfg = cfg
        self.rewards = self._rewards(cfg, held_out is not None)
        self.reward_fn = self.rewards[0]
        self.needs = RewardNeeds.of(self.rewards)
        every = cfg.env.counterfactual_every
        if every is None:  # the gain is a diagnostic here: every 10th step costs ~4 % of a step
            every = 1 if cfg.agent.baseline == "counterfactual" else COUNTERFACTUAL_EVERY
        if cfg.agent.baseline == "counterfactual" and every != 1:
            raise ConfigError(
                "config key 'agent.baseline' is 'counterfactual', which needs a counterfactual "
                f"every step: set env.counterfactual_every=1 (got {every})"
            )
        self.counterfactual_every = every if self.needs.counterfactual else 0
        self.partner_first = cfg.env.partner_first
        self.loss_fn = get_loss(cfg.trainer.loss)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.optimizer, self.lr_max = optimizer, lr_max
        self._held_out = held_out
        self._held_out_batches: Iterator | None = None
        self.log = RunLog(".", step=lambda: self.global_step, tensorboard=False, writer=writer)
        self.q_values = topk_space(m.k)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history = self.log.history
        self.rollout = StepRollout(cfg, num_classes, self.partner_first, self.log.sb3_logger())
        self._cf_generator: torch.Generator | None = None
        self._in_epoch = False
        self._model: nn.Module | None = None
        self._teacher: nn.Module | None = None
        self._teacher_state: dict[str, torch.Tensor] | None = None
        self._pending: _Step | None = None
        self._prev_loss: float | None = None
        self._last: dict[str, np.ndarray] | None = None  # the last step's batch observation
        self._sizes: list[int] = []  # the batch size on each rank at the last step
        self._lr_seen = 0.0
        self._stats = EpochStats(m.k)
        self._diag_q = self.q_values.double().numpy()

    # -- settings -----------------------------------------------------------------------------

    @staticmethod
    def _rewards(cfg: Config, has_held_out: bool) -> list[Reward]:
        names = [("env.reward", cfg.env.reward)] + [
            ("env.log_rewards", n) for n in cfg.env.log_rewards
        ]
        rewards = [reward_for(name, f"config key '{key}'") for key, name in names]
        for reward in rewards:
            if reward.outcome or reward.val_loss:
                raise ConfigError(
                    f"reward '{reward.name}' needs the step's outcome (the loss, held-out loss "
                    "or test metrics after the step), which a mixer in your loop does not see; "
                    "use a reward that reads the batch, the mix and the logits (teach, "
                    "hardness, ema_agreement, grad_cosine, probe_rank, val_grad_align with "
                    "held_out=...)"
                )
            if reward.val_grad and not has_held_out:
                raise ConfigError(
                    f"reward '{reward.name}' reads a held-out batch's gradient each step: pass "
                    "held_out=<batches (x, y) you do not train on>"
                )
        return rewards

    @property
    def dist(self) -> distributed.Dist:
        return distributed.adopt()

    # -- one step -----------------------------------------------------------------------------

    def __call__(  # type: ignore[override]
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        progress: float | None = None,
        lr_fraction: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix images (B, C, H, W) in [0, 1] with labels (B,) long or (B, N) soft for one
        training step of ``model``; call :meth:`observe` with the logits of ``model(x_mix)``
        after the step.

        Args:
            model: the classifier you train (a DDP wrapper is looked through); always the same.
            progress: fraction of the run done, in [0, 1] (default: steps / ``total_steps``).
            lr_fraction: the learning rate over its peak (default: from ``optimizer``).

        Returns:
            ``(x_mix, y_mix)``; with a reward that reads dLoss/dx_mix (``grad_cosine*``),
            ``x_mix`` requires grad: backpropagate through it as returned.
        """
        if self._pending is not None:
            raise RuntimeError(
                "mix(model, x, y) was called twice without observe(logits) in between: call "
                "mix.observe(model(x_mix)) after each training step"
            )
        net = self._check_model(model)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
            raise ValueError(
                f"x must be a floating-point (B, C, H, W) tensor of images, got "
                f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}"
            )
        if not self._in_epoch:
            self._begin_epoch()
        soft = self.soft_labels(y, x.dtype)
        if soft.shape != (x.shape[0], self.num_classes):
            raise ValueError(
                f"y must be ({x.shape[0]},) class ids or ({x.shape[0]}, {self.num_classes}) soft "
                f"labels, got shape {tuple(y.shape)}"
            )
        saliency, logits = input_saliency(net, x, y, mode=self.saliency_mode)
        saliency, logits = saliency.float(), logits.float()
        if not (torch.isfinite(saliency).all() and torch.isfinite(logits).all()):
            raise RlmixError(
                f"the model's logits or input gradient on the clean batch are not finite at "
                f"step {self.global_step + 1}: the classifier diverged"
            )
        params = self.sample(x) if self.partner_first else None
        batch = self._global_batch(
            batch_observation(
                saliency, logits, self.cfg.env.obs_grid, self.cfg.env.logit_clip, params
            )
        )
        progress, lr_fraction = self._context(progress, lr_fraction)
        obs = slot_observation(batch, progress, lr_fraction)
        steps = self.cfg.agent.n_steps
        if self.steps_per_epoch is not None:  # a rollout never crosses an epoch's end
            steps = min(steps, self.steps_per_epoch - self.step_in_epoch)
        self.rollout.prepare(obs, steps, self._epoch_seed(), self._progress(), self.global_step)
        actions, values, log_probs = self.rollout.act(obs)
        action = torch.as_tensor(actions[self._shard(x.shape[0])])
        q = self.q_values[action]
        if params is None:
            params = self.sample(x)
        x_mix, y_mix = self.apply(x, soft, params, saliency=saliency, q=q)
        state = {
            "k": self.k,
            "prev_loss": self._prev_loss,
            "obs_grid": self.cfg.env.obs_grid,
            "clean_saliency": saliency,
            "logits": logits,
            "val_grad": self._held_out_grad(net) if self.needs.val_grad else None,
        }
        teacher = self._teacher_probs(x_mix) if self.needs.teacher else None
        counterfactual = None
        if self.counterfactual_every and self.global_step % self.counterfactual_every == 0:
            counterfactual = self._counterfactual(net, x, soft, params, saliency, q, state)
        if self.needs.mixed_saliency:
            x_mix = x_mix.detach().requires_grad_(True)
        features: list[torch.Tensor] = []
        hook = None
        if self.needs.record == "last_layer":
            hook = capture_last_layer(net)
            features = hook.__enter__()
        self._pending = _Step(
            x_mix, y_mix, q, action, params, state, obs, batch, actions, values, log_probs,
            teacher, counterfactual, features, hook, progress,
        )  # fmt: skip
        return x_mix, y_mix

    def observe(self, logits: torch.Tensor) -> dict[str, float]:
        """Score the last mix with the logits (B, N) of your training forward on ``x_mix``
        (the weights before your step), update the EMA teacher, store the decisions and run
        PPO's update when its rollout is complete. Returns the step's scalars (``train_loss``,
        ``reward``, ``mean_q``, ``policy_gain`` on counterfactual steps, ``reward_<name>``)."""
        step = self._pending
        if step is None:
            raise RuntimeError(
                "observe(logits) needs a mix first: call x_mix, y_mix = mix(model, x, y), train "
                "on x_mix, then mix.observe(logits)"
            )
        b, n = step.y_mix.shape
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (b, n):
            shape = (
                tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            )
            raise ValueError(
                f"logits must be the ({b}, {n}) output of model(x_mix) for the last mix, got {shape}"
            )
        if not torch.isfinite(logits.detach()).all():
            raise RlmixError(
                f"the logits passed to observe() are not finite at step {self.global_step + 1}: "
                "the classifier diverged (lower the learning rate, or check the loss)"
            )
        if step.hook is not None:
            step.hook.__exit__(None, None, None)
            step.hook = None
        self._pending = None
        out = self._pass_of(step, logits)
        inputs = RewardInputs(
            q=step.q,
            loss=float(out.loss),
            action=step.action,
            mixed_saliency=out.mixed_saliency,
            mixed=out.mixed,
            teacher_probs=step.teacher_probs,
            params=step.params,
            **step.state,
        )
        scored = {r.name: self._gather(self._score(r, inputs)) for r in self.rewards}
        gains: dict[str, float] = {}
        counterfactual = None
        if step.counterfactual is not None:
            for reward in self.needs.counterfactual:
                cf = self._gather(self._score(reward, step.counterfactual))
                gains[reward.name] = float((scored[reward.name] - cf).mean())
                if reward is self.reward_fn:
                    counterfactual = cf
        if self._teacher is not None:
            decay = ema_decay_at(self.cfg.env, self.cfg.trainer, step.progress)
            update_ema(self._teacher, self._model, decay)
        self.global_step += 1
        self.step_in_epoch += 1
        self._prev_loss = float(out.loss)
        per_image = scored[self.reward_fn.name]
        scalars = self._record(step, out, scored, gains)
        rewards = per_image
        if self.cfg.agent.baseline == "counterfactual":
            rewards = per_image - counterfactual
        epoch_end = self.steps_per_epoch is not None and self.step_in_epoch >= self.steps_per_epoch
        self.rollout.store(
            step.obs,
            step.actions,
            rewards.astype(np.float32),
            step.values,
            step.log_probs,
            epoch_end,
            self._progress(),
            self.global_step,
            terminal=lambda: slot_observation(step.batch, *self._context(None, None)),
        )
        self._last = step.batch
        if epoch_end:
            self._end_epoch()
        return scalars

    def end_epoch(self) -> None:
        """End the current epoch (without ``steps_per_epoch``): the rollout in progress is
        learned from, the epoch's diagnostics join :attr:`history`, and the next epoch's random
        streams start. A no-op when the epoch has taken no step yet."""
        if self._pending is not None:
            raise RuntimeError("end_epoch() between mix() and observe(): observe the step first")
        if self.step_in_epoch == 0:
            return
        last = self._last
        terminal = (
            None if last is None else (lambda: slot_observation(last, *self._context(None, None)))
        )
        self.rollout.end_epoch(self._progress(), self.global_step, terminal)
        self._end_epoch()

    # -- the step's parts ---------------------------------------------------------------------

    def _check_model(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        if self._model is None:
            self._model = net
            if self.needs.teacher:
                # (a module that holds this mixer, as a LightningModule does, keeps sharing it)
                teacher = copy.deepcopy(net, memo={id(self): self})
                self._teacher = teacher.eval().requires_grad_(False)
                if self._teacher_state is not None:
                    self._teacher.load_state_dict(self._teacher_state)
                    self._teacher_state = None
        elif net is not self._model:
            raise ValueError(
                f"LearnedMix learns for one model: it keeps an EMA teacher of the "
                f"{type(self._model).__name__} it first mixed for, and got another "
                f"{type(net).__name__}; create one LearnedMix per model"
            )
        return net

    def _begin_epoch(self) -> None:
        seed, e = self.cfg.seed, self.epoch
        self.generator = stream_generator(seed, "mixing", e)
        self._cf_generator = stream_generator(seed, "counterfactual", e, self.dist.rank)
        self.rollout.reseed(self._epoch_seed())
        self._in_epoch = True

    def _context(self, progress: float | None, lr_fraction: float | None) -> tuple[float, float]:
        if progress is None:
            progress = (
                0.5 if self.total_steps is None else min(1.0, self.global_step / self.total_steps)
            )
        if lr_fraction is None:
            lr_fraction = 1.0
            if self.optimizer is not None:
                group = self.optimizer.param_groups[0]
                lr = float(group["lr"])
                self._lr_seen = max(self._lr_seen, lr)
                peak = self.lr_max or group.get("max_lr") or self._lr_seen
                lr_fraction = lr / peak if peak else 1.0
        for name, value in (("progress", progress), ("lr_fraction", lr_fraction)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        return float(progress), float(lr_fraction)

    def _global_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This rank's batch observation, or under DDP every rank's, concatenated in rank order
        (partners re-indexed into the global batch)."""
        d = self.dist
        self._sizes = [len(batch["saliency"])]
        if not d.enabled:
            return batch
        shards = distributed.all_gather_objects(batch)
        self._sizes = [len(s["saliency"]) for s in shards]
        out = {k: np.concatenate([s[k] for s in shards]) for k in ("saliency", "logits")}
        if "partner" in batch:
            offsets = np.cumsum([0, *self._sizes[:-1]])
            out["partner"] = np.concatenate(
                [s["partner"] + o for s, o in zip(shards, offsets, strict=True)]
            )
            out["lam"] = np.concatenate([s["lam"] for s in shards])
            out["grid"] = shards[0]["grid"]
        return out

    def _shard(self, b: int) -> slice:
        start = sum(self._sizes[: self.dist.rank]) if self.dist.enabled else 0
        return slice(start, start + b)

    def _gather(self, values: np.ndarray) -> np.ndarray:
        """Per-image values of this rank's images, or under DDP of the global batch."""
        if not self.dist.enabled:
            return values
        return np.concatenate(distributed.all_gather_objects(values))

    def _teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._teacher(x).float().softmax(dim=1)

    def _held_out_grad(self, net: nn.Module):
        if self._held_out_batches is None:
            self._held_out_batches = iter(self._held_out)
        try:
            x, y = next(self._held_out_batches)
        except StopIteration:
            self._held_out_batches = iter(self._held_out)
            try:
                x, y = next(self._held_out_batches)
            except StopIteration:
                raise ValueError("held_out yields no batch") from None
        device = next(net.parameters()).device
        return last_layer_grad(net, self.loss_fn, x.to(device), y.to(device), self.num_classes)

    def _counterfactual(self, net, x, soft, params, saliency, q, state) -> RewardInputs:
        """The same-batch counterfactual: a uniformly drawn top-k per image on the same state,
        passed through the classifier without changing it (:func:`rlmix.probe.probe_mix`)."""
        cf_action = torch.randint(self.k, q.shape, generator=self._cf_generator)
        cf_q = self.q_values[cf_action]
        x_cf, y_cf = self.apply(x, soft, params, saliency=saliency, q=cf_q)
        out = StepOutput(torch.tensor(float("nan")))
        if self.needs.counterfactual_pass:
            modes = [(m, m.training) for m in net.modules()]
            try:
                out = probe_mix(
                    net,
                    self.loss_fn,
                    x_cf,
                    y_cf,
                    input_grad=self.needs.mixed_saliency,
                    mixed=self.needs.record,
                )
            finally:
                for module, training in modes:
                    module.training = training
        return RewardInputs(
            q=cf_q,
            loss=float(out.loss),
            action=cf_action,
            mixed_saliency=out.mixed_saliency,
            mixed=out.mixed,
            teacher_probs=self._teacher_probs(x_cf) if self.needs.teacher else None,
            params=params,
            counterfactual=True,
            **state,
        )

    def _pass_of(self, step: _Step, logits: torch.Tensor) -> StepOutput:
        """What the training step's pass over ``x_mix`` tells the rewards (as the env's
        :meth:`rlmix.trainer.Trainer.train_step` records it)."""
        loss = self.loss_fn(logits.detach().float(), step.y_mix)
        out = StepOutput(distributed.all_reduce_mean(loss.detach()))  # under DDP: over ranks
        if self.needs.mixed_saliency:
            grad = step.x_mix.grad
            if grad is None:
                raise ValueError(
                    f"reward '{self.reward_fn.name}' reads the gradient of your loss with respect "
                    "to x_mix: backpropagate through the x_mix that mix() returned, before "
                    "observe()"
                )
            out.mixed_saliency = grad.float().pow(2).mean(dim=1).sqrt()
        if self.needs.record is not None:
            features = step.features[-1] if step.features else None
            if self.needs.record == "last_layer" and features is None:
                raise ValueError(
                    "the last-layer rewards read your forward of x_mix through the model's last "
                    "nn.Linear; none ran between mix() and observe()"
                )
            out.mixed = mixed_batch(self.loss_fn, step.y_mix, logits, features)
        return out

    def _score(self, reward: Reward, inputs: RewardInputs) -> np.ndarray:
        values = reward(inputs)
        if not np.isfinite(values).all():
            what = " on the counterfactual mix" if inputs.counterfactual else ""
            raise RlmixError(
                f"reward '{reward.name}' is {values[~np.isfinite(values)][0]}{what} at step "
                f"{self.global_step + 1}; stopping"
            )
        return values

    def _record(self, step: _Step, out: StepOutput, scored, gains) -> dict[str, float]:
        """The step's scalars: into the epoch's statistics and TensorBoard (``step/``)."""
        values = {
            "train_loss": float(out.loss),
            "reward": float(np.mean(scored[self.reward_fn.name])),
            "mean_q": float(self.q_values[torch.as_tensor(step.actions)].mean()),
        }
        for name, gain in gains.items():
            values["policy_gain" if name == self.reward_fn.name else f"policy_gain_{name}"] = gain
        self._stats.add(**values)
        self._stats.add(**{f"reward_{name}": float(v.mean()) for name, v in scored.items()})
        probs = self.rollout.probs(step.obs)
        diag = policy_diagnostics(probs, self._diag_q)
        self._stats.add(**{f"policy_{key}": value for key, value in diag.items()})
        self._stats.counts += np.bincount(step.actions.ravel(), minlength=self.k)
        for key, value in values.items():
            self.log.scalar(f"step/{key}", value)
        if self.optimizer is not None:
            self.log.scalar("step/lr", float(self.optimizer.param_groups[0]["lr"]))
        return {**values, **{f"reward_{n}": float(v.mean()) for n, v in scored.items()}}

    def _progress(self) -> float:
        """The fraction of the run done (0.5 without ``total_steps``)."""
        return 0.5 if self.total_steps is None else min(1.0, self.global_step / self.total_steps)

    def _epoch_seed(self) -> int:
        return stream_seed(self.cfg.seed, "global", self.epoch)

    def _end_epoch(self) -> None:
        row = self._stats.row(self.epoch + 1)
        self.log.end_epoch(row, time.perf_counter() - self._stats.start)
        if "q_hist" in row:
            counts = np.asarray(row["q_hist"])
            bins = np.append(self._diag_q, 1.0)
            self.log.histogram("policy/q", np.repeat(self._diag_q, counts), bins)
        self._stats = EpochStats(self.k)
        self.epoch += 1
        self.step_in_epoch = 0
        self._prev_loss = None
        self._in_epoch = False

    # -- files and state ----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the policy as an ``agent.zip`` (atomically): :meth:`agents.AgentMix.load`,
        ``rlmix.train --policy agent --set frozen_agent.path=PATH``."""
        if self.ppo is None:
            raise RuntimeError("nothing to save yet: the agent is built at the first mix()")
        return write_agent(path, agent_state(self.ppo))

    @property
    def ppo(self) -> EpochPPO | None:
        """The Stable-Baselines3 PPO agent (built at the first ``mix``)."""
        return self.rollout.ppo

    def state_dict(self) -> dict[str, Any]:
        """The mixer's whole state between two steps, as tensors and plain Python only
        (``torch.save`` it and read it back with ``weights_only=True``)."""
        if self._pending is not None:
            raise RuntimeError("state_dict() between mix() and observe(): observe the step first")
        teacher = None
        if self._teacher is not None:
            teacher = {k: v.detach().clone() for k, v in self._teacher.state_dict().items()}
        cf = None if self._cf_generator is None else self._cf_generator.get_state()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
            "num_classes": self.num_classes,
            "rollout": self.rollout.state_dict(),
            "counters": {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "in_epoch": self._in_epoch,
                "lr_seen": self._lr_seen,
                "prev_loss": self._prev_loss,
            },  # fmt: skip
            "streams": {"mixing": self.generator.get_state(), "counterfactual": cf},
            "teacher": teacher,
            "stats": {
                "values": {k: list(v) for k, v in self._stats.values.items()},
                "counts": torch.from_numpy(self._stats.counts.copy()),
            },  # fmt: skip
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (same settings; the model is the one passed to the
        next ``mix``, whose EMA teacher is restored then)."""
        where = "LearnedMix state"
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{where}: not a LearnedMix state_dict()")
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                f"{where}: version {state.get('version')!r}, this rlmix reads {STATE_VERSION}"
            )
        diff = config_difference(json.loads(state["config"]), self.cfg.to_dict(), there="in it")
        if diff or state["num_classes"] != self.num_classes:
            raise ConfigError(f"{where} was written with other settings ({diff or 'num_classes'})")
        c, s = state["counters"], state["streams"]
        self.epoch, self.step_in_epoch = c["epoch"], c["step_in_epoch"]
        self.global_step, self._in_epoch = c["global_step"], c["in_epoch"]
        self._lr_seen, self._prev_loss = c["lr_seen"], c["prev_loss"]
        self.generator.set_state(s["mixing"])
        if s["counterfactual"] is not None:
            self._cf_generator = torch.Generator()
            self._cf_generator.set_state(s["counterfactual"])
        self.rollout.load_state_dict(state["rollout"], where)
        self._teacher_state = state["teacher"]
        if self._teacher is not None and self._teacher_state is not None:
            self._teacher.load_state_dict(self._teacher_state)
            self._teacher_state = None
        self._stats = EpochStats(self.k)
        self._stats.values = {k: list(v) for k, v in state["stats"]["values"].items()}
        self._stats.counts = state["stats"]["counts"].numpy().copy()
        self.history[:] = copy.deepcopy(state["history"])


__all__ = ["LearnedMix"]
