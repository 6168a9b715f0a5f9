import math

import pytest
import torch

from envs.rewards import RewardInputs, get_reward, list_rewards, register_reward


def _inputs(clean, mixed, **kw):
    return RewardInputs(
        q=torch.zeros(clean.shape[0]),
        loss=1.0,
        obs_grid=2,
        clean_saliency=clean,
        mixed_saliency=mixed,
        **kw,
    )


def test_grad_cosine_one_cosine_over_concatenated_maps():
    # Image 0: identical maps (pooled [.25]*4 both). Image 1: clean all mass in one cell,
    # mixed uniform. Concatenated pooled vectors: a = [.25]*4 + [1,0,0,0], b = [.25]*8.
    clean = torch.zeros(2, 4, 4)
    clean[0] = 1.0
    clean[1, :2, :2] = 1.0
    mixed = torch.ones(2, 4, 4)
    a = torch.tensor([0.25] * 4 + [1.0, 0, 0, 0])
    b = torch.full((8,), 0.25)
    expected = float(a @ b / (a.norm() * b.norm()))
    assert get_reward("grad_cosine")(_inputs(clean, mixed)) == pytest.approx(expected, abs=1e-6)
    # per-image mean: (1 + cos([1,0,0,0], [.25]*4)) / 2 = (1 + 0.5) / 2
    assert get_reward("grad_cosine_mean")(_inputs(clean, mixed)) == pytest.approx(0.75, abs=1e-6)


def test_grad_cosine_is_scale_invariant_and_one_for_equal_maps():
    g = torch.rand(3, 8, 8)
    assert get_reward("grad_cosine")(_inputs(g, 5 * g)) == pytest.approx(1.0, abs=1e-6)


def test_loss_drop_and_test_acc_gain():
    r = get_reward("loss_drop")
    assert r(RewardInputs(q=torch.zeros(2), loss=0.5, prev_loss=None)) == 0.0
    assert r(RewardInputs(q=torch.zeros(2), loss=0.5, prev_loss=0.8)) == pytest.approx(0.3)
    g = get_reward("test_acc_gain")
    assert g(RewardInputs(q=torch.zeros(2), loss=0.5)) == 0.0
    assert g(
        RewardInputs(
            q=torch.zeros(2), loss=0.5, test_metrics={"top1": 0.6}, prev_test_metrics={"top1": 0.45}
        )
    ) == pytest.approx(0.15)
    assert g(RewardInputs(q=torch.zeros(2), loss=0.5, test_metrics={"top1": 0.6})) == 0.6


def test_flags_and_registry():
    assert {"grad_cosine", "grad_cosine_mean", "loss_drop", "test_acc_gain", "none"} <= set(
        list_rewards()
    )
    assert get_reward("grad_cosine").mixed_saliency and get_reward("grad_cosine").clean_saliency
    assert not get_reward("loss_drop").mixed_saliency


def test_user_reward_by_name_and_by_path():
    @register_reward("test_small_topk")
    def small_topk(inputs):
        return 1.0 - float(inputs.q.mean())

    assert get_reward("test_small_topk")(RewardInputs(q=torch.tensor([0.2, 0.4]), loss=0.0)) == (
        pytest.approx(0.7)
    )
    by_path = get_reward("math:fabs")  # any importable callable of one argument
    assert by_path.fn is math.fabs


def test_unknown_reward_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown reward 'nope'; choose one of: .*grad_cosine"):
        get_reward("nope")
    with pytest.raises(ValueError, match=r"cannot import reward 'no_such_mod:f'"):
        get_reward("no_such_mod:f")
