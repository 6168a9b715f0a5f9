"""envs.rewards: the built-in rewards (hand-computed), per-image returns and their validation."""

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from envs.rewards import RewardInputs, get_reward, list_rewards, probe_targets, register_reward
from rlmix.errors import RlmixError


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
    batch = get_reward("grad_cosine")(_inputs(clean, mixed))
    np.testing.assert_allclose(batch, [expected, expected], atol=1e-6)  # one value for the batch
    # per image: cos = 1 for image 0, cos([1,0,0,0], [.25]*4) = 0.5 for image 1
    per_image = get_reward("grad_cosine_mean")(_inputs(clean, mixed))
    assert per_image.dtype == np.float64
    np.testing.assert_allclose(per_image, [1.0, 0.5], atol=1e-6)


def test_grad_cosine_is_scale_invariant_and_one_for_equal_maps():
    g = torch.rand(3, 8, 8)
    np.testing.assert_allclose(get_reward("grad_cosine")(_inputs(g, 5 * g)), 1.0, atol=1e-6)


def test_loss_drop_val_loss_drop_and_test_acc_gain():
    r = get_reward("loss_drop")
    np.testing.assert_array_equal(r(RewardInputs(q=torch.zeros(2), loss=0.5)), [0.0, 0.0])
    np.testing.assert_allclose(r(RewardInputs(q=torch.zeros(2), loss=0.5, prev_loss=0.8)), 0.3)
    v = get_reward("val_loss_drop")
    assert v.val_loss and not v.mixed_saliency
    np.testing.assert_allclose(
        v(RewardInputs(q=torch.zeros(3), loss=0.0, val_loss=0.9, prev_val_loss=1.2)), [0.3] * 3
    )
    with pytest.raises(RlmixError, match="reward 'val_loss_drop' raised ValueError: .*held-out"):
        v(RewardInputs(q=torch.zeros(3), loss=0.0))
    g = get_reward("test_acc_gain")
    np.testing.assert_array_equal(g(RewardInputs(q=torch.zeros(2), loss=0.5)), 0.0)
    inputs = RewardInputs(
        q=torch.zeros(2), loss=0.5, test_metrics={"top1": 0.6}, prev_test_metrics={"top1": 0.45}
    )
    np.testing.assert_allclose(g(inputs), 0.15)


def _peaks(values):
    """Saliency maps (B, 2, 2) whose pooled maps have the given largest cells."""
    values = torch.as_tensor(values, dtype=torch.float32)
    maps = ((1 - values) / 3)[:, None].repeat(1, 4)
    maps[:, 0] = values
    return maps.view(-1, 2, 2)


def test_probe_targets_split_the_batch_evenly_by_saliency_peak():
    pooled = _peaks([0.5, 0.3, 0.9, 0.4])  # peak ranks 2, 0, 3, 1
    torch.testing.assert_close(probe_targets(pooled, 2), torch.tensor([1, 0, 1, 0]))
    torch.testing.assert_close(probe_targets(pooled, 4), torch.tensor([2, 0, 3, 1]))
    big = probe_targets(torch.rand(100, 8, 8), 10)
    assert torch.bincount(big, minlength=10).tolist() == [10] * 10
    r = get_reward("probe_rank")
    assert r.clean_saliency and not r.mixed_saliency

    def run(action):
        inputs = RewardInputs(
            q=torch.zeros(4), loss=0.0, action=torch.tensor(action), k=4, obs_grid=2,
            clean_saliency=pooled,
        )  # fmt: skip
        return r(inputs)

    np.testing.assert_allclose(run([2, 0, 1, 3]), [1.0, 1.0, -1.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(run([3, 0, 3, 1]), [0.0, 1.0, 1.0, 1.0], atol=1e-12)  # off by 1


def test_context_free_policies_score_zero_on_the_probe():
    """Every constant action scores exactly 0 on a batch (the targets cover the K actions
    evenly), so any policy that ignores the observation scores 0 in expectation."""
    saliency = torch.rand(100, 8, 8)
    r = get_reward("probe_rank")

    def score(action):
        inputs = RewardInputs(
            q=torch.zeros(100), loss=0.0, action=action, k=10, clean_saliency=saliency
        )
        return r(inputs)

    for a in range(10):
        assert abs(score(torch.full((100,), a)).mean()) < 1e-12
    from rlmix.saliency import pool_saliency

    np.testing.assert_allclose(score(probe_targets(pool_saliency(saliency, 8), 10)), 1.0)


def test_flags_and_registry():
    assert {
        "grad_cosine",
        "grad_cosine_mean",
        "loss_drop",
        "val_loss_drop",
        "test_acc_gain",
        "probe_rank",
        "none",
    } <= set(list_rewards())
    assert get_reward("grad_cosine").mixed_saliency and get_reward("grad_cosine").clean_saliency
    assert not get_reward("loss_drop").mixed_saliency


def test_user_rewards_by_name_and_by_path():
    @register_reward("test_small_topk")
    def small_topk(inputs):
        return 1.0 - inputs.q  # per image

    out = get_reward("test_small_topk")(RewardInputs(q=torch.tensor([0.2, 0.4]), loss=0.0))
    np.testing.assert_allclose(out, [0.8, 0.6])
    with pytest.raises(ValueError, match="reward 'test_small_topk' is already registered"):
        register_reward("test_small_topk")(small_topk)
    register_reward("test_small_topk", override=True)(lambda inputs: 0.5)
    assert get_reward("math:fabs").fn is math.fabs  # any importable callable of one argument


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("high", r"a float or 3 floats \(one per image, batch order\), got str .high."),
        (True, r"got bool True"),
        (torch.zeros(2), r"got a Tensor of shape \(2,\)"),
        (np.zeros((3, 1)), r"got a ndarray of shape \(3, 1\)"),
        (torch.zeros(3, dtype=torch.complex64), r"got a Tensor of shape \(3,\) and dtype"),
        ([1.0, 2.0, 3.0], r"got list \[1.0, 2.0, 3.0\]"),
        (None, r"got NoneType None"),
    ],
)
def test_reward_that_returns_the_wrong_thing(value, match):
    reward = get_reward("tests.test_rewards:_constant")
    _RETURN["value"] = value
    with pytest.raises(
        RlmixError, match=r"reward 'tests.test_rewards:_constant' must return .*" + match
    ):
        reward(RewardInputs(q=torch.zeros(3), loss=0.0))


