import json

import pytest

from rlmix.errors import ConfigError
from rlmix.train import main, train_fixed
from rlmix.trainer import Trainer


def test_two_epochs_improve_over_untrained(tiny_config):
    # The embedded default's data (5000 images, batch 100): 2 epochs of a fixed policy.
    cfg = tiny_config(
        policy="vanilla",
        eval_fgsm=False,
        **{"data.options": {}, "trainer.batch_size": 100},
    )
    untrained = Trainer(cfg).evaluate()["top1"]
    metrics = train_fixed(cfg, progress=False)
    assert len(metrics["epochs"]) == 2
    assert metrics["epochs"][1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert metrics["final"]["top1"] > untrained + 0.05


def test_resume_gives_identical_metrics(tiny_config, tmp_path):
    full = train_fixed(tiny_config(out=str(tmp_path / "full")), progress=False)
    part_cfg = tiny_config(out=str(tmp_path / "part"))
    first = train_fixed(part_cfg, progress=False, stop_after=1)
    assert len(first["epochs"]) == 1
    resumed = train_fixed(part_cfg, resume=True, progress=False)
    assert resumed == full
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert a == b


def test_cli_writes_outputs(tiny_cli_args, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--policy", "cutmix_plus", "--epochs", "1", "--out", str(out), "--no-progress"]
    args += tiny_cli_args
    assert main(args) == 0
    assert {"config.yaml", "checkpoint.pt", "metrics.json", "timings.json", "tb"} <= {
        p.name for p in out.iterdir()
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["policy"] == "cutmix_plus" and len(metrics["epochs"]) == 1
    assert "final test top-1" in capsys.readouterr().out


def test_resume_refuses_other_config(tiny_config, tmp_path):
    train_fixed(tiny_config(out=str(tmp_path / "r")), progress=False, stop_after=1)
    with pytest.raises(ConfigError, match=r"different config \(mix.alpha"):
        train_fixed(tiny_config(out=str(tmp_path / "r"), alpha=0.5), resume=True, progress=False)
