"""Models from anywhere: ``package.module:function`` constructors and ``timm/<name>`` train,
evaluate and score rewards like the built-in models, through every command; bad ones fail with
one line."""

import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents import AgentMix
from envs import MixupEnv
from envs.rewards import get_reward
from rlmix.checkpoints import load_checkpoint
from rlmix.cli import run_main
from rlmix.compare import main as compare_main
from rlmix.config import load_config
from rlmix.errors import ConfigError
from rlmix.headroom import main as headroom_main
from rlmix.losses import get_loss
from rlmix.metrics import evaluate
from rlmix.models import create_model
from rlmix.train import main as train_main
from rlmix.train_agent import main as agent_main
from tests.test_distributed import fixed_args, torchrun
from tests.test_rewards import val_grad_alignment

ROOT = Path(__file__).resolve().parent.parent
FIX = "tests.user_model_fixtures"
USER = f"{FIX}:small_cnn"
TIMM = "timm/test_resnet"


def _timm_has(arch: str) -> bool:
    if importlib.util.find_spec("timm") is None:
        return False
    import timm

    return timm.is_model(arch)


needs_timm = pytest.mark.skipif(
    not _timm_has("test_resnet"),
    reason="timm (with its test_resnet) is not installed: pip install 'rlmix[timm]'",
)
# (name, whether its final feature map at 32x32 is larger than 1x1: CAM localisation is scored)
MODELS = [(USER, True), pytest.param(TIMM, False, marks=needs_timm)]
NAMES = [USER, pytest.param(TIMM, marks=needs_timm)]


def _cli(tiny_cli_args, out, *extra):
    return [*tiny_cli_args, "--epochs", "1", "--no-progress", "--out", str(out), *extra]