def test_reward_that_raises_names_itself():
    reward = get_reward("tests.test_rewards:_broken")
    with pytest.raises(
        RlmixError, match=r"reward 'tests.test_rewards:_broken' raised KeyError: 'x'"
    ):
        reward(RewardInputs(q=torch.zeros(3), loss=0.0))


def _reads_mixed(inputs: RewardInputs) -> torch.Tensor:
    return inputs.mixed.labels.sum(1)


def test_reward_that_reads_an_unrequested_field_is_told_how_to_ask():
    reward = get_reward("tests.test_rewards:_reads_mixed")
    inputs = RewardInputs(q=torch.zeros(3), loss=0.0, teacher_probs=torch.full((3, 2), 0.5))
    with pytest.raises(
        RlmixError,
        match=r"raised AttributeError: .*NoneType.* \(the env fills only the inputs a reward asks "
        r"for; None here: clean_saliency, mixed_saliency, val_loss, mixed, val_grad; decorate "
        r"it with envs.rewards.register_reward\(name, ...\) and one of clean_saliency=True, "
        r"mixed_saliency=True, val_loss=True, mixed=True, val_grad=True\)",
    ):
        reward(inputs)
    with pytest.raises(RlmixError, match=r"raised KeyError: 'x'$"):
        get_reward("tests.test_rewards:_broken")(inputs)


def test_scalar_tensors_and_numpy_numbers_are_batch_rewards():
    for value in (torch.tensor(0.25), np.float32(0.25), np.array(0.25), 1):
        _RETURN["value"] = value
        out = get_reward("tests.test_rewards:_constant")(RewardInputs(q=torch.zeros(2), loss=0.0))
        np.testing.assert_allclose(out, [float(value)] * 2)


def test_unknown_reward_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=r"unknown reward 'nope'; choose one of: .*grad_cosine.* or module:function",
    ):
        get_reward("nope")
    with pytest.raises(ValueError, match=r"cannot import reward 'no_such_mod:f'"):
        get_reward("no_such_mod:f")
    with pytest.raises(ValueError, match=r"reward 'math:pi' is not callable"):
        get_reward("math:pi")


_RETURN: dict = {}


def _constant(inputs):
    return _RETURN["value"]


def _broken(inputs):
    return {}["x"]


# -- per-image rewards on the last linear layer ---------------------------------------------------


def _classifier_and_batches(loss="soft_ce"):
    from rlmix.losses import get_loss
    from rlmix.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet_tiny", 5, in_chans=1)
    x = torch.rand(12, 1, 16, 16)
    y = torch.softmax(torch.randn(12, 5) * 2, dim=1)  # soft (mixed) labels
    x_val, labels_val = torch.rand(20, 1, 16, 16), torch.randint(0, 5, (20,))
    return model, get_loss(loss), x, y, x_val, labels_val


