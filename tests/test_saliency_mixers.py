"""The paper's comparison set (issue 30): SaliencyMix, PuzzleMix, Co-Mixup, Manifold Mixup.

Grouped per mixer, on fixed inputs (CPU, seconds). PuzzleMix and Co-Mixup need gco-wrapper
(``rlmix[graphcut]``); their tests skip, saying so, when it is absent.
"""

import importlib.util
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

import agents  # noqa: F401  (registers the frozen-agent policy "agent")
from baselines import list_policies, policy_mixer
from rlmix.errors import ConfigError
from rlmix.mixers import (
    CoMixup,
    ComixupParams,
    ManifoldMixup,
    ManifoldParams,
    SaliencyMix,
    SaliencyMixParams,
    comixup_assign,
    comixup_objective,
    fine_grained_saliency,
    model_stages,
    puzzlemix,
    puzzlemix_mask,
    saliency_box,
    transport_plan,
)
from rlmix.mixers.graphcut import cut_grid
from rlmix.mixing import MixParams, create_mixer, list_mixers, one_hot
from rlmix.train import train_fixed
from rlmix.trainer import Trainer

HAS_GCO = importlib.util.find_spec("gco") is not None
needs_gco = pytest.mark.skipif(
    not HAS_GCO, reason="gco-wrapper is not installed (pip install 'rlmix[graphcut]')"
)
NEW = ("saliencymix", "puzzlemix", "comixup", "manifold_mixup")


def _batch(b=4, side=8, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, side, side, generator=gen)
    labels = torch.arange(b) % n
    return x, one_hot(labels, n), labels


# -- registry and common validation ---------------------------------------------------------------


def test_registered_as_mixers_and_fixed_policies():
    assert set(NEW) <= set(list_mixers())
    assert set(NEW) <= set(list_policies())
    assert [policy_mixer(p) for p in NEW] == list(NEW)


@pytest.mark.parametrize(
    "name", ["saliencymix", "manifold_mixup"] + ["puzzlemix", "comixup"] * HAS_GCO
)
def test_elem_lam_mode_and_unknown_options_are_refused(name):
    with pytest.raises(ValueError, match=rf"{name} draws its mixing parameters once per batch"):
        create_mixer(name, lam_mode="elem")
    with pytest.raises(TypeError, match=rf"mixer '{name}' has no option 'bogus'; its options: "):
        create_mixer(name, bogus=1)


def test_rmix_settings_reach_only_the_mixers_that_take_them():
    assert create_mixer("saliencymix", k=5, grids=[2], saliency_mode="eval", seed=0).prob == 0.5


# -- SaliencyMix ----------------------------------------------------------------------------------


def _dot_image(side=32, row=20, col=6, value=1.0):
    x = torch.full((1, 3, side, side), 0.1)
    x[0, :, row : row + 2, col : col + 2] = value
    return x


def test_fine_grained_saliency_is_zero_on_a_flat_image():
    assert torch.equal(
        fine_grained_saliency(torch.full((2, 3, 16, 16), 0.4)), torch.zeros(2, 16, 16)
    )


def test_fine_grained_saliency_peaks_on_a_bright_dot():
    sal = fine_grained_saliency(_dot_image())[0]
    assert sal.max() == 255 and sal.min() == 0
    row, col = divmod(int(sal.flatten().argmax()), 32)
    assert (row, col) == (20, 6)  # the dot's first pixel: its brightest after the 1-2-1 blurs


def test_saliency_box_is_centred_on_the_peak_with_cutmix_sides():
    # lam 0.75: sides int(32 * 0.5) = 16, half 8 around the peak (20, 6), clipped at the left.
    assert saliency_box(_dot_image()[0], 0.75) == (12, 28, 0, 14)


