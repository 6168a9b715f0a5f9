"""The same-batch counterfactual: a random top-k scored on the state a policy acted on.

Turning it on leaves training bit-identical; random top-k gains nothing over itself; a reward
that pays q gives a constant top-k exactly its q minus the counterfactual's; the gain reaches
metrics.json, TensorBoard and the run summary; outcome rewards have none.
"""

import json

import numpy as np
import pytest
import torch

from envs import MixupEnv, register_reward
from envs.rewards import REWARDS
from rlmix.cli import run_main
from rlmix.errors import ConfigError
from rlmix.mixing import topk_space
from rlmix.train import main as train_main
from rlmix.train import train_fixed
from rlmix.train_agent import main as agent_main
from rlmix.train_agent import train_agent


@pytest.fixture
def pays_q():
    """A per-image reward that pays each image its top-k."""
    register_reward("pays_q", override=True)(lambda inputs: inputs.q.double())
    yield "pays_q"
    REWARDS._entries.pop("pays_q", None)


def _states(out):
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return state["env"]["trainer"]


def _without_gains(history):
    return [{k: v for k, v in row.items() if not k.startswith("policy_gain")} for row in history]


@pytest.mark.parametrize(
    ("train", "reward"),
    [
        (train_fixed, "grad_cosine_mean"),
        (train_agent, "val_grad_align"),
        (train_agent, "grad_cosine"),
    ],
)
def test_counterfactual_leaves_training_bit_identical(tiny_config, tmp_path, train, reward):
    runs = {}
    for every in (0, 1):
        out = tmp_path / f"cf{every}"
        cfg = tiny_config(
            **{"out": str(out), "env.reward": reward, "env.counterfactual_every": every},
            **{"data.val_size": 100},
        )
        runs[every] = (train(cfg, progress=False), _states(out))
    (off, off_state), (on, on_state) = runs[0], runs[1]
    for key in ("model", "optimizer", "scheduler"):
        a, b = off_state[key], on_state[key]
        flat_a, flat_b = _flatten(a), _flatten(b)
        assert flat_a.keys() == flat_b.keys()
        for name in flat_a:
            assert _equal(flat_a[name], flat_b[name]), f"{key}.{name} differs"
    assert _without_gains(off["epochs"]) == _without_gains(on["epochs"])
    assert all("policy_gain" not in row for row in off["epochs"])
    assert all("policy_gain" in row and "policy_gain_se" in row for row in on["epochs"])


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        return _flatten(dict(enumerate(obj)), prefix)
    return {prefix: obj}


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def _step_infos(cfg, policy_actions, steps):
    env = MixupEnv(cfg)
    env.reset(seed=cfg.seed)
    infos = []
    for _ in range(steps):
        _, _, _, truncated, info = env.step(policy_actions(env))
        infos.append(info)
        if truncated:
            env.reset()
    return infos


def test_random_top_k_gains_nothing_over_itself(tiny_config, pays_q):
    """R-Mix against its own counterfactual: the gain is 0 up to noise, on a per-image reward
    that depends on q (pays_q) and on one that depends on the whole mix (grad_cosine_mean)."""
    cfg = tiny_config(
        **{"env.reward": pays_q, "env.log_rewards": ["grad_cosine_mean"]},
        **{"env.counterfactual_every": 1, "trainer.epochs": 4},
    )
    rng = np.random.default_rng(0)
    infos = _step_infos(cfg, lambda env: rng.integers(0, 10, env.action_space.shape), 32)
    for name in (pays_q, "grad_cosine_mean"):
        gains = np.array([info[f"policy_gain/{name}"] for info in infos])
        se = gains.std(ddof=1) / np.sqrt(len(gains))
        assert se > 0 and abs(gains.mean()) < 3 * se, (name, gains.mean(), se)


