"""A reward whose optimum depends on each image's partner (``tests.partner_fixtures:NAME``).

Not a test module: ``tests/test_partner_first.py`` trains agents on it.
"""

import torch

from envs.rewards import RewardInputs, probe_targets
from rlmix.saliency import pool_saliency


def partner_rank(inputs: RewardInputs) -> torch.Tensor:
    """``cos(2 pi (a_i - t_perm[i]) / K)``: the probe_rank reward with the *partner's* target,
    the rank bucket of the partner's saliency peak in the batch. The partner is a uniform draw,
    so a policy that cannot see it scores 0 in expectation; one that sees the partner's saliency
    can approach 1."""
    pooled = pool_saliency(inputs.clean_saliency.float(), inputs.obs_grid)
    target = probe_targets(pooled, inputs.k)[inputs.params.perm.cpu()]
    offset = inputs.action.double() - target.double()
    return torch.cos(2 * torch.pi * offset / inputs.k)
