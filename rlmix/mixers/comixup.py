"""Co-Mixup (Kim et al. 2021): a batch-level assignment with supermodular diversity.

The batch is split in order into partitions of ``part`` images. In a partition of n inputs, n
outputs are built on a g x g grid: every cell of every output takes one input (or, after the
first round, a 50/50 pair of the inputs the output already uses), minimising

    sum_cells -saliency_j(cell) - eta * log(prior_j)      (lose little saliency; Dirichlet prior)
  + beta / 2 * sum_neighbours |z(cell) - z(neighbour)|^2  (label smoothness)
  + gamma * sum_j sum_{o != o'} c_oj c_o'j                 (diversity: inputs spread over outputs)

(``c_oj``: cells of output o from input j; :func:`comixup_objective`). The solver
(:func:`comixup_assign`) is the authors' iterative submodular minimisation: from a random
labelling, ``niter`` rounds over the outputs, each re-labelling one output by a graph cut
(alpha-beta swaps, gco-wrapper) with the diversity term made modular: input j costs
about ``2 * gamma * (A @ load)_j`` per cell when that exceeds ``thres`` (hard threshold), ``load``
counting its cells in the other outputs and ``A = (1 - omega) I + omega * D`` mixing in the
distance ``D`` between the inputs' saliency peaks (compatibility; as in the authors' code the
threshold gates A's columns: ``((A @ load > thres) * A) @ load``). After round ``niter - 1`` a
penalty separates outputs that use the same set of inputs. Images and labels mix by the
assignment: label weights are the fractions of each output's pixels from each input.

Defaults are the authors' CIFAR-100 command (README, ``main.py``): ``part`` 20, grid 4
(``--m_block_num``), ``beta`` 0.32, ``gamma`` 1.0, ``thres`` 0.83, ``eta`` 0.05, ``omega`` 0.001,
``niter`` 4, ``set_resolve`` on, and ``clean_lam`` 1.0: the clean batch's loss, from the saliency
forward (train mode), is added to the mixed loss. Their Dirichlet concentration ``--mixup_alpha``
is 2.0; here it is the run's ``alpha`` (the paper's 1.0 unless set). Only the hard threshold is
implemented (``--m_thres_type hard``, their default).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from types import ModuleType
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
    _check_images,
    _check_labels,
    batch_lam_only,
    sample_grid,
)
from rlmix.saliency import input_saliency, pool_saliency

__all__ = ["CoMixup", "ComixupParams", "comixup_assign", "comixup_objective"]

_PAIR_DISCOUNT = 5e-4  # a mixed label is this much cheaper than the mean of its two inputs
_PAIR_COST = 0.25  # smoothness cost between a mixed label and either of its inputs


def comixup_objective(
    cost: torch.Tensor, mask: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """The Co-Mixup objective (without the threshold) of an assignment ``mask`` (n_out, g, g,
    n_in) for unary costs ``cost`` (n_in, g, g), with ``beta`` and ``gamma`` already divided by
    the number of cells (as :func:`comixup_assign` uses them)."""
    unary = (cost.permute(1, 2, 0)[None] * mask).sum()
    smooth = (mask[:, 1:] - mask[:, :-1]).pow(2).sum() + (mask[:, :, 1:] - mask[:, :, :-1]).pow(
        2
    ).sum()
    counts = mask.sum(dim=(1, 2))  # (n_out, n_in)
    diversity = counts.sum(dim=0).pow(2).sum() - counts.pow(2).sum()
    return unary + beta / 2 * smooth + gamma * diversity


def _cut_output(
    gco: ModuleType, unary: np.ndarray, count: torch.Tensor, beta: float, pairs: bool
) -> np.ndarray:
    """A new labelling (g, g, n) of one output by a graph cut over the unary costs (g, g, n)
    float32; with ``pairs``, the 50/50 mixes of the inputs the output uses (its two, or its
    three most used by ``count``) are offered as extra labels. NumPy inside: the hundreds of
    cuts a batch are small, and torch's per-call overhead dominated them."""
    g, _, n = unary.shape
    used = (count > 0).nonzero().flatten()
    if pairs and len(used) >= 3:
        used = used[count[used].topk(3).indices].sort().values
    chosen_pairs = list(combinations(used.tolist(), 2)) if pairs and len(used) in (2, 3) else []
    extra = [0.5 * unary[:, :, a] + 0.5 * unary[:, :, b] - _PAIR_DISCOUNT for a, b in chosen_pairs]
    labels = n + len(chosen_pairs)
    label_cost = 1.0 - np.eye(labels, dtype=np.float32)
    for p, pair in enumerate(chosen_pairs, start=n):
        label_cost[p, pair] = label_cost[pair, p] = _PAIR_COST
    edges_v = np.full((g - 1, g), beta, dtype=np.float32)
    edges_h = np.full((g, g - 1), beta, dtype=np.float32)
    full = np.concatenate([unary, *(e[:, :, None] for e in extra)], axis=2, dtype=np.float32)
    chosen = cut_grid(gco, full, label_cost, edges_v, edges_h)
    share = np.zeros((labels, n), dtype=np.float32)  # each label's share of each input
    share[np.arange(n), np.arange(n)] = 1.0
    for p, pair in enumerate(chosen_pairs, start=n):
        share[p, pair] = 0.5
    return share[chosen]


