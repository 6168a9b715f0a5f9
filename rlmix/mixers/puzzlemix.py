"""PuzzleMix (Kim, Choo and Song 2020): a graph-cut mask over saliency, then optimal transport.

For image i and its partner j = perm[i], on a block grid of side ``block_num`` drawn per batch:

1. **Mask** (:func:`puzzlemix_mask`): each block takes a label z in {1, (L-2)/(L-1), ..., 0}
   (the share of image i) minimising, per image, the saliency each image loses (its pooled,
   normalised input saliency where the other image is shown), a smoothness term on the label
   (``beta``) plus a data term on the pixel jumps across block boundaries (``gamma``), and the
   binomial prior ``-log P(z | lam)`` (``eta``). Solved by alpha-beta-swap graph cuts
   (gco-wrapper), one image at a time, with the energies scaled and truncated to integers as the
   authors' ``graphcut_multi`` does.
2. **Transport** (:func:`transport_plan`, optional): within each image, salient blocks move into
   the blocks its mask shows, by the authors' greedy row/column resolution of the transport cost
   ``t_eps * distance - saliency * shown`` (as many rounds as the grid side).
3. ``x' = z * T_i(x_i) + (1 - z) * T_j(x_j)``; the labels weigh image i by the mean of z over
   pixels (transport moves blocks within an image and keeps the mask).

Defaults are the authors' CIFAR-100 command (README, ``main.py``): ``block_num`` from
{2, 4, 8, 16}, ``n_labels`` 3, ``beta`` 1.2, ``gamma`` 0.5, ``eta`` 0.2, ``neigh_size`` 4,
``transport`` on with ``t_size`` 4 and ``t_eps`` 0.8, no clean loss (``clean_lam`` 0: the saliency
pass is then in eval mode) and no adversarial perturbation (``adv_p`` 0).

Differences from their code: saliency and the boundary data term are computed in [0, 1] pixel
space (theirs: the gradient w.r.t. normalised inputs; pixels for the data term, as here), and a
block no source reaches under transport becomes 0 here (black) where theirs is 0 in normalised
space (the data mean); such blocks lie where the mask shows the other image, or arise from ties.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlmix.mixers.graphcut import cut_grid, load_gco
from rlmix.mixing import (
    MIXERS,
    Mixer,
    MixParams,
    _check_grids,
    _check_mix,
    _mix_labels,
    _rows,
    batch_lam_only,
    sample_grid,
)
from rlmix.saliency import input_saliency, pool_saliency

__all__ = ["PuzzleMix", "puzzlemix", "puzzlemix_mask", "transport_plan"]

_PRIOR_EPS = 1e-8


def _boundary_jumps(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean absolute pixel jump (over channels and the boundary) between a block of ``a`` and
    its lower / right neighbour block of ``b``, on images average-pooled to ``k`` cells a block.

    Returns ``(vertical (B, g - 1, g), horizontal (B, g, g - 1))`` for a grid of side g.
    """
    down = (a[:, :, :-1, :] - b[:, :, 1:, :])[:, :, k - 1 :: k, :].abs().mean(dim=1)
    right = (a[:, :, :, :-1] - b[:, :, :, 1:])[:, :, :, k - 1 :: k].abs().mean(dim=1)
    return F.avg_pool2d(down, (1, k)), F.avg_pool2d(right, (k, 1))


def _add_pair_terms(
    cost_own: torch.Tensor, cost_partner: torch.Tensor, pair: dict, dim: int
) -> torch.Tensor:
    """Split the four-entry pairwise terms ``pair[(first, second)]`` (1: image i's own block,
    0: the partner's) along ``dim`` into unary terms (added in place) and the one symmetric
    disagreement weight per edge, which is returned (the authors' reparametrisation)."""
    first = [slice(None)] * 3
    second = [slice(None)] * 3
    first[dim], second[dim] = slice(None, -1), slice(1, None)
    first, second = tuple(first), tuple(second)
    cost_own[first] += (pair[1, 0] + pair[1, 1]) / 2
    cost_partner[first] += (pair[0, 1] + pair[0, 0]) / 2
    cost_own[second] += (pair[0, 1] + pair[1, 1]) / 2
    cost_partner[second] += (pair[1, 0] + pair[0, 0]) / 2
    return (pair[1, 0] + pair[0, 1] - pair[1, 1] - pair[0, 0]) / 2