def test_a_q_paying_reward_gives_a_constant_top_k_its_gain(tiny_config, pays_q, tmp_path):
    q = 0.55  # a value of linspace(0, 0.99, 10); random top-k pays 0.495 in expectation
    cfg = tiny_config(
        **{"env.reward": pays_q, "env.counterfactual_every": 1, "constant_topk": q},
        **{"policy": "constant", "trainer.epochs": 3},
    )
    infos = _step_infos(cfg, lambda env: np.full(env.action_space.shape, 5), 24)
    for info in infos:  # exactly: the taken q minus the counterfactual's
        cf = info["counterfactual_per_image"]
        taken = float(topk_space(10)[5])  # 0.55 in float32
        assert info[f"policy_gain/{pays_q}"] == pytest.approx(taken - cf.mean(), abs=1e-12)
        assert set(np.round(cf, 2)) <= set(np.round(np.linspace(0, 0.99, 10), 2))
    gains = np.array([info[f"policy_gain/{pays_q}"] for info in infos])
    se = gains.std(ddof=1) / np.sqrt(len(gains))
    assert abs(gains.mean() - (q - 0.495)) < 3 * se
    # through the command: the gain in metrics.json, per epoch, with its standard error
    metrics = train_fixed(cfg, progress=False)
    for row in metrics["epochs"]:
        assert row["policy_gain_n"] == 8
        assert abs(row["policy_gain"] - (q - 0.495)) < 5 * row["policy_gain_se"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["epochs"][0]["policy_gain"] == metrics["epochs"][0]["policy_gain"]


def test_scoring_the_taken_action_gives_the_taken_reward(tiny_config):
    """The counterfactual pass is the training pass without its side effects: the same actions
    score what the step scored (same lam, partners, grid, weights)."""
    cfg = tiny_config(**{"env.reward": "val_grad_align", "data.val_size": 100})
    env = MixupEnv(cfg)
    env.reset(seed=0)
    t = env.trainer
    action = torch.arange(cfg.trainer.batch_size) % cfg.mix.k
    generator_state = t.generator.get_state()
    params = t.mixer.sample(env._batch.x, t.generator)
    t.generator.set_state(generator_state)  # the step draws the same parameters again
    buffers = [b.clone() for b in t.model.buffers()]
    scored = env.score(env.mix_inputs(params, action))["val_grad_align"]
    assert all(torch.equal(a, b) for a, b in zip(buffers, t.model.buffers(), strict=True))
    _, _, _, _, info = env.step(action.numpy())
    np.testing.assert_allclose(scored, info["reward_per_image"], rtol=1e-5, atol=1e-6)
    assert scored.std() > 0  # per image


def test_outcome_rewards_have_no_counterfactual(tiny_config, data_root, tmp_path, capsys):
    cfg = tiny_config(**{"env.reward": "loss_drop", "trainer.epochs": 1})
    metrics = train_agent(cfg, progress=False)
    assert all("policy_gain" not in row for row in metrics["epochs"])
    with pytest.raises(ConfigError, match=r"reward 'loss_drop' needs the step's outcome"):
        train_agent(tiny_config(**{"env.reward": "loss_drop", "agent.baseline": "counterfactual"}))
    with pytest.raises(ConfigError, match=r"needs a counterfactual every step"):
        train_agent(
            tiny_config(**{"agent.baseline": "counterfactual", "env.counterfactual_every": 2})
        )


def test_the_summary_states_the_gain_and_what_it_means(tiny_cli_args, tmp_path, capsys):
    args = [*tiny_cli_args, "--epochs", "2", "--no-progress", "--out", str(tmp_path / "a")]
    assert run_main(agent_main, [*args, "--reward", "grad_cosine_mean"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "gain vs random" in line)
    assert "(grad_cosine_mean; mean ± SE over 2 epochs)" in line
    verdicts = ("within noise of 0", "beyond noise: the policy beats", "beyond noise, below 0")
    assert any(v in out for v in verdicts)
    assert "trained on 400 images, 0 held out" in out
    assert "note: the paper's reward is one flag away: --reward grad_cosine" in out
    # a fixed policy has no counterfactual unless asked for one
    args = [*tiny_cli_args, "--epochs", "1", "--no-progress", "--reward", "grad_cosine"]
    assert run_main(train_main, [*args, "--out", str(tmp_path / "b")]) == 0
    assert "gain vs random" not in capsys.readouterr().out
    args += ["--set", "env.counterfactual_every=1", "--out", str(tmp_path / "c")]
    assert run_main(train_main, args) == 0
    assert "gain vs random" in capsys.readouterr().out


def test_tensorboard_has_the_gain_against_the_global_step(tiny_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(**{"env.reward": "grad_cosine_mean", "trainer.epochs": 2})
    metrics = train_agent(cfg, progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    scalars = events.Scalars("policy/gain_vs_random")
    assert [s.step for s in scalars] == [8, 16]
    assert [s.value for s in scalars] == pytest.approx(
        [r["policy_gain"] for r in metrics["epochs"]]
    )
    assert "policy/gain_vs_random_se" in events.Tags()["scalars"]
