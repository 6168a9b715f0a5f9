"""Issue 7: every user error is one line + exit code; training never silently goes wrong."""

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rlmix
from rlmix import checkpoints
from rlmix.checkpoints import atomic_write, load_checkpoint, save_checkpoint
from rlmix.cli import run_main
from rlmix.compare import main as compare_main
from rlmix.errors import ConfigError, RlmixError
from rlmix.train import main as train_main
from rlmix.train_agent import main as agent_main
from tests import conftest

REPO = Path(__file__).resolve().parent.parent
MAINS = {"train": train_main, "agent": agent_main, "compare": compare_main}
MODULES = {"train": "rlmix.train", "agent": "rlmix.train_agent", "compare": "rlmix.compare"}
ALL, TRAINING = ("train", "agent", "compare"), ("train", "agent")


def tiny_args(data_root):
    return [*conftest.tiny_args(data_root), "--no-progress"]


def base_args(entry, data_root, tmp):
    extra = ["--epochs", "1", "--seeds", "0", "--policies", "rmix"] if entry == "compare" else []
    return [*tiny_args(data_root), "--out", f"{tmp}/run", *extra]


# (entry points, argv, exit code, substring of the one stderr line); {tmp} is the test's tmp_path
CASES = [
    (ALL, ["--config", "{tmp}/nope.yaml"], 2, "config file '{tmp}/nope.yaml' not found"),
    (ALL, ["--config", "{tmp}/binary.yaml"], 2, "cannot read config '{tmp}/binary.yaml': not UTF-8"),
    (ALL, ["--config", "{tmp}/dir.yaml"], 2, "config '{tmp}/dir.yaml' is a directory"),
    (ALL, ["--config", "{tmp}/syntax.yaml"], 2, "YAML syntax error in '{tmp}/syntax.yaml' at line 4, column 10: mapping values are not allowed"),
    (ALL, ["--config", "{tmp}/unknown.yaml"], 2, "unknown config key 'trainer.lr_mx'; did you mean 'lr_max'?"),
    (ALL, ["--set", "mix.alhpa=1"], 2, "unknown config key 'mix.alhpa'; did you mean 'alpha'?"),
    (ALL, ["--set", "trainer.batch_size=abc"], 2, "config key 'trainer.batch_size' must be of type int (got 'abc')"),
    (ALL, ["--set", "trainer.lr_max=fast"], 2, "config key 'trainer.lr_max' must be of type float (got 'fast')"),
    (ALL, ["--set", "data.augment=maybe"], 2, "config key 'data.augment' must be of type bool"),
    (ALL, ["--epochs", "two"], 2, "argument --epochs: invalid int value: 'two'"),
    (ALL, ["--set", "mix.k=1"], 2, "config key 'mix.k' must be >= 2 (got 1)"),
    (ALL, ["--set", "mix.grids=[3]"], 2, "config key 'mix.grids': grid 3 does not divide the image side 32"),
    (ALL, ["--set", "env.obs_grid=5"], 2, "config key 'env.obs_grid': grid 5 does not divide"),
    (ALL, ["--set", "trainer.batch_size=1000"], 2, "'trainer.batch_size' (1000) is larger than the training set (400 images)"),
    (ALL, ["--set", "mix.alpha=0"], 2, "config key 'mix.alpha' must be > 0 (got 0.0)"),
    (ALL, ["--set", "mix.alpha=-1"], 2, "config key 'mix.alpha' must be > 0 (got -1.0)"),
    (ALL, ["--set", "mix.alpha=.inf"], 2, "config key 'mix.alpha' must be a finite number (got inf)"),
    (ALL, ["--epochs", "-3"], 2, "config key 'trainer.epochs' must be >= 1 (got -3)"),
    (ALL, ["--set", "env.eval_every=0"], 2, "config key 'env.eval_every' must be >= 1 (got 0)"),
    (TRAINING, ["--seed", "-1"], 2, "config key 'seed' must be in [0, 4294967295] (got -1)"),
    (("compare",), ["--policies", "agent", "--agent", "../../x:teach"], 2,
     "--agent '../../x:teach': the name '../../x' may hold only letters, digits and _ . + -"),
    (("compare",), ["--policies", "agent", "--agent", "a]:teach", "--agent", "a:hardness"], 2, "the name 'a]' may hold only"),
    (("compare",), ["--policies", "agent", "--agent", "a:teach,seed=7"], 2, "--agent 'a:teach,seed=7': 'seed' is set by the study for every run"),
    (("compare",), ["--policies", "agent", "--agent", "a:teach,env.reward=hardness"], 2, "'env.reward' is set by the study"),
    (("compare",), ["--arm", "x:rmix,out={tmp}/x"], 2, "--arm 'x:rmix,out={tmp}/x': 'out' is set by the study"),
    (ALL, ["--set", "model.name=resnet_huge"], 2, "unknown model 'resnet_huge'; choose one of: preact"),
    (ALL, ["--set", "data.name=imagenet"], 2, "unknown dataset 'imagenet'; choose one of: cifar10, cifar100"),
    (ALL, ["--set", "data.name=cifar10", "--set", "data.root={tmp}/empty", "--set", "data.options={}"], 2,
     "CIFAR-10 not found under '{tmp}/empty'"),
    (ALL, ["--out", "{tmp}/file/run"], 2, "output directory '{tmp}/file/run' is not writable"),
    (ALL, ["--bogus"], 2, "unrecognized arguments: --bogus"),
    (("train", "agent"), ["--reward", "bogus"], 2, "config key 'env.reward': unknown reward 'bogus'; choose one of: ema_agreement, grad_cosine"),
    (("compare",), ["--policies", "rmix,agent", "--reward", "bogus"], 2, "--reward: unknown reward 'bogus'; choose one of"),
    (("train",), ["--policy", "bogus"], 2, "argument --policy: invalid choice: 'bogus'"),
    (("train",), ["--policy", "manifold_mixup", "--set", "model.name=tests.user_model_fixtures:small_cnn"], 2,
     "config key 'mix.mixer': manifold_mixup mixes hidden states, but the model 'tests.user_model_fixtures:small_cnn' (SmallNet) has no `stages`"),
    (("train",), ["--policy", "saliencymix", "--set", "mix.lam_mode=elem"], 2,
     "config key 'mix.mixer': saliencymix draws its mixing parameters once per batch, as its authors do; lam_mode must be 'batch'"),
    (("train",), ["--policy", "saliencymix", "--set", "mix.options={prob: 2}"], 2, "config key 'mix.mixer': prob must be in [0, 1], got 2"),
    (("train",), ["--set", "mix.options={clean_lam: 1}"], 2, "config key 'mix.options': mixer 'rmix' has no option 'clean_lam'; its options: "),
    (("train",), ["--set", "policy=bogus"], 2, "config key 'policy': unknown policy 'bogus'; choose one of: agent, comixup, constant"),
    (("compare",), ["--policies", "rmix,bogus"], 2, "unknown policy 'bogus'; choose one of: agent, comixup, constant"),
    (("compare",), ["--policies", ","], 2, "--policies is empty"),
    (("compare",), ["--seeds", "-1"], 2, "--seeds: seed -1 is not in [0, 4294967295]"),
    (TRAINING, ["--reward", "tests.reward_fixtures:broken"], 1, "reward 'tests.reward_fixtures:broken' raised KeyError: 'x'"),
    (TRAINING, ["--reward", "tests.reward_fixtures:text"], 1,
     "reward 'tests.reward_fixtures:text' must return a float or 50 floats (one per image, batch order), got str 'high'"),
    (TRAINING, ["--reward", "tests.reward_fixtures:wrong_shape"], 1, "got a Tensor of shape (3,)"),
    (TRAINING, ["--reward", "tests.reward_fixtures:nan_per_image"], 1,
     "reward 'tests.reward_fixtures:nan_per_image' is nan at epoch 1, step 1; stopping"),
    (TRAINING, ["--reward", "tests.no_such_module:f"], 2, "cannot import reward 'tests.no_such_module:f'"),
    (TRAINING, ["--reward", "tests.broken_reward_module:f"], 2,
     "config key 'env.reward': cannot import reward 'tests.broken_reward_module:f': importing raised RuntimeError: the reward server is down"),
    (TRAINING, ["--reward", "val_loss_drop"], 2, "reward 'val_loss_drop' needs a held-out split: set data.val_size"),
    (TRAINING, ["--set", "env.log_rewards=[bogus]"], 2, "config key 'env.log_rewards': unknown reward 'bogus'"),
    (ALL, ["--set", "data.name=imagefolder", "--set", "data.root={tmp}/folder", "--set", "data.options={}"], 2,
     "imagefolder: cannot read image '{tmp}/folder/train/cat/broken.png'"),
    (ALL, ["--set", "data.name=mnist", "--set", "data.root={tmp}/empty", "--set", "data.options={}"], 2,
     "MNIST not found (looked for its four IDX files in '{tmp}/empty'"),
    (ALL, ["--set", "data.val_size=400", "--set", "data.hold_out=always"], 2, "data: val_size (400) must be smaller than the training budget (400 images)"),
    (TRAINING, ["--stop-after-epoch", "0"], 2, "argument --stop-after-epoch: must be >= 1 (got 0)"),
    (TRAINING, ["--resume"], 2, "checkpoint '{tmp}/run/checkpoint.pt' does not exist"),
    (TRAINING, ["--resume", "--out", "{tmp}/corrupt"], 2, "checkpoint '{tmp}/corrupt/checkpoint.pt' is corrupt or not an rlmix checkpoint"),
    (TRAINING, ["--resume", "--out", "{tmp}/truncated"], 2, "checkpoint '{tmp}/truncated/checkpoint.pt' is corrupt"),
    (TRAINING, ["--resume", "--out", "{tmp}/foreign"], 2, "has an unknown format; was it written by rlmix?"),
    (TRAINING, ["--resume", "--out", "{tmp}/format"], 2, "has format 99, this rlmix 0.1.0 reads format 2"),
    (TRAINING, ["--resume", "--out", "{tmp}/version"], 2,
     "was written by rlmix 9.9.0, this is rlmix 0.1.0; resume it with rlmix 9.9.x or start a new run"),
]  # fmt: skip
EXPANDED = [
    pytest.param(entry, argv, code, text, id=f"{entry}-{' '.join(argv)}")
    for entries, argv, code, text in CASES
    for entry in entries
]


