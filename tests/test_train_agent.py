import json

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from rlmix.compare import main as compare_main
from rlmix.errors import ConfigError
from rlmix.train_agent import main as agent_main
from rlmix.train_agent import train_agent


def _args(cli, out, *extra):
    return ["--out", str(out), "--no-progress", *cli, *extra]


def test_train_agent_end_to_end(tiny_cli_args, tmp_path, capsys):
    out = tmp_path / "agent"
    assert agent_main(_args(tiny_cli_args, out, "--epochs", "2")) == 0
    text = capsys.readouterr().out
    assert "final test top-1" in text and "mean reward" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["policy"] == "agent" and len(metrics["epochs"]) == 2
    assert all(-1 <= row["reward"] <= 1 for row in metrics["epochs"])
    assert (out / "accuracy.png").stat().st_size > 1000
    agent = PPO.load(out / "agent.zip")  # loads with no custom code at the call site
    obs = {
        "saliency": np.full((50, 8, 8), 1 / 64, np.float32),
        "logits": np.zeros((50, 10), np.float32),
    }
    action, _ = agent.predict(obs, deterministic=True)
    assert action.shape == (50,) and action.max() < 10
    assert list((out / "tb").glob("events.out.tfevents.*"))


def test_agent_resume_is_exact(tiny_config, tmp_path):
    full = train_agent(tiny_config(out=str(tmp_path / "full")), progress=False)
    part = tiny_config(out=str(tmp_path / "part"))
    assert len(train_agent(part, progress=False, stop_after=1)["epochs"]) == 1
    resumed = train_agent(part, resume=True, progress=False)
    assert resumed == full


def test_resume_with_a_damaged_agent_is_one_error(tiny_config, tmp_path):
    cfg = tiny_config(out=str(tmp_path / "run"))
    train_agent(cfg, progress=False, stop_after=1)
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["agent"] = torch.zeros(64, dtype=torch.uint8)  # not a zip
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"checkpoint '.*checkpoint.pt' holds no usable agent"):
        train_agent(cfg, resume=True, progress=False)


def test_compare_writes_table_and_plots(tiny_cli_args, tmp_path):
    out = tmp_path / "cmp"
    args = _args(
        tiny_cli_args, out, "--epochs", "1", "--policies", "agent,rmix,vanilla", "--seeds", "0", "1"
    )
    assert compare_main(args) == 0
    table = (out / "results.md").read_text()
    for name in ("agent", "rmix", "vanilla", "top-1 (%)", "ECE (%)", "FGSM err (%)", "s / epoch"):
        assert name in table
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("policy,seeds,top1_mean,top1_std") and len(rows) == 4
    assert (out / "accuracy.png").stat().st_size > 1000
    assert (out / "rmix" / "seed1" / "metrics.json").is_file()


def test_compare_unknown_policy(tiny_config, tmp_path, capsys):
    from rlmix.cli import run_main

    code = run_main(compare_main, ["--policies", "rmix,puzzle", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown policy 'puzzle'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--set", "trainer.lr_mx=1"], ["--bogus"]])
def test_cli_usage_errors_are_one_line(argv, capsys):
    from rlmix.cli import run_main

    assert run_main(agent_main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
