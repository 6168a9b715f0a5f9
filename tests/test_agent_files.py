"""Agent files load without running code, and a searched policy works as a drop-in mixer.

Crafted files (a Stable-Baselines3 zip whose pickled settings would write a file, JSON that
carries serialized objects, weights that are not plain tensors, an rlmix 0.1 checkpoint with a
pickled agent inside) are refused by ``--policy agent``, ``AgentMix.load`` and ``--resume``
with one line, and nothing runs; ``rlmix.convert --trust`` converts a trusted old file.
"""

import base64
import copy
import io
import json
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import AgentMix, load_policy, serialize
from agents.serialize import SETTINGS_NAME, WEIGHTS_NAME
from envs import MixupEnv
from rlmix.checkpoints import load_checkpoint, save_checkpoint
from rlmix.cli import run_main
from rlmix.convert import main as convert_main
from rlmix.errors import ConfigError
from rlmix.train import main as train_main
from rlmix.train_agent import main as agent_main


class Touch:
    """Unpickling this creates ``path``: the stand-in for code a shared file could run."""

    def __init__(self, path):
        self.path = Path(path)

    def __reduce__(self):
        return (Path.touch, (self.path,))


TRAINED = ["--epochs", "2", "--no-progress", "--set", "env.eval_fgsm=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One tiny RL-Mix run through the command (stopped after epoch 1 of 2) and its agent.zip."""
    from tests.conftest import tiny_args

    out = tmp_path_factory.mktemp("trained") / "run"
    args = [*tiny_args(data_root), *TRAINED, "--out", str(out), "--stop-after-epoch", "1"]
    assert run_main(agent_main, args) == 0
    return out


def _sb3_zip(tmp_path, payload=None) -> Path:
    """A genuine Stable-Baselines3 zip of an rlmix agent; with ``payload``, its pickled
    settings also hold an object whose unpickling touches that path."""
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.policy import PerImagePolicy
    from envs.spaces import slot_spaces

    obs, act = slot_spaces(10, 8, 10, 20.0)

    class Env(gym.Env):  # just enough of an image slot for PPO's constructor
        observation_space, action_space = obs, act

        def reset(self, *, seed=None, options=None):
            return obs.sample(), {}

        def step(self, action):
            return obs.sample(), 0.0, False, False, {}

    model = PPO(PerImagePolicy, DummyVecEnv([Env]), n_steps=8, batch_size=8, device="cpu")
    path = tmp_path / ("evil.zip" if payload else "old.zip")
    model.save(path)
    if payload is not None:
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        data = json.loads(members["data"])
        data["clip_range"] = {
            ":type:": "<class 'function'>",
            ":serialized:": base64.b64encode(pickle.dumps(Touch(payload))).decode(),
        }
        members["data"] = json.dumps(data).encode()
        with zipfile.ZipFile(path, "w") as z:
            for name, blob in members.items():
                z.writestr(name, blob)
    return path


def _one_error_line(capsys, code, expected_code, text):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code and len(err) == 1 and err[0].startswith("error: "), err
    assert text in err[0], err[0]


def _frozen_args(tiny_cli_args, tmp_path, path):
    return [
        *tiny_cli_args, "--epochs", "1", "--no-progress", "--out", str(tmp_path / "frozen"),
        "--policy", "agent", "--set", f"frozen_agent.path={path}",
    ]  # fmt: skip


def test_agent_zip_is_json_settings_and_tensors(trained):
    with zipfile.ZipFile(trained / "agent.zip") as z:
        assert sorted(z.namelist()) == [SETTINGS_NAME, WEIGHTS_NAME]
        settings = json.loads(z.read(SETTINGS_NAME))
        weights = torch.load(io.BytesIO(z.read(WEIGHTS_NAME)), weights_only=True)
    assert settings["format"] == "rlmix-agent" and settings["policy"]["k"] == 10
    assert settings["progress"]["num_timesteps"] == 8 * 50  # one epoch of 8 batches of 50
    checkpoint = load_checkpoint(trained / "checkpoint.pt")  # weights_only, agent included
    for key, value in checkpoint["agent"]["policy"].items():
        torch.testing.assert_close(weights["policy"][key], value, rtol=0, atol=0)
    policy, _ = load_policy(trained / "agent.zip")
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(weights["policy"][key], value, rtol=0, atol=0)


def test_a_pickled_sb3_zip_is_refused_everywhere_and_runs_nothing(
    trained, tiny_cli_args, tmp_path, capsys
):
    marker = tmp_path / "pwned"
    evil = _sb3_zip(tmp_path, payload=marker)
    code = run_main(train_main, _frozen_args(tiny_cli_args, tmp_path, evil))
    _one_error_line(capsys, code, 2, "is a Stable-Baselines3 zip, whose settings are pickled")
    with pytest.raises(ConfigError, match=r"python -m rlmix.convert .*evil.zip --trust"):
        AgentMix.load(evil)
    # an rlmix 0.1 checkpoint: the agent's SB3 zip as bytes inside
    old = tmp_path / "old_run"
    old.mkdir()
    state = load_checkpoint(trained / "checkpoint.pt")
    state["agent"] = torch.frombuffer(bytearray(evil.read_bytes()), dtype=torch.uint8)
    save_checkpoint(old / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    code = run_main(agent_main, [*tiny_cli_args, *TRAINED, "--out", str(old), "--resume"])
    _one_error_line(capsys, code, 2, "holds its agent as a Stable-Baselines3 zip, which runs code")
    assert not marker.exists()  # nothing was unpickled


def test_crafted_rlmix_agent_files_are_refused(trained, tmp_path, tiny_cli_args, capsys):
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(trained / "agent.zip") as z:
        settings, weights = z.read(SETTINGS_NAME), z.read(WEIGHTS_NAME)

    def write(name, settings_blob, weights_blob):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(SETTINGS_NAME, settings_blob)
            z.writestr(WEIGHTS_NAME, weights_blob)
        return path

    data = json.loads(settings)
    data["policy"]["extra"] = {
        ":serialized:": base64.b64encode(pickle.dumps(Touch(marker))).decode()
    }
    serialized = write("serialized.zip", json.dumps(data), weights)
    buf = io.BytesIO()
    torch.save({"policy": Touch(marker), "optimizer": {}}, buf)
    objects = write("objects.zip", settings, buf.getvalue())
    cases = [
        (serialized, "holds serialized Python objects, which rlmix never loads"),
        (objects, f"{WEIGHTS_NAME} holds more than tensors"),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError, match=message) as refused:
            AgentMix.load(path)
        # the hint is a command line that runs as it is printed
        assert f"python -m rlmix.convert {shlex.quote(str(path))} --trust" in str(refused.value)
        code = run_main(train_main, _frozen_args(tiny_cli_args, tmp_path, path))
        _one_error_line(capsys, code, 2, message)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"agent file '.*junk.zip' is corrupt or not an rlmix"):
        AgentMix.load(tmp_path / "junk.zip")
    assert not marker.exists()


def _with(settings: dict, section: str | None, key: str, value) -> dict:
    """``settings`` with ``settings[section][key]`` (or ``settings[key]``) set to ``value``;
    ``...`` deletes it."""
    out = copy.deepcopy(settings)
    target = out if section is None else out[section]
    if value is ...:
        del target[key]
    else:
        target[key] = value
    return out


# (what is changed in the trained agent's settings, the refusal)
HOSTILE_SETTINGS = [
    (None, None, [1, 2], r"is not an rlmix agent \(its settings are a JSON list, not an object\)"),
    (None, "ppo", ..., r"its settings lack the section 'ppo' \(an rlmix agent has the objects policy, ppo, progress\)"),
    (None, "ppo", [1], r"its settings hold a JSON list as the section 'ppo'"),
    (None, "progress", ..., r"its settings lack the section 'progress'"),
    ("policy", "logit_clip", "big", r"its policy setting 'logit_clip' must be a finite number > 0 \(got 'big'\)"),
    ("policy", "logit_clip", float("nan"), r"its policy setting 'logit_clip' must be a finite number > 0 \(got nan\)"),
    ("policy", "k", True, r"its policy setting 'k' must be an integer >= 2 \(got True\)"),
    ("policy", "num_classes", 10**12, r"its policy setting 'num_classes' must be an integer in \[1, 100000\] \(got 1000000000000\)"),
    ("ppo", "learning_rate", "fast", r"its ppo setting 'learning_rate' must be a finite number > 0 \(got 'fast'\)"),
    ("ppo", "learning_rate", float("nan"), r"its ppo setting 'learning_rate' must be a finite number > 0 \(got nan\)"),
    ("ppo", "gamma", 2, r"its ppo setting 'gamma' must be a number in \[0, 1\] \(got 2\)"),
    ("progress", "num_timesteps", -1, r"its progress setting 'num_timesteps' must be an integer >= 0 \(got -1\)"),
    ("policy", "obs_grid", 10**5, r"its settings \(obs_grid=100000, .*\) do not fit its weights: 'features_extractor.mlp.0.weight' has shape \(64, 79\), the settings need \(64, 10000000015\)"),
    ("policy", "k", 10**9, r"its settings \(.*k=1000000000\) do not fit its weights: 'action_net.weight' has shape \(10, 64\)"),
    ("policy", "embed_dim", 10**6, r"its settings \(.*embed_dim=1000000.*\) do not fit its weights: 'features_extractor.mlp.0.weight' has shape \(64, 79\), the settings need \(1000000, 79\)"),
]  # fmt: skip


@pytest.mark.parametrize(("section", "key", "value", "message"), HOSTILE_SETTINGS)
def test_hostile_settings_are_refused_before_anything_is_built(
    section, key, value, message, trained, tmp_path, monkeypatch
):
    """Wrong shapes, types and ranges in a (small) agent file are one ConfigError, raised before
    a network is built: no traceback, no gigabyte allocations for a declared size."""
    with zipfile.ZipFile(trained / "agent.zip") as z:
        settings, weights = json.loads(z.read(SETTINGS_NAME)), z.read(WEIGHTS_NAME)
    hostile = value if key is None else _with(settings, section, key, value)
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(SETTINGS_NAME, json.dumps(hostile))  # NaN is written as JSON's NaN
        z.writestr(WEIGHTS_NAME, weights)

    def never(*args, **kwargs):
        raise AssertionError("a policy was built from unchecked settings")

    monkeypatch.setattr(serialize, "PerImagePolicy", never)
    with pytest.raises(ConfigError, match=rf"^agent file '{re.escape(str(path))}':? {message}"):
        AgentMix.load(path)


def test_non_finite_weights_are_refused(trained, tmp_path):
    with zipfile.ZipFile(trained / "agent.zip") as z:
        settings, weights = z.read(SETTINGS_NAME), z.read(WEIGHTS_NAME)
    tensors = torch.load(io.BytesIO(weights), weights_only=True)
    tensors["policy"]["action_net.bias"][3] = float("nan")
    buf = io.BytesIO()
    torch.save(tensors, buf)
    path = tmp_path / "nan.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(SETTINGS_NAME, settings)
        z.writestr(WEIGHTS_NAME, buf.getvalue())
    with pytest.raises(
        ConfigError, match=r"its tensor 'policy.action_net.bias' holds NaN or inf \(the agent"
    ):
        load_policy(path)


def test_a_directory_as_the_agent_file_is_named(trained, tiny_cli_args, tmp_path, capsys):
    code = run_main(train_main, _frozen_args(tiny_cli_args, tmp_path, trained))
    _one_error_line(
        capsys, code, 2, f"agent file '{trained}' is a directory: set it to {trained / 'agent.zip'}"
    )


def _damaged(s: dict, where: str) -> None:
    """Delete the checkpoint entry at the dotted ``where`` (an agent's settings are JSON text)."""
    if where.startswith("agent.settings."):
        settings = json.loads(s["agent"]["settings"])
        del settings[where.rpartition(".")[2]]
        s["agent"]["settings"] = json.dumps(settings)
        return
    *parents, last = where.split(".")
    for part in parents:
        s = s[part]
    del s[last]


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("env", " lacks its 'env' section; it cannot be resumed: run again without --resume"),
        ("env.trainer", " lacks 'trainer' in its 'env' section; it cannot be resumed"),
        ("np_random.keys", " lacks 'keys' in its 'np_random' section"),
        ("agent", " lacks its 'agent' section"),
        ("agent.policy", ": its agent has no policy state"),
        ("agent.settings.progress", ": its settings lack the section 'progress'"),
    ],
)
def test_a_checkpoint_missing_a_section_is_one_line_on_resume(
    missing, message, trained, tiny_cli_args, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = load_checkpoint(run / "checkpoint.pt")
    _damaged(state, missing)
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    code = run_main(agent_main, [*tiny_cli_args, *TRAINED, "--out", str(run), "--resume"])
    _one_error_line(capsys, code, 2, f"checkpoint '{run / 'checkpoint.pt'}'{message}")


def test_convert_a_trusted_old_agent(tmp_path, capsys):
    from stable_baselines3 import PPO

    old = _sb3_zip(tmp_path)
    assert run_main(convert_main, [str(old), str(tmp_path / "new.zip")]) == 2
    assert "without --trust" in capsys.readouterr().err
    assert run_main(convert_main, [str(old), str(tmp_path / "new.zip"), "--trust"]) == 0
    policy, settings = load_policy(tmp_path / "new.zip")
    reference = PPO.load(old, device="cpu").policy
    assert settings["ppo"]["n_steps"] == 8
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(policy.state_dict()[key], value, rtol=0, atol=0)


def test_the_old_command_name_still_converts_and_the_agent_layer_imports_no_command(tmp_path):
    old, new = _sb3_zip(tmp_path), tmp_path / "new.zip"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "agents.convert", str(old), str(new), "--trust"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"converted agent file {old} -> {new}\n"
    assert load_policy(new)[1]["ppo"]["n_steps"] == 8
    probe = (
        "import sys, agents.convert; "
        "print('rlmix.cli' in sys.modules, 'rlmix.convert' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "False False\n"), proc.stderr


def test_agent_mix_equals_the_frozen_agent_in_the_env(trained, tiny_config):
    """On the same batch, lam, partners and grid, AgentMix(deterministic) mixes exactly what
    ``rlmix.train --policy agent`` trains on."""
    from baselines import make_policy
    from envs import ImageSlotVecEnv

    path = trained / "agent.zip"
    cfg = tiny_config(policy="agent", **{"frozen_agent.path": str(path), "env.observe": "always"})
    env = MixupEnv(cfg)
    venv = ImageSlotVecEnv(env, terminal_observations=False)
    frozen = make_policy("agent", venv.action_space, path=str(path), deterministic=True)
    obs = venv.reset()
    t = env.trainer
    batch, generator = env._batch, t.generator.get_state()
    progress, lr_fraction = t.progress, t.lr / cfg.trainer.lr_max
    mixer = AgentMix.load(path, num_classes=10, deterministic=True, generator=torch.Generator())
    mixer.generator.set_state(generator)  # the trainer's mixing stream at that step
    model = copy.deepcopy(t.model)  # the weights the env's step mixes with
    x_mix, y_mix = mixer(model, batch.x, batch.labels, progress=progress, lr_fraction=lr_fraction)
    seen = {}
    train_step = t.train_step

    def record(x_mix, y_mix, **kwargs):
        seen["x"], seen["y"] = x_mix.clone(), y_mix.clone()
        return train_step(x_mix, y_mix, **kwargs)

    t.train_step = record
    venv.step(frozen.predict(obs)[0])
    torch.testing.assert_close(x_mix, seen["x"], rtol=0, atol=0)
    torch.testing.assert_close(y_mix, seen["y"].to(y_mix.dtype), rtol=0, atol=1e-7)


def test_agent_mix_in_a_plain_loop_any_batch_and_classes(trained):
    from rlmix.losses import soft_ce
    from rlmix.models import create_model

    torch.manual_seed(0)
    mixer = AgentMix.load(trained / "agent.zip", num_classes=7, seed=3)
    model = create_model("resnet_tiny", 7)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(3):
        x, y = torch.rand(13, 3, 32, 32), torch.randint(0, 7, (13,))
        x_mix, y_mix = mixer(model, x, y, progress=step / 3)
        assert x_mix.shape == x.shape and y_mix.shape == (13, 7)
        np.testing.assert_allclose(y_mix.sum(1), 1.0, atol=1e-6)  # label rows sum to 1
        loss = soft_ce(model(x_mix), y_mix)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(0)
    model2 = create_model("resnet_tiny", 7)
    x, y = torch.rand(13, 3, 32, 32), torch.randint(0, 7, (13,))
    a = AgentMix.load(trained / "agent.zip", num_classes=7, seed=5)(model2, x, y)
    b = AgentMix.load(trained / "agent.zip", num_classes=7, seed=5)(model2, x, y)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # seeded: reproducible
    with pytest.raises(ValueError, match=r"k is the policy's: 10"):
        AgentMix.load(trained / "agent.zip", k=5)