def _separate_duplicates(mask: torch.Tensor) -> torch.Tensor:
    """Extra costs (n_out, n_in): for two outputs using the same set of two or more inputs,
    the first pays 1 for the set's first input, the second for its second."""
    used = (mask.sum(dim=(1, 2)) > 0).to(mask.dtype)
    extra = torch.zeros_like(used)
    same = torch.triu((used[:, None] - used[None]).abs().sum(dim=2) == 0, diagonal=1)
    for o1, o2 in same.nonzero().tolist():
        inputs = used[o1].nonzero().flatten()
        if len(inputs) > 1:
            extra[o1, inputs[0]] = 1.0
            extra[o2, inputs[1]] = 1.0
    return extra


def comixup_assign(
    saliency: torch.Tensor,
    prior: torch.Tensor,
    compat: torch.Tensor,
    init: torch.Tensor,
    *,
    beta: float = 0.32,
    gamma: float = 1.0,
    eta: float = 0.05,
    thres: float = 0.83,
    niter: int = 4,
    set_resolve: bool = True,
) -> torch.Tensor:
    """Co-Mixup's assignment (n, g, g, n): output o's share of input j in each cell.

    Args:
        saliency: each input's pooled saliency (n, g, g), each map summing to 1.
        prior: the Dirichlet draw over the inputs (n,).
        compat: the compatibility matrix A (n, n).
        init: the random initial labelling (n, g, g) long, input indices.
        beta, gamma, eta, thres: the authors' ``--m_beta``, ``--m_gamma``, ``--m_eta``,
            ``--m_thres`` (per cell: beta, gamma and eta are divided by g**2, thres multiplied).
        niter: rounds over the outputs (``--m_niter``), fewer when the objective settles.
        set_resolve: separate outputs that use the same inputs (``--set_resolve``).
    """
    gco = load_gco("comixup")
    n, g, _ = saliency.shape
    cells = g * g
    beta, gamma, eta, thres = beta / cells, gamma / cells, eta / cells, thres * cells
    cost = -saliency.float() - eta * torch.log(prior.float() + 1e-8)[:, None, None]
    compat = compat.float()
    mask = F.one_hot(init.long(), n).float()
    best = comixup_objective(cost, mask, beta, gamma)
    load = mask.sum(dim=(0, 1, 2))  # each input's cells over all outputs
    extra: torch.Tensor | None = None
    for round_ in range(niter):
        for o in range(n):
            count = mask[o].sum(dim=(0, 1))
            load = load - count
            # The authors' expression: their `(A @ l > t).float() * A @ l` groups as
            # `((A @ l > t) * A) @ l`, the threshold gating A's columns.
            over = (compat @ load > thres).float()
            penalty = 2 * gamma * (over[None, :] * compat) @ load
            unary = cost + penalty[:, None, None]
            if extra is not None:
                unary = unary + gamma * extra[o][:, None, None]
            cut = _cut_output(gco, unary.permute(1, 2, 0).cpu().numpy(), count, beta, round_ > 0)
            mask[o] = torch.from_numpy(cut).to(mask.device)
            load = load + mask[o].sum(dim=(0, 1))
        if set_resolve and round_ == niter - 2:
            extra = _separate_duplicates(mask)
        value = comixup_objective(cost, mask, beta, gamma)
        if (best - value).abs() / value.abs() < 1e-6:
            break
        best = value
    return mask


