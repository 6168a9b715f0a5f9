import json

import numpy as np
import pytest
import torch

from agents import load_policy, make_ppo
from agents.serialize import restore_ppo
from envs import ImageSlotVecEnv, MixupEnv
from envs.spaces import CONTEXT
from rlmix.checkpoints import load_checkpoint
from rlmix.compare import main as compare_main
from rlmix.errors import ConfigError
from rlmix.train import train_fixed
from rlmix.train_agent import main as agent_main
from rlmix.train_agent import train_agent


def _args(cli, out, *extra):
    return ["--out", str(out), "--no-progress", *cli, *extra]


def test_train_agent_end_to_end(tiny_cli_args, tmp_path, capsys):
    out = tmp_path / "agent"
    assert agent_main(_args(tiny_cli_args, out, "--epochs", "2")) == 0
    text = capsys.readouterr().out
    assert "final test top-1" in text and "mean reward" in text and "policy entropy" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["policy"] == "agent" and len(metrics["epochs"]) == 2
    for row in metrics["epochs"]:
        assert -1 <= row["reward"] <= 1
        assert 0 < row["policy_entropy_frac"] <= 1 and row["policy_kl_uniform"] >= 0
        assert row["policy_kl_uniform"] == pytest.approx(
            np.log(10) * (1 - row["policy_entropy_frac"]), abs=1e-6
        )
        assert sum(row["q_hist"]) == 8 * 50  # one top-k per image and step
    assert (out / "accuracy.png").stat().st_size > 1000
    policy, settings = load_policy(out / "agent.zip")  # JSON and tensors: nothing unpickled
    assert settings["progress"]["num_timesteps"] == 2 * 8 * 50
    obs = {
        "saliency": torch.full((50, 8, 8), 1 / 64),
        "logits": torch.zeros(50, 10),
        "context": torch.full((50, len(CONTEXT)), 0.5),
    }
    action = policy.action_probs(obs).argmax(1)
    assert action.shape == (50,) and action.max() < 10
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1  # one writer per run: SB3's train/ scalars go through it