def val_grad_alignment(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    labels_val: torch.Tensor,
) -> tuple[RewardInputs, list[float], list[float]]:
    """The val_grad rewards' inputs for the mixed batch ``(x, y)`` (soft labels) and the held-out
    batch ``(x_val, labels_val)``, and by autograd each example's own last-layer gradient (one
    backward per example) dotted with the held-out batch's mean gradient: ``(inputs, dots,
    cosines)``. Checks the closed-form held-out gradient against autograd, to 1e-6."""
    from rlmix.probe import capture_last_layer, last_layer_grad, mixed_batch

    n = y.shape[1]
    fc = model.get_classifier()
    model.train()
    with capture_last_layer(model) as seen:
        logits = model(x)
    mixed = mixed_batch(loss_fn, y, logits, seen[-1])
    g = last_layer_grad(model, loss_fn, x_val, labels_val, n)
    # autograd: the held-out mean gradient (eval mode), then each example's gradient alone
    model.eval()
    onehot = torch.nn.functional.one_hot(labels_val, n).float()
    gw, gb = torch.autograd.grad(loss_fn(model(x_val), onehot), [fc.weight, fc.bias])
    np.testing.assert_allclose(g.weight, gw, atol=1e-6)
    np.testing.assert_allclose(g.bias, gb, atol=1e-6)
    model.train()
    val = torch.cat([gw.flatten(), gb]).double()
    dots, cosines = [], []
    for i in range(x.shape[0]):
        z = model(x)[i : i + 1]  # train-mode BN over the whole batch, as trained
        w, b = torch.autograd.grad(loss_fn(z, y[i : i + 1]), [fc.weight, fc.bias])
        gi = torch.cat([w.flatten(), b]).double()
        dots.append(float(gi @ val))
        cosines.append(float(gi @ val / (gi.norm() * val.norm())))
    inputs = RewardInputs(q=torch.zeros(x.shape[0]), loss=0.0, mixed=mixed, val_grad=g)
    return inputs, dots, cosines


@pytest.mark.parametrize("loss", ["soft_ce", "bce"])
def test_val_grad_align_matches_autograd_per_example_gradients(loss):
    """The closed form equals each example's own last-layer gradient (one backward per example)
    dotted with the held-out batch's mean gradient, to 1e-5."""
    model, loss_fn, x, y, x_val, labels_val = _classifier_and_batches(loss)
    inputs, dots, cosines = val_grad_alignment(model, loss_fn, x, y, x_val, labels_val)
    align = get_reward("val_grad_align")(inputs)
    dot = get_reward("val_grad_dot")(inputs)
    assert align.shape == (12,) and align.std() > 0.02  # per image, not one value per batch
    np.testing.assert_allclose(align, cosines, atol=1e-5)
    np.testing.assert_allclose(dot, dots, rtol=1e-5, atol=1e-7)
    assert get_reward("val_grad_align").held_out and get_reward("val_grad_align").mixed


def test_ema_agreement_is_minus_kl_of_the_mixed_label_from_the_teacher():
    from rlmix.probe import MixedBatch

    y = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    teacher = torch.tensor([[0.7, 0.3, 0.0], [0.25, 0.25, 0.5]])
    mixed = MixedBatch(y, torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))
    inputs = RewardInputs(q=torch.zeros(2), loss=0.0, mixed=mixed, teacher_probs=teacher)
    np.testing.assert_allclose(get_reward("ema_agreement")(inputs), [0.0, math.log(0.5)], atol=1e-9)


def _teach_inputs():
    from rlmix.probe import MixedBatch

    # Image 0: label (0.5, 0.5, 0), logits log(0.5, 0.25, 0.25): the classifier's CE is
    # -(0.5 ln 0.5 + 0.5 ln 0.25) = 1.5 ln 2; the teacher (0.5, 0.5, 0) has CE ln 2.
    # Image 1: label (0, 0, 1), logits 0 (uniform): CE ln 3; the teacher puts 0.6 on class 2.
    y = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    logits = torch.tensor([[0.5, 0.25, 0.25], [1.0, 1.0, 1.0]]).log()
    teacher = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    mixed = MixedBatch(y, logits, torch.zeros(2, 4), torch.zeros(2, 3))
    return RewardInputs(q=torch.zeros(2), loss=0.0, mixed=mixed, teacher_probs=teacher)


def test_hardness_is_the_classifiers_soft_label_cross_entropy_per_image():
    values = get_reward("hardness")(_teach_inputs())
    assert values.dtype == np.float64
    np.testing.assert_allclose(values, [1.5 * math.log(2), math.log(3)], atol=1e-9)


