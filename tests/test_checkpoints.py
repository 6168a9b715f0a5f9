import subprocess
import sys
import textwrap

import pytest
import torch

from rlmix.checkpoints import (
    atomic_write_json,
    check_writable,
    load_checkpoint,
    save_checkpoint,
)
from rlmix.errors import ConfigError


def test_round_trip_with_weights_only(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "config": {"seed": 1, "out": "a"}}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt", config={"seed": 1, "out": "b"})
    torch.testing.assert_close(back["model"]["w"], torch.arange(4.0))
    assert back["epoch"] == 3
    assert not list(tmp_path.glob(".*tmp"))


def test_refuses_other_config(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"config": {"seed": 1, "mix": {"k": 10}}})
    with pytest.raises(ConfigError, match=r"different config \(mix.k: 10 in the checkpoint, 5 now"):
        load_checkpoint(tmp_path / "c.pt", config={"seed": 1, "mix": {"k": 5}})


def test_corrupt_and_missing(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"corrupt or not an rlmix checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match=r"unknown format"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"output directory '.*file/run' is not writable"):
        check_writable(blocker / "run")


def test_sigkill_during_write_keeps_previous_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"v": 1})
    script = textwrap.dedent(f"""
        import os, signal
        from rlmix.checkpoints import atomic_write
        def write(f):
            f.write(b'{{"v": 2, "partial')
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(path)!r}, write)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert path.read_text().strip() == '{\n  "v": 1\n}'


def test_a_key_an_older_config_lacks_counts_as_its_default():
    from rlmix.checkpoints import config_difference
    from rlmix.config import load_config

    now = load_config("fashion_mnist_study").to_dict()
    older = {**now, "mix": {k: v for k, v in now["mix"].items() if k != "lam_mode"}}
    older["env"] = {k: v for k, v in now["env"].items() if k != "partner_first"}
    assert config_difference(older, now) == ""
    elem = {**now, "mix": {**now["mix"], "lam_mode": "elem"}}
    assert config_difference(older, elem) == "mix.lam_mode: 'batch' in the checkpoint, 'elem' now"
    # an older run saw no partners; the embedded default now does, so it cannot resume as is
    partners = {**now, "env": {**now["env"], "partner_first": True}}
    assert config_difference(older, partners) == (
        "env.partner_first: False in the checkpoint, True now"
    )
