"""``livecam web node|nas``: serve the read-only pages.

    livecam web node [-c FILE] [--bind ADDR] [--port N] (--token-file F | --trust-proxy-header H)
    livecam web nas  [--root DIR | --nas-config FILE] [--bind ADDR] [--port N] (...)

Binds to 127.0.0.1 unless told otherwise. A bad argument, a token file others can
read, or a missing ``web`` extra gives one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from livecam import build
from livecam import config as configmod
from livecam.nas import config as nasconfig
from livecam.options import ConfigError
from livecam.web import access

DEFAULT_PORT = 8470


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bind", default="127.0.0.1", help="address (default 127.0.0.1)")
    common.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    common.add_argument("--token-file", type=Path, help="the access token, in a 0600 file")
    common.add_argument(
        "--trust-proxy-header", metavar="NAME", help="let in requests with this header (a proxy's)"
    )
    p = argparse.ArgumentParser(prog="livecam web", description="read-only web pages")
    sub = p.add_subparsers(dest="face", required=True, metavar="FACE")
    node = sub.add_parser("node", parents=[common], help="this node's cameras, live")
    node.add_argument("-c", "--config", help="node config (default: $LIVECAM_CONFIG, ...)")
    nas = sub.add_parser("nas", parents=[common], help="the recordings on a timeline")
    nas.add_argument("--root", help="the recordings root (default: root in the NAS config)")
    nas.add_argument("--nas-config", help="NAS config file (default: /etc/livecam/nas.yaml)")
    nas.add_argument("--db", help="the index (default: <root>/.livecam/index.sqlite)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.token_file is None and args.trust_proxy_header is None:
            raise ConfigError("web: give --token-file FILE (mode 0600) or --trust-proxy-header")
        token = access.read_token(args.token_file) if args.token_file else None
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port: {args.port} is not a port number")
        try:
            import uvicorn

            from livecam.web import app as webapp
        except ImportError as exc:
            raise ConfigError(
                f"web needs the 'web' extra (pip install 'livecam[web]'): {exc}"
            ) from None
        if args.face == "node":
            from livecam.web import node

            cfg, plugins = build.load(configmod.find(args.config))
            routes = node.routes(cfg, build.disk(cfg, plugins))
        else:
            from livecam.web import nas

            ncfg = nasconfig.load(args.nas_config, args.root, args.db)
            if not ncfg.db.is_file():
                raise ConfigError(f"{ncfg.db}: no index yet; run 'livecam nas index' first")
            routes = nas.routes(ncfg)
    except ConfigError as exc:
        print(f"livecam: error: {exc}", file=sys.stderr)
        return 2
    app = webapp.build(routes, token, args.trust_proxy_header)
    uvicorn.run(app, host=args.bind, port=args.port, log_level="warning", server_header=False)
    return 0
