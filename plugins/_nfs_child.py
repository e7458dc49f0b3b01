"""The ``nfs`` transport's helper process: one publish into the share, then exit.

Run by path as ``python -I -S _nfs_child.py`` with the job as JSON on stdin; it
answers JSON on stdout (``livecam.dirstore.run_job``). A hung hard mount can
freeze a process in the kernel where no signal reaches it: it then freezes this
child, which the transport abandons at its timeout, never the shipper.

``-S`` keeps start-up short (no site-packages), so pluggy is not importable and
livecam's package ``__init__`` is skipped: the publish modules it loads need the
standard library only.
"""

import json
import sys
import types


def _load_livecam(package_dir: str) -> None:
    """Make ``livecam.*`` importable from ``package_dir`` without running its __init__."""
    package = types.ModuleType("livecam")
    package.__path__ = [package_dir]
    sys.modules["livecam"] = package


def main() -> None:
    job = json.loads(sys.stdin.read())
    _load_livecam(job["livecam"])
    from livecam.dirstore import run_job

    sys.stdout.write(json.dumps(run_job(job)))


if __name__ == "__main__":
    main()
