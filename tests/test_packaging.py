"""A non-editable install (a wheel) behaves like the source tree: the configs ship inside it."""

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rlmix.config import load_config, packaged_configs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and unpacked into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(REPO)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("rlmix-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
         str(tmp / "site"), str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return wheel, tmp / "site"


def _run_installed(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python without site hooks (so the editable install is not seen), the wheel's folder first,
    then this environment's dependencies."""
    deps = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": f"{site}:{deps}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_wheel_contains_every_config(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in packaged_configs():
        assert f"rlmix/configs/{config}.yaml" in names
    assert {"envs/mixup_env.py", "agents/ppo.py", "baselines/runner.py"} <= names


def test_installed_package_loads_the_same_configs(installed, tmp_path):
    _, site = installed
    code = (
        "import json, rlmix, rlmix.config as c\n"
        "print(json.dumps({'file': rlmix.__file__, 'names': c.packaged_configs(),\n"
        " 'default': c.load_config(None).to_dict(),\n"
        " 'recipe': c.load_config('cifar100_preactresnet18_rmix').to_dict()}))"
    )
    proc = _run_installed(site, code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["file"].startswith(str(site))  # the wheel's copy, not the source tree
    assert got["names"] == packaged_configs()
    assert got["default"] == load_config(None).to_dict()
    assert got["recipe"] == load_config("cifar100_preactresnet18_rmix").to_dict()
    assert got["default"]["agent"]["n_steps"] == load_config("default").agent.n_steps
