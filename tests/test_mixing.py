"""R-Mix, CutMix, Mixup and their helpers: hand-computed cases, properties over random draws."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rlmix.mixing import (
    CutMix,
    MixParams,
    Mixup,
    NoMix,
    RMix,
    create_mixer,
    cutmix,
    cutmix_box,
    cutmix_boxes,
    mixup,
    one_hot,
    rmix,
    rmix_masks,
    sample_grid,
    sample_lam,
    sample_lams,
    sample_perm,
    sample_q,
    topk_masks,
    topk_space,
)
from rlmix.saliency import pool_saliency

# -- hand-computed R-Mix case --------------------------------------------------------------------
# Two 1x4x4 images, grid 2 (2x2-pixel cells), q = 0.5 for both, lam = 0.25, perm = [1, 0].
# pooled_0 = [[.4, .3], [.2, .1]]: sorted .1 .2 .3 .4, rank 0.5 * 3 = 1.5 -> .25 -> [[1,1],[0,0]]
# pooled_1 = [[.1, .4], [.2, .3]]: same threshold .25                        -> [[0,1],[0,1]]
POOLED = torch.tensor([[[0.4, 0.3], [0.2, 0.1]], [[0.1, 0.4], [0.2, 0.3]]])
Q = torch.tensor([0.5, 0.5])
PERM = torch.tensor([1, 0])
LAM = 0.25
# x_0[h, w] = (4h + w) / 16, x_1 = 1 everywhere. Labels: image 0 class 0, image 1 class 2 (N = 3).
X = torch.stack([torch.arange(16.0).reshape(1, 4, 4) / 16, torch.ones(1, 4, 4)])
Y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def cells(kinds: str, own: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """The 4x4 mixed channel whose 2x2 cells, row by row, are ``own``'s pixels (o), the
    partner's (p) or both mixed (m: ``lam * own + (1 - lam) * partner``)."""
    pick = {"o": own, "p": partner, "m": lam * own + (1 - lam) * partner}
    out = torch.empty(4, 4)
    for c, kind in enumerate(kinds):
        rows, cols = slice(2 * (c // 2), 2 * (c // 2) + 2), slice(2 * (c % 2), 2 * (c % 2) + 2)
        out[rows, cols] = pick[kind][rows, cols]
    return out


def test_rmix_hand_computed_masks():
    mask, partner, m_inter = rmix_masks(POOLED, Q, PERM)
    assert torch.equal(mask, torch.tensor([[[1, 1], [0, 0]], [[0, 1], [0, 1]]]).bool())
    assert torch.equal(partner, torch.tensor([[[0, 1], [0, 1]], [[1, 1], [0, 0]]]).bool())
    # m_inter = 1 where both top or both least salient.
    assert torch.equal(m_inter, torch.tensor([[[0, 1], [1, 0]], [[0, 1], [1, 0]]]).bool())
    up = topk_masks(POOLED, Q, 4)
    assert torch.equal(up[0].int(), torch.tensor([[1, 1, 1, 1]] * 2 + [[0, 0, 0, 0]] * 2))
    assert torch.equal(up[1].int(), torch.tensor([[0, 0, 1, 1]] * 4))


def test_rmix_hand_computed_pixels_and_labels():
    x_mix, y_mix = rmix(X, Y, POOLED, Q, LAM, PERM)
    # Image 0 (partner 1): cell (0,0) own pixels k/16; (0,1) and (1,0) mixed .25 k/16 + .75;
    # cell (1,1) pasted from image 1 (= 1).
    expected_0 = cells("ommp", X[0, 0], X[1, 0], LAM)
    # Image 1 (partner 0): cell (0,0) pasted from image 0 (k/16); (0,1), (1,0) mixed
    # .25 * 1 + .75 k/16; cell (1,1) its own pixels (= 1).
    expected_1 = cells("pmmo", X[1, 0], X[0, 0], LAM)
    torch.testing.assert_close(
        x_mix, torch.stack([expected_0, expected_1])[:, None], rtol=0, atol=0
    )
    # Fractions: m_inter 2/4, own top 1/4, partner's top 1/4.
    # w_own = .5 * .25 + .25 = .375, w_partner = .5 * .75 + .25 = .625.
    expected_y = torch.tensor([[0.375, 0.0, 0.625], [0.625, 0.0, 0.375]])
    torch.testing.assert_close(y_mix, expected_y, rtol=0, atol=1e-7)


def test_rmix_hand_computed_two_channels_and_top_quantile():
    # q = .99 on a 2x2 grid: rank 2.97, threshold .3 + .97 * .1 = .397 -> only the maximum.
    mask = topk_masks(POOLED, torch.tensor([0.99, 0.99]))
    assert torch.equal(mask, torch.tensor([[[1, 0], [0, 0]], [[0, 1], [0, 0]]]).bool())
    x2 = torch.cat([X, 1 - X], dim=1)  # second channel 1 - x
    x_mix, y_mix = rmix(x2, Y, POOLED, torch.tensor([0.99, 0.99]), LAM, PERM)
    # Image 0: cell (0,0) own top; (0,1) partner's top; the other two cells mixed (both least),
    # in both channels.
    for c in range(2):
        expected = cells("opmm", x2[0, c], x2[1, c], LAM)
        torch.testing.assert_close(x_mix[0, c], expected, rtol=0, atol=0)
    # m_inter 2/4, own 1/4, partner 1/4 again: same label weights as above.
    torch.testing.assert_close(y_mix, torch.tensor([[0.375, 0.0, 0.625], [0.625, 0.0, 0.375]]))


def test_topk_masks_ties_and_constant_maps():
    const = torch.full((1, 2, 2), 0.25)
    for q in (0.0, 0.5, 0.99):
        assert topk_masks(const, torch.tensor([q])).all()  # threshold equals every cell
    ties = torch.tensor([[[0.1, 0.1], [0.4, 0.4]]])
    # rank 0.5 * 3 = 1.5 between .1 and .4 -> .25: only the two tied maxima.
    assert torch.equal(
        topk_masks(ties, torch.tensor([0.5])), torch.tensor([[[0, 0], [1, 1]]]).bool()
    )
    assert topk_masks(ties, torch.tensor([0.0])).all()


def test_topk_masks_match_torch_quantile():
    g = torch.Generator().manual_seed(3)
    for grid in (1, 2, 4, 8):
        for dtype in (torch.float32, torch.float64):
            pooled = torch.rand(16, grid, grid, generator=g, dtype=dtype)
            pooled[:4] = torch.randint(0, 3, (4, grid, grid), generator=g).to(dtype)  # ties
            q = torch.rand(16, generator=g)
            q[:2] = torch.tensor([0.0, 0.99])
            masks = topk_masks(pooled, q)
            for i in range(16):
                threshold = torch.quantile(pooled[i].flatten(), q[i].item())
                assert torch.equal(masks[i], pooled[i] >= threshold)


# -- R-Mix properties over random draws ----------------------------------------------------------


def reference_rmix(x, y, pooled, q, lam, perm):
    """Straight transcription of eqs. 4-7 with torch.quantile and full-resolution masks."""
    b, _, h, w = x.shape
    masks = torch.stack(
        [pooled[i] >= torch.quantile(pooled[i].flatten(), q[i].item()) for i in range(b)]
    )
    masks = F.interpolate(masks[:, None].float(), size=(h, w), mode="nearest")  # (B,1,H,W)
    m_i, m_j = masks, masks[perm]
    inter = (m_i == m_j).float()
    x_mix = inter * (lam * x + (1 - lam) * x[perm]) + (1 - inter) * (m_i * x + m_j * x[perm])
    frac = lambda m: m.flatten(1).mean(1, keepdim=True)  # noqa: E731
    y_mix = (
        frac(inter) * (lam * y + (1 - lam) * y[perm])
        + frac((1 - inter) * m_i) * y
        + frac((1 - inter) * m_j) * y[perm]
    )
    return x_mix, y_mix, frac(inter), frac((1 - inter) * m_i), frac((1 - inter) * m_j)


def random_pooled(b, grid, g):
    kind = torch.randint(3, (1,), generator=g).item()
    if kind == 0:
        return torch.rand(b, grid, grid, generator=g)
    if kind == 1:  # many ties
        return torch.randint(0, 3, (b, grid, grid), generator=g).float()
    pooled = torch.rand(b, grid, grid, generator=g)
    pooled[::2] = 1.0  # constant maps
    return pooled


def derangement(b, g):
    """A random permutation without fixed points (one b-cycle)."""
    order = torch.randperm(b, generator=g)
    perm = torch.empty(b, dtype=torch.long)
    perm[order] = order.roll(-1)
    return perm


def random_case(b, n, draw, g):
    """Draw ``draw``'s R-Mix case: pooled saliency on grid 1, 2, 4 or 8 in turn, a derangement,
    b distinct labels of n classes, their images (b, 3, 8, 8) and one-hot rows."""
    pooled = random_pooled(b, (1, 2, 4, 8)[draw % 4], g)
    perm = derangement(b, g)
    labels = torch.randperm(n, generator=g)[:b]
    return pooled, perm, labels, torch.rand(b, 3, 8, 8, generator=g), one_hot(labels, n)


def test_rmix_properties_over_random_draws():
    g = torch.Generator().manual_seed(0)
    b, n = 6, 10
    for draw in range(240):
        pooled, perm, labels, x, y = random_case(b, n, draw, g)
        q = torch.rand(b, generator=g)
        q[torch.rand(b, generator=g) < 0.3] = 0.0
        q[torch.rand(b, generator=g) < 0.3] = 0.99
        lam = 0.01 + 0.98 * torch.rand(1, generator=g).item()
        x_mix, y_mix = rmix(x, y, pooled, q, lam, perm)
        x_ref, y_ref, f_inter, f_i, f_j = reference_rmix(x, y, pooled, q, lam, perm)

        torch.testing.assert_close(x_mix, x_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(y_mix, y_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(y_mix.sum(1), torch.ones(b), rtol=0, atol=1e-6)
        # Label weights are the pixel fractions of eq. 7.
        rows = torch.arange(b)
        torch.testing.assert_close(y_mix[rows, labels], (f_inter * lam + f_i).squeeze(1))
        torch.testing.assert_close(
            y_mix[rows, labels[perm]], (f_inter * (1 - lam) + f_j).squeeze(1)
        )
        # Every mask holds its maximum, so with lam in (0, 1) both classes keep weight.
        assert torch.equal((y_mix > 0).sum(1), torch.full((b,), 2))
        assert torch.equal(y_mix[rows, labels] > 0, torch.ones(b, dtype=torch.bool))
        assert torch.equal(y_mix[rows, labels[perm]] > 0, torch.ones(b, dtype=torch.bool))


def test_rmix_non_square_images_and_grids():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(4, 2, 4, 8, generator=g)
    y = one_hot(torch.arange(4), 4)
    perm = torch.tensor([1, 2, 3, 0])
    for grid in ((2, 2), (1, 4), (4, 2)):
        pooled = torch.rand(4, *grid, generator=g)
        q = torch.tensor([0.0, 0.3, 0.6, 0.99])
        x_mix, y_mix = rmix(x, y, pooled, q, 0.3, perm)
        x_ref, y_ref, *_ = reference_rmix(x, y, pooled, q, 0.3, perm)
        torch.testing.assert_close(x_mix, x_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(y_mix, y_ref, rtol=0, atol=1e-6)


def test_rmix_fixed_point_and_extreme_lam():
    x = torch.rand(3, 1, 4, 4)
    y = one_hot(torch.tensor([0, 1, 2]), 3)
    pooled = torch.rand(3, 2, 2)
    q = torch.tensor([0.5, 0.2, 0.9])
    # perm[i] == i: the image is mixed with itself and stays unchanged.
    x_mix, y_mix = rmix(x, y, pooled, q, 0.3, torch.arange(3))
    torch.testing.assert_close(x_mix, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(y_mix, y, rtol=0, atol=1e-6)
    # lam = 1: the m_inter region is purely x_i, so y_j keeps exactly its pasted fraction.
    perm = torch.tensor([1, 2, 0])
    _, y_one = rmix(x, y, pooled, q, 1.0, perm)
    _, _, m_inter = rmix_masks(pooled, q, perm)
    partner_only = (~m_inter & topk_masks(pooled, q)[perm]).float().mean((1, 2))
    torch.testing.assert_close(y_one[torch.arange(3), perm], partner_only)


def test_rmix_q_zero_is_exactly_mixup():
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for grid in (1, 2, 4, 8):
            x = torch.rand(5, 3, 8, 8, generator=g).to(dtype)
            y = F.softmax(torch.randn(5, 7, generator=g), 1).to(dtype)
            y = y / y.sum(1, keepdim=True)
            pooled = torch.rand(5, grid, grid, generator=g).to(dtype)
            lam = torch.rand(1, generator=g).item()
            perm = torch.randperm(5, generator=g)
            a = rmix(x, y, pooled, torch.zeros(5), lam, perm)
            m = mixup(x, y, lam, perm)
            assert torch.equal(a[0], m[0]) and torch.equal(a[1], m[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_mixers_preserve_dtype(dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 8, 8, generator=g).to(dtype)
    y = one_hot(torch.tensor([0, 1, 2, 3]), 4, dtype=dtype)
    perm = torch.tensor([1, 2, 3, 0])
    pooled = torch.rand(4, 4, 4, generator=g).to(dtype)
    outs = [
        rmix(x, y, pooled, torch.tensor([0.0, 0.3, 0.6, 0.99]), 0.4, perm),
        cutmix(x, y, 0.4, perm, generator=g),
        mixup(x, y, 0.4, perm),
    ]
    tol = 8 * torch.finfo(dtype).eps
    for x_mix, y_mix in outs:
        assert x_mix.dtype == dtype and y_mix.dtype == dtype
        assert x_mix.shape == x.shape and y_mix.shape == y.shape
        assert torch.isfinite(x_mix).all()
        torch.testing.assert_close(
            y_mix.double().sum(1), torch.ones(4, dtype=torch.float64), rtol=0, atol=tol
        )


# -- CutMix and Mixup ----------------------------------------------------------------------------


def test_cutmix_box_hand_computed():
    # Seed 0 draws the centre column cx = 12, then row cy = 15 (checked here).
    g = torch.Generator().manual_seed(0)
    assert [torch.randint(32, (1,), generator=g).item() for _ in range(2)] == [12, 15]
    # lam = .75: side 32 * sqrt(.25) = 16, half 8 -> rows 15 -+ 8, columns 12 -+ 8.
    assert cutmix_box(32, 32, 0.75, torch.Generator().manual_seed(0)) == (7, 23, 4, 20)
    # lam = 0: side 32, half 16 -> rows [0, 31), columns [0, 28) after clipping.
    assert cutmix_box(32, 32, 0.0, torch.Generator().manual_seed(0)) == (0, 31, 0, 28)
    top, bottom, left, right = cutmix_box(32, 32, 1.0, g)
    assert (bottom - top) * (right - left) == 0  # lam = 1: empty box


def test_cutmix_corrected_lam_is_pasted_fraction():
    g = torch.Generator().manual_seed(4)
    b, n = 5, 5
    # Image i is the constant (i + 1) / 8, so pasted pixels are recognisable.
    x = ((torch.arange(b, dtype=torch.float32) + 1) / 8).view(b, 1, 1, 1).expand(b, 2, 12, 12)
    y = one_hot(torch.arange(b), n)
    areas = []
    for _ in range(100):
        lam = torch.rand(1, generator=g).item()
        perm = derangement(b, g)
        x_mix, y_mix = cutmix(x, y, lam, perm, generator=g)
        pasted = (x_mix == x[perm]).all(1).float()  # (B, H, W)
        assert torch.equal(pasted, pasted[:1].expand_as(pasted))  # one box for the batch
        frac = pasted[0].mean().item()
        rows = torch.arange(b)
        torch.testing.assert_close(y_mix[rows, rows], torch.full((b,), 1 - frac))
        torch.testing.assert_close(y_mix[rows, perm], torch.full((b,), frac))
        torch.testing.assert_close(y_mix.sum(1), torch.ones(b))
        # The pasted region is a rectangle: its row and column extents multiply to its area.
        rows_hit, cols_hit = pasted[0].any(1).sum().item(), pasted[0].any(0).sum().item()
        assert rows_hit * cols_hit == pasted[0].sum().item()
        assert rows_hit <= int(12 * math.sqrt(1 - lam)) and cols_hit <= int(12 * math.sqrt(1 - lam))
        areas.append(frac)
    assert max(areas) > 0.3 and min(areas) < 0.05


def test_cutmix_is_deterministic_for_a_seed():
    x = torch.rand(4, 3, 16, 16)
    y = one_hot(torch.arange(4), 4)
    perm = torch.tensor([3, 0, 1, 2])
    a = cutmix(x, y, 0.3, perm, generator=torch.Generator().manual_seed(7))
    b = cutmix(x, y, 0.3, perm, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mixup_values_and_linearity():
    x = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    y = one_hot(torch.tensor([0, 1]), 2)
    x_mix, y_mix = mixup(x, y, 0.25, torch.tensor([1, 0]))
    torch.testing.assert_close(x_mix[:, 0, 0, 0], torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(y_mix, torch.tensor([[0.25, 0.75], [0.75, 0.25]]))

    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.rand(2, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    y = one_hot(torch.arange(4), 4, dtype=torch.float64)
    perm = torch.tensor([2, 3, 1, 0])
    mix = lambda t: mixup(t, y, 0.3, perm)[0]  # noqa: E731
    torch.testing.assert_close(mix(2 * x1 - 3 * x2), 2 * mix(x1) - 3 * mix(x2))
    assert torch.equal(mixup(x1, y, 1.0, perm)[0], x1)
    assert torch.equal(mixup(x1, y, 0.0, perm)[0], x1[perm])


# -- helpers -------------------------------------------------------------------------------------


def test_one_hot_and_smoothing():
    torch.testing.assert_close(
        one_hot(torch.tensor([2, 0]), 3), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    )
    smooth = one_hot(torch.tensor([1]), 4, smoothing=0.2, dtype=torch.float64)
    torch.testing.assert_close(
        smooth, torch.tensor([[0.05, 0.85, 0.05, 0.05]], dtype=torch.float64)
    )


def test_topk_space_values():
    torch.testing.assert_close(topk_space(10), torch.arange(10) * 0.11)
    torch.testing.assert_close(topk_space(2), torch.tensor([0.0, 0.99]))
    assert topk_space(10).dtype == torch.float32


def test_samplers_are_deterministic_and_in_range():
    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        return (
            [sample_lam(1.0, g) for _ in range(3)],
            sample_perm(6, g),
            sample_q(6, 10, g),
            [sample_grid((2, 4), g) for _ in range(8)],
        )

    a, b = draws(0), draws(0)
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and a[3] == b[3]
    assert draws(1)[0] != a[0]
    assert torch.equal(a[1].sort().values, torch.arange(6))
    assert all((a[2][:, None] == topk_space(10)[None]).any(1))
    assert set(a[3]) <= {2, 4}
    assert sample_perm(4, device="cpu").dtype == torch.long


def test_sample_lam_distribution():
    g = torch.Generator().manual_seed(0)
    uniform = torch.tensor([sample_lam(1.0, g) for _ in range(2000)])
    assert 0 < uniform.min() and uniform.max() < 1
    assert abs(uniform.mean().item() - 0.5) < 0.02
    assert abs(uniform.var().item() - 1 / 12) < 0.01  # Beta(1, 1) = U(0, 1)
    peaked = torch.tensor([sample_lam(0.2, g) for _ in range(2000)])
    # Beta(.2, .2): mean .5, variance 1 / (4 (2a + 1)) = 1 / 5.6.
    assert abs(peaked.var().item() - 1 / 5.6) < 0.015
    tiny = [sample_lam(1e-3, g) for _ in range(50)]
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in tiny)


def test_sample_q_is_uniform_over_topk_space():
    q = sample_q(5000, 5, torch.Generator().manual_seed(0))
    counts = torch.stack([(q == v).sum() for v in topk_space(5)])
    assert counts.sum() == 5000 and counts.min() > 900


# -- callables -----------------------------------------------------------------------------------


def tiny_model(n=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, n))


def test_rmix_callable_deterministic_and_valid():
    model = tiny_model()
    x = torch.rand(6, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    a = RMix(5, seed=3)(model, x, labels)
    b = RMix(5, seed=3)(model, x, labels)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(a[1].sum(1), torch.ones(6))
    assert a[0].shape == x.shape and a[1].shape == (6, 5)
    soft = RMix(seed=3, grids=(8,))(model, x, one_hot(labels, 5))
    torch.testing.assert_close(soft[1].sum(1), torch.ones(6))


def test_cutmix_and_mixup_callables():
    x = torch.rand(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    for cls in (CutMix, Mixup):
        a = cls(4, seed=1)(x, labels)
        b = cls(4, seed=1)(x, labels)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        torch.testing.assert_close(a[1].sum(1), torch.ones(4))
    smooth = Mixup(4, alpha=1.0, smoothing=0.1, seed=0)(x, labels)[1]
    assert smooth.min() >= 0.025 - 1e-7


def test_sample_is_apart_from_apply_and_matches_the_functions():
    """Mixer objects draw lam, perm (and grid or box) first, then apply them deterministically;
    the result equals the functional operator with those parameters."""
    x = torch.rand(6, 3, 8, 8)
    y = one_hot(torch.tensor([0, 1, 2, 3, 4, 0]), 5)
    g = torch.Generator().manual_seed(7)
    lam, perm = sample_lam(1.0, g), sample_perm(6, g)
    for name, extra in (("mixup", {}), ("cutmix", {"box"}), ("rmix", {"grid"}), ("none", set())):
        params = create_mixer(name, alpha=1.0, seed=0).sample(x, torch.Generator().manual_seed(7))
        assert isinstance(params, MixParams)
        assert (params.box is not None) == ("box" in extra) and (params.grid > 0) == (
            "grid" in extra
        )
        if name != "none":
            assert params.lam == lam and torch.equal(params.perm, perm)
    saliency = torch.rand(6, 8, 8)
    q = torch.full((6,), 0.5)
    mixer = RMix(alpha=1.0, seed=0)
    params = mixer.sample(x, torch.Generator().manual_seed(3))
    got = mixer.apply(x, y, params, saliency=saliency, q=q)
    want = rmix(x, y, pool_saliency(saliency, params.grid), q, params.lam, params.perm)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    box_params = CutMix(seed=0).sample(x, torch.Generator().manual_seed(3))
    got = CutMix(seed=0).apply(x, y, box_params)
    want = cutmix(x, y, box_params.lam, box_params.perm, box=box_params.box)
    assert torch.equal(got[0], want[0])
    assert NoMix().apply(x, y, NoMix().sample(x)) == (x, y)


def test_callable_validation():
    with pytest.raises(ValueError, match="pass either generator or seed"):
        Mixup(3, generator=torch.Generator(), seed=1)
    with pytest.raises(ValueError, match="num_classes must be set"):
        CutMix(seed=0)(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        CutMix(3, alpha=0.0)
    with pytest.raises(
        ValueError,
        match=r"unknown mixer 'puzzle'; choose one of: comixup, cutmix, manifold_mixup, mixup",
    ):
        create_mixer("puzzle")
    with pytest.raises(ValueError, match="smoothing must be in"):
        Mixup(3, smoothing=1.0)
    with pytest.raises(ValueError, match="grids must be a non-empty"):
        RMix(3, grids=())
    with pytest.raises(ValueError, match="saliency_mode must be"):
        RMix(3, saliency_mode="test")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        RMix(3, k=0)
    with pytest.raises(ValueError, match="grid 3 does not divide"):
        RMix(5, grids=(3,), seed=0)(tiny_model(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


# -- validation ----------------------------------------------------------------------------------


def valid_args():
    x = torch.rand(3, 2, 4, 4)
    y = one_hot(torch.tensor([0, 1, 2]), 3)
    return x, y, torch.rand(3, 2, 2), torch.tensor([0.1, 0.5, 0.9]), 0.5, torch.tensor([2, 0, 1])


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("x", torch.rand(3, 4, 4), ValueError, "x must be 4-D"),
        ("x", torch.zeros(3, 2, 4, 4, dtype=torch.long), TypeError, "x must be a floating-point"),
        ("y", torch.full((3, 3), 0.5), ValueError, "every row of y must sum to 1"),
        ("y", one_hot(torch.tensor([0, 1]), 3), ValueError, "y has batch size 2 but x has 3"),
        ("y", torch.tensor([0, 1, 2]), TypeError, "y must be a floating-point"),
        ("y", torch.ones(3), ValueError, "y must be 2-D"),
        ("pooled", torch.rand(3, 3, 3), ValueError, "pooled grid 3x3 does not divide"),
        ("pooled", torch.rand(2, 2, 2), ValueError, "pooled has batch size 2 but x has 3"),
        ("pooled", torch.rand(3, 4), ValueError, "pooled must be 3-D"),
        ("q", torch.tensor([0.1, 1.0, 0.2]), ValueError, r"every q must be in \[0, 1\)"),
        ("q", torch.tensor([-0.1, 0.5, 0.2]), ValueError, r"every q must be in \[0, 1\)"),
        ("q", torch.tensor([0.1, 0.2]), ValueError, "q has batch size 2 but x has 3"),
        ("q", torch.tensor([0, 0, 0]), TypeError, "q must be a floating-point"),
        ("lam", 1.5, ValueError, r"lam must be in \[0, 1\]"),
        ("lam", -0.1, ValueError, r"lam must be in \[0, 1\]"),
        ("lam", float("nan"), ValueError, "lam must be finite, got nan"),
        ("lam", float("inf"), ValueError, "lam must be finite, got inf"),
        ("perm", torch.tensor([0, 1]), ValueError, "perm has length 2 but x has batch size 3"),
        ("perm", torch.tensor([0, 0, 1]), ValueError, "perm must be a permutation"),
        ("perm", torch.tensor([0, 1, 3]), ValueError, "perm must be a permutation"),
        ("perm", torch.tensor([0.0, 1.0, 2.0]), TypeError, "perm must be a long tensor"),
        ("perm", torch.tensor([[0, 1, 2]]), ValueError, "perm must be 1-D"),
    ],
)
def test_rmix_validation(field, value, error, match):
    names = ["x", "y", "pooled", "q", "lam", "perm"]
    args = dict(zip(names, valid_args(), strict=True))
    args[field] = value
    with pytest.raises(error, match=match):
        rmix(**args)


def test_cutmix_mixup_validation():
    x, y, _, _, _, perm = valid_args()
    for fn in (cutmix, mixup):
        with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
            fn(x, y, 2.0, perm)
        with pytest.raises(ValueError, match="perm must be a permutation"):
            fn(x, y, 0.5, torch.tensor([1, 1, 1]))
        with pytest.raises(ValueError, match="y has batch size 2 but x has 3"):
            fn(x, y[:2], 0.5, perm)
        with pytest.raises(ValueError, match="x must be 4-D"):
            fn(x[0], y, 0.5, perm)


def test_y_row_sum_tolerance_follows_dtype():
    x, y, pooled, q, lam, perm = valid_args()
    # A 1e-3 error is fine in float16 (eps ~ 1e-3) but not in float32.
    off = y.clone()
    off[:, 0] += 1e-3
    rmix(x.half(), off.half(), pooled, q, lam, perm)
    with pytest.raises(ValueError, match="every row of y must sum to 1"):
        rmix(x, off, pooled, q, lam, perm)


def test_helper_validation():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        one_hot(torch.tensor([3]), 3)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        one_hot(torch.tensor([0.0]), 3)
    with pytest.raises(ValueError, match="smoothing must be in"):
        one_hot(torch.tensor([0]), 3, smoothing=1.0)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        one_hot(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        topk_space(0)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        sample_lam(0.0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sample_perm(0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sample_q(0)
    with pytest.raises(ValueError, match="grids must be a non-empty sequence"):
        sample_grid(())
    with pytest.raises(ValueError, match="size 6x6 is not a multiple of the grid 4x4"):
        topk_masks(torch.rand(1, 4, 4), torch.tensor([0.5]), 6)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        cutmix_box(8, 8, 1.5)


def test_rmix_q_partner_holds_the_partners_threshold():
    """q_partner = q is R-Mix itself; otherwise each image keeps its own mask at q and meets its
    partner's mask thresholded at q_partner (one image's top-k varied, its partner's held)."""
    g = torch.Generator().manual_seed(0)
    b = 6
    x = torch.rand(b, 3, 8, 8, generator=g)
    y = torch.nn.functional.one_hot(torch.arange(b) % 3, 3).float()
    pooled = pool_saliency(torch.rand(b, 8, 8, generator=g), 4)
    perm = torch.randperm(b, generator=g)
    q = torch.rand(b, generator=g) * 0.99
    same = rmix(x, y, pooled, q, 0.3, perm, q_partner=q)
    torch.testing.assert_close(same, rmix(x, y, pooled, q, 0.3, perm), rtol=0, atol=0)
    q_partner = torch.rand(b, generator=g) * 0.99
    mask, partner, inter = rmix_masks(pooled, q, perm, q_partner)
    torch.testing.assert_close(mask, topk_masks(pooled, q), rtol=0, atol=0)
    torch.testing.assert_close(partner, topk_masks(pooled, q_partner)[perm], rtol=0, atol=0)
    assert torch.equal(inter, mask == partner)
    _, y_mix = rmix(x, y, pooled, q, 0.3, perm, q_partner=q_partner)
    torch.testing.assert_close(y_mix.sum(1), torch.ones(b))  # label rows sum to 1
    with pytest.raises(ValueError, match=r"every q must be in \[0, 1\)"):
        rmix(x, y, pooled, q, 0.3, perm, q_partner=torch.full((b,), 1.0))


# -- per-image lam (lam_mode: elem) --------------------------------------------------------------
# Each image draws its own lam; the operators take it as a (B,) tensor. A tensor whose entries
# all equal a float mixes exactly as that float (bit for bit), and image i's output equals the
# batch-mode output with lam = lam[i].

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def assert_same(a, b):
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def elem_batch(g, b=6, n=7, side=8, dtype=torch.float32):
    x = torch.rand(b, 3, side, side, generator=g).to(dtype)
    y = F.softmax(torch.randn(b, n, generator=g, dtype=torch.float64), 1).to(dtype)
    return x, y / y.sum(1, keepdim=True), torch.randperm(b, generator=g)


# R-Mix


def test_rmix_elem_hand_computed():
    # The hand-computed case above with lam = (.25, .5): image 0 is unchanged; image 1's mixed
    # cells (0,1) and (1,0) are now .5 * 1 + .5 * k/16.
    x_mix, y_mix = rmix(X, Y, POOLED, Q, torch.tensor([0.25, 0.5]), PERM)
    expected_1 = cells("pmmo", X[1, 0], X[0, 0], 0.5)
    torch.testing.assert_close(x_mix[1, 0], expected_1, rtol=0, atol=0)
    torch.testing.assert_close(x_mix[0], rmix(X, Y, POOLED, Q, 0.25, PERM)[0][0], rtol=0, atol=0)
    # Image 1: w_own = .5 * .5 + .25 = .5, w_partner = .5 * .5 + .25 = .5.
    expected_y = torch.tensor([[0.375, 0.0, 0.625], [0.5, 0.0, 0.5]])
    torch.testing.assert_close(y_mix, expected_y, rtol=0, atol=1e-7)


def test_rmix_elem_each_image_uses_its_own_lam():
    g = torch.Generator().manual_seed(10)
    b, n = 6, 10
    for draw in range(40):
        pooled, perm, labels, x, y = random_case(b, n, draw, g)
        q = torch.rand(b, generator=g) * 0.99
        lam = torch.rand(b, generator=g, dtype=torch.float64)
        x_mix, y_mix = rmix(x, y, pooled, q, lam, perm)
        torch.testing.assert_close(y_mix.sum(1), torch.ones(b), rtol=0, atol=1e-6)
        for i in range(b):
            x_i, y_i = rmix(x, y, pooled, q, lam[i].item(), perm)
            assert torch.equal(x_mix[i], x_i[i]) and torch.equal(y_mix[i], y_i[i])
        # Eq. 7 with image i's own lam.
        _, _, f_inter, f_i, f_j = reference_rmix(x, y, pooled, q, 0.5, perm)
        f_inter, f_i, f_j = (f.squeeze(1) for f in (f_inter, f_i, f_j))
        rows = torch.arange(b)
        torch.testing.assert_close(y_mix[rows, labels], f_inter * lam.float() + f_i)
        torch.testing.assert_close(y_mix[rows, labels[perm]], f_inter * (1 - lam.float()) + f_j)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmix_elem_equal_lams_is_batch_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(11)
    for grid in (1, 2, 4, 8):
        x, y, perm = elem_batch(g, dtype=dtype)
        pooled = torch.rand(6, grid, grid, generator=g)
        q = torch.rand(6, generator=g) * 0.99
        lam = torch.rand(1, generator=g, dtype=torch.float64).item()
        want = rmix(x, y, pooled, q, lam, perm)
        assert_same(rmix(x, y, pooled, q, torch.full((6,), lam, dtype=torch.float64), perm), want)
        lam32 = torch.full((6,), 0.3, dtype=torch.float32)  # 0.3 rounded to float32, as a float
        assert_same(
            rmix(x, y, pooled, q, lam32, perm), rmix(x, y, pooled, q, lam32[0].item(), perm)
        )


# CutMix


def test_cutmix_boxes_hand_computed():
    # Seed 0 draws the centre columns (12, 15), then the rows (21, 0) (checked here).
    g = torch.Generator().manual_seed(0)
    assert torch.randint(32, (2,), generator=g).tolist() == [12, 15]
    assert torch.randint(32, (2,), generator=g).tolist() == [21, 0]
    lam = torch.tensor([0.75, 0.0], dtype=torch.float64)
    boxes = cutmix_boxes(32, 32, lam, torch.Generator().manual_seed(0))
    # Image 0: side 16, half 8 -> rows 21 -+ 8, columns 12 -+ 8. Image 1: side 32, half 16 ->
    # rows [0, 16), columns [0, 31) after clipping.
    assert boxes.dtype == torch.long
    assert boxes.tolist() == [[13, 29, 4, 20], [0, 16, 0, 31]]
    # One image draws exactly what cutmix_box draws.
    one = cutmix_boxes(32, 32, lam[:1], torch.Generator().manual_seed(0))
    assert tuple(one[0].tolist()) == cutmix_box(32, 32, 0.75, torch.Generator().manual_seed(0))


def test_cutmix_elem_one_box_per_image_and_corrected_lam():
    g = torch.Generator().manual_seed(12)
    b, h, w = 6, 12, 10
    # Image i is the constant (i + 1) / 8, so pasted pixels are recognisable.
    x = ((torch.arange(b, dtype=torch.float32) + 1) / 8).view(b, 1, 1, 1).expand(b, 2, h, w)
    y = one_hot(torch.arange(b), b)
    rows = torch.arange(b)
    areas = set()
    for _ in range(30):
        lam = torch.rand(b, generator=g, dtype=torch.float64)
        perm = derangement(b, g)
        boxes = cutmix_boxes(h, w, lam, g)
        x_mix, y_mix = cutmix(x, y, lam, perm, box=boxes)
        pasted = (x_mix == x[perm]).all(1)  # (B, H, W)
        top, bottom, left, right = boxes.T
        for i in range(b):
            want = torch.zeros(h, w, dtype=torch.bool)
            want[top[i] : bottom[i], left[i] : right[i]] = True
            assert torch.equal(pasted[i], want)  # image i's own box
            assert bottom[i] - top[i] <= int(h * math.sqrt(1 - lam[i].item()))
            assert right[i] - left[i] <= int(w * math.sqrt(1 - lam[i].item()))
        frac = pasted.float().mean((1, 2))
        torch.testing.assert_close(y_mix[rows, rows], 1 - frac)  # corrected per image
        torch.testing.assert_close(y_mix[rows, perm], frac)
        torch.testing.assert_close(y_mix.sum(1), torch.ones(b))
        areas.update(frac.tolist())
    assert max(areas) > 0.3 and min(areas) < 0.05


def test_cutmix_elem_draws_boxes_reproducibly():
    x, y, perm = elem_batch(torch.Generator().manual_seed(13), side=16)
    lam = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 0.2], dtype=torch.float64)
    a = cutmix(x, y, lam, perm, generator=torch.Generator().manual_seed(5))
    b = cutmix(x, y, lam, perm, generator=torch.Generator().manual_seed(5))
    boxes = cutmix_boxes(16, 16, lam, torch.Generator().manual_seed(5))
    assert_same(a, b)
    assert_same(a, cutmix(x, y, lam, perm, box=boxes))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cutmix_elem_identical_boxes_is_batch_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(14)
    for seed in range(10):
        x, y, perm = elem_batch(g, side=16, dtype=dtype)
        lam = torch.rand(1, generator=g, dtype=torch.float64).item()
        box = cutmix_box(16, 16, lam, torch.Generator().manual_seed(seed))
        want = cutmix(x, y, lam, perm, box=box)
        assert_same(want, cutmix(x, y, lam, perm, generator=torch.Generator().manual_seed(seed)))
        same = torch.full((6,), lam, dtype=torch.float64)
        assert_same(cutmix(x, y, same, perm, box=torch.tensor([box] * 6)), want)


# Mixup


def test_mixup_elem_hand_computed():
    x = torch.tensor([0.0, 1.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    y = one_hot(torch.tensor([0, 1, 2]), 3)
    x_mix, y_mix = mixup(x, y, torch.tensor([0.25, 0.5, 1.0]), torch.tensor([1, 2, 0]))
    # .25 * 0 + .75 * 1, .5 * 1 + .5 * .5, 1 * .5 + 0 * 0.
    torch.testing.assert_close(
        x_mix[:, 0], torch.tensor([0.75, 0.75, 0.5]).view(3, 1, 1).expand(3, 2, 2)
    )
    expected_y = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(y_mix, expected_y, rtol=0, atol=0)


def test_mixup_elem_each_image_uses_its_own_lam():
    g = torch.Generator().manual_seed(15)
    for _ in range(20):
        x, y, perm = elem_batch(g)
        lam = torch.rand(6, generator=g, dtype=torch.float64)
        x_mix, y_mix = mixup(x, y, lam, perm)
        torch.testing.assert_close(y_mix.sum(1), torch.ones(6), rtol=0, atol=1e-6)
        for i in range(6):
            x_i, y_i = mixup(x, y, lam[i].item(), perm)
            assert torch.equal(x_mix[i], x_i[i]) and torch.equal(y_mix[i], y_i[i])


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixup_elem_equal_lams_is_batch_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(16)
    for _ in range(10):
        x, y, perm = elem_batch(g, dtype=dtype)
        lam = torch.rand(1, generator=g, dtype=torch.float64).item()
        same = torch.full((6,), lam, dtype=torch.float64)
        assert_same(mixup(x, y, same, perm), mixup(x, y, lam, perm))


# Samplers and mixer objects


def test_sample_lams_distribution_and_reproducibility():
    a = sample_lams(1.0, 4000, torch.Generator().manual_seed(0))
    assert a.shape == (4000,) and a.dtype == torch.float64
    assert torch.equal(a, sample_lams(1.0, 4000, torch.Generator().manual_seed(0)))
    assert 0 < a.min() and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.02 and abs(a.var().item() - 1 / 12) < 0.01  # U(0, 1)
    peaked = sample_lams(0.2, 4000, torch.Generator().manual_seed(1))
    assert abs(peaked.var().item() - 1 / 5.6) < 0.015  # Beta(.2, .2)
    # alpha << 1: underflowed pairs become fair coins, every lam stays in [0, 1].
    tiny = sample_lams(1e-3, 200, torch.Generator().manual_seed(2))
    assert bool(((tiny >= 0) & (tiny <= 1)).all()) and bool((tiny == 1).any())
    # One image draws exactly what sample_lam draws.
    for seed in range(5):
        for alpha in (1.0, 0.2, 1e-3):
            one = sample_lams(alpha, 1, torch.Generator().manual_seed(seed))
            assert one.item() == sample_lam(alpha, torch.Generator().manual_seed(seed))


def test_elem_sample_draws_lams_then_perm_then_grid_or_box():
    x = torch.rand(6, 3, 8, 8)
    for name in ("mixup", "cutmix", "rmix"):
        mixer = create_mixer(name, lam_mode="elem", seed=0)
        assert mixer.lam_mode == "elem"
        params = mixer.sample(x, torch.Generator().manual_seed(7))
        g = torch.Generator().manual_seed(7)
        lam = sample_lams(1.0, 6, g)
        assert torch.equal(params.lam, lam) and torch.equal(params.perm, sample_perm(6, g))
        if name == "cutmix":
            assert torch.equal(params.box, cutmix_boxes(8, 8, lam, g))
        if name == "rmix":
            assert params.grid == sample_grid((2, 4), g)
        again = create_mixer(name, lam_mode="elem", seed=0).sample(
            x, torch.Generator().manual_seed(7)
        )
        assert torch.equal(again.lam, params.lam) and torch.equal(again.perm, params.perm)
    # The drop-in call draws from the mixer's own seeded stream.
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    for cls in (CutMix, Mixup):
        a, b = (cls(5, lam_mode="elem", seed=1)(x, labels) for _ in range(2))
        assert_same(a, b)
        torch.testing.assert_close(a[1].sum(1), torch.ones(6))
    a, b = (RMix(5, lam_mode="elem", seed=1)(tiny_model(), x, labels) for _ in range(2))
    assert_same(a, b)
    assert NoMix(lam_mode="elem").sample(x).lam == 1.0


def test_elem_mixers_equal_batch_mixers_for_equal_lams():
    """The mixer objects' apply: a lam tensor of one value (CutMix: with the same box in every
    row) mixes exactly as the batch mode's float."""
    x, y, perm = elem_batch(torch.Generator().manual_seed(17))
    lam = 0.37
    same = torch.full((6,), lam, dtype=torch.float64)
    box = (1, 6, 2, 7)
    saliency, q = torch.rand(6, 8, 8), torch.rand(6) * 0.99
    for mixer, params, elem in (
        (Mixup(), MixParams(lam, perm), MixParams(same, perm)),
        (
            CutMix(),
            MixParams(lam, perm, box=box),
            MixParams(same, perm, box=torch.tensor([box] * 6)),
        ),
        (RMix(), MixParams(lam, perm, grid=4), MixParams(same, perm, grid=4)),
    ):
        want = mixer.apply(x, y, params, saliency=saliency, q=q)
        assert_same(mixer.apply(x, y, elem, saliency=saliency, q=q), want)


def test_mix_params_lam_per_image_and_mean():
    perm = torch.tensor([2, 0, 1])
    batch = MixParams(0.3, perm)
    assert torch.equal(batch.lam_per_image, torch.full((3,), 0.3, dtype=torch.float64))
    assert batch.lam_mean == 0.3
    elem = MixParams(torch.tensor([0.1, 0.2, 0.6], dtype=torch.float64), perm)
    assert torch.equal(elem.lam_per_image, torch.tensor([0.1, 0.2, 0.6], dtype=torch.float64))
    assert elem.lam_mean == pytest.approx(0.3)


def test_agent_mix_passes_lam_mode_through():
    from agents import AgentMix
    from agents.policy import PerImagePolicy
    from envs.spaces import slot_spaces

    policy = PerImagePolicy(*slot_spaces(5, 8, 10, 20.0), lambda _: 1e-3)
    mixer = AgentMix(policy, obs_grid=8, logit_clip=20.0, num_classes=5, lam_mode="elem", seed=0)
    x = torch.rand(6, 3, 8, 8)
    params = mixer.sample(x, torch.Generator().manual_seed(7))
    assert torch.equal(params.lam, sample_lams(1.0, 6, torch.Generator().manual_seed(7)))
    _, y_mix = mixer(tiny_model(), x, torch.tensor([0, 1, 2, 3, 4, 0]))
    torch.testing.assert_close(y_mix.sum(1), torch.ones(6))


# Validation


@pytest.mark.parametrize("fn", ["rmix", "cutmix", "mixup"])
@pytest.mark.parametrize(
    ("lam", "error", "match"),
    [
        (torch.tensor([0.5, 0.5]), ValueError, r"lam must be a float or a tensor of shape \(3,\), got \(2,\)"),
        (torch.full((3, 1), 0.5), ValueError, r"lam must be a float or a tensor of shape \(3,\), got \(3, 1\)"),
        (torch.tensor([0.5, 1.5, 0.2]), ValueError, r"lam must be in \[0, 1\], got entries from 0.2"),
        (torch.tensor([0.5, -0.1, 0.2]), ValueError, r"lam must be in \[0, 1\], got entries from -0.1"),
        (torch.tensor([0.5, float("nan"), 0.2]), ValueError, "lam must be finite, got a non-finite entry"),
        (torch.tensor([0.5, float("inf"), 0.2]), ValueError, "lam must be finite, got a non-finite entry"),
        (torch.tensor([0, 1, 0]), TypeError, "lam must be a float or a floating-point tensor"),
    ],
)  # fmt: skip
def test_elem_lam_validation(fn, lam, error, match):
    x, y, pooled, q, _, perm = valid_args()
    with pytest.raises(error, match=match):
        if fn == "rmix":
            rmix(x, y, pooled, q, lam, perm)
        else:
            {"cutmix": cutmix, "mixup": mixup}[fn](x, y, lam, perm)


def test_elem_box_and_sampler_validation():
    x, y, _, _, _, perm = valid_args()  # 4x4 images, B = 3
    lam = torch.full((3,), 0.5)
    with pytest.raises(TypeError, match=r"box must be a \(top, bottom, left, right\) tuple or"):
        cutmix(x, y, lam, perm, box=torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"box must have shape \(3, 4\), got \(2, 4\)"):
        cutmix(x, y, lam, perm, box=torch.zeros(2, 4, dtype=torch.long))
    for bad in ([0, 5, 0, 2], [2, 1, 0, 2], [0, 2, -1, 2], [0, 2, 3, 2]):
        box = torch.tensor([[0, 2, 0, 2], bad, [1, 3, 1, 3]])
        with pytest.raises(ValueError, match=r"every box must have 0 <= top <= bottom <= 4 and"):
            cutmix(x, y, lam, perm, box=box)
    with pytest.raises(TypeError, match=r"lam must be a 1-D tensor \(B,\) of per-image"):
        cutmix_boxes(4, 4, 0.5)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        sample_lams(0.0, 3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sample_lams(1.0, 0)
    for cls in (RMix, CutMix, Mixup):
        with pytest.raises(ValueError, match="lam_mode must be 'batch' or 'elem', got 'tile'"):
            cls(3, lam_mode="tile")


# Config wiring: mix.lam_mode reaches the trainer's mixer and the env's info


def test_lam_mode_config_trains_one_epoch(tiny_cli_args, tmp_path, capsys):
    from rlmix.cli import run_main
    from rlmix.config import load_config
    from rlmix.train import main

    out = tmp_path / "elem"
    args = ["--epochs", "1", "--out", str(out), "--no-progress", "--set", "mix.lam_mode=elem"]
    args += ["--set", "env.eval_fgsm=false"]
    assert run_main(main, [*args, *tiny_cli_args]) == 0
    assert load_config(out / "config.yaml").mix.lam_mode == "elem"
    capsys.readouterr()
    bad = ["--epochs", "1", "--out", str(tmp_path / "bad"), "--set", "mix.lam_mode=tile"]
    assert run_main(main, [*bad, *tiny_cli_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config key 'mix.lam_mode' must be one of batch, elem (got 'tile')"]


def test_env_info_reports_lam_per_image(tiny_config):
    from envs.mixup_env import MixupEnv

    for mode in ("batch", "elem"):
        env = MixupEnv(tiny_config(**{"mix.lam_mode": mode, "env.eval_fgsm": False}))
        assert env.trainer.mixer.lam_mode == mode
        env.reset(seed=0)
        info = env.step(env.action_space.sample())[-1]
        lams = info["lam_per_image"]
        assert isinstance(lams, np.ndarray) and lams.shape == (50,) and lams.dtype == np.float64
        assert isinstance(info["lam"], float) and info["lam"] == pytest.approx(lams.mean())
        assert (len(set(lams.tolist())) == 1) == (mode == "batch")