def test_saliencymix_pastes_the_partner_box_and_weighs_labels_by_area():
    x, y, _ = _batch(b=3, side=32)
    x[2] = _dot_image()[0]
    perm = torch.tensor([2, 0, 1])
    params = SaliencyMixParams(0.75, perm, active=True)
    x_mix, y_mix = SaliencyMix(seed=0).apply(x, y, params)
    top, bottom, left, right = 12, 28, 0, 14
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert torch.equal(x_mix[:, :, inside], x[perm][:, :, inside])
    assert torch.equal(x_mix[:, :, ~inside], x[:, :, ~inside])
    share = inside.float().mean()  # 16 * 14 / 1024
    torch.testing.assert_close(y_mix, (1 - share) * y + share * y[perm])
    torch.testing.assert_close(y_mix.sum(1), torch.ones(3))


def test_saliencymix_inactive_batch_trains_clean_and_draws_are_seeded():
    x, y, _ = _batch(b=4, side=16)
    clean = SaliencyMixParams(1.0, torch.tensor([1, 2, 3, 0]), active=False)
    assert SaliencyMix(seed=0).apply(x, y, clean) == (x, y)
    a, b = (SaliencyMix(seed=3).sample(x) for _ in range(2))
    assert (a.active, a.lam) == (b.active, b.lam) and torch.equal(a.perm, b.perm)
    outs = [SaliencyMix(seed=s).sample(x) for s in range(8)]
    assert {p.active for p in outs} == {True, False}  # prob 0.5 over 8 seeds: both occur
    assert SaliencyMix(prob=0.0, seed=0).sample(x).active is False


def test_saliencymix_validation():
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1.5"):
        SaliencyMix(prob=1.5)
    with pytest.raises(TypeError, match=r"SaliencyMix.apply needs SaliencyMixParams"):
        SaliencyMix(seed=0).apply(*_batch()[:2], MixParams(0.5, torch.arange(4)))
    with pytest.raises(ValueError, match=r"fine-grained saliency needs 1- or 3-channel images"):
        fine_grained_saliency(torch.zeros(1, 2, 8, 8))


# -- PuzzleMix ------------------------------------------------------------------------------------