def puzzlemix_mask(
    x: torch.Tensor,
    saliency: torch.Tensor,
    lam: float,
    perm: torch.Tensor,
    block_num: int,
    *,
    beta: float = 1.2,
    gamma: float = 0.5,
    eta: float = 0.2,
    neigh_size: int = 4,
    n_labels: int = 3,
) -> torch.Tensor:
    """PuzzleMix's optimal masks (B, g, g), g = ``block_num``: image i's share of each block, in
    {0, 1/(L-1), ..., 1}, by graph cuts (see the module docstring; needs gco-wrapper).

    Args:
        x: images (B, C, H, W) in [0, 1] (the boundary data term); H = W, divisible by g.
        saliency: the clean batch's input saliency (B, H, W).
        lam: the mixing coefficient of the prior.
        perm: partners (B,) long.
        block_num: grid side g.
        beta, gamma, eta, neigh_size, n_labels: the authors' ``--beta`` (label smoothness),
            ``--gamma`` (data smoothness), ``--eta`` (prior), ``--neigh_size`` and
            ``--n_labels``.
    """
    gco = load_gco("puzzlemix")
    b, _, _, width = x.shape
    block_size = width // block_num
    neigh = min(neigh_size, block_size)
    beta = beta / block_num / 16  # the authors' normalisation
    own_sal = pool_saliency(saliency.float(), block_num)
    partner_sal = own_sal[perm]
    pooled = F.avg_pool2d(x.float(), neigh)
    sources = (pooled[perm], pooled)  # index 0: the partner's blocks, 1: image i's own
    k = block_size // neigh
    jumps = {(s, t): _boundary_jumps(sources[s], sources[t], k) for s in (0, 1) for t in (0, 1)}
    pair_v = {key: beta * gamma * v for key, (v, _) in jumps.items()}
    pair_h = {key: beta * gamma * h for key, (_, h) in jumps.items()}
    # Showing image i's block loses the partner's saliency there, and vice versa.
    cost_own, cost_partner = partner_sal.clone(), own_sal.clone()
    edge_v = _add_pair_terms(cost_own, cost_partner, pair_v, 1)
    edge_h = _add_pair_terms(cost_own, cost_partner, pair_h, 2)

    scale = 1000 * block_num**2  # the authors' integer scale of the energies
    shares = np.linspace(0, 1, n_labels)  # partner's share of label l
    log_prior = np.array(
        [
            -np.log(
                math.comb(n_labels - 1, l) * lam ** (n_labels - 1 - l) * (1 - lam) ** l + _PRIOR_EPS
            )
            for l in range(n_labels)
        ]
    )
    prior = eta * log_prior / block_num**2
    own_np = cost_own.detach().cpu().numpy()
    partner_np = cost_partner.detach().cpu().numpy()
    unary = scale * ((1 - shares) * own_np[..., None] + shares * partner_np[..., None] + prior)
    unary = unary.astype(np.int32)
    levels = np.arange(n_labels, dtype=np.float32)
    label_cost = (levels[:, None] - levels[None, :]) ** 2 / (n_labels - 1) ** 2
    weights_v = (scale * (edge_v.detach().cpu().numpy() + beta)).astype(np.int32)
    weights_h = (scale * (edge_h.detach().cpu().numpy() + beta)).astype(np.int32)
    labels = np.stack(
        [cut_grid(gco, unary[i], label_cost, weights_v[i], weights_h[i]) for i in range(b)]
    )
    mask = 1.0 - torch.from_numpy(labels.astype(np.float32)) / (n_labels - 1)
    return mask.to(x.device)


