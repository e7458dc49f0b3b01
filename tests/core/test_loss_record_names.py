"""Loss records are not videos (issue 22): their names, where they go, how they count.

A record is ``_losses/loss-<UTC time>-<microseconds>.json`` in a tier and
``{site}/{node}/_losses/{date}/loss-...json`` on the NAS: no ``.mp4`` name, a folder no
camera can be called, never evicted, and counted on its own (status and metrics),
never as a published segment, its bytes or the last success. Records an older
livecam left on a node (``livecam-losses/livecam-losses-...mp4``, tests/old_layout.py)
still ship, under today's name, and none is lost.

The shipper is driven directly on real files, through the ``local`` transport (a
directory), as in tests/core/test_shipper.py.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from livecam import build
from livecam.nas import records
from livecam.ops import prometheus, status
from livecam.options import ConfigError
from livecam.shipper.process import Shipper
from livecam.storage.segment import Segment, segment_name
from tests.old_layout import OLD_CAMERA, write_old_record


@pytest.fixture
def setup(tmp_path):
    raw = {
        "node": "node01",
        "site": "lab",
        "segment_seconds": 1,
        "cameras": {"cam0": {"pattern": "testsrc2"}},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "1M"},
        "spool": {"path": str(tmp_path / "spool"), "max_bytes": "250K", "min_free_bytes": 0},
        "transport": {"plugin": "local", "path": str(tmp_path / "nas")},
        "plugin_dirs": [],
    }
    cfg, plugins = build.from_document(raw)
    return cfg, plugins, tmp_path


def put(tier_path: Path, seq: int, size: int = 100_000) -> Segment:
    start = datetime(2026, 11, 26, 12, 0, seq % 60, tzinfo=UTC)
    path = tier_path / "cam0" / segment_name("cam0", start, seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    segment = Segment.from_path(path)
    assert segment is not None
    return segment


def files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (temps too): relative path -> content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def ship_all(shipper: Shipper) -> None:
    while shipper.publisher.publish_next():
        pass
    shipper.state_file.save(force=True)


def test_records_ship_as_json_outside_every_camera_and_count_apart(setup):
    cfg, plugins, tmp = setup
    shipper = Shipper(cfg, plugins)
    written = [
        shipper.evictor.losses.record("camera_down", "cam0", [], f"no device ({n})")
        for n in range(2)
    ]
    seg = put(cfg.buffer.path, 1)
    shipper.state_file.save(force=True)
    before = status.gather(cfg, shipper.disk)
    # Waiting: the records are not segments of the spool nor of the backlog.
    assert before["tiers"]["spool"]["segments"] == 0 and before["tiers"]["spool"]["records"] == 2
    assert before["shipper"]["backlog_segments"] == 1
    assert before["shipper"]["backlog_bytes"] == seg.size
    assert before["shipper"]["backlog_records"] == 2
    ship_all(shipper)
    landed = files(tmp / "nas")
    # On the NAS: the segment as a video, each record as JSON in _losses/{date}/.
    video = f"lab/node01/cam0/2026-11-26/{seg.name}"
    recs = {rel: data for rel, data in landed.items() if rel != video}
    assert video in landed and len(recs) == 2, sorted(landed)
    for path in written:
        assert path is not None and path.name.startswith("loss-"), path
        assert path.suffix == ".json"
        [rel] = [r for r in recs if r.endswith("/" + path.name)]
        record = records.parse(recs[rel].decode(), rel)
        day = f"{datetime.fromtimestamp(record.time, UTC):%Y-%m-%d}"
        assert rel == f"lab/node01/_losses/{day}/{path.name}"
        assert record.kind == "camera_down"
    # Counted apart: one segment published (its bytes, the last success), two records.
    st = shipper.state
    assert (st.published, st.published_bytes) == (1, len(landed[video]))
    assert st.records_published == 2
    assert st.last_success is not None and st.last_success.segment == seg.name
    after = status.gather(cfg, shipper.disk)
    assert after["shipper"]["published"] == 1 and after["shipper"]["records_published"] == 2
    assert "loss records 2 published, 0 waiting" in status.render(after)
    text = prometheus.render(after, segment_seconds=1, version="test")
    assert "\nlivecam_published_segments_total 1\n" in text
    assert "\nlivecam_loss_records_published_total 2\n" in text
    assert "\nlivecam_shipper_backlog_loss_records 0\n" in text


def test_only_records_published_count_no_segment_and_no_success(setup):
    """A node whose only camera never recorded: "published 0", no last success."""
    cfg, plugins, tmp = setup
    shipper = Shipper(cfg, plugins)
    for n in range(3):
        shipper.evictor.losses.record("camera_down", "cam0", [], f"no device ({n})")
    ship_all(shipper)
    assert len([p for p in (tmp / "nas").rglob("loss-*.json")]) == 3
    now = status.gather(cfg, shipper.disk)
    assert now["shipper"]["published"] == 0 and now["shipper"]["published_bytes"] == 0
    assert now["shipper"]["last_success"] is None and now["shipper"]["records_published"] == 3
    shown = status.render(now)
    assert "published 0," in shown and "last success" not in shown, shown


def test_old_named_records_on_an_upgraded_node_ship_under_todays_name(setup):
    """Records an older livecam left waiting (spool and RAM) ship, none is evicted or
    lost, each under today's folder and name with the same bytes."""
    cfg, plugins, tmp = setup
    t0 = datetime(2026, 11, 26, 11, 0, tzinfo=UTC).timestamp()  # older than the segments
    old = [
        write_old_record(tier, {"format": "livecam-loss/1", "kind": kind, "site": "lab",
                                "node": "node01", "camera": "cam0", "time": round(t0 + n, 6),
                                "sequences": [], "reason": kind, "detail": {}})
        for n, (tier, kind) in enumerate(
            [(cfg.spool.path, "camera_down"), (cfg.spool.path, "restart"),
             (cfg.buffer.path, "spool_failed")])
    ]  # fmt: skip
    content = {p.name: p.read_bytes() for p in old}
    segs = [put(cfg.spool.path, i) for i in range(1, 4)]  # 300K in a 250K spool
    shipper = Shipper(cfg, plugins)
    need, reason = shipper.spool.bytes_to_free()
    assert need > 0 and shipper.evictor.evict(shipper.spool, need, reason)
    assert all(p.exists() for p in old), "an old record was evicted"
    assert not segs[0].path.exists()
    shipper.state_file.save(force=True)
    # The three old records and today's of that eviction.
    assert status.gather(cfg, shipper.disk)["shipper"]["backlog_records"] == 4
    ship_all(shipper)
    landed = files(tmp / "nas")
    assert not [p for p in old if p.exists()], "an old record stayed on the node"
    assert not [rel for rel in landed if OLD_CAMERA in rel], sorted(landed)
    for name, data in content.items():
        start, micros = name.removesuffix(".mp4").split("-")[2:]
        day = f"{start[:4]}-{start[4:6]}-{start[6:8]}"
        rel = f"lab/node01/_losses/{day}/loss-{start}-{micros}.json"
        assert landed.get(rel) == data, (rel, sorted(landed))
    assert sum(rel.endswith(".mp4") for rel in landed) == 2  # the segments left
    assert (shipper.state.published, shipper.state.records_published) == (2, 4)


def test_no_camera_can_take_the_records_folder_or_the_old_one(setup):
    for name in ("_losses", OLD_CAMERA):
        raw = {
            "cameras": {name: {"pattern": "testsrc2"}},
            "transport": {"plugin": "local", "path": "/tmp"},
        }
        with pytest.raises(ConfigError, match=f"cameras.{name}"):
            build.from_document(raw)


@pytest.mark.parametrize(
    ("name", "record"),
    [
        ("cam0-20261126T120001Z-000001.mp4", False),
        ("loss-20261126T120001Z-1764158401000000.json", True),
        ("livecam-losses-20261126T120001Z-1764158401000000.mp4", True),  # before issue 22
        ("loss-20261126T120001Z-1764158401000000.mp4", False),  # a camera named "loss"
    ],
)
def test_a_name_says_whether_it_is_a_record(name, record):
    found = Segment.from_path(Path("x") / name)
    assert found is not None and found.is_record is record
    if record:
        published = found.as_published()
        assert published.name.startswith("loss-") and published.name.endswith(".json")
        assert (published.start, published.seq) == (found.start, found.seq)
    else:
        assert found.name == name and found.as_published() == found
