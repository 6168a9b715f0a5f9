"""RL-Mix in a Lightning ``training_step``: a callback that drives :class:`agents.LearnedMix`.

``pip install 'rlmix[lightning]'``. Lightning has no mix-up hook (its issue 790: mix in
``training_step``), so the module mixes, and the callback does the rest::

    from agents.lightning import LearnedMixCallback
    from rlmix.losses import soft_ce

    class Classifier(lightning.LightningModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            x_mix, y_mix = self.rlmix(self, x, y)      # set by the callback
            logits = self(x_mix)
            return {"loss": soft_ce(logits, y_mix), "logits": logits}

    trainer = lightning.Trainer(callbacks=[LearnedMixCallback(num_classes=10)])

The callback gives the mixer what it needs from the trainer: the first optimiser (the policy's
``lr`` context), the run's steps (``progress``) and the epoch's batches; after each optimiser
step it calls ``observe`` with the step's ``logits`` and at each epoch's end ``end_epoch``. With
a TensorBoard logger it writes ``rlmix.train_agent``'s tags there. Its state (the policy, the
teacher, the streams) is saved in Lightning's checkpoints and restored with them.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from agents.learned_mix import LearnedMix


class LearnedMixCallback(pl.Callback):
    """Drive a :class:`agents.LearnedMix` from a Lightning ``Trainer``.

    Args:
        num_classes: the classifier's number of classes.
        attribute: the module attribute the mixer is set on (``self.rlmix``).
        **settings: :class:`agents.LearnedMix` keywords (``config``, ``held_out``, config keys
            such as ``reward="teach"``); ``steps_per_epoch``, ``total_steps``, ``optimizer``
            and ``writer`` come from the trainer.
    """

    def __init__(self, num_classes: int, *, attribute: str = "rlmix", **settings: Any) -> None:
        taken = {"steps_per_epoch", "total_steps", "optimizer", "writer"} & set(settings)
        if taken:
            raise TypeError(
                f"LearnedMixCallback sets {', '.join(sorted(taken))} from the trainer; drop them"
            )
        self.num_classes, self.attribute, self.settings = num_classes, attribute, settings
        self.mix: LearnedMix | None = None
        self._state: dict[str, Any] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = getattr(trainer.logger, "experiment", None)
        self.mix = LearnedMix(
            self.num_classes,
            steps_per_epoch=int(trainer.num_training_batches),
            total_steps=int(trainer.estimated_stepping_batches),
            optimizer=trainer.optimizers[0] if trainer.optimizers else None,
            writer=writer if hasattr(writer, "add_scalar") else None,
            **self.settings,
        )
        if self._state is not None:
            self.mix.load_state_dict(self._state)
            self._state = None
        setattr(pl_module, self.attribute, self.mix)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        logits = outputs.get("logits") if isinstance(outputs, dict) else None
        if not isinstance(logits, torch.Tensor):
            raise ValueError(
                "LearnedMixCallback: training_step must return {'loss': loss, 'logits': "
                "logits}, the logits of the module on x_mix, for the mixer to score the mix"
            )
        self.mix.observe(logits)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.mix.end_epoch()  # a no-op when steps_per_epoch already ended it

    def state_dict(self) -> dict[str, Any]:
        return {} if self.mix is None else {"mix": self.mix.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._state = state_dict.get("mix")


__all__ = ["LearnedMixCallback"]
