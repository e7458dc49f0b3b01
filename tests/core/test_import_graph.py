"""The floor plan holds: livecam's folders import one way, and every module stays small.

Read from the source (``ast``), nothing imported: every import counts, top level,
function-local and ``TYPE_CHECKING`` ones, and importing ``a.b.c`` counts as
importing ``a`` and ``a.b`` too (Python runs each package's ``__init__`` first).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from tests.conftest import REPO

TREES = {"livecam": REPO / "livecam", "livecam_plugins": REPO / "plugins" / "livecam_plugins"}
MAX_LINES = 300
MAX_FUNCTION_LINES = 60

# The folders, bottom to top, and what each may never import (docs/architecture.md).
STORAGE = "livecam.storage"
TRANSPORT = "livecam.transport"
PLUGINHOST = "livecam.pluginhost"
RECORDER = "livecam.recorder"
SHIPPER = "livecam.shipper"
OPS = "livecam.ops"
NAS = "livecam.nas"
WEB = "livecam.web"
PROCESSES = (RECORDER, SHIPPER, "livecam.cli", "livecam.main")
NEVER = {
    STORAGE: (*PROCESSES, OPS, PLUGINHOST, TRANSPORT, "livecam.config", "livecam.camera", NAS, WEB),
    TRANSPORT: (*PROCESSES, OPS, PLUGINHOST, "livecam.config", NAS, WEB),
    "livecam.camera": (*PROCESSES, OPS, PLUGINHOST, TRANSPORT, "livecam.config", NAS, WEB),
    "livecam.options": (
        STORAGE,
        TRANSPORT,
        PLUGINHOST,
        RECORDER,
        SHIPPER,
        OPS,
        NAS,
        WEB,
        "livecam.config",
        "livecam.camera",
        "livecam.cli",
        "livecam.main",
    ),
    PLUGINHOST: (*PROCESSES, OPS, "livecam.config", NAS, WEB),
    "livecam.config": (*PROCESSES, OPS, NAS, WEB),
    OPS: (*PROCESSES, NAS, WEB),
    RECORDER: (SHIPPER, "livecam.cli", NAS, WEB),
    SHIPPER: (RECORDER, "livecam.cli", NAS, WEB),
    NAS: (*PROCESSES, OPS + ".status", PLUGINHOST, "livecam.config", WEB),
    "livecam_plugins": (*PROCESSES, OPS + ".status", "livecam.config", NAS, WEB),
}


def dotted(path: Path) -> str:
    for top, root in TREES.items():
        if path.is_relative_to(root):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


def modules() -> dict[str, Path]:
    return {dotted(p): p for root in TREES.values() for p in sorted(root.rglob("*.py"))}


def ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def imports_of(path: Path, known: set[str], own: str = "") -> set[str]:
    """Every known module ``path`` (the module ``own``) imports anywhere.

    ``import a.b.c`` also runs ``a`` and ``a.b``: edges to them too, except to the
    packages above ``own`` itself (already running when it runs). ``from a.b import
    x`` is an edge to ``a.b`` when ``x`` is no module of it (a name of its
    ``__init__``), whoever imports it."""
    found: set[str] = set()
    mine = ancestors(own)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            if not all(n in known for n in names):
                names = [n for n in names if n in known] + [node.module]
        else:
            continue
        for name in names:
            found.update((ancestors(name) - mine | {name}) & known)
    return found


def graph(*, packages: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports; with ``packages``, also the packages above
    it (which run first wherever it is imported from)."""
    mods = modules()
    known = set(mods)
    edges = {name: imports_of(path, known, name) - {name} for name, path in mods.items()}
    if packages:
        for name in edges:
            edges[name] |= ancestors(name) & known
    return edges


def within(name: str, place: str) -> bool:
    return (
        name == place
        or name.startswith(place.rstrip(".") + ".")
        or (place.endswith(".") and name.startswith(place))
    )


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_every_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from livecam.config import Config\n"
        "def f():\n    from livecam.storage import tiers\n    import livecam.shipper.process\n"
    )
    known = {"livecam", "livecam.config", "livecam.storage", "livecam.storage.tiers",
             "livecam.shipper", "livecam.shipper.process"}  # fmt: skip
    assert imports_of(probe, known) == known
    assert imports_of(probe, known, "livecam.storage.segment") == known - {
        "livecam",
        "livecam.storage",
    }
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_imports_have_no_cycle():
    edges = graph()
    assert PLUGINHOST + ".manager" in edges["livecam.config"], "the walk found a known edge"
    assert "livecam.transport" in edges["livecam.transport.stores"], "and the package edges"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_folder_reaches_what_it_must_never_import():
    edges = graph(packages=True)
    broken = []
    for place, never in NEVER.items():
        for module in (m for m in edges if within(m, place)):
            reach, todo = set(), [module]
            while todo:
                for nxt in edges[todo.pop()] - reach:
                    reach.add(nxt)
                    todo.append(nxt)
            broken += [
                f"{module} -> {r}"
                for r in sorted(reach)
                if any(within(r, n) for n in never) and not within(r, place)
            ]
    assert not broken, "\n".join(broken)


def test_no_module_is_over_300_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: c for n, c in long.items() if c > MAX_LINES} == {}


def literal_lines(fn: ast.AST) -> int:
    """Lines of ``fn`` inside multi-line literal displays (tables), counted once."""
    lines: set[int] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.List | ast.Tuple | ast.Dict | ast.Set) and node.end_lineno:
            lines.update(
                range(node.lineno, node.end_lineno + 1) if node.end_lineno > node.lineno else ()
            )
    return len(lines)


def test_no_function_is_over_60_lines_but_for_its_tables():
    long = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
                size = node.end_lineno - node.lineno + 1 - literal_lines(node)
                if size > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = size
    assert long == {}


FMT_SKIP = re.compile(r"#\s*fmt:\s*skip")


def test_fmt_skip_only_on_tables():
    """``# fmt: skip`` keeps a table's columns; anything else is formatted as ruff says."""
    misplaced = []
    for name, path in modules().items():
        text = path.read_text()
        skipped = {i for i, line in enumerate(text.splitlines(), 1) if FMT_SKIP.search(line)}
        tables = set()
        for node in ast.walk(ast.parse(text)):
            value = getattr(node, "value", None)
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.Return | ast.Expr) and isinstance(
                value, ast.List | ast.Tuple | ast.Dict | ast.Set
            ):
                tables.add(node.end_lineno)
        misplaced += [f"{name}:{line}" for line in sorted(skipped - tables)]
    assert misplaced == []


def test_pyproject_lists_every_package():
    """The packages setuptools installs are the folders of the tree (a wheel built
    without one would lack it on every node)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    folders = {n for n, p in modules().items() if p.name == "__init__.py"}
    assert listed == folders
