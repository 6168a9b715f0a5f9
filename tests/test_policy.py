"""agents.policy: the per-image slot policy (any B and N, save/load, learning a per-image rule)."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from agents import PerImagePolicy, SlotExtractor
from agents.policy import logits_summary
from envs.spaces import CONTEXT, check_slot_spaces, slot_spaces

GRID = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread is fastest and avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_policy(n: int = 5, k: int = 4, **kwargs) -> PerImagePolicy:
    obs, act = slot_spaces(n, GRID, k, 10.0)
    return PerImagePolicy(obs, act, lambda _: 1e-3, **kwargs)


def random_obs(rng: np.random.Generator, b: int, n: int) -> dict[str, np.ndarray]:
    """Spot-like saliency maps (one bright cell plus noise, each summing to 1), logits, context."""
    sal = rng.uniform(0.0, 0.1, (b, GRID * GRID))
    cell = rng.integers(0, GRID * GRID, b)
    np.put_along_axis(sal, cell[:, None], 1.0, axis=-1)
    sal /= sal.sum(-1, keepdims=True)
    return {
        "saliency": sal.reshape(b, GRID, GRID).astype(np.float32),
        "logits": np.clip(rng.normal(0.0, 2.0, (b, n)), -10, 10).astype(np.float32),
        "context": rng.uniform(0, 1, (b, len(CONTEXT))).astype(np.float32),
    }


def as_tensors(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(v) for key, v in obs.items()}


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


# ---- the policy -----------------------------------------------------------------------------


def test_initial_policy_near_uniform():
    k = 10
    policy = make_policy(n=7, k=k)
    obs = as_tensors(random_obs(np.random.default_rng(0), 13, 7))
    probs = policy.action_probs(obs)
    assert probs.shape == (13, k)
    torch.testing.assert_close(probs, torch.full((13, k), 1.0 / k), atol=0.01, rtol=0)
    assert (policy.get_distribution(obs).entropy() > 0.999 * math.log(k)).all()


def test_each_image_is_decided_alone():
    """An image's probabilities do not depend on the other images or their order."""
    policy = make_policy()
    obs = as_tensors(random_obs(np.random.default_rng(1), 13, 5))
    perm = torch.randperm(13)
    with torch.no_grad():
        probs = policy.action_probs(obs)
        permuted = policy.action_probs({key: v[perm] for key, v in obs.items()})
        alone = policy.action_probs({key: v[3:4] for key, v in obs.items()})
    torch.testing.assert_close(permuted, probs[perm])
    torch.testing.assert_close(alone, probs[3:4])
    assert (probs[0] - probs[1]).abs().max() > 1e-6  # not a constant policy


def test_weights_independent_of_the_number_of_classes():
    big, small = make_policy(n=100, k=10), make_policy(n=10, k=10)
    shapes = {key: v.shape for key, v in big.state_dict().items()}
    assert shapes == {key: v.shape for key, v in small.state_dict().items()}
    small.load_state_dict(big.state_dict())
    obs = as_tensors(random_obs(np.random.default_rng(2), 7, 3))  # 3 classes: neither's N
    with torch.no_grad():
        torch.testing.assert_close(small.action_probs(obs), big.action_probs(obs))
        actions, values, log_prob = small(obs)
    assert actions.shape == (7,) and values.shape == (7, 1) and log_prob.shape == (7,)


def test_context_changes_the_decision():
    policy = make_policy()
    obs = as_tensors(random_obs(np.random.default_rng(3), 4, 5))
    other = {**obs, "context": torch.rand(4, len(CONTEXT))}
    with torch.no_grad():
        assert not torch.allclose(policy.action_probs(obs), policy.action_probs(other))


