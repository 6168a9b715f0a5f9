"""Input saliency against closed forms and finite differences; pooling and normalisation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rlmix.saliency import input_saliency, pool_saliency


def linear_model(c, h, w, n, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, n)).double()


def closed_form_saliency(model, x, target):
    """Linear logits z = W x + b: dCE_mean/dx_b = (softmax(z_b) - target_b) W / B."""
    lin = model[1]
    z = x.flatten(1) @ lin.weight.T + lin.bias
    g = (F.softmax(z, dim=1) - target) @ lin.weight / x.shape[0]
    return g.reshape(x.shape).pow(2).mean(dim=1).sqrt(), z


def test_saliency_hand_computed_two_channels():
    # One 2-channel pixel, logits = [x_0 + 2 x_1, 0] at x = 0: p = (.5, .5); label 1:
    # dCE/dz = p - e_1 = (.5, -.5), dCE/dx = (.5 * 1, .5 * 2) = (.5, 1) -> s = sqrt((.25 + 1) / 2).
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    x = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    saliency, logits = input_saliency(model, x, torch.tensor([1]))
    torch.testing.assert_close(
        saliency, torch.full((1, 1, 1), math.sqrt(0.625), dtype=torch.float64)
    )
    torch.testing.assert_close(logits, torch.zeros(1, 2, dtype=torch.float64))


@pytest.mark.parametrize("soft", [False, True])
def test_saliency_matches_closed_form_float64(soft):
    b, c, h, w, n = 3, 2, 4, 4, 5
    model = linear_model(c, h, w, n)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 4])
    target = F.one_hot(labels, n).double()
    if soft:
        target = F.softmax(torch.randn(b, n, generator=g, dtype=torch.float64), dim=1)
    saliency, logits = input_saliency(model, x, target if soft else labels)
    expected, z = closed_form_saliency(model, x, target)
    assert saliency.shape == (b, h, w) and saliency.dtype == torch.float64
    torch.testing.assert_close(saliency, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(logits, z, rtol=1e-12, atol=1e-12)


@pytest.fixture
def one_thread():
    """Tiny ops run fastest on one thread (and do not stall when the CPU is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_saliency_matches_finite_differences_with_batchnorm(one_thread):
    # Train-mode BatchNorm couples the batch; the loss is still a function of x, so central
    # differences of the batch-mean CE give the reference gradient.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 4)
    ).double()
    x = torch.rand(2, 2, 3, 3, dtype=torch.float64)
    labels = torch.tensor([1, 3])
    saliency, _ = input_saliency(model, x, labels, mode="train")

    def loss(inp):
        with torch.no_grad():
            return F.cross_entropy(model(inp), labels).item()

    eps = 1e-6
    grad = torch.zeros_like(x)
    for idx in range(x.numel()):
        step = torch.zeros(x.numel(), dtype=torch.float64)
        step[idx] = eps
        step = step.view_as(x)
        grad.view(-1)[idx] = (loss(x + step) - loss(x - step)) / (2 * eps)
    torch.testing.assert_close(saliency, grad.pow(2).mean(1).sqrt(), rtol=1e-5, atol=1e-9)


def test_saliency_leaves_parameters_and_input_alone():
    model = linear_model(1, 4, 4, 3)
    sentinel = torch.full_like(model[1].weight, 7.0)
    model[1].weight.grad = sentinel.clone()
    assert model[1].bias.grad is None
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    x_before = x.clone()
    saliency, logits = input_saliency(model, x, torch.tensor([0, 2]))
    assert torch.equal(model[1].weight.grad, sentinel)
    assert model[1].bias.grad is None
    assert torch.equal(x, x_before) and x.grad is None and not x.requires_grad
    assert not saliency.requires_grad and not logits.requires_grad
    assert saliency.grad_fn is None and logits.grad_fn is None


class ModeProbe(nn.Module):
    """Records whether it was in training mode when called."""

    def __init__(self):
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def probe_model():
    probe = ModeProbe()
    model = nn.Sequential(probe, nn.Flatten(), nn.Linear(16, 3), nn.Dropout(0.5))
    return model, probe


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_saliency_mode_used_and_restored(mode):
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    for start in (True, False):
        model, probe = probe_model()
        model.train(start)
        input_saliency(model, x, y, mode=mode)
        assert probe.seen == [mode == "train"]
        assert all(m.training == start for m in model.modules())
    # Mixed per-module modes come back exactly.
    model, _ = probe_model()
    model.train()
    model[3].eval()
    input_saliency(model, x, y, mode=mode)
    assert [m.training for m in model] == [True, True, True, False] and model.training


