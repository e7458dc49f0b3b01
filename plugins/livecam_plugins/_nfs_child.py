"""The ``nfs`` transport's helper process: one publish into the share, then exit.

Run by path as ``python -I -S _nfs_child.py`` with the job as JSON on stdin; it
answers JSON on stdout (``livecam.transport.dirstore.run_job``). A hung hard mount can
freeze a process in the kernel where no signal reaches it: it then freezes this
child, which the transport abandons at its timeout, never the shipper.

``-S`` keeps start-up short (no site-packages), so pluggy is not importable, and
the ``__init__`` of ``livecam`` and of ``livecam.transport`` are skipped: the publish
modules it loads need the standard library only.
"""

import json
import sys
import types


def _load_livecam(package_dir: str) -> None:
    """Make ``livecam.transport.*`` importable from ``package_dir`` without running the
    ``__init__`` of ``livecam`` or of ``livecam.transport`` (the contract, which
    brings the option converters and more)."""
    for name, path in (("livecam", package_dir), ("livecam.transport", f"{package_dir}/transport")):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package


def main() -> None:
    job = json.loads(sys.stdin.read())
    _load_livecam(job["livecam"])
    from livecam.transport.dirstore import run_job

    sys.stdout.write(json.dumps(run_job(job)))


if __name__ == "__main__":
    main()