# -- through the commands --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "has_cam"), MODELS)
def test_trains_through_train_and_train_agent(name, has_cam, tiny_cli_args, tmp_path, capsys):
    for main, out in ((train_main, tmp_path / "train"), (agent_main, tmp_path / "agent")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = run_main(main, _cli(tiny_cli_args, out, "--set", f"model.name={name}"))
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "shapes: trained on 400 images, 0 held out" in captured.out
        final = json.loads((out / "metrics.json").read_text())["final"]
        assert 0 <= final["top1"] <= 1 and 0 <= final["fgsm_error"] <= 1
        assert ("loc_acc" in final) == has_cam
        skipped = {str(w.message) for w in caught if "CAM localisation" in str(w.message)}
        assert skipped == (
            set()
            if has_cam
            else {
                f"CAM localisation skipped: model '{name}' has no feature map larger than 1x1 "
                "that its final linear layer average-pools"
            }
        )
        state = load_checkpoint(out / "checkpoint.pt")["env"]["trainer"]["model"]
        assert {"mean", "std"} <= set(state) and all(
            k.startswith("net.") for k in state if k not in ("mean", "std")
        )
    # the agent it trained mixes for this model in a plain loop (AgentMix)
    agent_mix = AgentMix.load(tmp_path / "agent" / "agent.zip", num_classes=10, seed=0)
    model = create_model(name, 10, in_chans=3)
    x, y = torch.rand(6, 3, 32, 32), torch.arange(6)
    x_mix, y_mix = agent_mix(model, x, y)
    assert x_mix.shape == x.shape and 0 <= x_mix.min() and x_mix.max() <= 1
    torch.testing.assert_close(y_mix.sum(dim=1), torch.ones(6))


@pytest.mark.parametrize("name", NAMES)
def test_env_passes_both_checkers(name, tiny_config):
    cfg = tiny_config(**{"model.name": name, "eval_fgsm": False})
    gym_check_env(MixupEnv(cfg), skip_render_check=True)
    sb3_check_env(MixupEnv(cfg), warn=True)


def test_compare_and_headroom_run_a_user_model(tiny_cli_args, tmp_path, capsys):
    name = ["--set", f"model.name={USER}", "--set", "env.eval_fgsm=false"]
    compare = ["--policies", "vanilla,rmix", "--seeds", "0", "--jobs", "2"]  # worker processes
    assert run_main(compare_main, _cli(tiny_cli_args, tmp_path / "cmp", *name, *compare)) == 0
    with open(tmp_path / "cmp" / "runs.csv") as f:
        runs = {row["policy"]: float(row["top1"]) for row in csv.DictReader(f)}  # in %
    assert set(runs) == {"vanilla", "rmix"} and all(0 <= top1 <= 100 for top1 in runs.values())
    headroom = ["--set", "data.val_size=100", "--reward", "val_grad_align", "--images", "100"]
    assert run_main(headroom_main, _cli(tiny_cli_args, tmp_path / "hr", *name, *headroom)) == 0
    result = json.loads((tmp_path / "hr" / "headroom.json").read_text())
    assert result["reward"] == "val_grad_align" and result["points"] == [1]
    assert isinstance(result["oracle_gain"], float) and result["oracle_gain"] > 0
    capsys.readouterr()


def test_two_ranks_train_a_user_model_as_one(data_root, tmp_path):
    model = ["--set", f"model.name={USER}"]  # BatchNorm over the global batch (sync_bn)
    torchrun("-m", "rlmix.train", *fixed_args(data_root, tmp_path / "two"), *model)
    assert run_main(train_main, [*fixed_args(data_root, tmp_path / "one"), *model]) == 0
    one, two = (
        load_checkpoint(tmp_path / d / "checkpoint.pt")["env"]["trainer"] for d in ("one", "two")
    )
    assert one["global_step"] == two["global_step"] == 2
    for key, a in one["model"].items():
        if a.is_floating_point():
            scale = a.abs().max().item() + 1e-8
            assert (a - two["model"][key]).abs().max().item() / scale < 1e-4, key


# -- the wrapper -----------------------------------------------------------------------------


def test_resnet18_on_one_channel_28x28():
    torch.manual_seed(0)
    model = create_model(
        "torchvision.models:resnet18", 10, mean=[0.5], std=[0.25], in_chans=1, image_size=28
    )
    assert model.repeat and model.net.conv1.in_channels == 3  # 1 channel repeated 3 times
    assert model.get_classifier() is model.net.fc and model.num_features == 512
    no_cam = "has no feature map larger than 1x1 that its final linear layer average-pools"
    assert model.cam_unavailable.endswith(no_cam)  # a 1x1 final map at 28x28
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    labels = torch.arange(4)
    model.eval()  # the pixel gradient is the repeated channels' gradients summed, over std
    inner = ((x.detach() - 0.5) / 0.25).expand(-1, 3, -1, -1).contiguous().requires_grad_(True)
    logits = model(x)
    torch.testing.assert_close(logits, model.net(inner), rtol=0, atol=0)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    torch.nn.functional.cross_entropy(model.net(inner), labels).backward()
    torch.testing.assert_close(x.grad, inner.grad.sum(dim=1, keepdim=True) / 0.25)
    model.train()  # and a training step's backward reaches every layer
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    assert model.net.fc.weight.grad.abs().sum() > 0 and model.net.conv1.weight.grad.abs().sum() > 0


def test_normalisation_in_the_wrapper_or_in_the_model():
    x = torch.rand(3, 3, 32, 32)
    torch.manual_seed(0)
    inside = create_model(USER, 4, mean=[0.2, 0.3, 0.4], std=[0.5, 0.25, 0.2]).eval()
    expected = inside.net(
        (x - torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1))
        / torch.tensor([0.5, 0.25, 0.2]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(inside(x), expected)
    raw = create_model(USER, 4, mean=[0.2, 0.3, 0.4], std=[0.5, 0.25, 0.2], normalize=False)
    raw.eval()
    torch.testing.assert_close(raw(x), raw.net(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"model '.*small_cnn': option normalize must be true"):
        create_model(USER, 4, normalize="yes")


def test_constructor_gets_options_and_in_chans_when_it_names_it():
    model = create_model(USER, 7, width=4, in_chans=3)
    assert model.net.fc.in_features == 8 and model.net.fc.out_features == 7
    gray = create_model(f"{FIX}:small_cnn_in_chans", 3, in_chans=1, image_size=16)
    assert not gray.repeat and gray.net.features[0].in_channels == 1


def test_cam_and_forward_head_match_the_logits():
    torch.manual_seed(0)
    model = create_model(USER, 4).eval()
    x = torch.rand(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 16, 16, 16)
    torch.testing.assert_close(model.forward_head(features), model(x))
    boxes = torch.tensor([[0, 0, 16, 16], [8, 8, 32, 32]])
    result = evaluate(model, [(x, torch.tensor([0, 1]), boxes)], fgsm=False)
    assert result["loc_acc"] in (0.0, 0.5, 1.0)


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("conv_head", "it has no nn.Linear layer"),
        ("scaled_logits", "no nn.Linear layer outputs its logits"),
    ],
)
def test_without_a_final_linear_layer_it_evaluates_and_last_layer_rewards_fail(fixture, reason):
    model = create_model(f"{FIX}:{fixture}", 3)
    name = f"{FIX}:{fixture}"
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    boxes = torch.tensor([[0, 0, 16, 16]] * 4)
    with pytest.warns(UserWarning, match=re.escape(f"skipped: model '{name}': {reason}")):
        result = evaluate(model, [(x, y, boxes)])
    assert "loc_acc" not in result and 0 <= result["top1"] <= 1 and "fgsm_error" in result
    with pytest.raises(
        ConfigError,
        match=re.escape(f"model '{name}': {reason}, and rewards that read the classifier's last"),
    ):
        model.get_classifier()
    with pytest.raises(ConfigError, match=re.escape(f"model '{name}': {reason}: no class")):
        model.forward_features(x)


def test_a_linear_head_without_a_feature_map_gives_no_cam():
    model = create_model(f"{FIX}:mlp", 3)
    assert model.get_classifier() is model.net[3] and model.num_features == 16
    batch = (torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.warns(UserWarning, match=r"skipped: model '.*:mlp' has no feature map larger"):
        result = evaluate(model, [batch], fgsm=False)
    assert set(result) == {"top1", "top5", "nll", "ece"}


def test_a_headless_model_trains_but_a_last_layer_reward_stops_it(tiny_cli_args, tmp_path, capsys):
    name = ["--set", f"model.name={FIX}:conv_head"]
    with pytest.warns(UserWarning, match=r"CAM localisation skipped: model '.*:conv_head': it has"):
        assert run_main(train_main, _cli(tiny_cli_args, tmp_path / "ok", *name)) == 0  # grad_cosine
    final = json.loads((tmp_path / "ok" / "metrics.json").read_text())["final"]
    assert 0 <= final["top1"] <= 1 and "loc_acc" not in final
    # the default reward reads the mixed batch's logits only: no last layer needed
    teach = _cli(tiny_cli_args, tmp_path / "teach", *name, "--reward", "teach")
    with pytest.warns(UserWarning, match="CAM localisation skipped"):
        assert run_main(agent_main, teach) == 0
    epochs = json.loads((tmp_path / "teach" / "metrics.json").read_text())["epochs"]
    assert all(math.isfinite(e["reward"]) and e["reward"] != 0.0 for e in epochs)
    capsys.readouterr()
    args = _cli(
        tiny_cli_args, tmp_path / "run", *name, "--set", "data.val_size=100",
        "--reward", "val_grad_align",
    )  # fmt: skip
    assert run_main(agent_main, args) == 2
    assert capsys.readouterr().err == (
        f"error: model '{FIX}:conv_head': it has no nn.Linear layer, and rewards that read the "
        "classifier's last layer (val_grad_align, val_grad_dot) need one; choose another reward "
        "(e.g. teach or grad_cosine)\n"
    )


@pytest.mark.parametrize("name", NAMES)
def test_val_grad_align_equals_per_example_autograd(name):
    """The closed form on the found last layer equals each example's own gradient on it dotted
    with the held-out batch's mean gradient (as tests/test_rewards.py for the built-ins)."""
    torch.manual_seed(0)
    model = create_model(name, 5, in_chans=1, image_size=16)  # small_cnn: repeated channel
    x = torch.rand(6, 1, 16, 16)
    y = torch.softmax(torch.randn(6, 5) * 2, dim=1)
    x_val, labels_val = torch.rand(10, 1, 16, 16), torch.randint(0, 5, (10,))
    inputs, _, cosines = val_grad_alignment(model, get_loss("soft_ce"), x, y, x_val, labels_val)
    align = get_reward("val_grad_align")(inputs)
    np.testing.assert_allclose(align, cosines, atol=1e-5)
    assert align.std() > 0.01


# -- one line per mistake --------------------------------------------------------------------

ERRORS = [
    ("tests.no_such_module:f", "cannot import model 'tests.no_such_module:f': No module named 'tests.no_such_module'"),
    (f"{FIX}:nope", f"cannot import model '{FIX}:nope': module '{FIX}' has no attribute 'nope'"),
    (f"{FIX}:NOT_CALLABLE", f"model '{FIX}:NOT_CALLABLE' is not callable (got int)"),
    (f"{FIX}:broken", f"model '{FIX}:broken' raised RuntimeError: no weights here"),
    (f"{FIX}:not_a_module", f"model '{FIX}:not_a_module' must return a torch.nn.Module, got dict"),
    (f"{FIX}:wrong_classes", f"model '{FIX}:wrong_classes' returned shape (2, 11) for a probe batch of shape (2, 3, 32, 32); expected logits of shape (2, 10)"),
    (f"{FIX}:crashes", f"model '{FIX}:crashes' failed on a probe batch of shape (2, 3, 32, 32): ValueError: shapes do not line up"),
    (f"{FIX}:two_channel_stem", f"model '{FIX}:two_channel_stem' takes 2-channel images (its first Conv2d), the data has 3"),
    # they pass the eval probe, not the train-mode one
    ("torchvision.models:googlenet", "model 'torchvision.models:googlenet' returned GoogLeNetOutputs in train mode for a probe batch of shape (3, 3, 32, 32); expected logits of shape (3, 10), as in eval mode (auxiliary outputs? turn them off in model.options, e.g. {aux_logits: false})"),
    (f"{FIX}:aux_outputs", f"model '{FIX}:aux_outputs' returned tuple in train mode for a probe batch of shape (3, 3, 32, 32); expected logits of shape (3, 10), as in eval mode (auxiliary outputs? turn them off in model.options, e.g. {{aux_logits: false}})"),
    (f"{FIX}:no_grad_forward", f"model '{FIX}:no_grad_forward' returned logits without gradients in train mode for a probe batch of shape (3, 3, 32, 32) (does its forward run under torch.no_grad() or detach?); rlmix trains through them"),
    (f"{FIX}:no_parameters", f"model '{FIX}:no_parameters' has no parameters: nothing to train"),
    (f"{FIX}:one_batch_size", f"model '{FIX}:one_batch_size' failed in train mode for a probe batch of shape (3, 3, 32, 32) (in eval mode a batch of 2 passed): RuntimeError: shape '[2, 3]' is invalid for input of size 9"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "message"), ERRORS)
def test_each_mistake_is_one_config_error(name, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        create_model(name, 10, mean=[0.5] * 3, std=[0.25] * 3, in_chans=3)


def test_googlenet_without_auxiliary_heads_trains():
    model = create_model("torchvision.models:googlenet", 10, aux_logits=False, init_weights=True)
    assert model.get_classifier() is model.net.fc


def test_the_probes_leave_the_model_and_the_random_streams_as_they_were():
    torch.manual_seed(0)
    model = create_model(USER, 10).train()
    model.net.features[1].eval()  # one module in another mode than the rest
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    model.examine(32)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():  # BatchNorm statistics and counters included
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_a_model_that_fails_in_training_is_one_line_under_compare_jobs(
    tiny_cli_args, tmp_path, capsys
):
    name = ["--set", f"model.name={FIX}:aux_outputs", "--set", "env.eval_fgsm=false"]
    compare = ["--policies", "vanilla,rmix", "--seeds", "0", "--jobs", "2"]  # worker processes
    code = run_main(compare_main, _cli(tiny_cli_args, tmp_path / "cmp", *name, *compare))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: model '{FIX}:aux_outputs' returned tuple in train mode"), err


def test_options_the_constructor_rejects_name_it():
    with pytest.raises(
        ConfigError,
        match=rf"^model '{FIX}:small_cnn' raised TypeError: .*unexpected keyword argument 'depth'",
    ):
        create_model(USER, 10, depth=3)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torchvision.models:res-net", "model 'torchvision.models:res-net' must look like package.module:function"),
        ("my model:f", "model 'my model:f' must look like package.module:function"),
        ("timm/", "model 'timm/' names no timm architecture: use timm/<name>"),
        ("resnet_huge", "unknown model 'resnet_huge'; choose one of: preactresnet18, resnet_tiny, "
         "resnext29_4_24, wrn16_8, wrn28_10 or package.module:function or timm/<name>"),
    ],
)  # fmt: skip
def test_config_checks_the_model_name(name, message):
    with pytest.raises(ConfigError, match=f"^config key 'model.name': {re.escape(message)}$"):
        load_config(None, [f"model.name={name}"])


def test_any_options_pass_config_validation_for_user_models():
    cfg = load_config(None, [f"model.name={USER}", "model.options={width: 4, anything: [1, 2]}"])
    assert cfg.model.name == USER and cfg.model.options == {"width": 4, "anything": [1, 2]}


def test_timm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"^model 'timm/resnet10t' needs timm: pip install 'rlmix\[timm\]'$"):  # fmt: skip
        create_model("timm/resnet10t", 10)


