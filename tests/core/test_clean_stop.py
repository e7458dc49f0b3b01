"""A clean stop ships what is in RAM first (issue 22, docs/architecture.md "The clean stop").

A real node (``tests/core/node.py``: livecam processes, ffmpeg test-pattern cameras in
1 s segments) ships with rsync to a real sshd in a network namespace. It is stopped
with SIGTERM as ``livecam run`` (the supervisor stops the recorders, then the shipper)
and as systemd's units run it (``livecam record CAM`` and ``livecam ship``, each its
own process, here all signalled at the same instant, so the shipper must wait for the
recorders' last segments itself):

- the link healthy: the stop writes no segment to the spool, the NAS has every
  segment, the last of each camera whole, and no loss record is left on the node;
  also when the cameras take longer to finish than the shipper's grace for its
  recorders to say they stop (so it must wait for their ``stopping`` state);
- the NAS's sshd stopped: the RAM buffer, the last segments included, goes to the
  spool within the deadline and the next start ships it all;
- a publish hanging on a dead link: the stop spills at ``stop_deadline`` and exits
  in time, and nothing is lost.

Uses the transports suite's accounts: run under both locks (core, then transports).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from livecam.config import TOP
from livecam.options import parse_duration
from livecam.shipper.stop import PEER_GRACE, SPILL_MARGIN
from tests.conftest import REPO, command_lines, ffprobe, sha256
from tests.core.node import Node, Target, assert_all_arrived, wait_for
from tests.transports import servers

pytestmark = pytest.mark.slow

FRAMES_PER_SEGMENT = 10  # 10 fps, 1 s segments
# Segments of about 250 KB on a link of 12 Mbit/s: each takes a fifth of a second or
# more to publish, so each camera's last segment is still in RAM when the shipper is
# told to stop, even after the recorders (livecam run stops them first).
CAMERA = {"pattern": "testsrc2", "size": [640, 480], "fps": 10, "bitrate": "2M"}
CAMERA["preset"] = "ultrafast"
LINK_MBIT = 12
DEADLINE = parse_duration(TOP["stop_deadline"].default, "stop_deadline")  # livecam's default
SPILL_AFTER = "10s"  # nothing is due for a spill while the test runs on a healthy link


@pytest.fixture
def nas():
    with servers.sshd_in_netns("lc-stop", "10.77.23") as (server, netns):
        yield server, netns


def make_node(tmp_path: Path, server: servers.Sshd, **overrides) -> Node:
    transport = {**server.rsync_options(), "timeout": "60s"}
    return Node(tmp_path / "node", transport, spill_after=SPILL_AFTER, **overrides)


def start(n: Node, how: str) -> list[subprocess.Popen[bytes]]:
    """The node's processes: ``livecam run``, or the units' commands (recorders first)."""
    if how == "run":
        return [n.start()]
    return [n.start("record", "cam0"), n.start("record", "cam1"), n.start("ship")]


def stop(procs: list[subprocess.Popen[bytes]]) -> float:
    """SIGTERM to every process at the same instant; seconds until the last exited 0."""
    t0 = time.monotonic()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:  # recorders first: none stays a zombie while the shipper waits
        assert proc.wait(timeout=DEADLINE + SPILL_MARGIN) == 0
    return time.monotonic() - t0


def names(paths: list[Path]) -> set[str]:
    return {p.name for p in paths}


def records_left(n: Node) -> list[Path]:
    """Loss records still on the node, today's name or the one before issue 22."""
    return [
        p
        for tier in (n.buffer, n.spool)
        for folder in ("_losses", "livecam-losses")
        for p in (tier / folder).glob("*")
        if not p.name.startswith(".")
    ]


def kill_abandoned(server: servers.Sshd) -> None:
    """The rsync and ssh a stopped shipper left hanging on the dead link (under
    systemd its cgroup goes with it): by pid, those using this test's node key."""
    key = str(server.client_key)
    for pid, cmd in command_lines():
        if key in cmd and cmd.split(" ", 1)[0].rsplit("/", 1)[-1] in ("rsync", "ssh"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["run", "units"])