def _halves(side=4):
    """Two flat images (0.2 and 0.8) whose saliency sits in the left / right half."""
    x = torch.stack([torch.full((3, side, side), 0.2), torch.full((3, side, side), 0.8)])
    sal = torch.zeros(2, side, side)
    sal[0, :, : side // 2] = 1.0
    sal[1, :, side // 2 :] = 1.0
    return x, sal


@needs_gco
def test_puzzlemix_without_transport_is_its_graph_cut_mask_mix():
    x, sal = _halves()
    y = torch.eye(2)
    perm = torch.tensor([1, 0])
    mask = puzzlemix_mask(x, sal, 0.5, perm, 2, gamma=0.0)
    # Each image keeps the half where it is salient and shows its partner's salient half.
    torch.testing.assert_close(
        mask, torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    )
    x_mix, y_mix = puzzlemix(x, y, sal, 0.5, perm, 2, gamma=0.0, transport=False)
    expected = torch.empty_like(x)
    expected[0, :, :, :2], expected[0, :, :, 2:] = 0.2, 0.8
    expected[1] = expected[0]
    torch.testing.assert_close(x_mix, expected)
    torch.testing.assert_close(y_mix, torch.full((2, 2), 0.5))


@needs_gco
def test_puzzlemix_prior_follows_lam():
    x, sal = _halves()
    uniform = torch.ones(2, 4, 4)  # no saliency preference: the prior decides
    perm = torch.tensor([1, 0])
    assert torch.equal(puzzlemix_mask(x, uniform, 0.95, perm, 2), torch.ones(2, 2, 2))
    assert torch.equal(puzzlemix_mask(x, uniform, 0.05, perm, 2), torch.zeros(2, 2, 2))


def test_transport_plan_hand_checked():
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # only block 0 is shown
    sal = torch.tensor([[[0.1, 0.0], [0.0, 0.9]]])
    plan = transport_plan(mask, sal, eps=0.1)
    # Block 3 (saliency 0.9) beats block 0 for destination 0 (cost 0.2 - 0.9 < -0.1). As in the
    # authors' code a destination whose choosers all cost >= 0 is won by nobody (the minimum of
    # plan * cost meets the zeros of the blocks that did not choose it), so blocks 0, 1 and 2,
    # which stay in unshown places at cost 0 or move at a positive cost, win nothing.
    expected = torch.zeros(1, 4, 4)
    expected[0, 3, 0] = 1.0
    assert torch.equal(plan, expected)


def _dense_transport_plan(mask, saliency, eps):
    """The authors' formulation, on the dense (B, n**2, n**2) product of picks and costs."""
    import torch.nn.functional as F

    from rlmix.mixers.puzzlemix import _grid_distance

    b, n, _ = mask.shape
    cells = n * n
    shown = (mask > 0).to(saliency.dtype).reshape(b, 1, cells)
    cost = eps * _grid_distance(n) - saliency.reshape(b, cells, 1) * shown
    won = torch.zeros_like(cost)
    for _ in range(n):
        choice = F.one_hot(cost.argmin(dim=2), cells).to(cost.dtype)
        winner = (choice * cost).argmin(dim=1)
        won = F.one_hot(winner, cells).transpose(1, 2).to(cost.dtype) * choice
        cost = cost + (choice - won)
    return won


@pytest.mark.parametrize("side", [2, 4, 8, 16])
def test_transport_plan_equals_the_dense_formulation_ties_included(side):
    g = torch.Generator().manual_seed(side)
    for trial in range(24):
        mask = (torch.rand(5, side, side, generator=g) > 0.5).float()
        if trial % 3 == 0:  # few distinct values: ties among pickers and with the zeros
            sal = torch.randint(0, 3, (5, side, side), generator=g).float() / 4
        else:
            sal = torch.rand(5, side, side, generator=g)
        eps = (0.8, 0.0, 0.3)[trial % 3]
        assert torch.equal(transport_plan(mask, sal, eps), _dense_transport_plan(mask, sal, eps))


@needs_gco
def test_puzzlemix_labels_are_mask_fractions_and_transport_moves_whole_blocks():
    x, y, _ = _batch(b=4, side=16)
    sal = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([3, 0, 1, 2])
    opts = {"neigh_size": 2, "t_size": 4}
    mask = puzzlemix_mask(x, sal, 0.4, perm, 4, neigh_size=2)
    x_mix, y_mix = puzzlemix(x, y, sal, 0.4, perm, 4, **opts)
    share = mask.mean(dim=(1, 2))
    torch.testing.assert_close(y_mix, share[:, None] * y + (1 - share[:, None]) * y[perm])
    torch.testing.assert_close(y_mix.sum(1), torch.ones(4))
    blocks = x.reshape(4, 3, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(4, 16, -1)
    mixed = x_mix.reshape(4, 3, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(4, 16, -1)
    for i in range(4):
        shown = mask[i].flatten() == 1  # blocks wholly from image i: some block of image i
        sources = [int((blocks[i] - mixed[i, d]).abs().sum(1).argmin()) for d in shown.nonzero()]
        for d, s in zip(shown.nonzero().flatten().tolist(), sources, strict=True):
            assert torch.equal(mixed[i, d], blocks[i, s])
        assert len(set(sources)) == len(sources)  # no block used twice


@needs_gco
def test_puzzlemix_mixer_is_seeded_and_follows_the_authors_saliency_mode():
    x, y, labels = _batch(b=4, side=16)
    sal = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(2))
    outs = []
    for _ in range(2):
        mixer = create_mixer("puzzlemix", seed=5, block_nums=(2, 4))
        outs.append(mixer.apply(x, y, mixer.sample(x), saliency=sal))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert (mixer.saliency_mode, mixer.clean_lam) == ("eval", 0.0)
    assert create_mixer("puzzlemix", clean_lam=1.0).saliency_mode == "train"
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    x_mix, y_mix = create_mixer("puzzlemix", num_classes=3, seed=0)(model, x, labels)
    assert x_mix.shape == x.shape and torch.allclose(y_mix.sum(1), torch.ones(4))


@needs_gco
def test_puzzlemix_validation():
    with pytest.raises(ValueError, match=r"n_labels must be >= 2, got 1"):
        create_mixer("puzzlemix", n_labels=1)
    with pytest.raises(ValueError, match=r"puzzlemix needs the clean batch's saliency"):
        mixer = create_mixer("puzzlemix", seed=0)
        mixer.apply(*_batch(side=16)[:2], mixer.sample(_batch(side=16)[0]))
    with pytest.raises(ValueError, match=r"no block_num in \(16,\) divides the image side 8"):
        create_mixer("puzzlemix", block_nums=(16,)).sample(_batch()[0])


def test_missing_gco_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gco", None)
    for name in ("puzzlemix", "comixup"):
        with pytest.raises(
            ImportError,
            match=rf"{name} solves graph cuts with gco-wrapper, which is not installed: pip install 'rlmix\[graphcut\]'",
        ):
            create_mixer(name)


# -- the shared graph cut -------------------------------------------------------------------------


@needs_gco
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize(("h", "w", "labels"), [(2, 2, 2), (4, 4, 5), (8, 6, 3)])
def test_cut_grid_equals_gco_wrappers_own_grid_cut(dtype, h, w, labels):
    import gco

    rng = np.random.default_rng(h * w * labels)
    scale = 1 if dtype is np.float32 else 1000
    most_labels = 0
    for _ in range(20):
        unary = (rng.random((h, w, labels)) * scale).astype(dtype)
        label_cost = (1.0 - np.eye(labels, dtype=np.float32)) * rng.choice([0.25, 1.0])
        label_cost = np.maximum(label_cost, label_cost.T)
        edge_v = (rng.random((h - 1, w)) * 0.6 * scale).astype(dtype)
        edge_h = (rng.random((h, w - 1)) * 0.6 * scale).astype(dtype)
        if dtype is np.int32:
            label_cost = (label_cost * 4).astype(np.int32)
        ours = cut_grid(gco, unary, label_cost, edge_v, edge_h)
        theirs = gco.cut_grid_graph(unary, label_cost, edge_v, edge_h, algorithm="swap")
        np.testing.assert_array_equal(ours, theirs.reshape(h, w))
        most_labels = max(most_labels, len(np.unique(ours)))
    assert most_labels > 1  # the cases are not all one label


# -- Co-Mixup -------------------------------------------------------------------------------------


def _brute_force(cost, beta, gamma, n, g):
    best = math.inf
    for labels in itertools.product(range(n), repeat=n * g * g):
        mask = torch.nn.functional.one_hot(torch.tensor(labels).reshape(n, g, g), n).float()
        best = min(best, float(comixup_objective(cost, mask, beta, gamma)))
    return best


@needs_gco
@pytest.mark.parametrize("gamma", [1.0, 0.1])  # pure outputs win / identical mixed outputs win
def test_comixup_assignment_equals_the_brute_force_optimum(gamma):
    n, g = 2, 2
    sal = torch.zeros(n, g, g)
    sal[0, :, 0] = sal[1, :, 1] = 0.5  # input 0 salient on the left, input 1 on the right
    prior = torch.tensor([0.5, 0.5])
    init = torch.zeros(n, g, g, dtype=torch.long)
    opts = {"beta": 0.32, "gamma": gamma, "eta": 0.05, "thres": 0.0, "set_resolve": False}
    mask = comixup_assign(sal, prior, torch.eye(n), init, **opts)
    cells = g * g
    cost = -sal - 0.05 / cells * torch.log(prior + 1e-8)[:, None, None]
    got = float(comixup_objective(cost, mask, 0.32 / cells, gamma / cells))
    assert set(mask.unique().tolist()) == {0.0, 1.0}  # a hard assignment
    assert got == pytest.approx(_brute_force(cost, 0.32 / cells, gamma / cells, n, g), abs=1e-6)
    pure = torch.equal(
        mask.sum(dim=(1, 2)).sort(dim=0).values, torch.tensor([[0.0, 0.0], [4.0, 4.0]])
    )
    assert pure == (gamma == 1.0)


@needs_gco
def test_comixup_pixels_and_labels_follow_the_assignment():
    x, y, labels = _batch(b=6, side=8, n=6)
    sal = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(4))
    mixer = CoMixup(part=3, seed=0)
    params = mixer.sample(x, torch.Generator().manual_seed(9))
    assert isinstance(params, ComixupParams) and params.grid == 4
    x_mix, y_mix = mixer.apply(x, y, params, saliency=sal)
    torch.testing.assert_close(y_mix.sum(1), torch.ones(6))
    # Every 2x2 cell of an output is its inputs' cell weighted by the output's label weights
    # restricted to that cell: rebuild each cell from the weights the label gives its partition.
    cells_x = x.reshape(6, 3, 4, 2, 4, 2)
    cells_mix = x_mix.reshape(6, 3, 4, 2, 4, 2)
    for o in range(6):
        part = range(0, 3) if o < 3 else range(3, 6)
        assert float(y_mix[o, [j for j in range(6) if j not in part]].abs().sum()) == 0
        for a, b in itertools.product(range(4), range(4)):
            cell = cells_mix[o, :, a, :, b, :]
            fits = [torch.allclose(cell, cells_x[j, :, a, :, b, :]) for j in part]
            pair = any(
                torch.allclose(cell, (cells_x[j, :, a, :, b, :] + cells_x[k, :, a, :, b, :]) / 2)
                for j, k in itertools.combinations(part, 2)
            )
            assert any(fits) or pair
    again = CoMixup(part=3, seed=0).apply(
        x, y, CoMixup(part=3, seed=0).sample(x, torch.Generator().manual_seed(9)), saliency=sal
    )
    assert torch.equal(again[0], x_mix) and torch.equal(again[1], y_mix)


@needs_gco
def test_comixup_validation():
    with pytest.raises(ValueError, match=r"part must be an integer >= 2, got 1"):
        CoMixup(part=1)
    with pytest.raises(ValueError, match=r"omega must be in \[0, 1\], got 2"):
        CoMixup(omega=2)
    mixer = CoMixup(seed=0)
    with pytest.raises(ValueError, match=r"comixup needs the clean batch's saliency of shape"):
        mixer.apply(*_batch(side=8)[:2], mixer.sample(_batch(side=8)[0]))


# -- Manifold Mixup -------------------------------------------------------------------------------


class TwoStage(nn.Module):
    """Two linear stages and a head, exposing ``stages`` (the protocol)."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.s1, self.s2, self.head = (nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, 3))
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen)
        self.stages = [self.s1, self.s2]

    def forward(self, x):
        return self.head(self.s2(self.s1(x.flatten(1))))


def test_manifold_mixup_mixes_the_chosen_stage_output():
    model = TwoStage()
    x, y, _ = _batch(b=4, side=2)
    perm = torch.tensor([2, 3, 0, 1])
    mixer = ManifoldMixup(seed=0)
    params = ManifoldParams(0.3, perm, layer=1)
    x_in, y_mix = mixer.apply(x, y, params)
    assert x_in is x
    torch.testing.assert_close(y_mix, 0.3 * y + 0.7 * y[perm])
    with mixer.forward_context(model, params):
        logits = model(x_in)
    h = model.s1(x.flatten(1))
    torch.testing.assert_close(logits, model.head(model.s2(0.3 * h + 0.7 * h[perm])))
    torch.testing.assert_close(model(x), model.head(model.s2(h)))  # the hook is gone


def test_manifold_mixup_layer_zero_is_input_mixup_and_draws_are_seeded():
    x, y, _ = _batch()
    perm = torch.tensor([1, 0, 3, 2])
    x_mix, y_mix = ManifoldMixup(seed=0).apply(x, y, ManifoldParams(0.25, perm, layer=0))
    torch.testing.assert_close(x_mix, 0.25 * x + 0.75 * x[perm])
    layers = [ManifoldMixup(seed=s).sample(x).layer for s in range(12)]
    assert set(layers) == {0, 1, 2}
    assert [ManifoldMixup(seed=s).sample(x).layer for s in range(12)] == layers


def test_builtin_models_expose_their_stages():
    from rlmix.models import create_model

    assert len(model_stages(create_model("preactresnet18", 10))) == 4
    assert len(model_stages(create_model("resnet_tiny", 10))) == 3
    model = create_model("resnet_tiny", 3)
    logits, y_mix = ManifoldMixup(num_classes=3, seed=1)(
        model, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    )
    assert logits.shape == (4, 3) and torch.allclose(y_mix.sum(1), torch.ones(4))


def test_manifold_mixup_names_what_a_model_lacks():
    with pytest.raises(
        ValueError,
        match=r"manifold_mixup mixes hidden states, but the model Linear has no `stages`",
    ):
        ManifoldMixup().check_model(nn.Linear(2, 2))
    with pytest.raises(
        ValueError, match=r"manifold_mixup layer 3 is past the last of the 2 stages of TwoStage"
    ):
        ManifoldMixup(layers=(0, 3)).check_model(TwoStage())
    with pytest.raises(ValueError, match=r"layers must be a non-empty sequence of integers >= 0"):
        ManifoldMixup(layers=())


# -- through the environment ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [pytest.param(p, marks=needs_gco if p in ("puzzlemix", "comixup") else ()) for p in NEW],
)
def test_fixed_policy_trains_one_epoch_through_the_env(policy, tiny_config):
    cfg = tiny_config(policy=policy, epochs=1, **{"env.eval_fgsm": False})
    metrics = train_fixed(cfg, progress=False)
    assert len(metrics["epochs"]) == 1 and np.isfinite(metrics["epochs"][0]["train_loss"])
    assert 0 <= metrics["final"]["top1"] <= 1


@needs_gco
def test_comixup_adds_the_clean_batch_loss_to_the_step(tiny_config):
    updates = {}
    for clean_lam in (0.0, 1.0):
        cfg = tiny_config(**{"mix.mixer": "comixup", "mix.options": {"clean_lam": clean_lam}})
        t = Trainer(cfg)
        t.begin_epoch()
        batch = t.observe(saliency=True)
        assert (batch.clean_loss is not None) == (clean_lam > 0)
        before = [p.detach().clone() for p in t.model.parameters()]
        x_mix, y_mix, params = t.mix(batch, None)
        t.train_step(x_mix, y_mix, params=params, clean_loss=batch.clean_loss)
        updates[clean_lam] = torch.cat(
            [(p - b).flatten() for p, b in zip(t.model.parameters(), before, strict=True)]
        )
    assert not torch.allclose(updates[0.0], updates[1.0])


def test_engine_errors_are_config_errors(tiny_config, monkeypatch):
    with pytest.raises(
        ConfigError,
        match=r"config key 'mix.mixer': manifold_mixup mixes hidden states, but the model 'tests.user_model_fixtures:small_cnn' \(SmallNet\) has no `stages`",
    ):
        Trainer(
            tiny_config(
                **{
                    "mix.mixer": "manifold_mixup",
                    "model.name": "tests.user_model_fixtures:small_cnn",
                }
            )
        )
    with pytest.raises(
        ConfigError, match=r"config key 'mix.options': mixer 'rmix' has no option 'clean_lam'"
    ):
        Trainer(tiny_config(**{"mix.options": {"clean_lam": 1.0}}))
    monkeypatch.setitem(sys.modules, "gco", None)
    with pytest.raises(
        ConfigError,
        match=r"config key 'mix.mixer': puzzlemix solves graph cuts with gco-wrapper, which is not installed: pip install 'rlmix\[graphcut\]'",
    ):
        Trainer(tiny_config(**{"mix.mixer": "puzzlemix"}))
