#!/usr/bin/env python3
"""How fast ``livecam web nas`` serves one camera-day's timeline, and how fast its page
first renders in Chromium.

    bench/web.py [--requests 50] [--report FILE]
    bench/web.py --render [--days 30] [--cameras 4] [--loads 7] [--report FILE]

An index (the real schema, ``livecam.nas.index.connect``) holds one camera-day of
30 s segments: 2,880 rows, with 20 segments missing (evicted, a loss record for
each) and a neighbouring camera's day besides. The real ``livecam web nas``
(uvicorn) serves ``/api/timeline/lab/node01/cam0?day=...``; each request is timed
from send to the last byte over loopback. Target: the median within 100 ms.

``--render``: bench/nas.py's tree (``--days`` x ``--cameras`` x 2,880 hard links to
one small real segment per camera-day) indexed by ``livecam.nas.index``; the real
``livecam web nas`` serves it, and Debian's headless chromium (Selenium, as in
tests/web) opens ``/?day=LAST-DAY``. The page sets the performance mark
``livecam-timelines-drawn`` once every camera's timeline for that day is drawn and
the next frame painted; its time since navigation start is the figure. The first
load is cold (a new browser); the median is over ``--loads`` fresh navigations.
Target: ≤ 1 s.

Prints JSON; ``--report FILE`` writes it as markdown too. Run as any user.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import emit
from livecam.nas import index
from livecam.storage.losses import FORMAT
from tests.web.server import Web, token_file

DAY = "2026-11-20"
SEGMENTS = 2880
TARGET_MS = 100.0
RENDER_TARGET_MS = 1000.0
MARK = "livecam-timelines-drawn"


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
            path = f"lab/node01/_losses/{DAY}/evicted-{i:09d}.json"
            conn.execute(
                "INSERT INTO losses (path, dir, site, node, camera, kind, time, record)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (path, path.rsplit("/", 1)[0], "lab", "node01", "cam0", "evicted",
                 t0 + 30 * i + 600, record),
            )  # fmt: skip
    conn.close()
    return len(missing)


def render(days: int, cameras: int, loads: int, keep: Path | None) -> dict[str, object]:
    """The NAS page's first render with ``cameras`` x ``days`` indexed (see the top)."""
    from datetime import timedelta

    from livecam.nas.config import NasConfig
    from tests.web.browser import chromium
    from tests.web.server import TOKEN

    spec = importlib.util.spec_from_file_location("bench_nas", Path(__file__).parent / "nas.py")
    assert spec and spec.loader
    nas = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nas)
    with tempfile.TemporaryDirectory(prefix="web-bench-render-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root = work / "root"
        t0 = time.monotonic()
        built = root.is_dir()  # --keep: the tree of an earlier run
        files = 2880 * days * cameras if built else nas.build_tree(root, days, cameras, work)
        config = NasConfig(root=root, db=root / ".livecam" / "index.sqlite", sha256=True)
        conn, _ = index.update(config)
        rows = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
        conn.close()
        made = time.monotonic() - t0
        day = f"{nas.START + timedelta(days=days - 1):%Y-%m-%d}"
        web = Web("nas", "--root", str(root), "--token-file", str(token_file(work)))
        browser = chromium()
        times, apis = [], []
        try:
            for n in range(loads + 1):
                query = f"?day={day}" + (f"&token={TOKEN}" if n == 0 else "")
                browser.get(f"{web.url}/{query}")  # the first sets the cookie
                deadline = time.monotonic() + 60
                while not browser.execute_script(
                    f"return performance.getEntriesByName('{MARK}').length"
                ):  # fmt: skip
                    assert time.monotonic() < deadline, "the timelines were drawn"
                    time.sleep(0.02)
                times.append(browser.execute_script(
                    f"return performance.getEntriesByName('{MARK}')[0].startTime"
                ))  # fmt: skip
                apis.append(browser.execute_script(
                    "return Math.max(...performance.getEntriesByType('resource')"
                    ".filter(e=>e.name.includes('/api/')).map(e=>e.responseEnd))"
                ))  # fmt: skip
                drawn = browser.execute_script(
                    "return [...document.querySelectorAll('.bar')].map(b=>+b.dataset.segments)"
                )
                # A day's 2,880, and the day before's last segment, which touches midnight.
                assert len(drawn) == cameras and all(n >= 2880 for n in drawn), drawn
        finally:
            browser.quit()
            web.stop()
    warm = times[1:]
    return {
        "cameras": cameras, "days": days, "files": files, "indexed_segments": rows,
        "tree_and_index_seconds": round(made), "tree_reused": built, "day_shown": day,
        "segments_drawn": sum(drawn), "loads": len(warm),
        "first_load_ms": round(times[0]), "median_ms": round(statistics.median(warm)),
        "max_ms": round(max(warm)), "target_ms": RENDER_TARGET_MS,
        "median_last_api_answer_ms": round(statistics.median(apis[1:])),
        "within_target": statistics.median(warm) <= RENDER_TARGET_MS
        and times[0] <= RENDER_TARGET_MS,
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--render", action="store_true", help="the NAS page's first render")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--loads", type=int, default=7)
    p.add_argument("--keep", type=Path, help="--render: build the tree here once, reuse it")
    p.add_argument("--report", type=Path, help="also write the figures as markdown here")
    args = p.parse_args()
    if args.render:
        result = render(args.days, args.cameras, args.loads, args.keep)
        intro = (
            "`bench/web.py --render`: the NAS page in headless chromium\n"
            "until every camera's day timeline is drawn and painted."
        )
        emit(result, args.report, "livecam web: first render", intro)
        return 0 if result["within_target"] else 1
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
    intro = (
        "`bench/web.py`: one camera-day's timeline (`/api/timeline`) from the real\n"
        "`livecam web nas` over loopback."
    )
    emit(result, args.report, "livecam web benchmark", intro)
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
