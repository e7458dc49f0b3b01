"""docs/promises.md names real tests: a renamed or deleted test fails here.

The table maps each promise of the docs to the tests that prove it; this keeps
it from going stale silently. Tests are found by reading the test files (ast),
so nothing is imported or started. A row is proven only if its tests catch its
promise broken: each mutation of scripts/mutants.py names its rows, and the last
report (docs/mutants.json) must show one of those rows' tests catching it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "promises.md"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
ROW = re.compile(r"^\| ([RATMNWSFLO]\d+) \|", re.M)
# A whole row: its id, then the last cell (the verdict).
VERDICT = re.compile(r"^\| ([RATMNWSFLO]\d+) \|.*\| ([^|]*) \|$", re.M)
VERDICTS = ("proven", "partly", "none", "doc changed")
# Rows for the docs written after the review, one per promise: M monitoring.md,
# N nas.md, W web.md, S the s3 section of transports.md,
# F a fleet catching up (issue 14), L the node's own losses (issue 23), O what
# livecam tells an operator (issue 22).
LATER = {"M": 13, "N": 12, "W": 16, "S": 9, "F": 11, "L": 3, "O": 30}
# The last run of scripts/mutants.py --report: what each mutation's tests caught.
MUTANTS_REPORT = ROOT / "docs" / "mutants.json"


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


def load_mutants():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
    assert spec is not None and spec.loader is not None
    mutants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutants)
    return mutants


def row_tests() -> dict[str, set[str]]:
    """Each row's id -> the node ids of the tests it names."""
    rows = {}
    for line in TABLE.read_text().splitlines():
        if m := ROW.match(line):
            rows[m[1]] = {f"{file}::{name}" for file, name in NODE_ID.findall(line)}
    return rows


def test_every_mutant_is_caught_by_a_test_its_rows_name():
    """A row is proven only if its tests fail with its promise broken. Each mutation
    of scripts/mutants.py names the rows it breaks (ROWS); in the last report
    (docs/mutants.json, with the commit it ran on) it was caught, and at least one
    test that caught it is among the tests those rows name. A mutation added or
    changed since the report fails here until it is run again."""
    mutants = load_mutants()
    rows = row_tests()
    report = json.loads(MUTANTS_REPORT.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", report["commit"]), "the report names its commit"
    ran = {entry["mutation"]: entry for entry in report["mutants"]}
    wrong = []
    for name, (file, old, new, _tests) in mutants.MUTATIONS.items():
        named = mutants.ROWS.get(name)
        if named is None:
            wrong.append(f"{name}: no entry in ROWS (the promise rows it breaks)")
            continue
        wrong += [f"{name}: no row {rid} in docs/promises.md" for rid in named if rid not in rows]
        entry = ran.get(name)
        if entry is None or (entry["file"], entry["old"], entry["new"]) != (file, old, new):
            wrong.append(f"{name}: not in the report as it is now: run scripts/mutants.py {name}")
            continue
        if not entry["caught"]:
            wrong.append(f"{name}: survived its tests ({entry['summary']})")
        elif named and not set(entry["failed"]) & set().union(*(rows.get(r, set()) for r in named)):
            wrong.append(f"{name}: caught by {entry['failed']}, none named by {named}")
    assert wrong == []
    assert report["caught"] == report["total"] == len(report["mutants"])


def test_every_mutant_still_finds_the_code_it_breaks():
    """scripts/mutants.py breaks each guarantee by one text replacement in one file.
    After a refactor each must still find its text there exactly once (else the
    mutant would break nothing, or the wrong place), and name tests that exist."""
    mutants = load_mutants()
    stale = []
    for name, (file, old, _new, tests) in mutants.MUTATIONS.items():
        path = ROOT / file
        if not path.is_file() or path.read_text().count(old) != 1:
            stale.append(f"{name}: {old!r} is not in {file} exactly once")
        for test in tests:
            test_file, _, test_name = test.partition("::")
            if not (ROOT / test_file).is_file() or (
                test_name and test_name not in defined_tests(ROOT / test_file)
            ):
                stale.append(f"{name}: no test {test}")
    assert len(mutants.MUTATIONS) > 10
    assert stale == []
