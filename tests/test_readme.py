"""README.md and docs/*.md: links resolve, shown commands exist, the README stays short."""

import importlib.util
import re
from pathlib import Path

import pytest
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