@functools.lru_cache(maxsize=8)
def _grid_distance(side: int) -> torch.Tensor:
    """Squared distance between the cells of a ``side`` x ``side`` grid, divided by
    ``(side - 1)**2`` (the authors' transport cost), (side**2, side**2) float32."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    cells = torch.stack((rows.flatten(), cols.flatten()), dim=1)
    squared = (cells[:, None] - cells[None]).pow(2).sum(dim=2).float()
    return squared / max(side - 1, 1) ** 2


def transport_plan(mask: torch.Tensor, saliency: torch.Tensor, eps: float) -> torch.Tensor:
    """PuzzleMix's transport plans (B, n**2, n**2), source block -> destination block, each a
    partial permutation, for masks and pooled saliency (B, n, n).

    The cost of moving source s to destination d is ``eps * distance(s, d) - saliency[s]`` where
    the mask shows d, ``eps * distance(s, d)`` elsewhere. In each of n rounds every source picks
    its cheapest destination; a destination picked more than once keeps its cheapest source (the
    first on ties) and the others pay 1 more for it in the next rounds. The plan of the last
    round is returned: a destination no source won gets no content.

    As the authors' code, a destination is won by the least entry of its column of ``picked *
    cost``, where sources that did not pick it stand at 0: when every source that picked it has
    a positive cost, nobody wins it. Computed per source (B, n**2) rather than on that dense
    (B, n**2, n**2) product: the same plans, several times faster at n = 16.
    """
    b, n, _ = mask.shape
    cells = n * n
    shown = (mask > 0).to(saliency.dtype).reshape(b, 1, cells)
    distance = _grid_distance(n).to(device=saliency.device, dtype=saliency.dtype)
    cost = eps * distance - saliency.reshape(b, cells, 1) * shown
    source = torch.arange(cells, device=cost.device).expand(b, cells)
    batch = torch.arange(b, device=cost.device)[:, None].expand(b, cells)
    for _ in range(n):
        dest = cost.argmin(dim=2)  # (B, src): each source's pick
        won = _winners(cost.gather(2, dest[..., None]).squeeze(2), dest, source)
        cost = cost.index_put((batch, source, dest), (~won).to(cost.dtype), accumulate=True)
    plan = torch.zeros_like(cost)
    plan[batch, source, dest] = won.to(cost.dtype)
    return plan


def _winners(picked: torch.Tensor, dest: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Whether each source (B, src) wins the destination it picked, at cost ``picked``: per
    destination, the first source at the least of its column (the sources that picked it at
    their cost, the others at 0)."""
    b, cells = dest.shape
    none = torch.full_like(dest, cells)  # "no source": past the last index
    least = torch.full_like(picked, math.inf).scatter_reduce(1, dest, picked, reduce="amin")
    pickers = torch.zeros_like(dest).scatter_add_(1, dest, torch.ones_like(dest))
    others = pickers < cells  # some source did not pick it: the column holds a 0
    least = torch.where(others, least.clamp(max=0.0), least)
    at_least = picked == least.gather(1, dest)
    first_picker = none.scatter_reduce(1, dest, torch.where(at_least, source, none), reduce="amin")
    # the first source that did not pick d: source 0, unless it did (then the first that did not)
    first_other = torch.where(dest[:, :1] == source, none, torch.zeros_like(none))
    not_with_0 = torch.where(dest != dest[:, :1], source, none).amin(dim=1, keepdim=True)
    first_other = first_other.scatter(1, dest[:, :1], not_with_0)
    zero_wins = others & (least == 0)
    winner = torch.where(zero_wins, torch.minimum(first_picker, first_other), first_picker)
    return winner.gather(1, dest) == source


