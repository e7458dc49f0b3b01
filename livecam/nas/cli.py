"""The NAS commands: ``livecam nas index``, ``livecam nas audit``, ``livecam export``.

    livecam nas index [--root DIR] [--full] [--json]
    livecam nas audit [--root DIR] [--site S] [--since DATE] [--json] [--prometheus FILE]
    livecam export SITE/NODE/CAMERA [--camera SITE/NODE/CAMERA ...] --from T --to T -o clip.mp4

They need no node config: the recordings root comes from ``--root``, else from
the NAS config file (``-c``, ``$LIVECAM_NAS_CONFIG``, ``/etc/livecam/nas.yaml``).
Exit codes: 0 fine, 1 the audit found an unexplained hole or an export failed,
2 a bad config or argument (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from livecam import options
from livecam.nas import audit, explain, index, report
from livecam.nas import config as nasconfig
from livecam.nas.export import ExportError, export, output_paths, resolve
from livecam.options import ConfigError

COMMANDS = ("nas", "export")


def _where() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--root", help="the recordings root (default: root in the NAS config)")
    p.add_argument("-c", "--config", help="NAS config file (default: /etc/livecam/nas.yaml)")
    p.add_argument("--db", help="the index (default: <root>/.livecam/index.sqlite)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def parser() -> argparse.ArgumentParser:
    where = _where()
    p = argparse.ArgumentParser(prog="livecam", description="livecam on the NAS")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    nas = sub.add_parser("nas", help="the index and the audit of the recordings")
    nas_sub = nas.add_subparsers(dest="nas_command", required=True, metavar="COMMAND")
    idx = nas_sub.add_parser("index", parents=[where], help="bring the SQLite index up to date")
    idx.add_argument("--full", action="store_true", help="re-list every directory")
    idx.add_argument("--json", action="store_true", help="what was done, as JSON")
    aud = nas_sub.add_parser("audit", parents=[where], help="coverage and every hole, explained")
    aud.add_argument("--site", help="only this site")
    aud.add_argument("--since", help="only from this date or time (ISO 8601), or age (7d)")
    aud.add_argument("--grace", help="holes this recent are 'not yet shipped' (e.g. 15m)")
    aud.add_argument("--json", action="store_true", help="machine-readable")
    aud.add_argument(
        "--prometheus", metavar="FILE", help="also write metrics here ('-': stdout, no report)"
    )
    aud.add_argument("--no-index", action="store_true", help="use the index as it is")
    exp = sub.add_parser("export", parents=[where], help="one MP4 of a span, no re-encoding")
    exp.add_argument("cameras", nargs="*", metavar="SITE/NODE/CAMERA")
    exp.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="SITE/NODE/CAMERA",
        help="another camera (repeat); files OUT-SITE-NODE-CAMERA.mp4",
    )
    exp.add_argument("--from", dest="start", required=True, help="ISO 8601 with a zone, or Z")
    exp.add_argument("--to", dest="end", required=True, help="ISO 8601 with a zone, or Z")
    exp.add_argument("-o", "--output", required=True, help="the MP4 to write")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = nasconfig.load(args.config, args.root, args.db)
        if args.command == "export":
            return _export(args, cfg)
        if args.nas_command == "index":
            return _index(args, cfg)
        return _audit(args, cfg)
    except ConfigError as exc:
        print(f"livecam: error: {exc}", file=sys.stderr)
        return 2


def _index(args: argparse.Namespace, cfg: nasconfig.NasConfig) -> int:
    conn, stats = index.update(cfg, full=args.full)
    total = conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    if args.json:
        print(json.dumps({**asdict(stats), "segments": total, "db": str(cfg.db)}))
    else:
        print(
            f"{cfg.db}: {total} segments; +{stats.added} new, {stats.changed} changed, "
            f"-{stats.removed} gone, {stats.records} loss records, {stats.probed} probed, "
            f"{stats.unplayable} unplayable; {stats.dirs_listed} of {stats.dirs_seen} "
            f"directories listed in {stats.seconds:.1f}s"
        )
    return 0


def _audit(args: argparse.Namespace, cfg: nasconfig.NasConfig) -> int:
    if args.grace is not None:
        cfg = replace(cfg, grace=options.parse_duration(args.grace, "--grace"))
    since = nasconfig.parse_since(args.since, "--since", time.time()) if args.since else None
    if args.no_index:
        conn = index.connect(cfg.db)
    else:
        conn, _ = index.update(cfg)
    audits = [
        audit.audit_camera(conn, *cam, since=since, grace=cfg.grace)
        for cam in audit.cameras(conn, args.site, cfg.cameras)
    ]
    if args.prometheus:
        body = report.prometheus(audits)
        if args.prometheus == "-":
            sys.stdout.write(body)
        else:
            report.write_textfile(Path(args.prometheus), body)
    if args.prometheus != "-":
        print(audit.to_json(audits) if args.json else report.text(audits))
    return 1 if any(a.unexplained for a in audits) else 0


def _export(args: argparse.Namespace, cfg: nasconfig.NasConfig) -> int:
    specs = [*args.cameras, *args.camera]
    if not specs:
        raise ConfigError("export: name a camera: SITE/NODE/CAMERA (or --camera, repeated)")
    start = nasconfig.parse_time(args.start, "--from").timestamp()
    end = nasconfig.parse_time(args.end, "--to").timestamp()
    conn = index.connect(cfg.db)
    cams = _resolve(cfg, conn, specs)
    # Only what the span needs is brought up to date: each camera's node, and of its
    # days of segments only those around the span (loss records: all of them).
    for site, node in dict.fromkeys((site, node) for site, node, _ in cams):
        index.Indexer(cfg, conn, under=f"{site}/{node}", window=(start, end)).run()
    failed = 0
    for cam, out in zip(cams, output_paths(Path(args.output), cams), strict=True):
        try:
            clip = export(conn, cfg.root, cam, start, end, out, grace=cfg.grace)
        except ExportError as exc:
            print(f"livecam: export {'/'.join(cam)}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"{clip.out}: {clip.camera}, {len(clip.segments)} segments from "
            f"{explain.iso(clip.segments[0].start + clip.inpoint)}"
        )
        spans = [report.describe(h) for h in clip.holes] + clip.uncovered
        print(f"  holes: {'; '.join(spans) if spans else 'none'}")
    return 1 if failed else 0


def _resolve(
    cfg: nasconfig.NasConfig, conn: sqlite3.Connection, specs: list[str]
) -> list[tuple[str, str, str]]:
    """The cameras named, from the index as it is; a camera it does not know yet is
    looked for again after a full update."""
    try:
        try:
            return [resolve(conn, spec) for spec in specs]
        except ExportError:
            index.Indexer(cfg, conn).run()
            return [resolve(conn, spec) for spec in specs]
    except ExportError as exc:
        raise ConfigError(str(exc)) from None