@needs_timm
def test_timm_unknown_architecture():
    with pytest.raises(
        ConfigError,
        match=r"^model 'timm/test_resnett': timm has no architecture 'test_resnett'; "
        r"did you mean 'timm/test_resnet'\?$",
    ):
        create_model("timm/test_resnett", 10)


@needs_timm
def test_timm_builds_without_downloading_and_adapts_in_chans():
    model = create_model(TIMM, 10, in_chans=1, image_size=32)
    assert not model.repeat and model.get_classifier() is model.net.get_classifier()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


@needs_timm
def test_timm_pretrained_offline_fails_with_one_line(tiny_cli_args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    args = _cli(
        tiny_cli_args, tmp_path / "run", "--set", f"model.name={TIMM}",
        "--set", "model.options={pretrained: true}",
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "rlmix.train_agent", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.fullmatch(
        rf"error: model '{TIMM}' raised \w+: .+ \(pretrained weights need a network or a local "
        r"cache of them; the Hugging Face hub is out of reach: HF_HUB_OFFLINE is set\)",
        lines[0],
    ), lines[0]


@needs_timm
def test_timm_pretrained_without_a_network_fails_at_once(tmp_path, monkeypatch, capfd):
    """Not marked offline and no network: one connection attempt finds it out and the weights
    are looked for in the cache only, without the hub client's retries."""
    import huggingface_hub.constants

    from rlmix import hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty

    def no_network(address, timeout=None, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(hub.socket, "create_connection", no_network)
    with pytest.raises(
        ConfigError,
        match=rf"^model '{TIMM}' raised \w+: .+ \(pretrained weights need a network or a local "
        r"cache of them; the Hugging Face hub is out of reach: cannot reach huggingface.co: "
        r"Network is unreachable\)$",
    ):
        create_model(TIMM, 10, pretrained=True)
    captured = capfd.readouterr()
    assert "Retry" not in captured.out + captured.err
    assert not huggingface_hub.constants.HF_HUB_OFFLINE
