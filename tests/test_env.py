import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import MixupEnv
from rlmix.errors import ConfigError


def test_spaces_and_observation(tiny_config):
    env = MixupEnv(tiny_config())
    b, n = 50, env.trainer.info.num_classes
    assert env.observation_space["saliency"].shape == (b, 8, 8)
    assert env.observation_space["logits"].shape == (b, n)
    assert env.action_space.nvec.tolist() == [10] * b
    obs, info = env.reset()
    assert obs["saliency"].dtype == np.float32 and obs["logits"].dtype == np.float32
    np.testing.assert_allclose(obs["saliency"].sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert env.observation_space.contains(obs)
    assert info["epoch"] == 0.0


def test_passes_gymnasium_and_sb3_checkers(tiny_config):
    env = MixupEnv(tiny_config())
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(MixupEnv(tiny_config()), warn=True)


def test_registered_and_configurable_through_make(tiny_config):
    cfg = tiny_config()
    env = gym.make("rlmix/Mixup-v0", config=cfg, reward="loss_drop", k=5)
    assert env.unwrapped.cfg.env.reward == "loss_drop"
    assert env.action_space.nvec.tolist() == [5] * 50
    assert "rlmix/Mixup-v0" in gym.registry and envs.MixupEnv is MixupEnv


def test_episode_is_one_epoch_and_truncates(tiny_config):
    env = MixupEnv(tiny_config(reward="grad_cosine"))
    env.reset()
    steps, truncated = 0, False
    lrs = []
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert not terminated
        assert -1.0 <= reward <= 1.0
        lrs.append(info["lr"])
        per_image = info.pop("reward_per_image")
        assert per_image.shape == (50,) and per_image.mean() == pytest.approx(reward)
        lams = info.pop("lam_per_image")
        assert lams.shape == (50,) and (lams == info["lam"]).all()  # batch mode: one lam
        assert all(isinstance(v, float) for v in info.values())
    assert steps == 400 // 50
    assert "test/top1" in info and 0.0 <= info["test/top1"] <= 1.0
    assert {"train_loss", "lr", "mean_q", "reward/grad_cosine"} <= set(info)
    assert lrs[0] > 3e-3  # OneCycleLR warms up from lr_start
    obs, info = env.reset()
    assert info["epoch"] == 1.0


def test_action_changes_the_mix(tiny_config):
    env = MixupEnv(tiny_config())
    env.reset(seed=1)
    _, _, _, _, info0 = env.step(np.zeros(50, dtype=np.int64))
    env.reset(seed=1)
    _, _, _, _, info9 = env.step(np.full(50, 9, dtype=np.int64))
    assert info0["mean_q"] == 0.0 and info9["mean_q"] == pytest.approx(0.99)
    assert info0["train_loss"] != info9["train_loss"]


def test_seeded_reset_rewinds_the_epoch(tiny_config):
    env = MixupEnv(tiny_config())
    action = np.arange(50) % 10
    obs_a, _ = env.reset(seed=5)
    w0 = env.trainer.model.fc.weight.detach().clone()
    out_a = env.step(action)
    obs_b, _ = env.reset(seed=5)
    torch.testing.assert_close(env.trainer.model.fc.weight, w0, rtol=0, atol=0)
    out_b = env.step(action)
    np.testing.assert_array_equal(obs_a["saliency"], obs_b["saliency"])
    np.testing.assert_array_equal(out_a[0]["logits"], out_b[0]["logits"])
    assert out_a[1] == out_b[1] and out_a[4]["train_loss"] == out_b[4]["train_loss"]
    obs_c, _ = env.reset(seed=6)
    assert not np.array_equal(obs_c["saliency"], obs_a["saliency"])


def test_fixed_mixers_ignore_actions_and_skip_saliency(tiny_config):
    env = MixupEnv(tiny_config(mixer="cutmix", reward="none"))
    assert not env.observe_saliency
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs["saliency"], 1 / 64)
    a = env.step(np.zeros(50, dtype=np.int64))[4]["train_loss"]
    env.reset(seed=0)
    b = env.step(np.full(50, 9, dtype=np.int64))[4]["train_loss"]
    assert a == b


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.zeros(3, dtype=np.int64), r"action must have shape \(50,\), got \(3,\)"),
        (np.full(50, 2.0), r"action must hold integers, got dtype float64"),
        (np.full(50, -1), r"action holds -1, outside \[0, 10\)"),
        (np.full(50, 10), r"action holds 10, outside \[0, 10\)"),
    ],
)
def test_actions_outside_the_action_space_are_rejected(tiny_config, action, match):
    env = MixupEnv(tiny_config())
    env.reset()
    with pytest.raises(ValueError, match=match + r"; expected one top-k index per image"):
        env.step(action)
    assert env.trainer.global_step == 0  # nothing was trained


def test_config_errors(tiny_config):
    with pytest.raises(ConfigError, match=r"'env.reward': unknown reward 'nope'"):
        MixupEnv(tiny_config(reward="nope"))
    with pytest.raises(ConfigError, match=r"'mix.grids': grid 3 does not divide the image side 32"):
        MixupEnv(tiny_config(**{"mix.grids": [2, 3]}))
    with pytest.raises(
        ConfigError, match=r"'trainer.batch_size' \(500\) is larger than the training"
    ):
        MixupEnv(tiny_config(**{"trainer.batch_size": 500}))
