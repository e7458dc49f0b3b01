"""docs/promises.md names real tests: a renamed or deleted test fails here.

The table maps each promise of the docs to the tests that prove it; this keeps
it from going stale silently. Tests are found by reading the test files (ast),
so nothing is imported or started.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "promises.md"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
ROW = re.compile(r"^\| ([RATMNWSF]\d+) \|", re.M)
# A whole row: its id, then the last cell (the verdict).
VERDICT = re.compile(r"^\| ([RATMNWSF]\d+) \|.*\| ([^|]*) \|$", re.M)
VERDICTS = ("proven", "partly", "none", "doc changed")
# Rows for the docs written after the review, one per promise: M monitoring.md,
# N nas.md, W web.md, S the s3 section of transports.md,
# F a fleet catching up (issue 14).
LATER = {"M": 13, "N": 12, "W": 16, "S": 9, "F": 11}


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_named_in_the_promises_table_exists():
    named = NODE_ID.findall(TABLE.read_text())
    assert len(named) > 100, "the table names tests"
    missing = []
    for file, name in named:
        path = ROOT / file
        if not path.is_file() or name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/promises.md names tests that do not exist: {missing}"


def test_every_promise_of_the_review_has_a_row():
    rows = ROW.findall(TABLE.read_text())
    expected = (
        [f"R{i}" for i in range(1, 26)]
        + [f"A{i}" for i in range(1, 25)]
        + [f"T{i}" for i in range(1, 34)]  # T33: issue 14's window
    )
    assert len(expected) == 82
    expected += [f"{doc}{i}" for doc, count in LATER.items() for i in range(1, count + 1)]
    assert sorted(rows) == sorted(expected), "one row per promise, none twice"


def test_every_row_has_a_verdict_and_a_proven_row_names_its_tests():
    rows = VERDICT.findall(TABLE.read_text())
    assert len(rows) == len(ROW.findall(TABLE.read_text()))
    for rid, verdict in rows:
        assert verdict.strip().startswith(VERDICTS), f"{rid}: no verdict in {verdict!r}"
    for line in TABLE.read_text().splitlines():
        m = VERDICT.match(line)
        if m and m[2].strip().startswith("proven"):
            assert NODE_ID.search(line), f"{m[1]} is proven by no named test"
