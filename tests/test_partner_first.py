"""Partner-aware decisions (``env.partner_first``): the partner, lam and grid are drawn before
the action, shown, and mixed with; agents record which observation they were trained on."""

import copy

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents import AgentMix, load_policy
from envs import ImageSlotVecEnv, MixupEnv
from rlmix.cli import run_main
from rlmix.config import load_config
from rlmix.mixing import MixParams
from rlmix.seeding import stream_generator
from rlmix.train import main as train_main
from rlmix.train_agent import main as agent_main
from rlmix.train_agent import train_agent


def _recording(env: MixupEnv) -> dict:
    """Record every mixed batch the env trains on."""
    seen: dict = {"x": []}
    t = env.trainer
    train_step = t.train_step

    def record(x_mix, y_mix, **kwargs):
        seen["x"].append(x_mix.clone())
        seen["y"] = y_mix.clone()
        return train_step(x_mix, y_mix, **kwargs)

    t.train_step = record
    return seen


def test_the_step_mixes_with_the_draws_it_showed(tiny_config):
    env = MixupEnv(tiny_config(**{"env.partner_first": True}))
    obs, _ = env.reset(seed=0)
    b = env.action_space.shape[0]
    assert set(obs) == {"saliency", "logits", "partner", "lam", "grid"}
    assert sorted(obs["partner"].tolist()) == list(range(b))  # a permutation
    assert np.all(obs["lam"] == obs["lam"][0]) and 0 <= obs["lam"][0] <= 1
    grid = round(1 / float(obs["grid"][0]))
    assert grid in (2, 4)
    batch, lam = env._batch, env._params.lam
    assert np.float32(lam) == obs["lam"][0]
    action = np.arange(b) % env.cfg.mix.k
    seen = _recording(env)
    env.step(action)
    shown = MixParams(lam, torch.from_numpy(obs["partner"]), grid)
    q = env.topk_space[torch.from_numpy(action)]
    x, y = env.trainer.apply_mix(batch, shown, q)
    torch.testing.assert_close(seen["x"][0], x, rtol=0, atol=0)
    torch.testing.assert_close(seen["y"], y, rtol=0, atol=0)


def test_partner_first_trains_bit_identically_for_the_same_actions(tiny_config):
    """The draws come from the epoch's mixing stream in the same order as after the action."""
    runs = []
    for partner_first in (False, True):
        env = MixupEnv(tiny_config(**{"env.partner_first": partner_first}))
        seen = _recording(env)
        env.reset(seed=3)
        rng = np.random.default_rng(0)
        for _ in range(env.trainer.steps_per_epoch + 2):  # across an epoch boundary
            _, _, _, truncated, _ = env.step(rng.integers(0, env.cfg.mix.k, env.action_space.shape))
            if truncated:
                env.reset()
        runs.append((seen["x"], [p.detach().clone() for p in env.trainer.model.parameters()]))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_each_slot_sees_its_partner(tiny_config):
    env = MixupEnv(tiny_config(**{"env.partner_first": True}))
    slots = ImageSlotVecEnv(env)
    assert set(slots.observation_space.spaces) == {
        "saliency",
        "logits",
        "context",
        "partner_saliency",
        "partner_logits",
        "mix",
    }
    obs = slots.reset()
    perm, lam = env._params.perm.numpy(), np.float32(env._params.lam)
    np.testing.assert_array_equal(obs["partner_saliency"], obs["saliency"][perm])
    np.testing.assert_array_equal(obs["partner_logits"], obs["logits"][perm])
    np.testing.assert_array_equal(obs["mix"][:, 0], np.full(len(perm), lam))
    np.testing.assert_allclose(obs["mix"][:, 1], 1 / env._params.grid)
    assert slots.observation_space.contains({k: v[0] for k, v in obs.items()})


def test_both_env_checkers_pass_with_partner_first(tiny_config):
    gymnasium_check_env(
        MixupEnv(tiny_config(**{"env.partner_first": True})), skip_render_check=True
    )
    sb3_check_env(MixupEnv(tiny_config(**{"env.partner_first": True})), warn=False)


# -- agent files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def partner_agent(tmp_path_factory, data_root):
    """A tiny partner-aware RL-Mix run (one epoch) and its agent.zip."""
    from tests.conftest import tiny_args

    out = tmp_path_factory.mktemp("partner") / "run"
    args = [*tiny_args(data_root), "--set", "env.partner_first=true", "--epochs", "1"]
    assert run_main(agent_main, [*args, "--out", str(out), "--reward", "hardness"]) == 0
    return out


