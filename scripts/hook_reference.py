#!/usr/bin/env python3
"""Write the hook reference of docs/plugins.md from the hookspec docstrings.

    scripts/hook_reference.py          rewrite the section in docs/plugins.md
    scripts/hook_reference.py --check  exit 1 if docs/plugins.md differs from it

The docstrings in livecam/pluginhost/hookspecs.py are the contract; this copies them, between
the two marker comments, so the docs can never say something else.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from livecam.pluginhost import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
BEGIN = (
    "<!-- hook reference: written by scripts/hook_reference.py"
    " from livecam/pluginhost/hookspecs.py -->"
)
END = "<!-- end of hook reference -->"
GROUPS = [
    ("Registration", hookspecs.REGISTRATION_HOOKS),
    ("Policy (first non-None result wins)", hookspecs.POLICY_HOOKS),
    ("Events (return nothing)", hookspecs.EVENT_HOOKS),
]


def reference() -> str:
    lines = [BEGIN]
    for title, names in GROUPS:
        lines += ["", f"### {title}"]
        for name in hookspecs.spec_names():
            if name not in names:
                continue
            spec = getattr(hookspecs, name)
            params = ", ".join(inspect.signature(spec).parameters)
            lines += ["", f"#### `{name}({params})`", "", inspect.getdoc(spec) or ""]
    lines += ["", END]
    return "\n".join(lines)


def rewritten(text: str) -> str:
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise SystemExit(f"{DOC}: the marker comments {BEGIN!r} and {END!r} are missing")
    return head + reference() + tail


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare, change nothing")
    args = p.parse_args()
    text = DOC.read_text()
    new = rewritten(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run scripts/hook_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