def test_saliency_restores_mode_after_an_error():
    model, _ = probe_model()
    model.train()
    with pytest.raises(ValueError, match="y has 4 classes but the model returns 3 logits"):
        input_saliency(model, torch.rand(2, 1, 4, 4), torch.full((2, 4), 0.25), mode="eval")
    assert all(m.training for m in model.modules())


def test_saliency_zero_gradient_pools_to_uniform():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.zero_()
    saliency, _ = input_saliency(model, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    assert torch.equal(saliency, torch.zeros(2, 4, 4))
    torch.testing.assert_close(pool_saliency(saliency, 2), torch.full((2, 2, 2), 0.25))


def test_saliency_validation():
    model = linear_model(1, 4, 4, 3).float()
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="x must be 4-D"):
        input_saliency(model, x[0], y)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        input_saliency(model, x.long(), y)
    with pytest.raises(ValueError, match="y has batch size 3 but x has 2"):
        input_saliency(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"y must be \(B,\) long labels or \(B, N\)"):
        input_saliency(model, x, y.float())
    with pytest.raises(TypeError, match="y must be a tensor"):
        input_saliency(model, x, [0, 1])
    with pytest.raises(ValueError, match="mode must be 'train' or 'eval'"):
        input_saliency(model, x, y, mode="test")


# -- pooling -------------------------------------------------------------------------------------


def test_pool_saliency_hand_computed():
    s = torch.tensor(
        [[0.0, 2.0, 1.0, 3.0], [2.0, 0.0, 3.0, 1.0], [3.0, 3.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0]]
    )[None]
    # Cell means [[4/4, 8/4], [12/4, 0]] = [[1, 2], [3, 0]], sum 6.
    torch.testing.assert_close(
        pool_saliency(s, 2), torch.tensor([[[1 / 6, 2 / 6], [3 / 6, 0.0]]]), rtol=0, atol=1e-7
    )
    torch.testing.assert_close(pool_saliency(s, 1), torch.ones(1, 1, 1))
    torch.testing.assert_close(pool_saliency(s, 4), s / 24)
    # Non-square maps: kernel (H // g, W // g) = (2, 4).
    wide = torch.tensor([[1.0] * 4 + [3.0] * 4] * 2 + [[0.0] * 8] * 2)[None]
    torch.testing.assert_close(pool_saliency(wide, 2), torch.tensor([[[0.25, 0.75], [0.0, 0.0]]]))


def test_pool_saliency_normalises_and_never_overflows():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(5, 8, 8, generator=g)
    s[1] = 0.0  # all-zero map
    s[2] = 1e-45  # subnormal float32
    s[3] = 3e38  # the map's sum overflows float32
    s[4, :4] = 0.0
    for grid in (1, 2, 4, 8):
        pooled = pool_saliency(s, grid)
        assert pooled.shape == (5, grid, grid) and pooled.dtype == torch.float32
        assert torch.isfinite(pooled).all()
        torch.testing.assert_close(pooled.sum((1, 2)), torch.ones(5))
        torch.testing.assert_close(pooled[1:4], torch.full((3, grid, grid), 1 / grid**2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_pool_saliency_dtypes(dtype):
    s = torch.rand(3, 8, 8).to(dtype)
    s[0] = 0
    pooled = pool_saliency(s, 4)
    assert pooled.dtype == dtype and torch.isfinite(pooled).all()
    tol = 16 * torch.finfo(dtype).eps
    torch.testing.assert_close(
        pooled.double().sum((1, 2)), torch.ones(3).double(), rtol=0, atol=tol
    )


def test_pool_saliency_validation():
    with pytest.raises(ValueError, match="grid 3 does not divide the saliency map size 8x8"):
        pool_saliency(torch.rand(2, 8, 8), 3)
    with pytest.raises(ValueError, match="grid 4 does not divide the saliency map size 8x6"):
        pool_saliency(torch.rand(2, 8, 6), 4)
    with pytest.raises(ValueError, match="grid must be a positive integer"):
        pool_saliency(torch.rand(2, 8, 8), 0)
    with pytest.raises(ValueError, match="saliency must be 3-D"):
        pool_saliency(torch.rand(2, 1, 8, 8), 2)
    with pytest.raises(TypeError, match="saliency must be a floating-point"):
        pool_saliency(torch.ones(2, 8, 8, dtype=torch.long), 2)