def test_the_agent_file_records_its_observation(partner_agent):
    policy, settings = load_policy(partner_agent / "agent.zip")
    assert settings["policy"]["partner_first"] is True
    assert "partner_saliency" in policy.observation_space.spaces


def test_a_mismatched_agent_file_fails_with_one_line(
    partner_agent, tiny_cli_args, tmp_path, capsys
):
    path = partner_agent / "agent.zip"
    args = [*tiny_cli_args, "--policy", "agent", "--set", f"frozen_agent.path={path}"]
    assert run_main(train_main, [*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: agent file '{path}' was trained with env.partner_first=true (it sees each "
        "image's partner); set env.partner_first=true\n"
    )
    ok = [*args, "--set", "env.partner_first=true", "--epochs", "1", "--out", str(tmp_path / "b")]
    assert run_main(train_main, ok) == 0


def test_resuming_with_the_other_observation_fails_with_one_line(
    partner_agent, tiny_cli_args, capsys
):
    args = [*tiny_cli_args, "--out", str(partner_agent), "--resume", "--epochs", "2"]
    assert run_main(agent_main, [*args, "--reward", "hardness"]) == 2
    assert "partner_first" in capsys.readouterr().err


def test_agent_mix_equals_the_frozen_partner_agent_in_the_env(partner_agent, tiny_config):
    """On the same batch and mixing stream, a partner-aware AgentMix (deterministic) mixes
    exactly what ``rlmix.train --policy agent`` trains on with ``env.partner_first``."""
    from baselines import make_policy

    path = partner_agent / "agent.zip"
    cfg = tiny_config(policy="agent", **{"frozen_agent.path": str(path), "env.partner_first": True})
    env = MixupEnv(cfg)
    venv = ImageSlotVecEnv(env, terminal_observations=False)
    frozen = make_policy(
        "agent", venv.action_space, path=str(path), deterministic=True, partner_first=True
    )
    obs = venv.reset()
    t = env.trainer
    mixer = AgentMix.load(path, num_classes=10, deterministic=True, generator=torch.Generator())
    assert mixer.partner_first
    mixer.generator.set_state(stream_generator(cfg.seed, "mixing", 0).get_state())
    x_mix, y_mix = mixer(
        copy.deepcopy(t.model),
        env._batch.x,
        env._batch.labels,
        progress=t.progress,
        lr_fraction=t.lr / cfg.trainer.lr_max,
    )
    seen = _recording(env)
    venv.step(frozen.predict(obs)[0])
    torch.testing.assert_close(x_mix, seen["x"][0], rtol=0, atol=0)
    torch.testing.assert_close(y_mix, seen["y"].to(y_mix.dtype), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="partner_first=False, but the policy was trained with"):
        AgentMix.load(path, partner_first=False)


def test_only_a_frozen_agent_draws_partners_first_among_fixed_policies(tiny_config):
    """The embedded default turns partners on; fixed policies other than a frozen agent read
    none, so they draw after the action (the same training) and also run under torchrun."""
    from rlmix.train import resolve_fixed_config

    cfg = tiny_config(**{"env.partner_first": True})
    assert not resolve_fixed_config(cfg, "rmix").env.partner_first
    assert not resolve_fixed_config(cfg, "cutmix_plus").env.partner_first
    assert resolve_fixed_config(cfg, "agent").env.partner_first
    assert not resolve_fixed_config(tiny_config(), "agent").env.partner_first


# -- learning ---------------------------------------------------------------------------------


def _learn(data_root, tmp_path, partner_first: bool) -> float:
    cfg = load_config(
        None,
        {
            "out": str(tmp_path / f"partner_{partner_first}"),
            "data.root": data_root,
            "env.reward": "tests.partner_fixtures:partner_rank",
            "env.eval_fgsm": False,
            "env.counterfactual_every": 0,
            "env.partner_first": partner_first,
        },
    )
    epochs = train_agent(cfg, progress=False)["epochs"]
    return sum(e["reward"] for e in epochs[-5:]) / 5


def test_only_a_partner_aware_agent_learns_a_partner_dependent_optimum(data_root, tmp_path):
    """partner_rank pays for matching the partner's probe target: 0 in expectation for any
    policy that cannot see the partner, up to 1 for one that can. The partner's rank is not
    shown, only its saliency map (whose peak the policy must place in the batch), so within the
    default run the partner-aware agent closes about a fifth of the gap (0.21 on seed 0, SE of
    the last-5-epoch mean about 0.014) while the partner-blind one stays at 0."""
    assert _learn(data_root, tmp_path, True) >= 0.15
    assert abs(_learn(data_root, tmp_path, False)) <= 0.06
