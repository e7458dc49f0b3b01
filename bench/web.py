#!/usr/bin/env python3
"""How fast ``livecam web nas`` serves one camera-day's timeline.

    bench/web.py [--requests 50] [--report FILE]

An index (the real schema, ``livecam.nas.index.connect``) holds one camera-day of
30 s segments: 2,880 rows, with 20 segments missing (evicted, a loss record for
each) and a neighbouring camera's day besides. The real ``livecam web nas``
(uvicorn) serves ``/api/timeline/lab/node01/cam0?day=...``; each request is timed
from send to the last byte over loopback. Target: the median within 100 ms.

Prints JSON; ``--report FILE`` writes it as markdown too. Run as any user.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livecam.losses import FORMAT
from livecam.nas import index
from tests.web.server import Web, token_file

DAY = "2026-11-20"
SEGMENTS = 2880
TARGET_MS = 100.0


def build(root: Path) -> int:
    """The index of one camera-day (and a second camera's); the number of holes made."""
    conn = index.connect(root / ".livecam" / "index.sqlite")
    t0 = datetime.fromisoformat(DAY).replace(tzinfo=UTC).timestamp()
    missing = set(range(100, SEGMENTS, 140))  # 20 evicted segments
    with conn:
        for camera in ("cam0", "cam1"):
            for i in range(SEGMENTS):
                if camera == "cam0" and i in missing:
                    continue
                start = t0 + 30 * i
                stamp = datetime.fromtimestamp(start, UTC)
                rel = f"lab/node01/{camera}/{DAY}/{camera}-{stamp:%Y%m%dT%H%M%SZ}-{i:09d}.mp4"
                conn.execute(
                    "INSERT INTO segments (path, dir, site, node, camera, seq, start, duration,"
                    " size, mtime_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (rel, rel.rsplit("/", 1)[0], "lab", "node01", camera, i, start, 30.0,
                     3_000_000, 0),
                )  # fmt: skip
        for i in sorted(missing):
            record = json.dumps({"format": FORMAT, "kind": "evicted", "camera": "cam0",
                                 "node": "node01", "time": t0 + 30 * i + 600, "sequences": [i],
                                 "detail": {"tier": "buffer", "limit": "64M"}})  # fmt: skip
            path = f"lab/node01/livecam-losses/{DAY}/evicted-{i:09d}.json"
            conn.execute(
                "INSERT INTO losses (path, dir, site, node, camera, kind, time, record)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (path, path.rsplit("/", 1)[0], "lab", "node01", "cam0", "evicted",
                 t0 + 30 * i + 600, record),
            )  # fmt: skip
    conn.close()
    return len(missing)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--report", type=Path, help="also write the figures as markdown here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="web-bench-") as work:
        root = Path(work) / "root"
        root.mkdir()
        holes = build(root)
        web = Web("nas", "--root", str(root), "--token-file", str(token_file(Path(work))))
        try:
            path = f"/api/timeline/lab/node01/cam0?day={DAY}"
            status, _, body = web.get(path)  # warm: first connection, SQLite pages
            data = json.loads(body)
            assert status == 200, body[:200]
            times = []
            for _ in range(args.requests):
                t = time.perf_counter()
                status, _, body = web.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert status == 200
        finally:
            web.stop()
    result = {
        "segments": len(data["segments"]), "holes": len(data["holes"]),
        "holes_made": holes, "explained": sum(h["explained"] for h in data["holes"]),
        "bytes": len(body), "requests": len(times),
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(sorted(times)[int(0.95 * (len(times) - 1))], 1),
        "max_ms": round(max(times), 1), "target_ms": TARGET_MS,
    }  # fmt: skip
    result["within_target"] = result["median_ms"] <= TARGET_MS
    print(json.dumps(result, indent=1))
    if args.report:
        args.report.write_text(
            "# livecam web benchmark\n\n"
            "`bench/web.py`: one camera-day's timeline (`/api/timeline`) from the real\n"
            "`livecam web nas` over loopback.\n\n| figure | value |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in result.items())
        )
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
