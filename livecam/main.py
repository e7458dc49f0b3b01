"""The ``livecam`` console script: the first word picks a command family, and only that
family's module is loaded.

The node's commands (``livecam.cli``) bring the plugin manager, every tier, the
recorder and the shipper; the NAS's (``livecam nas``, ``livecam export``) and the
web pages' need none of them. Loading the family by name, the way plugins are
loaded by entry point, keeps ``livecam export`` from paying for the node at every
start (about 60 ms, which is a third of copying ten minutes of video from the page
cache: docs/benchmarks.md). Each family's module imports what it uses at its top,
as everywhere else, but for three things only some runs need: pluggy, which
``livecam.hookimpl`` brings on first use (``livecam/__init__.py``); PyYAML, only
when a NAS config file is read; tempfile, only for the export's ffmpeg fallback.
"""

from __future__ import annotations

import importlib
import os
import sys

# First word -> the module whose ``main(argv)`` runs it, and whether that word is its
# own (``livecam web nas`` runs ``livecam.web.cli.main(["nas"])``). Anything else: the node.
FAMILIES = {
    "nas": ("livecam.nas.cli", False),
    "export": ("livecam.nas.cli", False),
    "web": ("livecam.web.cli", True),
}
NODE = "livecam.cli"


def main(argv: list[str] | None = None) -> int:
    """Run one livecam command; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    module, drop_word = FAMILIES.get(argv[0] if argv else "", (NODE, False))
    try:
        code: int = importlib.import_module(module).main(argv[1:] if drop_word else argv)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        # The reader went away (`livecam status | head`): no traceback. Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