def _transport(x: torch.Tensor, plan: torch.Tensor, n: int) -> torch.Tensor:
    """Move the n x n blocks of images (B, C, H, W) by plans (B, n**2, n**2)."""
    b, c, h, w = x.shape
    bh, bw = h // n, w // n
    blocks = x.reshape(b, c, n, bh, n, bw).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, -1)
    moved = torch.einsum("bsd,bsp->bdp", plan.to(x.dtype), blocks)
    return moved.reshape(b, n, n, c, bh, bw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def puzzlemix(
    x: torch.Tensor,
    y: torch.Tensor,
    saliency: torch.Tensor,
    lam: float,
    perm: torch.Tensor,
    block_num: int,
    *,
    beta: float = 1.2,
    gamma: float = 0.5,
    eta: float = 0.2,
    neigh_size: int = 4,
    n_labels: int = 3,
    transport: bool = True,
    t_eps: float = 0.8,
    t_size: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PuzzleMix a batch with its permutation (the module docstring's three steps).

    Args:
        x: images (B, C, H, W) in [0, 1], square, H divisible by ``block_num``.
        y: soft labels (B, N).
        saliency: the clean batch's input saliency (B, H, W).
        lam: mixing coefficient (a float: one prior for the batch).
        perm: partners (B,) long.
        block_num: side of the mask grid.
        beta, gamma, eta, neigh_size, n_labels: see :func:`puzzlemix_mask`.
        transport: move salient blocks into the mask (``--transport``).
        t_eps: transport distance cost (``--t_eps``).
        t_size: transport block side in pixels when smaller than a mask block
            (``--t_size``; the mask is then refined to that grid), else the mask grid's.

    Returns:
        ``(x_mix, y_mix)`` with x's and y's shapes and dtypes.
    """
    b, h, w, lam = _check_mix(x, y, lam, perm)
    if not isinstance(lam, float):
        raise TypeError("puzzlemix takes one lam for the batch (a float)")
    if h != w or w % block_num:
        raise ValueError(
            f"puzzlemix needs square images divisible by block_num {block_num}, got {h}x{w}"
        )
    if saliency.shape != (b, h, w):
        raise ValueError(f"saliency must have shape {(b, h, w)}, got {tuple(saliency.shape)}")
    mask = puzzlemix_mask(
        x, saliency, lam, perm, block_num,
        beta=beta, gamma=gamma, eta=eta, neigh_size=neigh_size, n_labels=n_labels,
    )  # fmt: skip
    own, partner = x, _rows(x, perm)
    if transport:
        block_size = w // block_num
        size = min(t_size, block_size)
        side = w // size if size < block_size else block_num
        mask = F.interpolate(mask[:, None], size=side, mode="nearest")[:, 0]
        sal = pool_saliency(saliency.float(), side)
        own = _transport(own, transport_plan(mask, sal, t_eps), side)
        partner = _transport(partner, transport_plan(1 - mask, sal[perm], t_eps), side)
    z = F.interpolate(mask[:, None], size=w, mode="nearest").to(x.dtype)
    x_mix = z * own + (1 - z) * partner
    share = mask.double().mean(dim=(1, 2)).to(y.device)
    return x_mix, _mix_labels(y, perm, share, 1.0 - share)


@MIXERS.register("puzzlemix")
class PuzzleMix(Mixer):
    """PuzzleMix as a mixer: ``sample`` draws lam, the permutation and the grid side from
    ``block_nums``; ``apply`` takes the clean batch's ``saliency`` (B, H, W) (:func:`puzzlemix`).

    The drop-in call is ``puzzle(model, x, y)``: the input saliency of the clean batch (in eval
    mode when ``clean_lam`` is 0, as the authors), then the mix. With ``clean_lam`` > 0 the
    training engine also adds ``clean_lam`` times the clean batch's loss, from the saliency
    forward (train mode), to the mixed loss (the authors' ``--clean_lam``).

    Args:
        num_classes: as :class:`rlmix.mixing.Mixer`, whose keywords it takes (``lam_mode`` must
            be ``batch``).
        block_nums: grid sides drawn per batch [2, 4, 8, 16: the authors' ``2**randint(1, 5)``].
        beta, gamma, eta, neigh_size, n_labels, transport, t_eps, t_size: see :func:`puzzlemix`.
        clean_lam: weight of the clean-batch loss [0.0].
    """

    needs_saliency = True

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        block_nums: Sequence[int] = (2, 4, 8, 16),
        beta: float = 1.2,
        gamma: float = 0.5,
        eta: float = 0.2,
        neigh_size: int = 4,
        n_labels: int = 3,
        transport: bool = True,
        t_eps: float = 0.8,
        t_size: int = 4,
        clean_lam: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        batch_lam_only("puzzlemix", self.lam_mode)
        self.block_nums = _check_grids(block_nums)
        lowest = {"n_labels": (n_labels, 2), "neigh_size": (neigh_size, 1), "t_size": (t_size, 1)}
        lowest |= {k: (v, 0) for k, v in [("beta", beta), ("gamma", gamma), ("eta", eta),
                                           ("t_eps", t_eps), ("clean_lam", clean_lam)]}  # fmt: skip
        for name, (value, low) in lowest.items():
            if not value >= low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        load_gco("puzzlemix")
        self.options = {
            "beta": beta, "gamma": gamma, "eta": eta, "neigh_size": neigh_size,
            "n_labels": n_labels, "transport": transport, "t_eps": t_eps, "t_size": t_size,
        }  # fmt: skip
        self.clean_lam = clean_lam
        self.saliency_mode = "train" if clean_lam > 0 else "eval"

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MixParams:
        params = super().sample(x, generator)
        side = x.shape[-1]
        grids = [g for g in self.block_nums if side % g == 0]
        if not grids:
            raise ValueError(f"no block_num in {self.block_nums} divides the image side {side}")
        return MixParams(params.lam, params.perm, grid=sample_grid(grids, self._stream(generator)))

    def apply(self, x, y, params, *, saliency: torch.Tensor | None = None, **inputs):
        if saliency is None:
            raise ValueError("puzzlemix needs the clean batch's saliency (B, H, W)")
        return puzzlemix(
            x, y, saliency.to(x.device), params.lam, params.perm, params.grid, **self.options
        )

    def __call__(  # type: ignore[override]
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix images (B, C, H, W) with labels (B,) long or (B, N) soft."""
        soft = self.soft_labels(y, x.dtype)
        saliency, _ = input_saliency(model, x, y, mode=self.saliency_mode)
        return self.apply(x, soft, self.sample(x), saliency=saliency)
