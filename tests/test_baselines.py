import numpy as np
import pytest
from gymnasium import spaces

import agents  # noqa: F401  (registers the frozen-agent policy "agent")
from baselines import list_policies, make_policy, policy_mixer


def _obs(b=6):
    return {"saliency": np.zeros((b, 8, 8), np.float32), "logits": np.zeros((b, 3), np.float32)}


def test_policies_and_their_mixers():
    assert list_policies() == [
        "agent",
        "comixup",
        "constant",
        "cutmix_plus",
        "manifold_mixup",
        "mixup",
        "puzzlemix",
        "rmix",
        "saliencymix",
        "vanilla",
    ]
    assert [policy_mixer(p) for p in list_policies()] == [
        "rmix",
        "comixup",
        "rmix",
        "cutmix",
        "manifold_mixup",
        "mixup",
        "puzzlemix",
        "rmix",
        "saliencymix",
        "none",
    ]


def test_random_policy_is_uniform_and_seeded():
    space = spaces.Discrete(10)
    a = make_policy("rmix", space, seed=3)
    acts = np.concatenate([a.predict(_obs(100))[0] for _ in range(200)])
    counts = np.bincount(acts, minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300  # 2000 expected per value
    np.testing.assert_array_equal(a.action_probs(_obs(4)), np.full((4, 10), 0.1))
    b = make_policy("rmix", space, seed=3)
    c = make_policy("rmix", space, seed=3)
    c.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.predict(_obs(100))[0], c.predict(_obs(100))[0])
    assert not np.array_equal(b.predict(_obs(100))[0], c.predict(_obs(100))[0])


def test_constant_policy_picks_nearest_topk():
    act, state = make_policy("constant", spaces.Discrete(10), q=0.5).predict(_obs())
    # linspace(0, .99, 10)[4] = 0.44 and [5] = 0.55: 0.55 is nearer to 0.5
    np.testing.assert_array_equal(act, np.full(6, 5))
    assert state is None
    probs = make_policy("constant", spaces.Discrete(10), q=0.5).action_probs(_obs(2))
    np.testing.assert_array_equal(probs, np.eye(10)[[5, 5]])


def test_unknown_policy_and_bad_space():
    with pytest.raises(
        ValueError, match=r"unknown policy 'puzzle'; choose one of: agent, comixup, constant"
    ):
        make_policy("puzzle", spaces.Discrete(3))
    with pytest.raises(ValueError, match=r"action_space must be Discrete\(K\) with K >= 2"):
        make_policy("rmix", spaces.MultiDiscrete([3] * 2))