@pytest.fixture
def bad_files(tmp_path):
    """The broken configs, paths and checkpoints the table refers to."""
    (tmp_path / "binary.yaml").write_bytes(b"seed: 0\n\xff\xfe\x00garbage")
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "syntax.yaml").write_text("seed: 0\ntrainer:\n  epochs: 2\n   lr_max: 0.1\n")
    (tmp_path / "unknown.yaml").write_text("trainer:\n  lr_mx: 0.2\n")
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "folder" / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "ok.png")
    (tmp_path / "folder" / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    for name in ("corrupt", "truncated", "foreign", "format", "version"):
        (tmp_path / name).mkdir()
    (tmp_path / "corrupt" / "checkpoint.pt").write_bytes(b"\x00garbage" * 100)
    save_checkpoint(tmp_path / "truncated" / "checkpoint.pt", {"w": torch.ones(1000)})
    data = (tmp_path / "truncated" / "checkpoint.pt").read_bytes()
    (tmp_path / "truncated" / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    torch.save({"x": 1}, tmp_path / "foreign" / "checkpoint.pt")
    torch.save({"format": 99, "rlmix_version": "0.1.0"}, tmp_path / "format" / "checkpoint.pt")
    torch.save({"format": 1, "rlmix_version": "9.9.0"}, tmp_path / "version" / "checkpoint.pt")
    return tmp_path


def _fill(items, tmp):
    return [s.replace("{tmp}", str(tmp)) for s in items]


def assert_one_line(err: str, code: int, expected_code: int, text: str) -> None:
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(("entry", "argv", "code", "text"), EXPANDED)
def test_cli_error_is_one_line(entry, argv, code, text, bad_files, data_root, capsys):
    tmp = bad_files
    got = run_main(MAINS[entry], [*base_args(entry, data_root, tmp), *_fill(argv, tmp)])
    assert_one_line(capsys.readouterr().err, got, code, text.replace("{tmp}", str(tmp)))


@pytest.fixture(scope="module")
def fixed_run(data_root, tmp_path_factory):
    """A real one-epoch `rlmix.train` run directory (its checkpoint is used by resume cases)."""
    out = tmp_path_factory.mktemp("fixed") / "run"
    assert train_main([*tiny_args(data_root), "--epochs", "2", "--stop-after-epoch", "1",
                       "--out", str(out)]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("entry", "argv", "text"),
    [
        ("train", ["--seed", "1"], "different config (seed: 0 in the checkpoint, 1 now)"),
        ("agent", [], "different config (env.counterfactual_every: 0 in the checkpoint, 1 now)"),
    ],
)
def test_resume_refuses_incompatible_checkpoint(entry, argv, text, fixed_run, data_root, capsys):
    args = [*tiny_args(data_root), "--epochs", "2", "--out", str(fixed_run), "--resume", *argv]
    code = run_main(MAINS[entry], args)
    assert_one_line(capsys.readouterr().err, code, 2, text)


def test_debug_shows_the_traceback(data_root, capsys):
    code = run_main(train_main, [*tiny_args(data_root), "--set", "mix.k=1", "--debug"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "error: config key 'mix.k'"
    )


def test_multiline_message_is_joined(capsys):
    def main(argv):
        raise RlmixError("first line\n  second line\n")

    assert run_main(main, []) == 1
    assert capsys.readouterr().err == "error: first line second line\n"


def test_escape_codes_never_reach_the_error_line(capsys):
    """A message quoting a library's coloured hint, or a name with an ESC in it, prints as plain
    text: no colour, cursor, title or reset sequence, no other control character."""

    def main(argv):
        raise ConfigError(
            "model 'x' raised OSError: \x1b[31mno weights\x1b[0m; \x1b]0;title\x07try "
            "\x1b[1mpython -m rlmix.convert\x1b[22m\tagain\x1bc\x07\x9b"
        )

    assert run_main(main, []) == 2
    err = capsys.readouterr().err
    assert err == "error: model 'x' raised OSError: no weights; try python -m rlmix.convert again\n"


def test_real_subprocesses_print_one_line_without_traceback(bad_files, data_root):
    tmp = bad_files
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    runs = {
        "train": (["--config", f"{tmp}/syntax.yaml"], "at line 4"),
        "agent": (["--set", "mix.grids=[3]"], "grid 3 does not divide"),
        "compare": (["--policies", "rmix,bogus"], "unknown policy 'bogus'"),
    }
    procs = {
        entry: subprocess.Popen(
            [sys.executable, "-m", MODULES[entry], *base_args(entry, data_root, tmp), *argv],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for entry, (argv, _) in runs.items()
    }
    for entry, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert_one_line(err, proc.returncode, 2, runs[entry][1])


# -- the public Python API raises ConfigError with the same messages --------------------------


def test_api_errors(tiny_config, tmp_path):
    from envs import MixupEnv
    from rlmix.config import load_config
    from rlmix.train import train_fixed

    with pytest.raises(ConfigError, match=r"unknown config key 'mix.alhpa'; did you mean 'alpha'"):
        load_config({"mix": {"alhpa": 1}})
    with pytest.raises(ConfigError, match=r"'env.reward': unknown reward 'nope'"):
        MixupEnv(tiny_config(), reward="nope")
    with pytest.raises(ConfigError, match=r"grid 3 does not divide the image side 32"):
        MixupEnv(tiny_config(), **{"mix.grids": [3]})
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"output directory '.*f/run' is not writable"):
        train_fixed(tiny_config(out=str(tmp_path / "f" / "run")), progress=False)


def test_unreadable_config(tmp_path, monkeypatch):
    from rlmix.config import load_config

    path = tmp_path / "locked.yaml"
    path.write_text("seed: 0\n")

    def deny(self, *a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "read_text", deny)
    with pytest.raises(ConfigError, match=r"cannot read config '.*locked.yaml': Permission denied"):
        load_config(path)


# -- a study's finished runs are read back, or named -------------------------------------------


@pytest.mark.parametrize(
    ("timings", "metrics", "problem"),
    [
        (None, {}, "its timings.json is missing"),
        ("{not json", {}, "its timings.json is unreadable (Expecting property name"),
        ('{"epoch_time_s": [1.0]}', {"final": ...}, "its metrics.json lacks 'final'"),
    ],
)
def test_a_finished_run_with_a_missing_file_is_named(
    timings, metrics, problem, tiny_config, tmp_path
):
    """``metrics.json`` says the run finished, so a study reads it back instead of training it:
    a missing or damaged file is one line naming the run, the file and what to do."""
    import json

    from rlmix.study import Job, run_job

    job = Job("rmix", "rmix", 0, tiny_config(out=str(tmp_path / "rmix" / "seed0"), epochs=1))
    job.out.mkdir(parents=True)
    saved = {"policy": "rmix", "seed": 0, "final": {"top1": 0.5}, "epochs": [{"epoch": 1}]}
    saved.update(metrics)
    (job.out / "metrics.json").write_text(
        json.dumps({k: v for k, v in saved.items() if v is not ...})
    )
    if timings is not None:
        (job.out / "timings.json").write_text(timings)
    with pytest.raises(
        RlmixError,
        match=rf"^run rmix seed 0 cannot be read back: {re.escape(problem)}.* \(its metrics.json "
        rf"says it finished\); remove '{re.escape(str(job.out))}' and run the study again",
    ):
        run_job(job)
    assert not (job.out / "checkpoint.pt").exists()  # read back, not trained


# -- checkpoints: versions, non-finite state, write errors --------------------------------------


def _stamped(tmp_path, **payload):
    path = tmp_path / "c.pt"
    torch.save({"format": 1, "rlmix_version": rlmix.__version__, **payload}, path)
    return path


def test_checkpoint_version_check(tmp_path):
    major, minor, _ = rlmix.__version__.split(".")
    same = _stamped(tmp_path, rlmix_version=f"{major}.{minor}.99", epoch=3)
    assert load_checkpoint(same)["epoch"] == 3  # patch releases resume each other's runs
    other = f"{major}.{int(minor) + 1}.0"
    path = _stamped(tmp_path, rlmix_version=other)
    with pytest.raises(
        ConfigError, match=rf"written by rlmix {other}, this is rlmix {rlmix.__version__}"
    ):
        load_checkpoint(path)
    (tmp_path / "c.pt").unlink()
    torch.save({"format": 1, "epoch": 1}, tmp_path / "c.pt")
    with pytest.raises(ConfigError, match=r"unknown format"):
        load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ConfigError, match=r"has format 3, this rlmix .* reads format 2"):
        load_checkpoint(_stamped(tmp_path, format=3))
    assert load_checkpoint(_stamped(tmp_path, format=1))["format"] == 1  # 0.1 files: read, and
    # an agent inside one is refused where it would be unpickled (tests/test_agent_files.py)


def test_checkpoint_with_non_finite_state_is_not_written(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"env": {"model": {"w": torch.ones(3)}}, "history": [{"epoch": 1.0}]})
    before = path.read_bytes()
    bad = {"env": {"model": {"w": torch.tensor([1.0, float("nan")])}}, "history": [{"epoch": 2.0}]}
    with pytest.raises(
        RlmixError,
        match=r"env.model.w holds NaN or inf after epoch 2 .*previous checkpoint is kept",
    ):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_error_keeps_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def write(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(
        RlmixError,
        match=r"cannot write '.*metrics.json': No space left on device; the previous file is kept",
    ):
        atomic_write(path, write)
    assert path.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))


