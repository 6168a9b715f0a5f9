"""The classifier training engine under the environment: one batch at a time.

:class:`Trainer` owns the classifier, its optimiser and OneCycleLR schedule, the loss, the data
loaders (:mod:`rlmix.data.pipeline`) and a mixer object of :mod:`rlmix.mixing`, and offers exactly
the operations the environment needs: begin an epoch, observe the next batch (saliency + logits),
mix it with given per-image top-k, take one training step, measure the held-out loss, evaluate.

Randomness: :meth:`begin_epoch` reseeds every per-epoch stream of :mod:`rlmix.seeding` from
``(seed, epoch)``, so an epoch is a pure function of the seed, the epoch index, the actions and
the state at its start, and resuming from an epoch-boundary checkpoint is exact on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from rlmix import distributed
from rlmix.config import Config, EnvConfig, TrainerConfig
from rlmix.data.pipeline import build_loaders
from rlmix.errors import ConfigError, RlmixError
from rlmix.losses import get_loss
from rlmix.metrics import collect, summarize
from rlmix.mixing import Mixer, MixParams, create_mixer, one_hot
from rlmix.models import create_model
from rlmix.optim import build_optimizer
from rlmix.probe import (
    LastLayerGrad,
    MixedRecord,
    StepOutput,
    forward_mixed,
    last_layer_grad,
    probe_mix,
    step_output,
)
from rlmix.saliency import input_saliency
from rlmix.seeding import seed_global, stream_generator
from rlmix.sync_batchnorm import convert_batchnorm

_NO_HELD_OUT = (
    "this reward needs a held-out split: set data.val_size (e.g. 100), images held out of the "
    "training budget"
)


def _clone(obj: Any) -> Any:
    """A copy of a state dict: tensors cloned, containers rebuilt (3x faster than deepcopy)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return copy.copy(obj)


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``.

    Under ``torchrun``, ``auto`` and ``cuda`` mean this rank's GPU (``LOCAL_RANK``).
    """
    d = distributed.current()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"config key 'trainer.device': {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "config key 'trainer.device' asks for CUDA, but no CUDA device is present"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", d.local_rank % torch.cuda.device_count())
    return device


@dataclass
class Batch:
    """One training batch and what the observation needs.

    Attributes:
        x: images (B, C, H, W) in [0, 1].
        y: soft labels (B, N).
        labels: class indices (B,).
        saliency: input saliency (B, H, W), or None when not computed.
        logits: clean logits (B, N) from the saliency forward, or None.
        clean_loss: the training loss of the clean batch from that forward, still attached to
            its graph, for mixers with a clean-batch loss (``mixer.clean_lam`` > 0), else None.
    """

    x: torch.Tensor
    y: torch.Tensor
    labels: torch.Tensor
    saliency: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    clean_loss: torch.Tensor | None = None


@torch.no_grad()
def update_ema(teacher: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """One EMA step of ``teacher`` towards ``model``: each weight ``t <- decay * t + (1 - decay)
    * w``; buffers (BatchNorm statistics) copied."""
    t_params = list(teacher.parameters())
    torch._foreach_lerp_(t_params, [p.detach() for p in model.parameters()], 1.0 - decay)
    for t_buf, buf in zip(teacher.buffers(), model.buffers(), strict=True):
        t_buf.copy_(buf)


def ema_decay_at(env: EnvConfig, trainer: TrainerConfig, progress: float) -> float:
    """The EMA teacher's decay at ``progress`` (the fraction of the run's steps done).

    ``env.ema_decay`` throughout, or with ``env.ema_decay_end`` a decay tied to the schedule: it
    stays at ``ema_decay`` while OneCycleLR warms up (the first ``trainer.pct_start`` of the run)
    and moves to ``ema_decay_end`` as the learning rate falls, on the same cosine, so a slower
    teacher averages over more of the small late steps."""
    if env.ema_decay_end is None:
        return env.ema_decay
    start = trainer.pct_start
    fall = min(max((progress - start) / (1.0 - start), 0.0), 1.0)
    done = 0.5 * (1.0 - math.cos(math.pi * fall))
    return env.ema_decay + (env.ema_decay_end - env.ema_decay) * done


class Trainer:
    """Train one classifier with mix-up, one batch at a time.

    Under ``torchrun`` (:mod:`rlmix.distributed`) each rank trains on its shard of every global
    batch (``trainer.batch_size`` images in all) through ``DistributedDataParallel``; saliency and
    mixing stay local to the shard; the loss, finiteness checks and evaluation are reduced over
    ranks, so every rank takes the same decisions. ``trainer.sync_bn`` computes BatchNorm
    statistics over the global batch (:mod:`rlmix.sync_batchnorm`); by default each rank
    normalises with its own shard's statistics, as single-GPU code does per batch.

    Args:
        cfg: the validated run config.
        hold_out: carve the held-out split (``data.val_size`` images of the training budget)
            because something reads it; ``data.hold_out: always`` carves it regardless.
        teacher: keep an EMA teacher of the classifier (decay ``env.ema_decay``, or
            :func:`ema_decay_at` with ``env.ema_decay_end``), updated after every optimiser step.
    """

    def __init__(self, cfg: Config, *, hold_out: bool = False, teacher: bool = False) -> None:
        self.cfg = cfg
        self.dist = distributed.current()
        self.device = select_device(cfg.trainer.device)
        self.amp = cfg.trainer.amp and self.device.type == "cuda"
        loaders = build_loaders(
            cfg.data,
            batch_size=cfg.trainer.batch_size,
            seed=cfg.seed,
            device=self.device,
            localization=cfg.env.eval_localization,
            hold_out=hold_out,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.info = loaders.info
        self.train_images, self.held_out_images = loaders.train_images, loaders.held_out_images
        self.train_loader, self.test_loader, self.val_loader = (
            loaders.train,
            loaders.test,
            loaders.val,
        )
        self._held_out = loaders.held_out
        side = self.info.image_size
        for key, grids in (("mix.grids", cfg.mix.grids), ("env.obs_grid", [cfg.env.obs_grid])):
            bad = [g for g in grids if side % g]
            if bad:
                raise ConfigError(
                    f"config key '{key}': grid {bad[0]} does not divide the image side {side}"
                )
        self.model, self.ddp = self._build_model()
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False) if teacher else None
        self.mixer = self._build_mixer()
        self.loss_fn = get_loss(cfg.trainer.loss)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = cfg.trainer.epochs * self.steps_per_epoch
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg.trainer, self.total_steps)
        self.epoch = 0  # index of the epoch in progress (or next to start)
        self.step_in_epoch = 0
        self.global_step = 0
        self.generator = torch.Generator(device="cpu")  # the epoch's `mixing` stream
        self._batches: Any = None
        self._epoch_start: dict[str, Any] | None = None

    def _build_mixer(self) -> Mixer:
        """The configured mixer (``mix.options`` reach its constructor), checked against the
        model; its own generator is unused: :meth:`mix` passes the epoch's stream."""
        m = self.cfg.mix
        try:
            mixer = create_mixer(
                m.mixer,
                alpha=m.alpha,
                k=m.k,
                grids=m.grids,
                saliency_mode=m.saliency_mode,
                lam_mode=m.lam_mode,
                seed=0,
                **m.options,
            )
        except TypeError as e:
            raise ConfigError(f"config key 'mix.options': {e}") from e
        except (ValueError, ImportError) as e:
            raise ConfigError(f"config key 'mix.mixer': {e}") from e
        try:
            mixer.check_model(self.model)
        except ValueError as e:
            raise ConfigError(f"config key 'mix.mixer': {e}") from e
        if mixer.clean_lam > 0 and self.dist.enabled:
            raise ConfigError(
                f"config key 'mix.mixer': {m.mixer}'s clean-batch loss (clean_lam "
                f"{mixer.clean_lam:g}) is not supported under torchrun; set "
                "mix.options.clean_lam=0 or run on one process"
            )
        return mixer

    def _build_model(self) -> tuple[torch.nn.Module, DistributedDataParallel | None]:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        options = {"in_chans": info.channels, **cfg.model.options}
        try:
            model = create_model(
                cfg.model.name,
                info.num_classes,
                mean=info.mean,
                std=info.std,
                image_size=info.image_size,
                **options,
            ).to(self.device)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model: {e}") from e
        if not self.dist.enabled:
            return model, None
        if cfg.trainer.sync_bn:
            model = convert_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return model, DistributedDataParallel(model, device_ids=ids)

    # -- epochs -------------------------------------------------------------------------------

    def begin_epoch(self, seed: int | None = None) -> None:
        """Start epoch ``self.epoch``: reseed every random stream from ``(seed, epoch)``."""
        seed = self.cfg.seed if seed is None else seed
        self._epoch_start = self._snapshot()
        self.step_in_epoch = 0
        self.generator = stream_generator(seed, "mixing", self.epoch)
        seed_global(seed, self.epoch)
        self.train_loader.seed = seed
        self.train_loader.set_epoch(self.epoch)
        self._batches = iter(self.train_loader)

    def rewind_epoch(self) -> None:
        """Restore the state saved when the current epoch began."""
        if self._epoch_start is None:
            raise RlmixError("no epoch has begun: nothing to rewind")
        self._restore(self._epoch_start)

    def end_epoch(self) -> None:
        """Mark the current epoch finished; the next :meth:`begin_epoch` starts the next one."""
        self.epoch += 1
        self.step_in_epoch = 0
        self._batches = None

    @property
    def epoch_started(self) -> bool:
        return self._batches is not None

    @property
    def epoch_done(self) -> bool:
        return self.step_in_epoch >= self.steps_per_epoch

    @property
    def steps_left_in_epoch(self) -> int:
        """Steps until the current (or next) epoch ends."""
        return self.steps_per_epoch - (self.step_in_epoch if self.epoch_started else 0)

    @property
    def progress(self) -> float:
        """Fraction of the run's optimiser steps taken, in [0, 1]."""
        return min(1.0, self.global_step / self.total_steps)

    # -- steps --------------------------------------------------------------------------------

    def observe(self, *, saliency: bool) -> Batch:
        """Fetch the next training batch; with ``saliency`` also its saliency and clean logits."""
        if self._batches is None:
            raise RlmixError("call begin_epoch() before observe()")
        batch = distributed.together(lambda: self._next_batch(saliency))
        if saliency:
            for name, t in (("saliency", batch.saliency), ("logits", batch.logits)):
                if not distributed.all_true(bool(torch.isfinite(t).all())):
                    self.check_weights()
                    raise RlmixError(self._where(f"the observation's {name} is not finite"))
        return batch

    def _next_batch(self, saliency: bool) -> Batch:
        x, labels = next(self._batches)
        y = one_hot(labels, self.info.num_classes, dtype=x.dtype)
        batch = Batch(x=x, y=y, labels=labels)
        if saliency:
            keep = self.mixer.clean_lam > 0  # the clean loss trains through this forward
            with self._autocast():
                sal, logits = input_saliency(
                    self.model, x, labels, mode=self.mixer.saliency_mode, keep_graph=keep
                )
            if keep:
                batch.clean_loss = self.loss_fn(logits.float(), y)
            batch.saliency, batch.logits = sal.float(), logits.detach().float()
        return batch

    def check_weights(self) -> None:
        """Raise :class:`RlmixError` naming the last step if any weight is NaN or inf."""
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if not distributed.all_true(finite):
            if self.step_in_epoch == 0 and self.epoch > 0:
                when = f"after epoch {self.epoch}, step {self.steps_per_epoch}"
            else:
                when = f"at epoch {self.epoch + 1}, step {self.step_in_epoch}"
            raise RlmixError(f"the classifier's weights are not finite {when}; stopping")

    def mix(
        self, batch: Batch, q: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, MixParams]:
        """Mix ``batch`` with the configured mixer, its parameters drawn from the epoch's stream;
        ``q`` (B,) is the per-image top-k (used by R-Mix only). Returns ``(x_mix, y_mix, params)``.
        """
        params = self.mixer.sample(batch.x, self.generator)
        return (*self.apply_mix(batch, params, q), params)

    def apply_mix(
        self,
        batch: Batch,
        params: MixParams,
        q: torch.Tensor | None,
        q_partner: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``batch`` with given parameters (no random draw): the same lam, partners and grid
        with another top-k ``q``; ``q_partner`` (R-Mix only) thresholds the partners' masks
        instead of ``q`` (:func:`rlmix.mixing.rmix`)."""
        if self.mixer.needs_saliency and batch.saliency is None:
            raise RlmixError(f"{self.cfg.mix.mixer} needs the batch's saliency")
        if self.mixer.uses_topk and q is None:
            raise RlmixError("R-Mix needs a top-k per image")
        extra = {} if q_partner is None else {"q_partner": q_partner}
        return self.mixer.apply(batch.x, batch.y, params, saliency=batch.saliency, q=q, **extra)

    def train_step(
        self,
        x_mix: torch.Tensor,
        y_mix: torch.Tensor,
        *,
        params: MixParams | None = None,
        clean_loss: torch.Tensor | None = None,
        input_grad: bool = False,
        mixed: MixedRecord | None = None,
    ) -> StepOutput:
        """One optimiser and scheduler step on a mixed batch.

        ``params`` are the batch's mixing parameters: a mixer that mixes inside the model
        (Manifold Mixup) needs them for the forward. ``clean_loss`` (:attr:`Batch.clean_loss`)
        is added to the backward with weight ``mixer.clean_lam`` (PuzzleMix's and Co-Mixup's
        clean-batch loss); the reported loss is the mixed batch's alone. With ``input_grad``
        the mixed input is marked as requiring grad, so the training backward also yields
        dLoss/dx_mix (``mixed_saliency``, its RMS over channels); ``mixed`` (``"logits"``, or
        ``"last_layer"`` for the last layer's inputs too) records
        :class:`rlmix.probe.MixedBatch` (weights before the step). The loss is the detached
        mean over ranks under torchrun.
        """
        self.optimizer.zero_grad(set_to_none=True)
        inside = (
            contextlib.nullcontext()
            if params is None
            else self.mixer.forward_context(self.model, params)
        )
        x_in, logits, loss, seen = forward_mixed(
            self.ddp or self.model,
            self.model,
            self.loss_fn,
            x_mix,
            y_mix,
            input_grad=input_grad,
            last_layer=mixed == "last_layer",
            autocast=self._autocast,
            inside=inside,
        )
        reported = distributed.all_reduce_mean(loss.detach())
        if not bool(torch.isfinite(reported)):
            raise RlmixError(self._where(f"training loss is {reported.item()}"))
        if clean_loss is not None:
            loss = loss + self.mixer.clean_lam * clean_loss
        loss.backward()
        self.optimizer.step()
        if self.global_step < self.total_steps:
            self.scheduler.step()
        if self.teacher is not None:
            self._update_teacher()
        self.global_step += 1
        self.step_in_epoch += 1
        return step_output(self.loss_fn, reported, x_in, y_mix, logits, mixed, seen)

    def probe(
        self,
        x_mix: torch.Tensor,
        y_mix: torch.Tensor,
        *,
        input_grad: bool = False,
        mixed: MixedRecord | None = None,
    ) -> StepOutput:
        """The forward (and, with ``input_grad``, input-gradient) pass of :meth:`train_step` on
        another mixed batch, changing nothing: no optimiser step, no weight gradient, BatchNorm
        statistics and every random stream as they were (:func:`rlmix.probe.preserved`). The
        same-batch counterfactual of a step; the loss is this rank's."""
        return probe_mix(
            self.model,
            self.loss_fn,
            x_mix,
            y_mix,
            input_grad=input_grad,
            mixed=mixed,
            autocast=self._autocast,
        )

    def held_out_grad(self) -> LastLayerGrad:
        """The mean loss gradient on the last linear layer of the next held-out batch
        (``trainer.batch_size`` images, rotating over the held-out split with the global step),
        before this step; the mean over ranks under torchrun."""
        data = self._held_out
        if data is None:
            raise ConfigError(_NO_HELD_OUT)
        n = len(data)
        size = min(self.cfg.trainer.batch_size, n)
        chunks = max(n // size, 1)
        start = (self.global_step % chunks) * size
        index = torch.arange(start, start + size)[self.dist.rank :: self.dist.world_size]
        x = data.images[index].to(self.device, torch.float32).div_(255.0)
        labels = data.labels[index].to(self.device)
        with self._autocast():
            g = last_layer_grad(self.model, self.loss_fn, x, labels, self.info.num_classes)
        if self.dist.enabled:
            packed = distributed.all_reduce_mean(torch.cat([g.weight.flatten(), g.bias]))
            g = LastLayerGrad(
                packed[: g.weight.numel()].view_as(g.weight), packed[-g.bias.numel() :]
            )
        return g

    @torch.no_grad()
    def teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The EMA teacher's softmax (B, N) on images ``x`` (eval mode)."""
        if self.teacher is None:
            raise RlmixError("this trainer keeps no EMA teacher")
        with self._autocast():
            return self.teacher(x).float().softmax(dim=1)

    def _update_teacher(self) -> None:
        decay = ema_decay_at(self.cfg.env, self.cfg.trainer, self.progress)
        update_ema(self.teacher, self.model, decay)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def val_loss(self) -> float:
        """Cross-entropy of the classifier (eval mode) on the held-out split, mean over ranks."""
        if self.val_loader is None:
            raise ConfigError(_NO_HELD_OUT)
        was_training = self.model.training
        self.model.eval()
        try:
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            count = 0
            for x, labels in self.val_loader:
                with self._autocast():
                    logits = self.model(x)
                total += torch.nn.functional.cross_entropy(
                    logits.float(), labels, reduction="sum"
                ).double()
                count += labels.shape[0]
        finally:
            self.model.train(was_training)
        loss = distributed.all_reduce_mean(total / max(count, 1))
        return float(loss)

    def evaluate(self, *, progress: bool = False) -> dict[str, float]:
        """Test-split metrics (``rlmix.metrics.evaluate``) as plain floats.

        Under torchrun each rank evaluates its shard of the test split and the records are
        gathered, so every rank returns the metrics of the whole split.
        """
        self.check_weights()
        with self._autocast():
            records = collect(
                self.model,
                self.test_loader,
                fgsm=self.cfg.env.eval_fgsm,
                localization=self.cfg.env.eval_localization,
                progress=progress,
                desc=f"eval epoch {self.epoch}",
            )
        return summarize(distributed.all_gather_objects(records), fgsm=self.cfg.env.eval_fgsm)

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue at an epoch boundary (tensors and plain Python only)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
        }
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        return state

    def boundary_state(self) -> dict[str, Any]:
        """The state at the last epoch boundary: the snapshot of an epoch begun without steps
        (its saliency pass may already have moved BatchNorm statistics), else the current state.
        """
        if self.epoch_started and self.step_in_epoch == 0 and self._epoch_start is not None:
            return self._epoch_start
        if self.epoch_started:
            raise RlmixError("the trainer is inside an epoch: no boundary state to save")
        return self.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore(state)
        self._batches = None
        self.step_in_epoch = 0

    def _snapshot(self) -> dict[str, Any]:
        return _clone(self.state_dict())

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def _where(self, what: str) -> str:
        return f"{what} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; stopping"


__all__ = ["Batch", "StepOutput", "Trainer", "ema_decay_at", "select_device", "update_ema"]