def test_a_stop_on_a_healthy_link_ships_the_last_segments_and_spills_nothing(tmp_path, nas, how):
    server, netns = nas
    n = make_node(tmp_path, server, cameras={"cam0": CAMERA, "cam1": CAMERA})
    target = Target(server.rsync_root)
    netns.shape(LINK_MBIT)
    try:
        procs = start(n, how)
        wait_for(lambda: len(target.segments()) >= 8, 60, "publishing over rsync")
        backlog = len(n.local_segments("buffer"))
        took = stop(procs)
        print(f"healthy stop ({how}): {took:.2f}s, {backlog} segments in RAM at the stop")
        assert not n.pids("livecam") and not n.pids("ffmpeg"), "a process outlived the stop"
    finally:
        n.cleanup()
    # Nothing went to the SD card: not at the stop, not before it.
    assert not n.local_segments("spool"), "the stop spilled on a healthy link"
    assert not list(n.spool.rglob("*.mp4")), list(n.spool.rglob("*.mp4"))
    assert not n.local_segments("buffer"), "segments left in RAM"
    assert not records_left(n), "loss records left on the node"
    assert n.status()["shipper"]["spilled"] == 0
    assert took < DEADLINE / 2, f"the stop waited out its deadline ({took:.1f}s)"
    assert "stop: nothing is left in RAM" in n.log_text()
    # The NAS has every segment, each camera's last one too, byte-identical, whole.
    closed = assert_all_arrived(n, target)
    files = target.segments()
    for cam in ("cam0", "cam1"):
        mine = sorted((c for c in closed if c["camera"] == cam), key=lambda c: c["seq"])
        assert len(mine) >= 4, cam
        for c in mine[:-1]:
            assert ffprobe(files[c["name"]])["frames"] == FRAMES_PER_SEGMENT, c["name"]
        last = mine[-1]  # cut short by the stop: every frame it closed with
        assert sha256(files[last["name"]]) == last["sha256"]
        assert 1 <= ffprobe(files[last["name"]])["frames"] <= FRAMES_PER_SEGMENT


SLOW_STOP = 3.0  # seconds a camera records on after its recorder was told to stop
SLOW_STOP_PLUGIN = f'''
"""Test site plugin: the ffmpeg camera, finishing {SLOW_STOP}s after it was told to stop
(a Pi's encoder flushing a long segment, a slow card: longer than PEER_GRACE)."""
import threading
from livecam import hookimpl
from livecam_plugins.ffmpeg import FfmpegCamera

class SlowStop(FfmpegCamera):
    def stop(self):
        threading.Timer({SLOW_STOP}, FfmpegCamera.stop, args=(self,)).start()

@hookimpl
def livecam_register_cameras(register):
    register("slow-stop", SlowStop)
'''


def test_the_shipper_waits_for_recorders_slow_to_stop(tmp_path, nas):
    server, _ = nas
    slow = {"backend": "slow-stop", "pattern": "testsrc2", "size": [160, 120], "fps": 10}
    n = make_node(tmp_path, server, cameras={"cam0": slow, "cam1": slow})
    (n.plugins / "slow_stop.py").write_text(SLOW_STOP_PLUGIN)
    target = Target(server.rsync_root)
    try:
        procs = start(n, "units")
        wait_for(lambda: len(target.segments()) >= 6, 60, "publishing over rsync")
        signalled = time.time()
        took = stop(procs)
        print(f"stop with recorders taking {SLOW_STOP:g}s: {took:.2f}s")
    finally:
        n.cleanup()
    late = [c["name"] for c in n.closed() if c["closed"] > signalled + PEER_GRACE]
    assert late, "no segment closed after the grace: the test proves nothing"
    assert not n.local_segments("buffer"), "segments left in RAM: a reboot loses them"
    assert not n.local_segments("spool"), "the stop spilled on a healthy link"
    assert SLOW_STOP <= took < DEADLINE / 2, f"stopped in {took:.1f}s"
    assert_all_arrived(n, target)