# -- NaN / inf during training ------------------------------------------------------------------

STEPS = 8  # tiny config: 400 images, batch 50


class CallCounter:
    """Wraps a function; from call number ``bad`` on, ``spoil`` transforms its result."""

    def __init__(self, fn, bad, spoil, on_call=None):
        self.fn, self.bad, self.spoil, self.on_call, self.calls = fn, bad, spoil, on_call, 0

    def __call__(self, *a, **k):
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        out = self.fn(*a, **k)
        return self.spoil(out) if self.calls >= self.bad else out


def _snapshot_at_epoch_2(out, snap, epoch=2):
    def on_call(n):
        if n == (epoch - 1) * STEPS + 2:  # the checkpoint of epoch - 1 is on disk
            snap["bytes"] = (out / "checkpoint.pt").read_bytes()

    return on_call


def _check_kept_checkpoint(out, snap, epoch=1):
    assert (out / "checkpoint.pt").read_bytes() == snap["bytes"]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["env"]["trainer"]["epoch"] == epoch and len(state["history"]) == epoch


@pytest.mark.parametrize(("entry", "value"), [("train", float("nan")), ("agent", float("inf"))])
def test_non_finite_loss_stops_and_keeps_checkpoint(
    entry, value, monkeypatch, data_root, tmp_path, capsys
):
    import rlmix.trainer

    out, snap = tmp_path / "run", {}
    real = rlmix.trainer.get_loss

    def get_loss(name):
        spoil = lambda loss: loss * value  # noqa: E731
        return CallCounter(real(name), STEPS + 3, spoil, _snapshot_at_epoch_2(out, snap))

    monkeypatch.setattr(rlmix.trainer, "get_loss", get_loss)
    # one loss call a step: no counterfactual pass (it calls the loss too, and is not trained on)
    args = [*tiny_args(data_root), "--set", "env.counterfactual_every=0"]
    code = run_main(MAINS[entry], [*args, "--epochs", "3", "--out", str(out)])
    assert_one_line(
        capsys.readouterr().err, code, 1, f"training loss is {value} at epoch 2, step 3; stopping"
    )
    _check_kept_checkpoint(out, snap)


