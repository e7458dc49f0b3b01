"""The camera backend contract: turn a camera into closed segments.

A camera backend plugin subclasses ``CameraBackend`` and registers it with
``livecam_register_cameras``. The recorder process of one camera creates the
backend, calls ``record(sink)`` and watches it: a backend that raises, returns
unexpectedly, or closes no segment for a few segment lengths is stopped and
started again with backoff.

The backend writes each segment into ``sink.open_dir`` (a RAM directory that is
never shipped) and calls ``sink.close(path, duration=..., start=...)`` when the file is
complete; the sink checks it (``check_segment``), names it and renames it
atomically into the ready directory. Files a crash left in ``open_dir`` belong to
the backend that wrote them: its ``salvage`` says what of each still plays.
Segments must be gapless (no frame lost or repeated at a boundary), each must
play on its own from t=0, and close within one keyframe interval of
``segment_seconds``; a segment's ``start`` is its first frame's capture time, so
consecutive segments neither overlap nor leave a gap wider than one frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from livecam.options import Option
from livecam.storage.segment import Segment


class CameraError(Exception):
    """The camera failed: absent, busy, died, or produced unusable output."""


class InputEnded(CameraError):
    """The input has nothing more to give (a file read to its end). Recording it
    again would repeat it from the start, so the recorder starts no backend for the
    camera again while it is configured the same (``livecam.recorder.ended``)."""


class BadSegment(CameraError):
    """The camera handed over a file that is not a usable segment."""


@dataclass(frozen=True)
class Salvaged:
    """What plays of an unfinished file: ``frames`` frames, ``seconds`` long."""

    frames: int
    seconds: float


class SegmentSink(Protocol):
    """What the recorder gives a backend to deliver segments into."""

    open_dir: Path

    def close(
        self, path: Path, *, duration: float | None = None, start: float | None = None
    ) -> Segment | None:
        """``path`` (inside ``open_dir``) is complete: make it a ready segment.

        ``duration`` is the segment's length in seconds, when the backend knows it.
        ``start`` is when its first frame was captured, in ``time.time()``'s seconds:
        the segment is named by it. A backend that cannot tell gives None, and the
        segment is named by its close minus ``duration``, which is late by whatever
        the encoder still held when the file closed.
        Returns None (and logs, counts and deletes the file) when the file is not
        a usable MP4; the backend carries on with the next segment.
        """
        ...

    def dropped_frames(self, count: int) -> None:
        """Report ``count`` frames the camera lost (counted in status and logged)."""
        ...


class CameraBackend:
    """Base class of camera backends."""

    #: The backend's own YAML keys under ``cameras.<name>:`` (besides ``backend``).
    options: ClassVar[Mapping[str, Option]] = {}
    #: One line for ``livecam plugins``.
    description: ClassVar[str] = ""

    def __init__(self, camera: str, options: Mapping[str, Any], *, segment_seconds: float):
        self.camera = camera
        self.opts = dict(options)
        self.segment_seconds = segment_seconds

    @classmethod
    def check(cls, opts: Mapping[str, Any], key: str) -> None:
        """Validate option values together; raise ConfigError naming ``key`` + option."""

    @classmethod
    def test_pattern(cls, opts: Mapping[str, Any]) -> str | None:
        """The test pattern a camera with these (checked) options records instead of a
        camera, by name; None for a real camera. ``check-config`` and ``status`` name a
        test-pattern camera as such, so no fake picture passes for footage."""
        return None

    @classmethod
    def check_segment(cls, path: Path) -> None:
        """Raise BadSegment unless ``path``, which ``record`` closed, is a usable segment.

        The default checks that it is an MP4 file (segments are ``.mp4``) by its
        first box; a backend that can check more cheaply or more surely overrides it.
        """
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except FileNotFoundError:
            raise BadSegment("the camera reported a segment file that does not exist") from None
        if len(head) < 12 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free"):
            raise BadSegment(f"not an MP4 file ({len(head)} bytes read)")

    @classmethod
    def salvage(cls, path: Path) -> Salvaged | None:
        """What plays of ``path``, an unfinished file this backend left in ``open_dir``
        when the camera or the recorder crashed; None if nothing does.

        The recorder makes a playable file a segment and removes the others. The
        default keeps nothing: a file without its index does not play.
        """
        return None

    def record(self, sink: SegmentSink) -> None:
        """Record until ``stop()`` is called (return) or the camera fails (raise CameraError).

        On ``stop()`` the segment in progress is finished and closed, so a clean
        shutdown loses no frame that was captured.
        """
        raise NotImplementedError

    def stop(self) -> None:
        """Ask ``record`` to finish the current segment and return. Thread-safe."""

    def kill(self) -> None:
        """Stop at once (the camera stalled); the open segment may be lost. Thread-safe."""
        self.stop()