def test_teach_is_the_learners_cross_entropy_minus_the_teachers():
    values = get_reward("teach")(_teach_inputs())
    expected = [1.5 * math.log(2) - math.log(2), math.log(3) + math.log(0.6)]
    np.testing.assert_allclose(values, expected, atol=1e-9)
    assert get_reward("teach").teacher and get_reward("teach").logits
    for name in ("teach", "hardness", "ema_agreement"):  # no last layer needed
        assert not get_reward(name).mixed and get_reward(name).reads_mix
    assert not get_reward("hardness").teacher and not get_reward("hardness").held_out


@pytest.mark.parametrize("name", ["teach", "hardness"])
def test_teach_and_hardness_say_what_they_miss(name):
    inputs = RewardInputs(q=torch.zeros(2), loss=0.0)
    with pytest.raises(RlmixError, match=f"reward '{name}' raised ValueError: .*need"):
        get_reward(name)(inputs)


def test_the_ema_teacher_follows_the_classifier(tiny_config):
    from rlmix.trainer import Trainer

    cfg = tiny_config(**{"env.ema_decay": 0.9})
    t = Trainer(cfg, teacher=True)
    t.begin_epoch()
    before = [p.clone() for p in t.teacher.parameters()]
    batch = t.observe(saliency=False)
    t.train_step(batch.x, batch.y)
    for old, new, student in zip(before, t.teacher.parameters(), t.model.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * student.detach())
    assert "teacher" in t.state_dict()


def test_the_teacher_decay_tied_to_the_schedule_follows_the_lrs_fall():
    from rlmix.config import EnvConfig, TrainerConfig
    from rlmix.trainer import ema_decay_at

    trainer = TrainerConfig(pct_start=0.2)
    constant = EnvConfig(ema_decay=0.99)
    assert [ema_decay_at(constant, trainer, p) for p in (0.0, 0.5, 1.0)] == [0.99] * 3
    env = EnvConfig(ema_decay=0.99, ema_decay_end=0.999)
    # Warm-up: constant; then half the cosine fall at the fall's midpoint; the end decay at 1.
    for progress, decay in [(0.0, 0.99), (0.2, 0.99), (0.6, 0.9945), (1.0, 0.999), (1.5, 0.999)]:
        assert ema_decay_at(env, trainer, progress) == pytest.approx(decay, abs=1e-12)
    # A quarter of the way down the fall: (1 - cos(pi / 4)) / 2 of the way from start to end.
    quarter = 0.99 + 0.009 * (1 - 2**-0.5) / 2
    assert ema_decay_at(env, trainer, 0.4) == pytest.approx(quarter, abs=1e-12)


@pytest.mark.parametrize(("at_end", "decay"), [(False, 0.5), (True, 0.0)])
def test_the_trainers_teacher_uses_the_scheduled_decay(tiny_config, at_end, decay):
    from rlmix.trainer import Trainer

    cfg = tiny_config(**{"env.ema_decay": 0.5, "env.ema_decay_end": 0.0})
    t = Trainer(cfg, teacher=True)
    t.begin_epoch()
    t.global_step = t.total_steps if at_end else 0  # progress 1 or 0 (warm-up)
    before = [p.clone() for p in t.teacher.parameters()]
    batch = t.observe(saliency=False)
    t.train_step(batch.x, batch.y)
    for old, new, student in zip(before, t.teacher.parameters(), t.model.parameters(), strict=True):
        torch.testing.assert_close(new, decay * old + (1 - decay) * student.detach())


@pytest.mark.parametrize("record", ["logits", "last_layer"])
def test_the_mixed_pass_records_the_last_layer_only_when_asked(tiny_config, record):
    """``mixed="logits"`` records the mixed batch's labels and logits without touching the last
    layer; ``"last_layer"`` adds its inputs; both record the same logits and logit gradients."""
    from rlmix.trainer import Trainer

    t = Trainer(tiny_config())
    t.begin_epoch()
    batch = t.observe(saliency=False)
    probed = t.probe(batch.x, batch.y, mixed=record).mixed
    taken = t.train_step(batch.x, batch.y, mixed=record).mixed
    torch.testing.assert_close(probed.logits, taken.logits)  # the same weights and mode
    torch.testing.assert_close(taken.logit_grad, taken.logits.softmax(1) - batch.y)
    if record == "logits":
        assert taken.features is None
    else:
        assert taken.features.shape == (len(batch.y), t.model.num_features)


def test_counterfactual_flags():
    for name in ("loss_drop", "val_loss_drop", "test_acc_gain"):
        assert not get_reward(name).has_counterfactual
    for name in (
        "grad_cosine",
        "grad_cosine_mean",
        "val_grad_align",
        "ema_agreement",
        "teach",
        "hardness",
        "probe_rank",
    ):
        assert get_reward(name).has_counterfactual
    assert get_reward("tests.reward_fixtures:nan_per_image").reads_mix  # a plain function
    assert not get_reward("probe_rank").reads_mix