def _tags(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_tags_share_the_global_step(tiny_config, tmp_path):
    cfg = tiny_config(out=str(tmp_path / "tb_run"), eval_fgsm=False)
    train_agent(cfg, progress=False)
    tags = _tags(tmp_path / "tb_run")
    assert tags["step/train_loss"] == list(range(1, 17))  # 2 epochs of 8 batches
    assert tags["step/lr"] == tags["step/reward"] == tags["step/train_loss"]
    for tag in ("epoch/train_loss", "epoch/reward", "test/top1", "policy/entropy_frac"):
        assert tags[tag] == [8, 16], tag
    assert "train/approx_kl" in tags and "train/clip_fraction" in tags
    assert max(tags["train/approx_kl"]) <= 16  # SB3's numbers on the env-step axis too
    assert not any(t.startswith("charts/") for t in tags)


@pytest.mark.parametrize("n_steps", [16, 12, 10])  # 2x, 1.5x and 1.25x the 8-step epoch
def test_agent_stops_exactly_and_resumes_exactly(tiny_config, tmp_path, n_steps):
    """Any n_steps: the run ends after its last epoch, checkpoints at epoch boundaries, and a
    run stopped after epoch 1 and resumed equals the uninterrupted one."""
    overrides = {"agent.n_steps": n_steps, "agent.batch_size": 100, "eval_fgsm": False}
    full_cfg = tiny_config(out=str(tmp_path / "full"), **overrides)
    full = train_agent(full_cfg, progress=False)
    assert [row["epoch"] for row in full["epochs"]] == [1.0, 2.0]
    one = train_agent(tiny_config(out=str(tmp_path / "one"), epochs=1, **overrides), progress=False)
    assert len(one["epochs"]) == 1
    part = tiny_config(out=str(tmp_path / "part"), **overrides)
    assert len(train_agent(part, progress=False, stop_after=1)["epochs"]) == 1
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert state["env"]["trainer"]["global_step"] == 8
    resumed = train_agent(part, resume=True, progress=False)
    assert resumed == full
    a = (tmp_path / "full" / "metrics.json").read_text()
    assert a == (tmp_path / "part" / "metrics.json").read_text()


def test_epoch_length_that_does_not_divide_n_steps(tiny_config, tmp_path):
    """A 7-step epoch (350 of 400 images at batch 50) with the default n_steps of 10."""
    cfg = tiny_config(
        out=str(tmp_path / "odd"),
        eval_fgsm=False,
        epochs=3,
        **{"data.options": {"train_size": 350, "test_size": 200}, "agent.n_steps": 10},
    )
    metrics = train_agent(cfg, progress=False, stop_after=2)
    assert len(metrics["epochs"]) == 2
    assert len(train_agent(cfg, resume=True, progress=False)["epochs"]) == 3


def test_resume_with_a_damaged_agent_is_one_error(tiny_config, tmp_path):
    cfg = tiny_config(out=str(tmp_path / "run"))
    train_agent(cfg, progress=False, stop_after=1)
    path = tmp_path / "run" / "checkpoint.pt"
    good = torch.load(path, weights_only=True)
    damaged = [
        ({"settings": "{not json"}, r"checkpoint '.*checkpoint.pt': its agent settings are not"),
        ({"policy": {}}, r"checkpoint '.*checkpoint.pt': its policy weights lack 'features_extr"),
        (
            {"optimizer": {}},
            r"checkpoint '.*checkpoint.pt': its agent weights do not fit this agent",
        ),
        (
            {"settings": good["agent"]["settings"].replace('"hidden": 64', '"hidden": 32')},
            r"the agent's policy setting 'hidden' is 32, the run's is 64",
        ),
    ]
    for change, message in damaged:
        torch.save({**good, "agent": {**good["agent"], **change}}, path)
        with pytest.raises(ConfigError, match=message):
            train_agent(cfg, resume=True, progress=False)


def test_resuming_a_finished_run_says_so(tiny_config, tmp_path):
    cfg = tiny_config(out=str(tmp_path / "done"), epochs=1, eval_fgsm=False)
    train_fixed(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"nothing to do: the run in '.*done' already has its 1"):
        train_fixed(cfg, resume=True, progress=False)


def test_frozen_agent_reuses_a_trained_policy(tiny_config, tmp_path):
    """Same actions for the same observations after save/load; another batch size and number
    of classes; deterministic or sampled."""
    from gymnasium import spaces

    from baselines import make_policy

    cfg = tiny_config(out=str(tmp_path / "learn"), eval_fgsm=False, epochs=1)
    train_agent(cfg, progress=False)
    path = str(tmp_path / "learn" / "agent.zip")
    learned = make_ppo(ImageSlotVecEnv(MixupEnv(cfg)), cfg)  # the trained agent, rebuilt
    restore_ppo(learned, load_checkpoint(tmp_path / "learn" / "checkpoint.pt")["agent"], "ckpt")
    frozen = make_policy("agent", spaces.Discrete(10), path=path, deterministic=True)
    rng = np.random.default_rng(0)
    obs = {
        "saliency": rng.dirichlet(np.ones(64), 30).reshape(30, 8, 8).astype(np.float32),
        "logits": rng.normal(0, 3, (30, 10)).astype(np.float32),
        "context": rng.uniform(0, 1, (30, len(CONTEXT))).astype(np.float32),
    }
    np.testing.assert_array_equal(
        frozen.predict(obs)[0], learned.predict(obs, deterministic=True)[0]
    )
    np.testing.assert_allclose(frozen.action_probs(obs).sum(1), 1.0)
    # on a run with another batch size (40) and number of classes (5), sampled
    other = tiny_config(
        out=str(tmp_path / "frozen"),
        policy="agent",
        eval_fgsm=False,
        epochs=1,
        **{
            "trainer.batch_size": 40,
            "data.options": {"train_size": 400, "test_size": 200, "num_classes": 5},
            "frozen_agent.path": path,
        },
    )
    metrics = train_fixed(other, progress=False)
    row = metrics["epochs"][0]
    assert metrics["policy"] == "agent" and sum(row["q_hist"]) == 10 * 40
    assert 0 < row["policy_entropy_frac"] < 1


def test_frozen_agent_errors(tiny_config, tmp_path):
    with pytest.raises(
        ConfigError, match=r"policy 'agent' applies a trained agent: set frozen_agent.path"
    ):
        train_fixed(tiny_config(policy="agent"), progress=False)
    with pytest.raises(ConfigError, match=r"agent file '.*nope.zip' does not exist"):
        train_fixed(
            tiny_config(policy="agent", **{"frozen_agent.path": str(tmp_path / "nope.zip")}),
            progress=False,
        )
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"agent file '.*bad.zip' is corrupt or not an rlmix"):
        train_fixed(
            tiny_config(policy="agent", **{"frozen_agent.path": str(tmp_path / "bad.zip")}),
            progress=False,
        )


def test_compare_writes_tables_and_plots(tiny_cli_args, tmp_path):
    out = tmp_path / "cmp"
    args = _args(
        tiny_cli_args, out, "--epochs", "1", "--policies", "agent,rmix,vanilla", "--seeds", "0", "1"
    )
    assert compare_main(args) == 0
    table = (out / "results.md").read_text()
    for name in ("agent", "rmix", "vanilla", "top-1 (%)", "ECE (%)", "FGSM err (%)", "s / epoch"):
        assert name in table
    assert "Δ top1 vs rmix [95 % CI]" in table and "gain vs random on grad_cosine" in table
    assert "### Agents: same-batch gain over random top-k" in table
    runs = (out / "runs.csv").read_text().splitlines()
    assert runs[0].startswith("policy,seed,") and len(runs) == 1 + 3 * 2
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 4 and "top1_diff_low" in summary[0]
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "entropy.png").is_file()
    assert (out / "rmix" / "seed1" / "metrics.json").is_file()
    rmix = json.loads((out / "rmix" / "seed1" / "metrics.json").read_text())
    assert "reward_grad_cosine" in rmix["final"]  # the reference scored on the agent's reward
    assert "policy_gain_grad_cosine" in rmix["final"]  # ... and on its same-batch counterfactual


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