@pytest.mark.parametrize(("entry", "name"), [("agent", "saliency"), ("train", "logits")])
def test_non_finite_observation_stops_and_keeps_checkpoint(
    entry, name, monkeypatch, data_root, tmp_path, capsys
):
    import rlmix.trainer

    out, snap = tmp_path / "run", {}

    def spoil(result):
        sal, logits = result
        if name == "saliency":
            return sal * float("nan"), logits
        return sal, logits + float("inf")

    counter = CallCounter(
        rlmix.trainer.input_saliency, STEPS + 3, spoil, _snapshot_at_epoch_2(out, snap)
    )
    monkeypatch.setattr(rlmix.trainer, "input_saliency", counter)
    code = run_main(MAINS[entry], [*tiny_args(data_root), "--epochs", "3", "--out", str(out)])
    msg = f"the observation's {name} is not finite at epoch 2, step 3; stopping"
    assert_one_line(capsys.readouterr().err, code, 1, msg)
    _check_kept_checkpoint(out, snap)


@pytest.mark.parametrize(
    ("epochs", "eval_every", "message"),
    [
        (2, 1, "the classifier's weights are not finite at epoch 2, step 8; stopping"),
        (3, 3, r"the classifier's weights are not finite after epoch 2, step 8; stopping"),
    ],
)
def test_diverged_weights_are_not_checkpointed(
    epochs, eval_every, message, monkeypatch, data_root, tmp_path, capsys
):
    """A finite loss with NaN gradients on the last step of epoch 2 (evaluated or not): the run
    stops before evaluating or saving the diverged weights; epoch 1's checkpoint stays."""
    import rlmix.trainer

    out, snap = tmp_path / "run", {}
    real = rlmix.trainer.get_loss

    def nan_grad(loss):
        return loss + 0 * torch.sqrt(loss - loss)  # value unchanged, gradient NaN

    def get_loss(name):
        return CallCounter(real(name), 2 * STEPS, nan_grad, _snapshot_at_epoch_2(out, snap))

    monkeypatch.setattr(rlmix.trainer, "get_loss", get_loss)
    args = [*tiny_args(data_root), "--epochs", str(epochs), "--out", str(out)]
    code = run_main(train_main, [*args, "--set", f"env.eval_every={eval_every}"])
    err = capsys.readouterr().err
    assert_one_line(err, code, 1, "")
    assert re.search(message, err), err
    _check_kept_checkpoint(out, snap)


