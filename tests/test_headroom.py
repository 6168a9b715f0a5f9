"""Reward headroom without PPO: the offline fit on synthetic tables, and the command end to end."""

import json

import pytest
import torch

from rlmix.cli import run_main
from rlmix.errors import ConfigError
from rlmix.headroom import main as headroom_main
from rlmix.policy_fit import headroom_gains


def _table(n_batches=40, per_batch=50, k=10, signal=1.0, seed=0):
    """r[i, a] = signal * cos(2 pi (a - t_i) / K) + noise, with t_i a function of the feature."""
    g = torch.Generator().manual_seed(seed)
    n = n_batches * per_batch
    x = torch.rand(n, 3, generator=g)
    target = (x[:, 0] * k).long().clamp_(max=k - 1)
    a = torch.arange(k)[None, :]
    rewards = signal * torch.cos(2 * torch.pi * (a - target[:, None]) / k)
    rewards = rewards + 0.3 * torch.randn(n, k, generator=g)
    return rewards, x, torch.arange(n_batches).repeat_interleave(per_batch)


def test_a_learnable_reward_is_learned_and_a_random_one_is_not():
    rewards, x, batch = _table()
    gains = headroom_gains(rewards, x, batch)
    assert gains.oracle.mean > gains.learnable.mean > 0.8  # cos = 1 at the target
    assert gains.learnable.excludes_zero and abs(gains.best_constant.mean) < 0.1
    noise, _, _ = _table(signal=0.0, seed=1)
    gains = headroom_gains(noise, x, batch)
    assert gains.oracle.mean > 0.3  # the max of noise is an oracle's illusion...
    assert abs(gains.learnable.mean) < 0.05  # ... that no policy can learn
    assert gains.learnable.low < 0 < gains.learnable.high


def test_headroom_command_end_to_end(tiny_cli_args, tmp_path, capsys):
    out = tmp_path / "hr"
    args = [
        *tiny_cli_args, "--epochs", "2", "--set", "env.eval_fgsm=false", "--set", "data.val_size=100",
        "--reward", "probe_rank", "--reward", "val_grad_align", "--images", "400",
        "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert run_main(headroom_main, args) == 0
    assert "| probe_rank | own | all |" in capsys.readouterr().out
    result = json.loads((out / "headroom.json").read_text())
    for key in (
        "best_constant_gain",
        "best_constant_everyone_gain",
        "oracle_gain",
        "learnable_gain",
    ):
        assert isinstance(result[key], float) and len(result[f"{key}_ci"]) == 2
    assert result["reward"] == "probe_rank" and result["points"] == [1, 2]
    assert result["oracle_gain"] == pytest.approx(1.0)  # every image has an action with cos 1
    assert abs(result["best_constant_gain"]) < 0.05  # no constant beats random on the probe
    assert abs(result["best_constant_everyone_gain"]) < 0.05
    rows = {(r["reward"], r["observation"], r["at"]): r for r in result["rows"]}
    assert rows["val_grad_align", "partner", "all"]["oracle_gain"] > 0
    assert (out / "headroom.png").stat().st_size > 1000 and (out / "headroom.md").is_file()
    # resumable: the scores are kept and read back
    assert run_main(headroom_main, [*args, "--resume"]) == 0
    again = json.loads((out / "headroom.json").read_text())
    assert again["rows"] == result["rows"]


def test_headroom_refuses_rewards_without_a_counterfactual(tiny_cli_args, tmp_path, capsys):
    args = [*tiny_cli_args, "--reward", "loss_drop", "--out", str(tmp_path)]
    assert run_main(headroom_main, args) == 2
    assert "--reward loss_drop needs the step's outcome" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        headroom_main(["--help"])
    with pytest.raises(ConfigError, match=r"--at: epoch 9 is not in \[1, trainer.epochs=2\]"):
        headroom_main([*tiny_cli_args, "--epochs", "2", "--reward", "probe_rank", "--at", "9"])
