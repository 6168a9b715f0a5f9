"""envs.ImageSlotVecEnv: the batch env's image slots as SB3 sub-environments, and EpochPPO."""

import math

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.ppo import make_ppo
from envs import ImageSlotVecEnv, MixupEnv
from envs.rewards import probe_targets
from envs.slots import slot_context
from envs.spaces import CONTEXT, batch_ranks
from rlmix.config import load_config


@pytest.fixture
def cfg(tiny_config):
    return tiny_config(reward="grad_cosine_mean", eval_fgsm=False, observe="always")


def test_adapter_matches_the_batch_env(cfg):
    """Same actions -> same classifier trajectory, observations and per-image rewards."""
    batch_env, slots = MixupEnv(cfg), ImageSlotVecEnv(MixupEnv(cfg))
    assert slots.num_envs == 50 and slots.action_space.n == 10
    obs_b, _ = batch_env.reset(seed=0)
    slots.seed(0)
    obs_s = slots.reset()
    rng = np.random.default_rng(0)
    for _ in range(10):  # past the 8-step epoch end
        np.testing.assert_array_equal(obs_s["saliency"], obs_b["saliency"])
        np.testing.assert_array_equal(obs_s["logits"], obs_b["logits"])
        assert obs_s["context"].shape == (50, len(CONTEXT))
        assert slots.observation_space.contains({k: v[3] for k, v in obs_s.items()})
        action = rng.integers(0, 10, 50)
        obs_b, reward, _, truncated, info = batch_env.step(action)
        obs_s, rewards, dones, infos = slots.step(action)
        np.testing.assert_array_equal(rewards, info["reward_per_image"].astype(np.float32))
        assert rewards.mean() == pytest.approx(reward, abs=1e-6)
        assert rewards.std() > 0  # a per-image reward really differs between images
        assert dones.all() == truncated and dones.any() == truncated
        if truncated:
            obs_b, _ = batch_env.reset()
    for a, b in zip(
        batch_env.trainer.model.parameters(), slots.trainer.model.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_all_slots_truncate_at_the_epoch_end(cfg):
    env = MixupEnv(cfg)
    slots = ImageSlotVecEnv(env)
    slots.reset()
    assert slots.steps_left_in_epoch == 8
    for _ in range(7):
        _, _, dones, infos = slots.step(np.zeros(50, dtype=np.int64))
        assert not dones.any() and "terminal_observation" not in infos[0]
    assert slots.steps_left_in_epoch == 1
    batch = env._batch  # the last batch of the epoch: its observation is the terminal one
    last = env._observation(batch)
    obs, rewards, dones, infos = slots.step(np.zeros(50, dtype=np.int64))
    assert dones.all() and len(infos) == 50
    for i in (0, 49):
        assert infos[i]["TimeLimit.truncated"] is True
        np.testing.assert_array_equal(
            infos[i]["terminal_observation"]["saliency"], last["saliency"][i]
        )
        assert "test/top1" in infos[i]
    assert env.trainer.epoch == 1 and env.trainer.step_in_epoch == 0  # the next epoch began
    assert slots.steps_left_in_epoch == 8
    assert not np.array_equal(obs["saliency"], last["saliency"])


def test_no_terminal_observations_without_bootstrapping(cfg):
    """terminal_observations=False (gamma 0, fixed policies): the slots still truncate, and SB3
    finds nothing to bootstrap (no B value forwards at the epoch end)."""
    slots = ImageSlotVecEnv(MixupEnv(cfg), terminal_observations=False)
    slots.reset()
    for _ in range(8):
        _, _, dones, infos = slots.step(np.zeros(50, dtype=np.int64))
    assert dones.all() and all(i["TimeLimit.truncated"] is True for i in infos)
    assert not any("terminal_observation" in i for i in infos)
    assert "test/top1" in infos[0]


def test_slot_context_hand_computed():
    sal = np.zeros((2, 2, 2), np.float32)
    sal[0] = 0.25  # uniform: entropy 1 (of ln 4), peak 0.25
    sal[1, 0, 0] = 1.0  # one cell: entropy 0, peak 1
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]], np.float32)  # top-1 0.5 and 0.75
    ctx = slot_context(sal, logits, progress=0.25, lr_fraction=0.5)
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    expected = [
        [0.25, 0.5, 0.0, 0.0, 0.625, (1 + h1) / 2, 0.5, 0.625],
        [0.25, 0.5, 1.0, 1.0, 0.625, (1 + h1) / 2, 0.5, 0.625],
    ]
    np.testing.assert_allclose(ctx, expected, atol=1e-6)


def test_batch_ranks_break_ties_by_position():
    assert batch_ranks(torch.tensor([3.0, 1.0, 2.0, 1.0])).tolist() == [3, 0, 2, 1]


def test_probe_targets_are_the_observed_peak_rank():
    """probe_rank's optimum is a function of what a slot observes: its saliency_peak_rank."""
    rng = np.random.default_rng(0)
    sal = rng.random((20, 4, 4)).astype(np.float32)
    sal[3] = sal[7]  # a tie
    sal /= sal.sum(axis=(1, 2), keepdims=True)
    ctx = slot_context(sal, np.zeros((20, 3), np.float32), progress=0.0, lr_fraction=1.0)
    rank = np.rint(ctx[:, CONTEXT.index("saliency_peak_rank")] * 19).astype(np.int64)
    assert sorted(rank.tolist()) == list(range(20))
    np.testing.assert_array_equal(probe_targets(torch.from_numpy(sal), 10).numpy(), rank * 10 // 20)


class Record(BaseCallback):
    """Rollout sizes and, before each update, the last step's buffered vs raw rewards."""

    def __init__(self):
        super().__init__()
        self.sizes, self.raw, self.checks = [], [], []

    def _on_step(self):
        self.raw.append(self.locals["rewards"].copy())
        if self.locals["dones"].all():
            infos = self.locals["infos"]
            terminal = {
                k: np.stack([i["terminal_observation"][k] for i in infos])
                for k in infos[0]["terminal_observation"]
            }
            with torch.no_grad():
                values = self.model.policy.predict_values(
                    self.model.policy.obs_to_tensor(terminal)[0]
                )
            self.checks.append(
                (self.raw[-1] + self.model.gamma * values.numpy().ravel(), len(self.raw))
            )
        return True

    def _on_rollout_end(self):
        buffer = self.model.rollout_buffer
        self.sizes.append(buffer.buffer_size)
        for expected, _ in self.checks:
            np.testing.assert_allclose(buffer.rewards[-1], expected, rtol=1e-5)
        self.checks = []


@pytest.mark.parametrize(("n_steps", "sizes"), [(12, [8, 8]), (5, [5, 3, 5, 3]), (8, [8, 8])])
def test_rollouts_end_at_epoch_boundaries_and_bootstrap(cfg, n_steps, sizes):
    """A rollout never crosses an epoch end; SB3 bootstraps each truncated slot with gamma * V."""
    cfg = load_config(cfg.to_dict(), {"n_steps": n_steps, "gamma": 0.5, "agent.batch_size": 50})
    slots = ImageSlotVecEnv(MixupEnv(cfg))
    model = make_ppo(slots, cfg)
    record = Record()
    model.learn(16 * 50, callback=record)
    assert record.sizes == sizes
    assert slots.trainer.global_step == 16 and model.num_timesteps == 16 * 50