def test_huge_learning_rate_stops_with_epoch_and_step(data_root, tmp_path, capsys):
    args = [*tiny_args(data_root), "--epochs", "2", "--out", str(tmp_path / "run")]
    code = run_main(train_main, [*args, "--set", "trainer.lr_max=1e30", "--policy", "vanilla"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "at epoch 1, step " in err and err.strip().endswith("; stopping"), err


def test_failing_reward_keeps_the_last_checkpoint(data_root, tmp_path, capsys):
    from tests import reward_fixtures

    reward_fixtures.CALLS["n"] = 0
    out = tmp_path / "run"
    args = [*tiny_args(data_root), "--epochs", "3", "--out", str(out)]
    code = run_main(agent_main, [*args, "--reward", "tests.reward_fixtures:fails_in_epoch_2"])
    assert_one_line(
        capsys.readouterr().err,
        code,
        1,
        "reward 'tests.reward_fixtures:fails_in_epoch_2' raised RuntimeError: the reward server",
    )
    state = load_checkpoint(out / "checkpoint.pt")
    assert len(state["history"]) == 1 and state["env"]["trainer"]["global_step"] == STEPS


def test_non_finite_reward_stops(monkeypatch, data_root, tmp_path, capsys):
    from envs import rewards

    def flaky(inputs):
        return float("nan") if inputs.prev_loss is not None else 0.0

    monkeypatch.setitem(rewards.REWARDS._entries, "flaky", rewards.Reward("flaky", flaky))
    args = [*tiny_args(data_root), "--epochs", "1", "--out", str(tmp_path / "run")]
    code = run_main(agent_main, [*args, "--reward", "flaky"])
    assert_one_line(
        capsys.readouterr().err, code, 1, "reward 'flaky' is nan at epoch 1, step 2; stopping"
    )


# -- observations handed to the agent are finite and inside the observation space ----------------


@pytest.mark.parametrize("kind", ["rmix", "vanilla", "degenerate"])
def test_observations_are_finite_and_in_space(kind, tiny_config, monkeypatch):
    import rlmix.trainer
    from envs import MixupEnv

    if kind == "degenerate":  # zero saliency and huge logits still give a valid observation
        monkeypatch.setattr(
            rlmix.trainer,
            "input_saliency",
            lambda model, x, y, mode, **_: (
                torch.zeros(x.shape[0], *x.shape[2:]),
                torch.full((x.shape[0], 10), 1e30),
            ),
        )
    overrides = (
        {"mix.mixer": "none", "reward": "none"} if kind == "vanilla" else {"reward": "grad_cosine"}
    )
    env = MixupEnv(tiny_config(**overrides, epochs=1, eval_fgsm=False))
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    seen = [obs]
    truncated = False
    while not truncated:
        obs, reward, _, truncated, _ = env.step(
            rng.integers(0, env.cfg.mix.k, env.action_space.shape)
        )
        assert np.isfinite(reward)
        seen.append(obs)
    assert len(seen) == STEPS + 1
    for obs in seen:
        assert all(np.isfinite(v).all() for v in obs.values())
        assert env.observation_space.contains(obs)


def test_version_is_recorded(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
    raw = torch.load(path, weights_only=True)
    assert (
        raw["rlmix_version"] == rlmix.__version__ and raw["format"] == checkpoints.CHECKPOINT_FORMAT
    )