def peak_distance(saliency: torch.Tensor) -> torch.Tensor:
    """L1 distance (B, B) between the images' saliency peaks: the argmax of each map (B, H, W)
    average-pooled with a window of a quarter of the side, stride 1 (8 at 32x32, as the
    authors)."""
    b, h, w = saliency.shape
    window = max(1, min(h, w) // 4)
    pooled = F.avg_pool2d(saliency[:, None].float(), window, stride=1)[:, 0]
    peak = pooled.reshape(b, -1).argmax(dim=1)
    where = torch.stack((peak // pooled.shape[-1], peak % pooled.shape[-1]), dim=1).float()
    return (where[:, None] - where[None]).abs().sum(dim=2)


@dataclass(frozen=True)
class ComixupParams(MixParams):
    """Co-Mixup's draws: per partition, a Dirichlet prior over its inputs and a random initial
    labelling. ``lam`` is 1 and ``perm`` the identity (Co-Mixup has no pairwise partner).

    Attributes:
        prior: the partitions' Dirichlet draws, concatenated (B,) float64.
        init: initial labellings (B, g, g) long, input indices within the partition.
    """

    prior: torch.Tensor | None = None
    init: torch.Tensor | None = None


@MIXERS.register("comixup")
class CoMixup(Mixer):
    """Co-Mixup as a mixer: ``sample`` draws the grid side, then per partition the Dirichlet
    prior (concentration ``alpha``) and the initial labelling; ``apply`` takes the clean batch's
    ``saliency`` (B, H, W), solves each partition (:func:`comixup_assign`) and mixes.

    The drop-in call is ``comix(model, x, y)`` (the saliency pass in train mode with
    ``clean_lam`` > 0, eval mode otherwise, as the authors). The training engine adds
    ``clean_lam`` times the clean batch's loss to the mixed loss.

    Args:
        num_classes: as :class:`rlmix.mixing.Mixer`, whose keywords it takes (``alpha`` is the
            Dirichlet concentration; ``lam_mode`` must be ``batch``).
        part: partition size (``--m_part``) [20].
        block_nums: grid sides drawn per batch (``--m_block_num``) [4].
        beta, gamma, eta, thres, niter, set_resolve: see :func:`comixup_assign`.
        omega: weight of the saliency-peak distances in A (``--m_omega``) [0.001].
        clean_lam: weight of the clean-batch loss (``--clean_lam``) [1.0].
    """

    needs_saliency = True

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        part: int = 20,
        block_nums: tuple[int, ...] = (4,),
        beta: float = 0.32,
        gamma: float = 1.0,
        eta: float = 0.05,
        thres: float = 0.83,
        omega: float = 0.001,
        niter: int = 4,
        set_resolve: bool = True,
        clean_lam: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        batch_lam_only("comixup", self.lam_mode)
        if isinstance(part, bool) or not isinstance(part, int) or part < 2:
            raise ValueError(f"part must be an integer >= 2, got {part!r}")
        if isinstance(niter, bool) or not isinstance(niter, int) or niter < 1:
            raise ValueError(f"niter must be a positive integer, got {niter!r}")
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("thres", thres),
                            ("clean_lam", clean_lam)):  # fmt: skip
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= omega <= 1.0:
            raise ValueError(f"omega must be in [0, 1], got {omega}")
        load_gco("comixup")
        self.part = part
        self.block_nums = _check_grids(block_nums)
        self.solver = {"beta": beta, "gamma": gamma, "eta": eta, "thres": thres,
                       "niter": niter, "set_resolve": set_resolve}  # fmt: skip
        self.omega = omega
        self.clean_lam = clean_lam
        self.saliency_mode = "train" if clean_lam > 0 else "eval"

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ComixupParams:
        b, _, h, w = _check_images(x)
        gen = self._stream(generator)
        device = gen.device if gen is not None else None
        grids = [g for g in self.block_nums if h % g == 0 and w % g == 0]
        if not grids:
            raise ValueError(f"no block_num in {self.block_nums} divides the image size {h}x{w}")
        g = sample_grid(grids, gen)
        priors, inits = [], []
        for start in range(0, b, self.part):
            n = min(self.part, b - start)
            conc = torch.full((n,), self.alpha, dtype=torch.float64, device=device)
            gammas = torch._standard_gamma(conc, generator=gen)
            priors.append(gammas / gammas.sum().clamp_min(torch.finfo(torch.float64).tiny))
            inits.append(torch.randint(n, (n, g, g), generator=gen, device=device))
        return ComixupParams(
            1.0,
            torch.arange(b, device=x.device),
            grid=g,
            prior=torch.cat(priors),
            init=torch.cat(inits),
        )

    def apply(self, x, y, params, *, saliency: torch.Tensor | None = None, **inputs):
        if not isinstance(params, ComixupParams):
            raise TypeError("CoMixup.apply needs ComixupParams from CoMixup.sample")
        b, c, h, w = _check_images(x)
        _check_labels(y, b)
        if saliency is None or saliency.shape != (b, h, w):
            raise ValueError(f"comixup needs the clean batch's saliency of shape {(b, h, w)}")
        g = params.grid
        sal = pool_saliency(saliency.float(), g).cpu()
        distance = peak_distance(saliency).cpu()
        weights = torch.zeros(b, b, g, g)
        for start in range(0, b, self.part):
            part = slice(start, min(start + self.part, b))
            n = part.stop - start
            if n == 1:  # a lone image has no one to mix with
                weights[start, start] = 1.0
                continue
            d = distance[part, part]
            d = d / d.sum() * n if d.sum() > 0 else d
            compat = (1 - self.omega) * torch.eye(n) + self.omega * d
            mask = comixup_assign(
                sal[part], params.prior[part].cpu(), compat, params.init[part].cpu(), **self.solver
            )
            weights[part, part] = mask.permute(0, 3, 1, 2)
        weights = weights.to(device=x.device)
        cells = x.reshape(b, c, g, h // g, g, w // g)
        x_mix = torch.einsum("ijab,jcaubv->icaubv", weights.to(x.dtype), cells).reshape(x.shape)
        share = weights.double().mean(dim=(2, 3)).to(y.device)  # (B, B): fractions of pixels
        y_dtype = torch.promote_types(y.dtype, torch.float32)
        return x_mix, (share.to(y_dtype) @ y.to(y_dtype)).to(y.dtype)

    def __call__(  # type: ignore[override]
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix images (B, C, H, W) with labels (B,) long or (B, N) soft."""
        soft = self.soft_labels(y, x.dtype)
        saliency, _ = input_saliency(model, x, y, mode=self.saliency_mode)
        return self.apply(x, soft, self.sample(x), saliency=saliency)
