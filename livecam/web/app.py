"""The ASGI app both faces share: credentials on every request, GET only, file serving."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp

from livecam.web import access, files

Handler = Callable[[Request], Awaitable[Response]]


def page(name: str) -> HTMLResponse:
    """One of the package's HTML pages."""
    text = resources.files("livecam.web").joinpath(name).read_text()
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


def serve_file(request: Request, path: Path, media_type: str) -> Response:
    """``path`` whole (200) or the requested byte range (206); 416 for a range beyond it.

    No answer carries more than ``files.MAX_SPAN`` bytes: a longer range is cut to that
    many from its start (206 with the Content-Range sent; the client asks for the
    rest), and a larger file asked for without a Range is refused (403)."""
    f = open(path, "rb")  # noqa: SIM115 - read_span closes it, or an answer below
    size = files.size_of(f)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    try:
        span = files.parse_range(request.headers.get("range"), size)
    except files.BadRange:
        f.close()
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if span is None and size > files.MAX_SPAN:
        f.close()
        return PlainTextResponse(
            f"larger than {files.MAX_SPAN >> 20} MiB: ask for it in byte ranges\n",
            status_code=403,
            headers=headers,
        )
    first, last = span if span else (0, size - 1)
    last = min(last, first + files.MAX_SPAN - 1)
    headers["Content-Length"] = str(last - first + 1)
    if span:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    body = files.read_span(f, first, last)
    return StreamingResponse(
        body, status_code=206 if span else 200, media_type=media_type, headers=headers
    )


class Guard(BaseHTTPMiddleware):
    """401 without credentials; 405 for anything but GET and HEAD."""

    def __init__(self, app: ASGIApp, token: str | None, proxy_header: str | None):
        super().__init__(app)
        self.token = token
        self.proxy_header = proxy_header

    async def dispatch(self, request: Request, call_next: Handler) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("read-only\n", status_code=405, headers={"Allow": "GET"})
        given = request.query_params.get("token")
        if given is not None and self.token is not None:
            if not access.allowed({"authorization": f"Bearer {given}"}, {}, self.token, None):
                return _unauthorized()
            # Back to the same page and query without the token; one leading slash, so
            # "//host/" cannot make this a redirect to another site.
            rest = request.url.remove_query_params("token")
            back = RedirectResponse(
                "/" + rest.path.lstrip("/") + (f"?{rest.query}" if rest.query else ""), 303
            )
            back.set_cookie(access.COOKIE, self.token, httponly=True, samesite="strict")
            return back
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not access.allowed(headers, dict(request.cookies), self.token, self.proxy_header):
            return _unauthorized()
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response


def _unauthorized() -> Response:
    return PlainTextResponse(
        "credentials needed\n",
        status_code=401,
        headers={"WWW-Authenticate": 'Basic realm="livecam", charset="UTF-8"'},
    )


def build(routes: list[Route], token: str | None, proxy_header: str | None) -> Starlette:
    app = Starlette(routes=routes)
    app.add_middleware(Guard, token=token, proxy_header=proxy_header)
    return app
