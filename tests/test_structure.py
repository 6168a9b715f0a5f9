"""The import graph of the four packages: no module imports one that imports it back, and the
layers point one way (library <- engine <- envs <- baselines <- agents <- commands)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rlmix", "envs", "baselines", "agents")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """The project modules ``module`` imports anywhere (lazily too), except a package's own
    submodules that its ``__init__`` imports to register them (the registry pattern)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {r for r in map(_resolve, names) if r is not None}
    found.discard(module)
    if MODULES[module].name == "__init__.py":
        found = {m for m in found if not m.startswith(f"{module}.")}
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo += GRAPH[node]
    return False


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_itself_back(module):
    back = sorted(dep for dep in GRAPH[module] if _reaches(dep, module))
    assert not back, f"{module} and {back} import each other"


def test_atomic_writes_depend_on_nothing_but_errors():
    assert GRAPH["rlmix.io"] == {"rlmix.errors"}


@pytest.mark.parametrize(
    ("package", "above"),
    [("envs", ("baselines", "agents")), ("baselines", ("agents",))],
)
def test_layers_point_one_way(package, above):
    wrong = sorted(
        (m, d) for m in GRAPH if m.split(".")[0] == package for d in GRAPH[m]
        if d.split(".")[0] in above
    )  # fmt: skip
    assert not wrong


def test_report_renders_without_the_commands():
    assert not GRAPH["rlmix.report"] & {"rlmix.compare", "rlmix.paired"}
