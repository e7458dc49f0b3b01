"""livecam's modules import one way (contracts at the bottom, processes on top) and stay small."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "livecam"
MAX_LINES = 300


def modules() -> dict[str, Path]:
    return {
        ("livecam" if p.stem == "__init__" else f"livecam.{p.stem}"): p
        for p in sorted(PACKAGE.glob("*.py"))
    }


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every livecam module ``path`` imports anywhere: top level, in functions, under
    TYPE_CHECKING. ``from livecam import x`` is an edge to livecam.x when x is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            if any(f"{node.module}.{a.name}" in known for a in node.names):
                names.remove(node.module)  # `from livecam import tiers` is an edge to tiers
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


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


def test_the_walk_sees_function_local_and_type_checking_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from livecam.config import Config\n"
        "def f():\n    from livecam import tiers\n    import livecam.shipper\n"
    )
    found = imports_of(probe, {"livecam", "livecam.config", "livecam.tiers", "livecam.shipper"})
    assert found == {"livecam.config", "livecam.tiers", "livecam.shipper"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_livecam_imports_have_no_cycle():
    edges = graph()
    assert "livecam.plugins" in edges["livecam.config"], "the walk found the known edges"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_contracts_import_no_process():
    edges = graph()
    processes = {"livecam.shipper", "livecam.recorder", "livecam.supervisor", "livecam.cli"}
    for contract in ("livecam.hookspecs", "livecam.camera", "livecam.transport", "livecam.tiers"):
        reach, todo = set(), [contract]
        while todo:
            for nxt in edges[todo.pop()] - reach:
                reach.add(nxt)
                todo.append(nxt)
        assert not reach & (processes | {"livecam.config", "livecam.plugins"}), contract


def test_no_module_is_over_300_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: c for n, c in long.items() if c > MAX_LINES} == {}
