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

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from rlmix import distributed
from rlmix.config import Config
from rlmix.data.pipeline import build_loaders
from rlmix.errors import ConfigError, RlmixError
from rlmix.losses import get_loss
from rlmix.metrics import collect, summarize
from rlmix.mixing import MixParams, create_mixer, one_hot
from rlmix.models import create_model
from rlmix.optim import build_optimizer
from rlmix.saliency import input_saliency
from rlmix.seeding import seed_global, stream_generator
from rlmix.sync_batchnorm import convert_batchnorm


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
    """

    x: torch.Tensor
    y: torch.Tensor
    labels: torch.Tensor
    saliency: torch.Tensor | None = None
    logits: torch.Tensor | None = None


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
    """

    def __init__(self, cfg: Config) -> None:
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
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.info = loaders.info
        self.train_loader, self.test_loader, self.val_loader = (
            loaders.train,
            loaders.test,
            loaders.val,
        )
        side = self.info.image_size
        for key, grids in (("mix.grids", cfg.mix.grids), ("env.obs_grid", [cfg.env.obs_grid])):
            bad = [g for g in grids if side % g]
            if bad:
                raise ConfigError(
                    f"config key '{key}': grid {bad[0]} does not divide the image side {side}"
                )
        self.model, self.ddp = self._build_model()
        m = cfg.mix
        self.mixer = create_mixer(  # its own generator is unused: mix() passes the epoch's
            m.mixer, alpha=m.alpha, k=m.k, grids=m.grids, saliency_mode=m.saliency_mode, seed=0
        )
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

    def _build_model(self) -> tuple[torch.nn.Module, DistributedDataParallel | None]:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        options = {"in_chans": info.channels, **cfg.model.options}
        try:
            model = create_model(
                cfg.model.name, info.num_classes, mean=info.mean, std=info.std, **options
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
        x, labels = next(self._batches)
        y = one_hot(labels, self.info.num_classes, dtype=x.dtype)
        batch = Batch(x=x, y=y, labels=labels)
        if saliency:
            with self._autocast():
                sal, logits = input_saliency(self.model, x, labels, mode=self.cfg.mix.saliency_mode)
            batch.saliency, batch.logits = sal.float(), logits.float()
            for name, t in (("saliency", batch.saliency), ("logits", batch.logits)):
                if not distributed.all_true(bool(torch.isfinite(t).all())):
                    self.check_weights()
                    raise RlmixError(self._where(f"the observation's {name} is not finite"))
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
        if self.mixer.needs_saliency and (batch.saliency is None or q is None):
            raise RlmixError("R-Mix needs the batch's saliency and a top-k per image")
        x_mix, y_mix = self.mixer.apply(batch.x, batch.y, params, saliency=batch.saliency, q=q)
        return x_mix, y_mix, params

    def train_step(
        self, x_mix: torch.Tensor, y_mix: torch.Tensor, *, input_grad: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimiser and scheduler step on a mixed batch.

        With ``input_grad`` the mixed input is marked as requiring grad, so the training backward
        also yields dLoss/dx_mix. Returns ``(loss, mixed_saliency)``: the detached 0-d loss (the
        mean over ranks under torchrun) and the RMS over channels of dLoss/dx_mix (B, H, W), or
        None without ``input_grad``.
        """
        self.model.train()
        x_in = x_mix.detach().requires_grad_(input_grad)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = (self.ddp or self.model)(x_in)
        loss = self.loss_fn(logits.float(), y_mix)
        reported = distributed.all_reduce_mean(loss.detach())
        if not bool(torch.isfinite(reported)):
            raise RlmixError(self._where(f"training loss is {reported.item()}"))
        loss.backward()
        self.optimizer.step()
        if self.global_step < self.total_steps:
            self.scheduler.step()
        self.global_step += 1
        self.step_in_epoch += 1
        if not input_grad:
            return reported, None
        return reported, x_in.grad.float().pow(2).mean(dim=1).sqrt()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def val_loss(self) -> float:
        """Cross-entropy of the classifier (eval mode) on the held-out split, mean over ranks."""
        if self.val_loader is None:
            raise ConfigError(
                "this reward needs a held-out split: set data.val_size (e.g. 500), carved from "
                "the training split"
            )
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
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
        }

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
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def _where(self, what: str) -> str:
        return f"{what} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; stopping"


__all__ = ["Batch", "Trainer", "select_device"]
