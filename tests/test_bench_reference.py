"""The benchmark's reference threshold (the original code's O(B^2) quantile table) must give
exactly rlmix's masks, and its R-Mix the same mixed batch, or the timing compares different work.
"""

import pytest
import torch

from benchmarks.bench_mix import reference_masks, reference_threshold_rmix
from rlmix.mixing import one_hot, rmix, sample_q, topk_masks


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (4, 4), (2, 4), (8, 8)])
def test_reference_masks_equal_topk_masks(grid):
    gen = torch.Generator().manual_seed(sum(grid))
    for b in (2, 3, 17, 64):
        pooled = torch.rand(b, *grid, generator=gen)
        ties = torch.randint(0, 3, (b, *grid), generator=gen).float()  # many equal cells
        for maps in (pooled, ties, torch.zeros(b, *grid)):
            q = sample_q(b, 10, gen)
            q[0] = 0.0  # every cell
            q[-1] = 0.99
            assert torch.equal(reference_masks(maps, q), topk_masks(maps, q))


def test_reference_rmix_matches_rmix():
    gen = torch.Generator().manual_seed(0)
    for b, side, grid in ((5, 8, 2), (16, 32, 4), (7, 12, 3)):
        x = torch.rand(b, 3, side, side, generator=gen)
        y = one_hot(torch.randint(10, (b,), generator=gen), 10)
        pooled = torch.rand(b, grid, grid, generator=gen)
        q, lam = sample_q(b, 10, gen), float(torch.rand(1, generator=gen))
        perm = torch.randperm(b, generator=gen)
        for a, r in zip(
            rmix(x, y, pooled, q, lam, perm),
            reference_threshold_rmix(x, y, pooled, q, lam, perm),
            strict=True,
        ):
            torch.testing.assert_close(a, r, rtol=0, atol=1e-6)
