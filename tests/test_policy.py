"""Tests for agents.policy: per-image SB3 policy (equivariance, any B, save/load, learning)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from torch import nn

from agents import PerImageCategoricalDistribution, PerImageExtractor, PerImagePolicy
from agents.policy import check_spaces, logits_summary

GRID = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread is fastest and avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_spaces(b: int, n: int, k: int, clip: float = 10.0):
    obs = spaces.Dict(
        saliency=spaces.Box(0.0, 1.0, (b, GRID, GRID), np.float32),
        logits=spaces.Box(-clip, clip, (b, n), np.float32),
    )
    return obs, spaces.MultiDiscrete([k] * b)


def make_policy(b: int = 6, n: int = 5, k: int = 4, **kwargs) -> PerImagePolicy:
    obs, act = make_spaces(b, n, k)
    return PerImagePolicy(obs, act, lambda _: 1e-3, **kwargs)


def random_obs(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> dict[str, np.ndarray]:
    """Spot-like saliency maps (one bright cell plus noise, each summing to 1) and logits."""
    sal = rng.uniform(0.0, 0.1, (*shape, GRID * GRID))
    cell = rng.integers(0, GRID * GRID, shape)
    np.put_along_axis(sal, cell[..., None], 1.0, axis=-1)
    sal /= sal.sum(-1, keepdims=True)
    logits = np.clip(rng.normal(0.0, 2.0, (*shape, n)), -10, 10)
    return {
        "saliency": sal.reshape(*shape, GRID, GRID).astype(np.float32),
        "logits": logits.astype(np.float32),
    }


def as_tensors(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(v) for key, v in obs.items()}


def left_half_target(saliency: np.ndarray) -> np.ndarray:
    """(..., g, g) -> (...,) 0 where the saliency argmax lies in the left half, else 1."""
    col = saliency.reshape(*saliency.shape[:-2], -1).argmax(-1) % GRID
    return (col >= GRID // 2).astype(np.int64)


class DummyEnv(gym.Env):
    """Random observations; reward = fraction of images whose action equals ``target(obs)``."""

    def __init__(self, b: int = 6, n: int = 5, k: int = 4, rule: str = "zero", length: int = 16):
        self.observation_space, self.action_space = make_spaces(b, n, k)
        self.b, self.n, self.rule, self.length = b, n, rule, length

    def _target(self) -> np.ndarray:
        if self.rule == "zero":
            return np.zeros(self.b, np.int64)
        return left_half_target(self._obs["saliency"])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._obs = random_obs(self.np_random, (self.b,), self.n)
        return self._obs, {}

    def step(self, action):
        reward = float(np.mean(np.asarray(action) == self._target()))
        self._t += 1
        self._obs = random_obs(self.np_random, (self.b,), self.n)
        return self._obs, reward, False, self._t >= self.length, {}


# ---- logits summary -------------------------------------------------------------------------


def test_logits_summary_hand_computed():
    ln2 = math.log(2.0)
    out = logits_summary(torch.tensor([[ln2, 0.0, 0.0]]), top_probs=3)
    # softmax [1/2, 1/4, 1/4]; entropy 1.5 ln2 / ln3; margin = max = ln2; logsumexp = ln4
    expected = [0.5, 0.25, 0.25, 1.5 * ln2 / math.log(3.0)]
    expected += [math.log1p(ln2), math.log1p(ln2), math.log1p(math.log(4.0))]
    torch.testing.assert_close(out, torch.tensor([expected]))


def test_logits_summary_order_invariant_and_padded():
    logits = torch.randn(4, 7, 10)
    shuffled = logits[..., torch.randperm(10)]
    torch.testing.assert_close(logits_summary(logits), logits_summary(shuffled))
    assert logits_summary(logits, top_probs=5).shape == (4, 7, 9)
    # N smaller than top_probs: missing probabilities are 0; N = 1 has zero entropy and margin
    two = logits_summary(torch.tensor([[0.0, 0.0]]), top_probs=3)
    torch.testing.assert_close(two[0, :5], torch.tensor([0.5, 0.5, 0.0, 1.0, 0.0]))
    one = logits_summary(torch.tensor([[-3.0]]), top_probs=2)
    symlog3 = math.log1p(3.0)
    torch.testing.assert_close(one, torch.tensor([[1.0, 0.0, 0.0, 0.0, -symlog3, -symlog3]]))


# ---- distribution ---------------------------------------------------------------------------


def test_distribution_matches_sb3_multicategorical():
    logits = torch.randn(3, 5, 4)
    actions = torch.randint(0, 4, (3, 5)).float()  # SB3 rollout buffers store float actions
    ours = PerImageCategoricalDistribution(4).proba_distribution(logits)
    ref = MultiCategoricalDistribution([4] * 5).proba_distribution(logits.reshape(3, 20))
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    assert torch.equal(ours.mode(), ref.mode())
    assert ours.sample().shape == (3, 5)


# ---- the policy -----------------------------------------------------------------------------


def test_initial_policy_near_uniform():
    b, k = 13, 10
    policy = make_policy(b=b, n=7, k=k)
    obs = as_tensors(random_obs(np.random.default_rng(0), (4, b), 7))
    dist = policy.get_distribution(obs)
    assert dist.distribution.probs.shape == (4, b, k)
    torch.testing.assert_close(
        dist.distribution.probs, torch.full((4, b, k), 1.0 / k), atol=0.01, rtol=0
    )
    entropy = dist.entropy()
    assert entropy.shape == (4,)
    assert (entropy > 0.999 * b * math.log(k)).all()


def test_permutation_equivariance_and_value_invariance():
    torch.manual_seed(0)
    b = 13
    policy = make_policy(b=b, n=5, k=4)
    obs = as_tensors(random_obs(np.random.default_rng(1), (3, b), 5))
    perm = torch.randperm(b)
    permuted = {key: v[:, perm] for key, v in obs.items()}
    with torch.no_grad():
        probs = policy.get_distribution(obs).distribution.probs
        probs_perm = policy.get_distribution(permuted).distribution.probs
        values = policy.predict_values(obs)
        values_perm = policy.predict_values(permuted)
    torch.testing.assert_close(probs_perm, probs[:, perm])
    torch.testing.assert_close(values_perm, values)
    assert values.shape == (3, 1)
    # the per-image probabilities really differ between images (not a constant policy)
    assert (probs[0, 0] - probs[0, 1]).abs().max() > 1e-6


def test_weights_independent_of_batch_size_and_classes():
    big = make_policy(b=100, n=100, k=10)
    small = make_policy(b=7, n=10, k=10)
    shapes = {key: v.shape for key, v in big.state_dict().items()}
    assert shapes == {key: v.shape for key, v in small.state_dict().items()}
    small.load_state_dict(big.state_dict())
    obs = as_tensors(random_obs(np.random.default_rng(2), (2, 7), 10))
    with torch.no_grad():
        torch.testing.assert_close(
            small.get_distribution(obs).distribution.probs,
            big.get_distribution(obs).distribution.probs,
        )
        actions, values, log_prob = small(obs)
    assert actions.shape == (2, 7) and values.shape == (2, 1) and log_prob.shape == (2,)


def test_same_weights_act_for_any_batch_size():
    policy = make_policy(b=5, n=5, k=4)
    rng = np.random.default_rng(3)
    with torch.no_grad():
        obs13 = as_tensors(random_obs(rng, (2, 13), 5))
        probs13 = policy.get_distribution(obs13).distribution.probs
        assert probs13.shape == (2, 13, 4)
        torch.testing.assert_close(probs13.sum(-1), torch.ones(2, 13))
        # an image's probabilities depend on the batch only through the mean embedding: the
        # 5-image batch tiled three times (B = 15) gives the same per-image probs in every slot
        obs5 = as_tensors(random_obs(rng, (2, 5), 5))
        tiled = {key: v.repeat(1, 3, *([1] * (v.dim() - 2))) for key, v in obs5.items()}
        probs5 = policy.get_distribution(obs5).distribution.probs
        probs15 = policy.get_distribution(tiled).distribution.probs
        torch.testing.assert_close(probs15, probs5.repeat(1, 3, 1))
        torch.testing.assert_close(policy.predict_values(tiled), policy.predict_values(obs5))


def test_policy_kwargs_sizes_and_parameter_count():
    policy = make_policy(embed_dim=16, hidden=8, features_extractor_kwargs={"top_probs": 2})
    extractor = policy.features_extractor
    assert isinstance(extractor, PerImageExtractor)
    assert extractor.features_dim == 16 and extractor.top_probs == 2
    assert isinstance(policy.features_extractor.mlp[1], nn.Tanh)
    # extractor (64 + 2 + 4) -> 16 -> 16; actor 16 -> 8 (+ 16 -> 8 batch), 8 -> 8; critic
    # 16 -> 8 -> 8; heads 8 -> 4 and 8 -> 1
    expected = (70 * 16 + 16) + (16 * 16 + 16) + (16 * 8 + 8) + 16 * 8 + (8 * 8 + 8)
    expected += (16 * 8 + 8) + (8 * 8 + 8) + (8 * 4 + 4) + (8 + 1)
    assert sum(p.numel() for p in policy.parameters()) == expected
    relu = make_policy(activation_fn=nn.ReLU)
    assert isinstance(relu.features_extractor.mlp[1], nn.ReLU)


def test_policy_save_load_roundtrip(tmp_path):
    policy = make_policy(embed_dim=16, hidden=8)
    policy.save(str(tmp_path / "policy.pt"))
    loaded = PerImagePolicy.load(str(tmp_path / "policy.pt"))
    assert loaded.embed_dim == 16 and loaded.hidden == 8
    for key, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


@pytest.mark.parametrize(
    ("obs_space", "act_space", "error", "match"),
    [
        (
            spaces.Box(0, 1, (6, 8, 8)),
            None,
            TypeError,
            "observation_space must be a gymnasium Dict",
        ),
        (
            spaces.Dict(saliency=spaces.Box(0, 1, (6, 8, 8))),
            None,
            ValueError,
            "exactly the keys 'saliency' and 'logits'",
        ),
        (
            spaces.Dict(saliency=spaces.Box(0, 1, (6, 8, 4)), logits=spaces.Box(-1, 1, (6, 5))),
            None,
            ValueError,
            r"\['saliency'\] must be a Box of shape \(B, g, g\)",
        ),
        (
            spaces.Dict(saliency=spaces.Box(0, 1, (6, 8, 8)), logits=spaces.Box(-1, 1, (6,))),
            None,
            ValueError,
            r"\['logits'\] must be a Box of shape \(B, N\)",
        ),
        (
            spaces.Dict(saliency=spaces.Box(0, 1, (6, 8, 8)), logits=spaces.Box(-1, 1, (5, 5))),
            None,
            ValueError,
            r"disagree on the batch size \(6 vs 5\)",
        ),
        (make_spaces(6, 5, 4)[0], spaces.Discrete(4), TypeError, "1-D MultiDiscrete"),
        (
            make_spaces(6, 5, 4)[0],
            spaces.MultiDiscrete([4] * 5),
            ValueError,
            r"MultiDiscrete\(\[K\] \* 6\)",
        ),
        (
            make_spaces(6, 5, 4)[0],
            spaces.MultiDiscrete([4] * 5 + [3]),
            ValueError,
            "one K >= 2 for all images",
        ),
        (make_spaces(6, 5, 1)[0], make_spaces(6, 5, 1)[1], ValueError, "one K >= 2"),
    ],
)
def test_check_spaces_errors(obs_space, act_space, error, match):
    with pytest.raises(error, match=match):
        check_spaces(obs_space, act_space)


def test_check_spaces_returns_batch_size():
    assert check_spaces(*make_spaces(6, 5, 4)) == 6


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"net_arch": [64]}, TypeError, "net_arch is not used by PerImagePolicy"),
        ({"use_sde": True}, ValueError, "use_sde must be False"),
        ({"hidden": 0}, ValueError, "hidden must be >= 1, got 0"),
        ({"embed_dim": 0}, ValueError, "embed_dim must be >= 1, got 0"),
        ({"features_extractor_kwargs": {"top_probs": 0}}, ValueError, "top_probs must be >= 1"),
        (
            {"embed_dim": 8, "features_extractor_kwargs": {"embed_dim": 16}},
            ValueError,
            "embed_dim is 8 but features_extractor_kwargs sets 16",
        ),
    ],
)
def test_policy_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_policy(**kwargs)


def test_features_extractor_kwargs_not_mutated():
    fe_kwargs = {"top_probs": 2}
    make_policy(features_extractor_kwargs=fe_kwargs)
    assert fe_kwargs == {"top_probs": 2}


# ---- with PPO -------------------------------------------------------------------------------


def test_ppo_save_load_roundtrip(tmp_path):
    env = DummyEnv(b=6, n=5, k=4)
    model = PPO(
        PerImagePolicy,
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        policy_kwargs={"embed_dim": 16, "hidden": 16},
        seed=0,
        device="cpu",
    )
    model.learn(128)
    model.save(tmp_path / "agent.zip")
    loaded = PPO.load(tmp_path / "agent.zip", device="cpu")
    assert isinstance(loaded.policy, PerImagePolicy)
    assert loaded.policy.embed_dim == 16 and loaded.policy.hidden == 16

    obs = random_obs(np.random.default_rng(4), (5, 6), 5)
    actions, _ = model.predict(obs, deterministic=True)
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    assert actions.shape == (5, 6)
    np.testing.assert_array_equal(loaded_actions, actions)
    with torch.no_grad():
        probs = model.policy.get_distribution(as_tensors(obs)).distribution.probs
        loaded_probs = loaded.policy.get_distribution(as_tensors(obs)).distribution.probs
    torch.testing.assert_close(loaded_probs, probs, rtol=0, atol=0)


def test_ppo_learns_per_image_rule():
    """Per image: action 0 when its saliency peak is in the left half, else 1 (chance = 0.5)."""
    env = DummyEnv(b=6, n=5, k=2, rule="left_half")
    model = PPO(
        PerImagePolicy,
        env,
        learning_rate=3e-3,
        n_steps=128,
        batch_size=64,
        n_epochs=4,
        gamma=0.0,
        policy_kwargs={"embed_dim": 32, "hidden": 32},
        seed=0,
        device="cpu",
    )
    model.learn(3072)
    obs = random_obs(np.random.default_rng(5), (200, 6), 5)
    actions, _ = model.predict(obs, deterministic=True)
    accuracy = float(np.mean(actions == left_half_target(obs["saliency"])))
    assert accuracy > 0.75  # 0.85-0.87 for seeds 0-3
