"""soft_ce and bce against hand-computed values; the loss registry."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlmix.losses import LOSSES, bce, get_loss, soft_ce


def test_soft_ce_hand_computed():
    # Row 1: logits (0, 0), target (1, 0): -log(1/2) = ln 2.
    # Row 2: logits (ln 3, 0) -> p = (3/4, 1/4); target (1/2, 1/2): -(ln 3/4 + ln 1/4) / 2.
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    row2 = -(math.log(0.75) + math.log(0.25)) / 2
    torch.testing.assert_close(soft_ce(logits, target), torch.tensor((math.log(2) + row2) / 2))


def test_soft_ce_equals_cross_entropy_on_one_hot_and_soft():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    one_hot = F.one_hot(labels, 5).double()
    torch.testing.assert_close(soft_ce(logits, one_hot), F.cross_entropy(logits, labels))
    soft = F.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), 1)
    torch.testing.assert_close(soft_ce(logits, soft), F.cross_entropy(logits, soft))


def test_bce_hand_computed_sum_over_classes_mean_over_batch():
    # Logit 0 gives -log(1/2) = ln 2 per class whatever the target; 3 classes -> 3 ln 2 per row.
    torch.testing.assert_close(
        bce(torch.zeros(2, 3), torch.full((2, 3), 0.5)), torch.tensor(3 * math.log(2))
    )
    # Logit ln 3 (p = 3/4) with target 1: -ln(3/4); with target 0: -ln(1/4).
    logits = torch.tensor([[math.log(3.0), math.log(3.0)]])
    expected = -math.log(0.75) - math.log(0.25)
    torch.testing.assert_close(bce(logits, torch.tensor([[1.0, 0.0]])), torch.tensor(expected))


def test_losses_compute_in_float32_for_half_logits():
    logits = torch.randn(4, 3).half()
    target = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).half()
    for fn in (soft_ce, bce):
        out = fn(logits, target)
        assert out.dtype == torch.float32 and out.dim() == 0
        torch.testing.assert_close(out, fn(logits.float(), target.float()))


def test_losses_backpropagate():
    logits = torch.randn(3, 4, requires_grad=True)
    target = torch.full((3, 4), 0.25)
    soft_ce(logits, target).backward()
    # d soft_ce / d logits = (softmax - target) / B.
    torch.testing.assert_close(logits.grad, (F.softmax(logits.detach(), 1) - target) / 3)


def test_registry_and_errors():
    assert get_loss("soft_ce") is soft_ce and get_loss("bce") is bce
    assert set(LOSSES) == {"soft_ce", "bce"}
    with pytest.raises(ValueError, match="unknown loss 'mse'; choose one of: bce, soft_ce"):
        get_loss("mse")
    with pytest.raises(ValueError, match=r"logits and target must both be \(B, N\)"):
        soft_ce(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"logits and target must both be \(B, N\)"):
        bce(torch.zeros(3), torch.zeros(3))
