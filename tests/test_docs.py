"""The docs name what exists: every file path and every dotted livecam name in README.md
and docs/*.md resolves, so a moved or renamed module cannot leave the docs behind.

(The hook reference in docs/plugins.md is checked against the specs by
tests/core/test_plugins.py.)
"""

from __future__ import annotations

import importlib
import re

from livecam._moved import MOVED
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PATH = re.compile(
    r"(?<![\w./-])((?:livecam|plugins|tests|bench|scripts|ansible|monitoring|docs)/[\w./-]*\w)"
)
NAME = re.compile(r"(?<![\w./-])(livecam(?:_plugins)?(?:\.[A-Za-z_]\w*)+)")
# Names that are files (livecam.yaml, livecam.rules.yml), not modules.
FILE_SUFFIXES = ("yaml", "yml", "prom", "json", "log", "service", "timer", "sqlite", "mp4")


def resolves(name: str) -> bool:
    """Whether ``name`` is a module, or an attribute (chain) of one, by its path now
    (an old path that only ``livecam._moved`` keeps importing does not count)."""
    if any(name == old or name.startswith(old + ".") for old in MOVED):
        return False
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def named(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return [(doc.name, m.group(1)) for doc in DOCS for m in pattern.finditer(doc.read_text())]


def test_every_path_the_docs_name_exists():
    # Dot-folders (ansible/.wheelhouse) are made by a build, not kept in the tree.
    missing = [
        (doc, path)
        for doc, path in named(PATH)
        if "/." not in path and not (REPO / path.rstrip(".")).exists()
    ]
    assert len(named(PATH)) > 50, "the docs name files"
    assert missing == []


def test_every_livecam_name_the_docs_use_resolves():
    names = [(d, n) for d, n in named(NAME) if n.rsplit(".", 1)[-1] not in FILE_SUFFIXES]
    assert len(names) > 20, "the docs name modules"
    assert [(d, n) for d, n in names if not resolves(n)] == []


def test_the_check_can_fail():
    assert resolves("livecam.storage.segment.Segment")
    assert not resolves("livecam.segment_model") and not resolves("livecam.storage.Nope")
    assert not resolves("livecam.segment.Segment"), "an old path is stale in the docs"
    assert PATH.findall("see livecam/storage/tiers.py.") == ["livecam/storage/tiers.py"]