def test_policy_kwargs_sizes_and_parameter_count():
    policy = make_policy(embed_dim=16, hidden=8, features_extractor_kwargs={"top_probs": 2})
    extractor = policy.features_extractor
    assert isinstance(extractor, SlotExtractor)
    assert extractor.features_dim == 16 and extractor.top_probs == 2
    assert isinstance(extractor.mlp[1], nn.Tanh)
    # extractor (64 + 2 + 4 + 8) -> 16 -> 16; actor 16 -> 8, critic 16 -> 8; heads 8 -> 4, 8 -> 1
    expected = (78 * 16 + 16) + (16 * 16 + 16) + 2 * (16 * 8 + 8) + (8 * 4 + 4) + (8 + 1)
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
    ("obs_space", "act_space", "match"),
    [
        (spaces.Box(0, 1, (8, 8)), spaces.Discrete(4), "must be a Dict with the keys"),
        (
            spaces.Dict(saliency=spaces.Box(0, 1, (8, 8)), logits=spaces.Box(-1, 1, (5,))),
            spaces.Discrete(4),
            "'saliency', 'logits' and 'context'",
        ),
        (
            spaces.Dict(
                saliency=spaces.Box(0, 1, (8, 4)),
                logits=spaces.Box(-1, 1, (5,)),
                context=spaces.Box(0, 1, (len(CONTEXT),)),
            ),
            spaces.Discrete(4),
            r"\['saliency'\] must have shape \(g, g\)",
        ),
        (
            spaces.Dict(
                saliency=spaces.Box(0, 1, (8, 8)),
                logits=spaces.Box(-1, 1, (5, 2)),
                context=spaces.Box(0, 1, (len(CONTEXT),)),
            ),
            spaces.Discrete(4),
            r"\['logits'\] must have shape \(N,\)",
        ),
        (
            spaces.Dict(
                saliency=spaces.Box(0, 1, (8, 8)),
                logits=spaces.Box(-1, 1, (5,)),
                context=spaces.Box(0, 1, (3,)),
            ),
            spaces.Discrete(4),
            r"\['context'\] must have shape \(8,\)",
        ),
        (slot_spaces(5, 8, 4, 1.0)[0], spaces.MultiDiscrete([4] * 3), r"Discrete\(K\) with K >= 2"),
        (slot_spaces(5, 8, 4, 1.0)[0], spaces.Discrete(1), r"Discrete\(K\) with K >= 2"),
    ],
)
def test_check_slot_spaces_errors(obs_space, act_space, match):
    with pytest.raises(ValueError, match=match):
        check_slot_spaces(obs_space, act_space)
    with pytest.raises(ValueError, match=match):
        PerImagePolicy(obs_space, act_space, lambda _: 1e-3)


def test_check_slot_spaces_returns_grid_and_k():
    assert check_slot_spaces(*slot_spaces(5, 8, 4, 1.0)) == (8, 4)


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


# ---- with PPO on a synthetic slot env -------------------------------------------------------


def left_half_target(saliency: np.ndarray) -> np.ndarray:
    """(B, g, g) -> (B,) 0 where the saliency argmax lies in the left half, else 1."""
    col = saliency.reshape(saliency.shape[0], -1).argmax(-1) % GRID
    return (col >= GRID // 2).astype(np.int64)


class SyntheticSlots(VecEnv):
    """B slots of random observations; each slot's reward is 1 when its action is the target."""

    def __init__(self, b: int = 16, n: int = 5, k: int = 2, length: int = 8):
        obs, act = slot_spaces(n, GRID, k, 10.0)
        self.n, self.length, self.rng = n, length, np.random.default_rng(0)
        self.render_mode = None
        super().__init__(b, obs, act)

    def reset(self):
        self.t = 0
        self.obs = random_obs(self.rng, self.num_envs, self.n)
        return self.obs

    def step_async(self, actions):
        self.actions = actions

    def step_wait(self):
        rewards = (self.actions == left_half_target(self.obs["saliency"])).astype(np.float32)
        self.t += 1
        done = self.t >= self.length
        self.obs = random_obs(self.rng, self.num_envs, self.n)
        infos = [{"TimeLimit.truncated": done} for _ in range(self.num_envs)]
        if done:
            self.t = 0
        return self.obs, rewards, np.full(self.num_envs, done), infos

    def close(self):
        pass

    def get_attr(self, name, indices=None):
        return [getattr(self, name)] * self.num_envs

    def set_attr(self, name, value, indices=None):
        setattr(self, name, value)

    def env_method(self, name, *args, indices=None, **kwargs):
        return [getattr(self, name)(*args, **kwargs)] * self.num_envs

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * self.num_envs


def test_ppo_learns_a_per_image_rule_and_round_trips(tmp_path):
    """Per image: action 0 when its saliency peak is in the left half, else 1 (chance = 0.5)."""
    model = PPO(
        PerImagePolicy,
        SyntheticSlots(),
        learning_rate=3e-3,
        n_steps=16,
        batch_size=64,
        n_epochs=4,
        gamma=0.0,
        policy_kwargs={"embed_dim": 32, "hidden": 32},
        seed=0,
        device="cpu",
    )
    model.learn(16 * 16 * 32)
    obs = random_obs(np.random.default_rng(5), 400, 5)
    actions, _ = model.predict(obs, deterministic=True)
    accuracy = float(np.mean(actions == left_half_target(obs["saliency"])))
    assert accuracy > 0.85
    model.save(tmp_path / "agent.zip")
    loaded = PPO.load(tmp_path / "agent.zip", device="cpu")
    assert isinstance(loaded.policy, PerImagePolicy)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.policy.action_probs(as_tensors(obs)),
            model.policy.action_probs(as_tensors(obs)),
            rtol=0,
            atol=0,
        )
