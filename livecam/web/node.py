"""The node face: each camera's latest snapshot and the ``status --json`` data, live."""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from livecam import build
from livecam import snapshot as snapshotmod
from livecam import status as statusmod
from livecam.config import Config
from livecam.plugins import Plugins
from livecam.web.app import page, serve_file

SNAPSHOT = snapshotmod.NAME  # in each camera's buffer directory, written by the backend


def routes(config: Config, plugins: Plugins) -> list[Route]:
    buffer = build.tier(config, plugins, "buffer")

    async def index(request: Request) -> Response:
        return page("node.html")

    async def status(request: Request) -> Response:
        data = await run_in_threadpool(statusmod.gather, config, plugins)
        for name, cam in data["cameras"].items():
            cam["snapshot"] = (buffer.path / name / SNAPSHOT).is_file()
        body = json.dumps(data, default=str)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def snapshot(request: Request) -> Response:
        camera = request.path_params["camera"]
        if camera not in config.cameras:  # only configured names reach the filesystem
            return Response("no such camera\n", status_code=404)
        path = buffer.path / camera / SNAPSHOT
        if not path.is_file():
            return Response("no snapshot yet\n", status_code=404)
        return serve_file(request, path, "image/jpeg")

    return [
        Route("/", index),
        Route("/api/status", status),
        Route("/snapshot/{camera}.jpg", snapshot),
    ]
