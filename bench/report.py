"""How every benchmark hands over its figures: JSON on stdout, and with ``--report``
the same figures in a file (a markdown table when the bench gives a title)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], report: Path | None, title: str = "", intro: str = "") -> None:
    """Print ``result``; write it to ``report`` as ``# title``, ``intro`` and a table of
    figure | value, or as the JSON itself when there is no title."""
    text = json.dumps(result, indent=1)
    print(text)
    if report is None:
        return
    if not title:
        report.write_text(text + "\n")
        return
    rows = "".join(f"| {k} | {v} |\n" for k, v in result.items())
    report.write_text(f"# {title}\n\n{intro}\n\n| figure | value |\n|---|---|\n{rows}")
