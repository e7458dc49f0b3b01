"""The NAS face: sites, nodes and cameras from the index; a day's timeline per camera;
the segments themselves (HTTP Range); a span as one MP4 through the export."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from livecam.nas import audit, export, tree
from livecam.nas.config import NasConfig, parse_time
from livecam.options import ConfigError
from livecam.web.app import page, serve_file
from livecam.web.files import safe_path

MAX_EXPORT = 6 * 3600.0  # seconds: a longer span is refused (it would tie up the NAS)


def _connect(cfg: NasConfig) -> sqlite3.Connection:
    """The index, read-only: the web never writes it (``livecam nas index`` does)."""
    conn = sqlite3.connect(f"file:{cfg.db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def fleet(cfg: NasConfig) -> dict[str, Any]:
    """``{"sites": [{"site", "nodes": [{"node", "cameras": [...]}]}]}``."""
    with closing(_connect(cfg)) as conn:
        cams = audit.cameras(conn, expected=cfg.cameras)  # those with no footage too
    sites: dict[str, dict[str, list[str]]] = {}
    for site, node, camera in cams:
        sites.setdefault(site, {}).setdefault(node, []).append(camera)
    return {"sites": [
        {"site": s, "nodes": [{"node": n, "cameras": c} for n, c in nodes.items()]}
        for s, nodes in sites.items()
    ]}  # fmt: skip


def timeline(cfg: NasConfig, cam: tuple[str, str, str], day: str) -> dict[str, Any]:
    """One camera's UTC day: every segment (start, duration, url) and every hole that
    touches the day, with the audit's explanations."""
    start = parse_time(day, "day").timestamp()
    end = start + 86400.0
    with closing(_connect(cfg)) as conn:
        segs = audit.segments(conn, *cam, since=start, until=end)
        # The audit looks one segment either side, so a hole across midnight is seen.
        found = audit.audit_camera(conn, *cam, since=start - 3600, until=end, grace=cfg.grace)
    holes = []
    for h in found.holes:
        if h.before >= start and h.after <= end:
            holes.append({**h.as_dict(), "from": h.after, "to": h.before})
    return {
        "camera": "/".join(cam), "day": day, "from": start, "to": end,
        "segments": [
            {"seq": s.seq, "start": s.start, "duration": s.duration, "url": f"/video/{s.path}"}
            for s in segs if s.duration is not None
        ],
        "holes": holes,
    }  # fmt: skip


def routes(cfg: NasConfig) -> list[Route]:
    async def index(request: Request) -> Response:
        return page("nas.html")

    async def cameras(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(fleet, cfg))

    async def day_timeline(request: Request) -> Response:
        cam = _camera(request)
        day = request.query_params.get("day") or f"{datetime.now(UTC):%Y-%m-%d}"
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            return JSONResponse({"error": "day: give YYYY-MM-DD"}, status_code=400)
        return JSONResponse(await run_in_threadpool(timeline, cfg, cam, day))

    async def video(request: Request) -> Response:
        path = safe_path(cfg.root, request.path_params["rel"])
        if path is None or path.suffix != ".mp4" or _loss_record(cfg.root, path):
            return Response("not found\n", status_code=404)
        return serve_file(request, path, "video/mp4")

    async def download(request: Request) -> Response:
        cam = _camera(request)
        try:
            t0 = parse_time(request.query_params.get("from", ""), "from").timestamp()
            t1 = parse_time(request.query_params.get("to", ""), "to").timestamp()
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not 0 < t1 - t0 <= MAX_EXPORT:
            return JSONResponse(
                {"error": f"to must be after from, at most {MAX_EXPORT / 3600:g} h"}, 400
            )
        work = Path(tempfile.mkdtemp(prefix="livecam-web-export-"))
        name = f"{'-'.join(cam)}-{datetime.fromtimestamp(t0, UTC):%Y%m%dT%H%M%SZ}.mp4"
        try:
            await run_in_threadpool(_export, cfg, cam, t0, t1, work / name)
        except export.ExportError as exc:
            shutil.rmtree(work, ignore_errors=True)
            return JSONResponse({"error": str(exc)}, status_code=404)
        return FileResponse(
            work / name,
            media_type="video/mp4",
            filename=name,
            background=BackgroundTask(shutil.rmtree, work, ignore_errors=True),
        )

    return [
        Route("/", index),
        Route("/api/cameras", cameras),
        Route("/api/timeline/{site}/{node}/{camera}", day_timeline),
        Route("/api/export/{site}/{node}/{camera}", download),
        Route("/video/{rel:path}", video),
    ]


def _loss_record(root: Path, path: Path) -> bool:
    """True for a loss record (JSON, never served as a video), even one a node
    published before issue 22 under a ``.mp4`` name (``livecam.nas.tree``)."""
    found = tree.parse(path.relative_to(root).as_posix())
    return found is not None and found.is_loss_record


def _camera(request: Request) -> tuple[str, str, str]:
    p = request.path_params
    return p["site"], p["node"], p["camera"]


def _export(cfg: NasConfig, cam: tuple[str, str, str], t0: float, t1: float, out: Path) -> None:
    with closing(_connect(cfg)) as conn:
        export.export(conn, cfg.root, cam, t0, t1, out, grace=cfg.grace)
