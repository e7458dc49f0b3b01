"""The node face: each camera's latest snapshot and the ``status --json`` data, live."""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from livecam.config import Config
from livecam.ops import status as statusmod
from livecam.storage.layout import NodeDisk
from livecam.web.app import page, serve_file


def routes(config: Config, disk: NodeDisk) -> list[Route]:

    async def index(request: Request) -> Response:
        return page("node.html")

    async def status(request: Request) -> Response:
        data = await run_in_threadpool(statusmod.gather, config, disk)
        for name, cam in data["cameras"].items():
            cam["snapshot"] = disk.snapshot(name).is_file()
        body = json.dumps(data, default=str)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def snapshot(request: Request) -> Response:
        camera = request.path_params["camera"]
        if camera not in config.cameras:  # only configured names reach the filesystem
            return Response("no such camera\n", status_code=404)
        path = disk.snapshot(camera)
        if not path.is_file():
            return Response("no snapshot yet\n", status_code=404)
        return serve_file(request, path, "image/jpeg")

    return [
        Route("/", index),
        Route("/api/status", status),
        Route("/snapshot/{camera}.jpg", snapshot),
    ]
