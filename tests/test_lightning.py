"""agents.lightning.LearnedMixCallback with the real Lightning (``rlmix[lightning]``)."""

from __future__ import annotations

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch", reason="pip install 'rlmix[lightning]'")

from agents.lightning import LearnedMixCallback  # noqa: E402
from rlmix.losses import soft_ce  # noqa: E402
from rlmix.models import create_model  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = create_model("resnet_tiny", 10, image_size=32)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x_mix, y_mix = self.rlmix(self, x, y)
        logits = self(x_mix)
        return {"loss": soft_ce(logits, y_mix), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _loader(n=60, batch=10):
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(
        torch.rand(n, 3, 32, 32, generator=g), torch.randint(10, (n,), generator=g)
    )
    return torch.utils.data.DataLoader(data, batch_size=batch)


def _trainer(tmp_path, callback, epochs=1):
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=[callback],
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )


SMALL = {"agent.n_steps": 3, "agent.batch_size": 20, "agent.n_epochs": 2}


def test_one_epoch_of_lightning_updates_the_policy(tmp_path):
    module = Classifier()
    callback = LearnedMixCallback(10, **SMALL)
    _trainer(tmp_path, callback).fit(module, _loader())
    mix = callback.mix
    assert module.rlmix is mix and mix.global_step == 6 and mix.epoch == 1
    assert mix.ppo._n_updates == 4  # two rollouts of 3 steps, 2 PPO epochs each
    assert mix.total_steps == 6 and mix.optimizer is not None  # taken from the trainer
    row = mix.history[-1]
    assert row["epoch"] == 1.0 and sum(row["q_hist"]) == 60 and "policy_gain" in row
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events  # the tags went to Lightning's TensorBoard logger
    saved = list((tmp_path / "tb").rglob("*.ckpt"))
    assert saved  # the callback's state is in Lightning's checkpoint
    state = torch.load(saved[0], weights_only=False)["callbacks"]
    (entry,) = [v for k, v in state.items() if "LearnedMixCallback" in k]
    assert entry["mix"]["counters"]["global_step"] == 6


def test_training_step_must_return_the_logits(tmp_path):
    class NoLogits(Classifier):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            return out["loss"]

    with pytest.raises(ValueError, match=r"training_step must return \{'loss': loss, 'logits'"):
        _trainer(tmp_path, LearnedMixCallback(10, **SMALL)).fit(NoLogits(), _loader())


def test_settings_the_trainer_gives_are_refused():
    with pytest.raises(TypeError, match=r"sets optimizer, total_steps from the trainer"):
        LearnedMixCallback(10, optimizer=None, total_steps=3)
