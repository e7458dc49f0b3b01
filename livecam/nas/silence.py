"""A camera that fell silent: no footage at all, or none after its newest segment.

The audit knows which cameras must exist (``livecam.nas.audit.cameras``); one that
sent nothing for longer than ``grace`` has a hole from its newest segment (or from
the start of the audited span) to now, explained like any other by what its node
said since: a clean stop (``stopped``), a camera down that the node keeps reporting,
a recorder start whose first segment is still on its way. A node killed with -9
and never back says nothing: the hole is unexplained.
"""

from __future__ import annotations

import sqlite3

from livecam.nas.explain import TIME_TOLERANCE, Hole, Ranges, add_cause, iso
from livecam.nas.records import LossRecord

SILENT = ("stopped", "camera_down", "restart")  # the records that say why a camera is silent


def silence(
    conn: sqlite3.Connection,
    cam: tuple[str, str, str],
    recs: list[LossRecord],
    since: float | None,
    until: float | None,
    *,
    now: float,
    grace: float,
) -> Hole | None:
    """The hole of a camera silent for longer than ``grace`` (``recs``: its records in
    time order); None when it is not, or when it recorded after ``until`` (a window
    in the past)."""
    site, node = cam[0], cam[1]
    newest = conn.execute(
        "SELECT MAX(start + COALESCE(duration, 0)) FROM segments"
        " WHERE site=? AND node=? AND camera=?",
        cam,
    ).fetchone()[0]
    if newest is not None:
        quiet = float(newest)
        if now - quiet <= grace or (until is not None and quiet > until):
            return None
    else:  # no footage ever: silent since the audited span began, as far as it is known
        known = since if since is not None else earliest(conn, site, node)
        quiet = now if known is None else known
        if known is not None and now - quiet <= grace:
            return None
    hole = Hole("silent", quiet if since is None else max(quiet, since), now, None, None)
    explain_silence(hole, [r for r in recs if r.time >= quiet - TIME_TOLERANCE], now, grace)
    return hole


def explain_silence(hole: Hole, recs: list[LossRecord], now: float, grace: float) -> None:
    """What the node said since the camera fell silent (``recs``, in time order). A
    clean stop explains it; a camera down explains it while the node keeps saying so
    (its last record and retry within ``grace``); a recorder start whose first
    segment may still be on its way (within ``grace``) is backlog; else unexplained."""
    none: Ranges = []  # a silent hole has no numbers
    said = [r for r in recs if r.kind in SILENT]
    last = said[-1] if said else None
    downs = [r for r in said if r.kind == "camera_down"]
    if downs and (last is None or last.kind != "restart"):
        why = f"camera down since {iso(downs[0].time)}: {len(downs)} restart(s), " + (
            f"the last at {iso(downs[-1].time)}; {downs[-1].reason}"
        )
        add_cause(hole, "camera_down", why, none)
    if last is None:
        hole.fault = f"no segment and no loss record since {iso(hole.after)}"
    elif last.kind == "stopped":
        stop = last.get("last_seq")
        after = f" after seq {stop}" if stop is not None else ""
        add_cause(hole, "stopped", f"the recorder stopped cleanly at {iso(last.time)}{after}", none)
    elif last.kind == "camera_down":
        if now - last.time - float(last.get("delay") or 0) > grace:
            hole.fault = f"no segment and no loss record since {iso(last.time)}"
    elif now - last.time <= grace:
        why = f"the recorder started at {iso(last.time)}: not yet shipped"
        add_cause(hole, "backlog", why, none)
    else:
        hole.fault = f"the recorder started at {iso(last.time)} and nothing came since"


def earliest(conn: sqlite3.Connection, site: str, node: str) -> float | None:
    """The first time the index knows of the node (else of anything at all): its
    first segment or loss record."""
    for where, args in (("WHERE site=? AND node=?", (site, node)), ("", ())):
        row = conn.execute(
            f"SELECT MIN(t) FROM (SELECT MIN(start) AS t FROM segments {where}"
            f" UNION ALL SELECT MIN(time) FROM losses {where})",
            args + args,
        ).fetchone()
        if row[0] is not None:
            return float(row[0])
    return None
