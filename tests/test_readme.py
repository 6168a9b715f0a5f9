"""README.md and docs/*.md: links resolve, shown commands exist, the README stays short."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The text outside code blocks and inline code (where links are written)."""
    return CODE.sub("", FENCE.sub("", text))


def _targets(text: str) -> list[str]:
    return LINK.findall(_prose(text))


def test_docs_pages_exist_and_are_linked_from_the_readme():
    assert len(PAGES) >= 10
    linked = {(ROOT / t).resolve() for t in _targets(README.read_text())}
    assert set(PAGES[1:]) <= linked


def test_link_extraction_skips_code():
    text = "see [a](docs/a.md) and ![b](b.png#x)\n```\n[c](c.md)\n```\n`[d](d.md)`"
    assert _targets(text) == ["docs/a.md", "b.png#x"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_files(page):
    missing = []
    for target in _targets(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, a mail address or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert missing == []


def test_python_modules_shown_exist():
    shown = set()
    for page in PAGES:
        shown |= set(re.findall(r"python -m ([A-Za-z_][\w.]*)", page.read_text()))
    assert {"rlmix.train_agent", "rlmix.compare", "pytest", "benchmarks"} <= shown
    assert [m for m in sorted(shown) if importlib.util.find_spec(m) is None] == []


def test_make_targets_shown_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    shown = set()
    for page in PAGES:  # `make X` in inline code, or a code line starting with it
        shown |= set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", page.read_text(), re.M))
    assert {"run", "test", "study", "headroom", "bench"} <= shown
    assert sorted(shown - targets) == []


def test_readme_is_short_and_is_the_package_description():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200 and lines[0] == "# rlmix"
    # setuptools reads README.md as the package's long description (pyproject's readme)
    meta = apply_configuration(Distribution(), ROOT / "pyproject.toml").metadata
    assert meta.long_description == README.read_text()
    assert meta.long_description_content_type == "text/markdown"


SNIPPET = re.compile(r"<!-- loop snippet -->\n```python\n(.*?)```", re.S)


def test_the_own_loop_snippet_is_short_and_runs(tmp_path, monkeypatch):
    """The README's 'RL-Mix in your own loop' block, as printed, on a tiny model and data."""
    import torch

    from rlmix.models import create_model

    (code,) = SNIPPET.findall(README.read_text())
    assert len(code.strip().splitlines()) <= 15
    g = torch.Generator().manual_seed(0)
    loader = [(torch.rand(8, 3, 32, 32, generator=g), torch.randint(10, (8,), generator=g))] * 3
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 10, image_size=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    env = {"loader": loader, "epochs": 2, "model": model, "optimizer": optimizer,
           "scheduler": scheduler}  # fmt: skip
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), env)
    mix = env["mix"]
    assert mix.global_step == 6 and mix.epoch == 2 and mix.ppo._n_updates > 0
    assert (tmp_path / "agent.zip").stat().st_size > 0


# Files that hold results: each study's outputs (results/) and the benchmarks' tables.
RESULTS = [*sorted((ROOT / "results").rglob("*")), ROOT / "benchmarks" / "RESULTS.md"]
FIGURE = re.compile(r"\d+\.\d+")


def _quoted_text(text: str) -> str:
    """The README's prose and its ``text`` output blocks: where it quotes figures (commands
    and code are not figures)."""
    blocks = re.findall(r"^```text\n(.*?)^```", text, re.S | re.M)
    return "\n".join([_prose(text), *blocks])


def test_every_figure_in_the_readme_comes_from_a_results_file():
    sources = "\n".join(
        p.read_text() for p in RESULTS if p.is_file() and p.suffix in (".md", ".csv", ".txt")
    )
    figures = sorted(set(FIGURE.findall(_quoted_text(README.read_text()))))
    assert len(figures) >= 10
    missing = [f for f in figures if not re.search(rf"(?<![\d.]){re.escape(f)}(?!\d)", sources)]
    assert missing == [], f"README figures in no results file: {missing}"


def test_budget_study_trains_every_budget_for_the_same_steps():
    """`make budget-study` expands to one compare per budget whose epochs keep 2000 SGD steps
    (batch 100, 10 classes: budget / 10 steps an epoch), and a sweep over all of them."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}
    out = subprocess.run(
        ["make", "-n", "-s", "budget-study", "STAMP=Makefile"], cwd=ROOT, env=env, text=True,
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    plan = re.findall(
        r"--out runs/budget_(\d+) --set data.train_per_class=(\d+) --epochs (\d+)", out
    )
    assert [int(n) for n, _, _ in plan] == [25, 50, 100, 250]
    study = yaml.safe_load((ROOT / "rlmix/configs/fashion_mnist_study.yaml").read_text())
    batch = study["trainer"]["batch_size"]
    for out_n, n, epochs in plan:
        assert out_n == n and int(epochs) * (int(n) * 10 // batch) == 2000
    assert "rlmix.sweep runs/budget_25 runs/budget_50 runs/budget_100 runs/budget_250" in out