def test_a_stop_with_the_nas_down_spills_everything_in_ram_and_loses_nothing(tmp_path, nas):
    server, _ = nas
    n = make_node(tmp_path, server)
    target = Target(server.rsync_root)
    try:
        procs = start(n, "units")
        wait_for(lambda: len(target.segments()) >= 6, 60, "publishing over rsync")
        server.stop()  # the NAS's sshd is gone: connections are refused
        wait_for(lambda: len(n.local_segments("buffer")) >= 4, 30, "segments wait in RAM")
        assert n.status()["shipper"]["state"] in ("retrying", "alarm")
        took = stop(procs)
        print(f"stop with the NAS down: {took:.2f}s")
        # Every segment the recorders closed, their last ones too, is on the disk now.
        assert not n.local_segments("buffer"), "segments left in RAM: a reboot loses them"
        on_nas, spooled = set(target.segments()), names(n.local_segments("spool"))
        closed = {c["name"] for c in n.closed()}
        assert closed - on_nas <= spooled, sorted(closed - on_nas - spooled)
        assert took < DEADLINE / 2, f"the stop waited out its deadline ({took:.1f}s)"
        assert "stop: the NAS does not take segments" in n.log_text()
        server.start()
        n.drain(timeout=60)  # the next start ships it
    finally:
        n.cleanup()
    assert_all_arrived(n, target)


def test_a_publish_hanging_past_the_deadline_spills_and_exits_in_time(tmp_path, nas):
    server, netns = nas
    deadline = 2.0
    n = make_node(tmp_path, server, stop_deadline=f"{deadline:g}s")
    target = Target(server.rsync_root)
    try:
        procs = start(n, "units")
        wait_for(lambda: len(target.segments()) >= 6, 60, "publishing over rsync")
        netns.link(up=False)  # a publish in flight now hangs (ssh notices after 15 s)
        time.sleep(2)
        assert n.status()["shipper"]["state"] == "shipping", "the publish failed, not hung"
        took = stop(procs)
        print(f"stop with a hanging publish (deadline {deadline:g}s): {took:.2f}s")
        # The spill of a few small segments and the exit: well under 2 s.
        assert deadline <= took < deadline + 2, f"stopped in {took:.1f}s"
        assert "stop: the stop deadline passed" in n.log_text()
        # What the hung publish held is copied to the spool (its RAM copy may stay).
        in_ram, spooled = names(n.local_segments("buffer")), names(n.local_segments("spool"))
        assert in_ram <= spooled, sorted(in_ram - spooled)
        on_nas, closed = set(target.segments()), {c["name"] for c in n.closed()}
        assert closed - on_nas <= spooled, sorted(closed - on_nas - spooled)
        kill_abandoned(server)
        netns.link(up=True)
        n.drain(timeout=60)
        wait_for(lambda: not target.hidden(), 60, "the server dropped the hung call's temp file")
    finally:
        n.cleanup()
    assert_all_arrived(n, target)


def test_the_units_give_the_stop_its_deadline_and_the_spill_after_it():
    """livecam-ship's TimeoutStopSec is the role's stop deadline plus SPILL_MARGIN, the
    deadline the role writes into livecam.yaml, and its default livecam's."""
    role = REPO / "ansible" / "roles" / "livecam_node"
    unit = (role / "templates" / "livecam-ship.service.j2").read_text()
    timeout = r"^TimeoutStopSec=\{\{ livecam_node_stop_deadline \| int \+ (\d+) \}\}$"
    margin = re.search(timeout, unit, re.M)
    assert margin is not None and float(margin[1]) == SPILL_MARGIN
    defaults = (role / "defaults" / "main.yml").read_text()
    assert re.search(rf"^livecam_node_stop_deadline: {DEADLINE:g}$", defaults, re.M)
    config = (role / "vars" / "main.yml").read_text()
    assert 'stop_deadline: "{{ livecam_node_stop_deadline }}s"' in config
