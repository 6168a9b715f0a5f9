"""agents.LearnedMix: RL-Mix learning inside a plain training loop.

The equality tests build a loop from rlmix's own data, model, optimiser and schedule and check
that it trains exactly as ``rlmix.train_agent`` does on the same seed: the same per-epoch rows
(rewards, gains, policy diagnostics, test metrics) and the same policy weights, bit for bit.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from agents import AgentMix, LearnedMix
from agents.serialize import read_agent
from rlmix.config import load_config
from rlmix.data.pipeline import build_loaders
from rlmix.errors import ConfigError, RlmixError
from rlmix.losses import soft_ce
from rlmix.metrics import collect, summarize
from rlmix.models import create_model
from rlmix.optim import build_optimizer
from rlmix.train_agent import train_agent


def _parts(cfg):
    """rlmix's own loaders, model, optimiser and schedule for ``cfg`` (what a user's loop
    would build from them)."""
    loaders = build_loaders(
        cfg.data,
        batch_size=cfg.trainer.batch_size,
        seed=cfg.seed,
        device=torch.device("cpu"),
        localization=cfg.env.eval_localization,
    )
    info = loaders.info
    torch.manual_seed(cfg.seed)
    model = create_model(
        cfg.model.name,
        info.num_classes,
        mean=info.mean,
        std=info.std,
        image_size=info.image_size,
        in_chans=info.channels,
        **cfg.model.options,
    )
    total = cfg.trainer.epochs * len(loaders.train)
    optimizer, scheduler = build_optimizer(model, cfg.trainer, total)
    return loaders, model, optimizer, scheduler


def _plain_loop(cfg, *, epoch_ends: bool = False):
    """The loop of the README: mix, your own step, observe; evaluated like the env."""
    loaders, model, optimizer, scheduler = _parts(cfg)
    spe = len(loaders.train)
    mix = LearnedMix(
        loaders.info.num_classes,
        config=cfg,
        steps_per_epoch=None if epoch_ends else spe,
        total_steps=cfg.trainer.epochs * spe,
        optimizer=optimizer,
    )
    rows = []
    for epoch in range(cfg.trainer.epochs):
        loaders.train.set_epoch(epoch)
        for x, y in loaders.train:
            x_mix, y_mix = mix(model, x, y)
            logits = model(x_mix)
            loss = soft_ce(logits, y_mix)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            mix.observe(logits)
        if epoch_ends:
            mix.end_epoch()
        records = collect(model, loaders.test, fgsm=cfg.env.eval_fgsm)
        metrics = summarize([records], fgsm=cfg.env.eval_fgsm)
        rows.append({**mix.history[-1], **{k: float(v) for k, v in metrics.items()}})
    return mix, rows, model


EQUALITY = {
    # the embedded default: teach, partner-aware, one rollout an epoch, counterfactual every step
    "default": {},
    # rollouts that end mid-epoch and wait for the next observation (gamma > 0), the paper's
    # observation, a reward read from the training backward, the counterfactual every 2nd step
    "mid-epoch": {
        "agent.n_steps": 2,
        "agent.gamma": 0.5,
        "env.partner_first": False,
        "env.reward": "grad_cosine_mean",
        "env.counterfactual_every": 2,
        "mix.lam_mode": "elem",
    },
}


@pytest.mark.parametrize("variant", list(EQUALITY))
def test_a_plain_loop_trains_exactly_as_train_agent(variant, data_root, tmp_path):
    cfg = load_config(
        None,
        {
            "epochs": 2,
            "out": str(tmp_path / "agent"),
            "data.root": data_root,
            "data.options.test_size": 300,
            "env.eval_every": 1,
            "env.counterfactual_every": 1,  # train_agent's when unset (the mixer's is 10)
            **EQUALITY[variant],
        },
    )
    metrics = train_agent(cfg, progress=False)
    mix, rows, _ = _plain_loop(cfg)
    assert rows == metrics["epochs"]  # every reward, gain, diagnostic and test metric
    assert {"top1", "ece", "policy_gain", "policy_entropy_frac"} <= set(rows[-1])
    saved = read_agent(tmp_path / "agent" / "agent.zip")["policy"]
    mine = mix.ppo.policy.state_dict()
    assert saved.keys() == mine.keys()
    assert all(torch.equal(saved[k], mine[k]) for k in mine)


@pytest.fixture
def tiny(tiny_config):
    """The tests' tiny config, as the mixer's: teach, partner-aware, 8 steps an epoch."""
    return tiny_config(
        epochs=2,
        eval_fgsm=False,
        **{"env.reward": "teach", "env.partner_first": True, "env.counterfactual_every": 2},
    )


def test_end_epoch_equals_steps_per_epoch(tiny):
    mix_a, rows_a, _ = _plain_loop(tiny)
    mix_b, rows_b, _ = _plain_loop(tiny, epoch_ends=True)
    assert rows_a == rows_b
    a, b = mix_a.ppo.policy.state_dict(), mix_b.ppo.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert mix_a.ppo._n_updates == mix_b.ppo._n_updates > 0


def _batches(n=4, b=10, seed=0, classes=10):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, 3, 32, 32, generator=g), torch.randint(classes, (b,), generator=g)) for _ in range(n)]  # fmt: skip


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("resnet_tiny", 10, image_size=32)


def _steps(mix, model, batches, optimizer=None):
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.05)
    out = []
    for x, y in batches:
        x_mix, y_mix = mix(model, x, y)
        logits = model(x_mix)
        loss = soft_ce(logits, y_mix)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(mix.observe(logits))
    return out


def _small(**overrides):
    return {"agent.n_steps": 3, "agent.batch_size": 16, "agent.n_epochs": 2, **overrides}


def test_the_policy_learns_and_the_callers_random_streams_are_untouched():
    model = _model()
    mix = LearnedMix(10, steps_per_epoch=3, **_small())
    torch.manual_seed(123)
    np.random.seed(7)  # noqa: NPY002
    expected_torch = torch.rand(3)
    expected_numpy = np.random.rand(3)  # noqa: NPY002
    torch.manual_seed(123)
    np.random.seed(7)  # noqa: NPY002
    before = {k: v.clone() for k, v in _small_policy(mix, model).items()}
    _steps(mix, model, _batches(3, seed=1))  # a whole epoch: one PPO update
    assert torch.equal(torch.rand(3), expected_torch)  # PPO sampled from its own stream
    assert np.array_equal(np.random.rand(3), expected_numpy)  # noqa: NPY002
    after = mix.ppo.policy.state_dict()
    assert mix.ppo._n_updates == 2 and mix.epoch == 1  # n_epochs=2 PPO epochs
    assert any(not torch.equal(before[k], after[k]) for k in after)
    row = mix.history[-1]
    assert row["epoch"] == 1.0 and 0 < row["policy_entropy_frac"] <= 1.0
    assert sum(row["q_hist"]) == 30 and np.isfinite(row["policy_gain"])


def _small_policy(mix, model):
    """Build the agent with one step, then return its weights (a copy)."""
    x, y = _batches(1, seed=9)[0]
    x_mix, _ = mix(model, x, y)
    state = {k: v.clone() for k, v in mix.ppo.policy.state_dict().items()}
    mix.observe(model(x_mix))
    return state


@pytest.mark.parametrize("sizes", [[7, 7, 7], [1, 1, 1], [9, 5, 1, 6]])
def test_any_batch_size_including_odd_and_one(sizes):
    model = _model()
    mix = LearnedMix(10, **_small())
    batches = [_batches(1, b=b, seed=i)[0] for i, b in enumerate(sizes)]
    scalars = _steps(mix, model, batches)
    mix.end_epoch()
    assert [len(s) > 0 and np.isfinite(s["reward"]) for s in scalars] == [True] * len(sizes)
    assert mix.ppo._n_updates >= 2  # a batch of another size ends the rollout in progress
    assert mix.history[-1]["epoch"] == 1.0


def test_under_autocast():
    model = _model()
    mix = LearnedMix(10, steps_per_epoch=2, **_small())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in _batches(2, seed=3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_mix, y_mix = mix(model, x, y)
            logits = model(x_mix)
            loss = soft_ce(logits, y_mix)
        assert logits.dtype == torch.bfloat16 and x_mix.dtype == torch.float32
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mix.observe(logits)
    assert mix.ppo._n_updates > 0 and np.isfinite(mix.history[-1]["reward"])


def test_save_loads_as_agent_mix_and_runs_frozen(tiny, tmp_path, tiny_cli_args):
    from rlmix.cli import run_main
    from rlmix.train import main as train_main

    mix, _, _ = _plain_loop(tiny)
    path = mix.save(tmp_path / "agent.zip")
    frozen = AgentMix.load(path, num_classes=10, deterministic=True)
    mine = mix.ppo.policy.state_dict()
    theirs = frozen.policy.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine) and frozen.partner_first
    x, y = _batches(1, b=12, seed=4)[0]
    obs = frozen.observation(
        *_saliency_logits(x, y), progress=0.3, lr_fraction=0.5, params=frozen.sample(x)
    )
    with torch.no_grad():
        probs = mix.ppo.policy.action_probs({k: torch.as_tensor(v) for k, v in obs.items()})
    assert torch.equal(frozen.actions(obs), probs.argmax(dim=1))
    args = [*tiny_cli_args, "--policy", "agent", "--epochs", "1", "--no-progress"]
    args += ["--out", str(tmp_path / "frozen"), "--set", "env.partner_first=true"]
    assert run_main(train_main, [*args, "--set", f"frozen_agent.path={path}"]) == 0


def _saliency_logits(x, y):
    from rlmix.saliency import input_saliency

    return input_saliency(_model(), x, y)


def test_state_dict_resumes_exactly_mid_epoch(tmp_path):
    batches = _batches(6, seed=5)

    def fresh():
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return (
            model,
            opt,
            LearnedMix(10, steps_per_epoch=4, total_steps=8, optimizer=opt, **_small()),
        )

    model, opt, mix = fresh()
    straight = _steps(mix, model, batches, opt)
    history, weights = mix.history, mix.ppo.policy.state_dict()
    model, opt, mix = fresh()
    _steps(mix, model, batches[:2], opt)
    torch.save(
        {"mix": mix.state_dict(), "model": model.state_dict(), "opt": opt.state_dict()},
        tmp_path / "ckpt.pt",
    )
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # no pickled objects
    model, opt, mix = fresh()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    mix.load_state_dict(saved["mix"])
    resumed = _steps(mix, model, batches[2:], opt)
    assert resumed == straight[2:]
    assert mix.history == history and len(history) == 1  # epoch 1 ended after the resume
    assert all(torch.equal(weights[k], v) for k, v in mix.ppo.policy.state_dict().items())


def test_a_held_out_reward_reads_your_held_out_batches():
    model = _model()
    held_out = _batches(2, b=8, seed=11)
    mix = LearnedMix(10, steps_per_epoch=2, held_out=held_out, reward="val_grad_align", **_small())
    scalars = _steps(mix, model, _batches(3, seed=12))
    assert all(-1.0 <= s["reward"] <= 1.0 for s in scalars) and "policy_gain" in scalars[0]


def test_tensorboard_tags_are_train_agents():
    class Writer:
        def __init__(self):
            self.tags = set()

        def add_scalar(self, tag, value, step):
            assert np.isfinite(value) and isinstance(step, int)
            self.tags.add(tag)

        def add_histogram(self, tag, values, step, bins):
            self.tags.add(tag)

    writer = Writer()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mix = LearnedMix(10, steps_per_epoch=2, optimizer=opt, writer=writer, **_small())
    _steps(mix, model, _batches(2, seed=6), opt)
    for tag in ("step/reward", "step/train_loss", "step/lr", "step/policy_gain", "epoch/reward",
                "policy/entropy_frac", "policy/gain_vs_random", "policy/q", "train/approx_kl",
                "train/clip_fraction", "train/entropy_loss"):  # fmt: skip
        assert tag in writer.tags, tag


# -- bad use: one clear line ----------------------------------------------------------------


def test_observe_without_mix():
    with pytest.raises(RuntimeError, match=r"observe\(logits\) needs a mix first"):
        LearnedMix(10).observe(torch.zeros(4, 10))


def test_mix_twice_without_observe():
    model, mix = _model(), LearnedMix(10, **_small())
    x, y = _batches(1)[0]
    mix(model, x, y)
    with pytest.raises(RuntimeError, match=r"called twice without observe"):
        mix(model, x, y)


@pytest.mark.parametrize(
    ("logits", "match"),
    [
        (torch.zeros(9, 10), r"logits must be the \(10, 10\) output of model\(x_mix\)"),
        (torch.zeros(10, 7), r"logits must be the \(10, 10\) output .* got \(10, 7\)"),
        (torch.zeros(10), r"got \(10,\)"),
        ("logits", r"got str"),
    ],
)
def test_logits_of_the_wrong_shape_or_batch(logits, match):
    model, mix = _model(), LearnedMix(10, **_small())
    x, y = _batches(1)[0]
    mix(model, x, y)
    with pytest.raises(ValueError, match=match):
        mix.observe(logits)


def test_nan_logits():
    model, mix = _model(), LearnedMix(10, **_small())
    x, y = _batches(1)[0]
    mix(model, x, y)
    bad = torch.zeros(10, 10)
    bad[3, 2] = float("nan")
    with pytest.raises(RlmixError, match=r"logits passed to observe\(\) are not finite at step 1"):
        mix.observe(bad)


@pytest.mark.parametrize(("progress", "decay"), [(0.0, 0.5), (1.0, 0.0)])
def test_the_teacher_decay_follows_the_progress_you_pass(progress, decay):
    mix = LearnedMix(
        10, reward="teach", **_small(**{"env.ema_decay": 0.5, "env.ema_decay_end": 0.0})
    )
    model = _model()
    _steps(mix, model, _batches(1))
    before = [p.clone() for p in mix._teacher.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batches(1, seed=1)[0]
    x_mix, y_mix = mix(model, x, y, progress=progress)
    logits = model(x_mix)
    optimizer.zero_grad()
    soft_ce(logits, y_mix).backward()
    optimizer.step()
    mix.observe(logits)
    for old, new, w in zip(before, mix._teacher.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(new, decay * old + (1 - decay) * w.detach())


def test_a_model_that_changes_between_calls():
    mix = LearnedMix(10, **_small())
    _steps(mix, _model(), _batches(1))
    other = copy.deepcopy(_model())
    x, y = _batches(1)[0]
    with pytest.raises(ValueError, match=r"learns for one model: it keeps an EMA teacher of the"):
        mix(other, x, y)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reward": "loss_drop"}, ConfigError, r"reward 'loss_drop' needs the step's outcome"),
        ({"reward": "val_loss_drop"}, ConfigError, r"'val_loss_drop' needs the step's outcome"),
        ({"reward": "val_grad_align"}, ConfigError, r"pass held_out=<batches \(x, y\)"),
        ({"reward": "nope"}, ConfigError, r"config key 'env.reward': unknown reward 'nope'"),
        ({"steps_per_epoch": 0}, ValueError, r"steps_per_epoch must be a positive integer"),
        ({"total_steps": 2.5}, ValueError, r"total_steps must be a positive integer"),
        ({"lr_max": -1.0}, ValueError, r"lr_max must be a positive number"),
        ({"optimizer": "sgd"}, TypeError, r"optimizer must be a torch.optim.Optimizer"),
        ({"agent.n_steps": 0}, ConfigError, r"config key 'agent.n_steps' must be >= 1"),
        (
            {"agent.baseline": "counterfactual", "counterfactual_every": 2},
            ConfigError,
            r"needs a counterfactual every step",
        ),
    ],
)
def test_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        LearnedMix(10, **kwargs)


def test_grad_cosine_needs_the_backward_through_x_mix():
    model, mix = _model(), LearnedMix(10, reward="grad_cosine", **_small())
    x, y = _batches(1)[0]
    x_mix, _ = mix(model, x, y)
    logits = model(x_mix.detach())
    with pytest.raises(ValueError, match=r"backpropagate through the x_mix that mix\(\) returned"):
        mix.observe(logits)


def test_load_state_dict_refuses_other_settings():
    mix = LearnedMix(10, **_small())
    _steps(mix, _model(), _batches(1))
    state = mix.state_dict()
    with pytest.raises(ConfigError, match=r"written with other settings"):
        LearnedMix(10, **_small(reward="hardness")).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"not a LearnedMix state_dict"):
        LearnedMix(10).load_state_dict({"format": "x"})
    assert json.loads(state["config"])["env"]["reward"] == "teach"


def test_the_timm_train_loop_example_runs():
    """examples/timm_train_loop.py: timm's loop shape, its mixup_fn replaced, under AMP."""
    pytest.importorskip("timm", reason="pip install 'rlmix[timm]'")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "timm_train_loop.py"
    spec = importlib.util.spec_from_file_location("timm_train_loop", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    row = example.main(
        ["--fake-data", "--steps", "4", "--batch-size", "8", "--epochs", "1", "--amp",
         "--model", "test_resnet"]
    )  # fmt: skip
    assert row["epoch"] == 1.0 and sum(row["q_hist"]) == 32 and np.isfinite(row["loss"])
