"""The ``ffmpeg`` camera backend: any input ffmpeg can read, cut into gapless segments.

One ffmpeg process per camera encodes one continuous H.264 stream and its segment
muxer cuts it at forced keyframes, so no frame is lost or repeated at a boundary
and each file starts at t=0. ffmpeg reports each finished file on stdout (the
segment list), which is when the recorder makes it ready. The files are
fragmented MP4, so one cut off by a crash plays up to its last fragment:
``salvage`` asks ffprobe how much.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from livecam import hookimpl
from livecam import options as o
from livecam.camera import CameraBackend, CameraError, InputEnded, Salvaged, SegmentSink
from livecam.ops.lifecycle import dies_with_parent
from livecam.options import ConfigError, Option
from livecam.pluginhost.hookspecs import Register
from livecam.storage import snapshot
from livecam_plugins import ffmpeg_source
from livecam_plugins.ffmpeg_frames import FrameTimes

log = logging.getLogger("livecam.ffmpeg")

# ffmpeg's lines that give advice or a consequence, never the cause: skipped when
# naming why it failed (the cause comes before them).
NOT_A_CAUSE = re.compile(
    r"^(To ignore this, add a trailing|Conversion failed|Error opening (input|output) files?"
    r"|Error parsing options for|Failed to set value|Exiting normally)"
)


class FfmpegCamera(CameraBackend):
    """A camera read and encoded by ffmpeg (V4L2, RTSP, a file, or a test pattern)."""

    description = "any ffmpeg input (v4l2, rtsp, lavfi test pattern), H.264 via libx264"
    options: ClassVar = {
        "input": Option(
            ffmpeg_source.input_args, None, "ffmpeg input arguments, e.g. '-f v4l2 -i /dev/video0'"
        ),
        "pattern": Option(
            o.choice(*ffmpeg_source.PATTERNS), None, "record this TEST PATTERN, not an input"
        ),
        "size": Option(o.frame_size, [1280, 720]),
        "fps": Option(o.integer(1, 240), 30),
        "bitrate": Option(o.bitrate, "5M"),
        "codec": Option(o.choice("libx264", "copy"), "libx264", "copy: keep the input's H.264"),
        "preset": Option(o.string, "veryfast", "libx264 preset"),
        "keyframe_seconds": Option(o.positive_duration, "1s"),
        "realtime": Option(o.boolean, True, "pace a file or test input at its frame rate"),
        "ffmpeg": Option(o.string, "ffmpeg", "the ffmpeg binary"),
        "extra_output_args": Option(o.string_list, []),
        "snapshot_seconds": Option(o.duration, "5s", "a JPEG of the latest frame (0: none)"),
    }

    def __init__(self, camera: str, options: Any, *, segment_seconds: float):
        super().__init__(camera, options, segment_seconds=segment_seconds)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # stop() may run in a signal handler

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        ffmpeg_source.check(opts, key)
        if opts["codec"] == "copy" and opts["input"] is None:
            raise ConfigError(f"{key}.codec: 'copy' needs an input that already is H.264")
        if shutil.which(opts["ffmpeg"]) is None:
            raise ConfigError(
                f"{key}.ffmpeg: {opts['ffmpeg']!r} is not an executable on PATH "
                "(install ffmpeg, e.g. apt install ffmpeg, or give its full path)"
            )

    @classmethod
    def test_pattern(cls, opts: Any) -> str | None:
        return opts["pattern"]

    @classmethod
    def salvage(cls, path: Path) -> Salvaged | None:
        """What plays of a fragmented MP4 cut off by a crash, by ffprobe's packet count."""
        argv = ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                "-show_entries", "stream=nb_read_packets:format=duration", "-of", "json",
                str(path)]  # fmt: skip
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            data = json.loads(out.stdout)
            frames = int(data["streams"][0]["nb_read_packets"])
            seconds = float(data["format"]["duration"])
        except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError):
            return None  # it does not play (or ffprobe is missing or hangs)
        return Salvaged(frames, seconds) if out.returncode == 0 and frames > 0 else None

    def argv(self, open_dir: str, frames_fd: int | None = None) -> list[str]:
        """The ffmpeg command line for this camera; with ``frames_fd``, ffmpeg reports
        each frame it encodes to that pipe (``FrameTimes``; not with ``codec: copy``)."""
        opts = self.opts
        width, height = opts["size"]
        fps = opts["fps"]
        if opts["pattern"] is not None:
            source = f"{opts['pattern']}=size={width}x{height}:rate={fps}"
            inp = ["-f", "lavfi", "-i", source]
            if opts["realtime"]:
                inp = ["-re", *inp]
        else:
            inp = list(opts["input"])
            if opts["realtime"] and "-re" not in inp and not ffmpeg_source.is_live(inp):
                inp = ["-re", *inp]
        seg = self.segment_seconds
        if opts["codec"] == "copy":
            video = ["-c:v", "copy"]
        else:
            k = opts["keyframe_seconds"]
            rate = opts["bitrate"]
            video = [
                "-c:v",
                "libx264",
                "-preset",
                opts["preset"],
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                str(rate),
                "-maxrate",
                str(rate),
                "-bufsize",
                str(2 * rate),
                # Keyframes on a fixed clock, and exactly at every segment boundary,
                # so each file cuts cleanly and plays alone.
                "-g",
                str(max(1, round(fps * k))),
                "-sc_threshold",
                "0",
                "-force_key_frames",
                f"expr:gte(t,n_forced*{min(k, seg):g})",
                "-x264-params",
                "repeat-headers=1",
            ]
            filters = [f"scale={width}:{height}"] if opts["input"] is not None else []
            if frames_fd is not None:
                filters.append(FrameTimes.filter(frames_fd))
            if filters:
                video += ["-vf", ",".join(filters)]
            if opts["input"] is not None:
                video += ["-r", str(fps)]
            # The segment list's times count as the filters' do (ffmpeg_frames), not
            # shifted by x264's B-frame delay; the files are the same either way.
            video += ["-avoid_negative_ts", "disabled"]
        return [
            opts["ffmpeg"], "-hide_banner", "-nostdin", "-loglevel", "error",
            *inp,
            "-map", "0:v:0", "-an", *video, *opts["extra_output_args"],
            "-f", "segment", "-segment_time", f"{seg:g}", "-segment_format", "mp4",
            # Fragmented MP4, flushed at every fragment: a file cut off by a crash
            # still plays up to its last keyframe, so the recorder can salvage it.
            "-segment_format_options",
            "movflags=+frag_keyframe+empty_moov+default_base_moof:flush_packets=1",
            "-reset_timestamps", "1",
            "-segment_list", "pipe:1", "-segment_list_type", "csv",
            os.path.join(open_dir, "%09d.mp4"),
            *self._snapshot(open_dir),
        ]  # fmt: skip

    def _snapshot(self, open_dir: str) -> list[str]:
        """A second output of the same process: every few seconds a small JPEG of the
        newest frame, replaced atomically, beside the camera's segments in the RAM
        buffer (``.snapshot.jpg``, hidden from the tier). With ``codec: copy`` it
        makes ffmpeg decode the input, which costs more: set ``snapshot_seconds: 0``."""
        every = self.opts["snapshot_seconds"]
        if not every:
            return []
        width = min(snapshot.MAX_WIDTH, self.opts["size"][0])
        return [
            # -y: the last run's snapshot is still there after a restart.
            "-map", "0:v:0", "-an", "-y", "-vf", f"fps=1/{every:g},scale={width}:-2",
            "-q:v", "8", "-f", "image2", "-update", "1", "-atomic_writing", "1",
            str(snapshot.path_for(open_dir.rstrip("/"))),
        ]  # fmt: skip

    def record(self, sink: SegmentSink) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            frames = self._start(str(sink.open_dir))
        proc = self._proc
        assert proc is not None
        errors: deque[str] = deque(maxlen=10)
        stderr_reader = threading.Thread(
            target=self._read_stderr, args=(proc, errors), daemon=True, name="ffmpeg-stderr"
        )
        stderr_reader.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            name, _, rest = line.decode(errors="replace").strip().partition(",")
            if not name:
                continue
            duration, first = _times(rest, frames)
            sink.close(sink.open_dir / os.path.basename(name), duration=duration, start=first)
        code = proc.wait()
        stderr_reader.join(timeout=2)
        if self._stopping.is_set():
            return
        if code == 0 and self.opts["input"] is not None:
            # ffmpeg ends on its own, without an error, only when its input ended.
            name = ffmpeg_source.source_name(self.opts)
            if ffmpeg_source.is_live(self.opts["input"]):  # a stream closed: it may come back
                raise CameraError(f"input ended: {name} closed the stream")
            raise InputEnded(f"input ended: {name} (ffmpeg read it to its end)")
        raise CameraError(f"ffmpeg exited with code {code}: {cause(errors)}")

    def _start(self, open_dir: str) -> FrameTimes | None:
        """Start ffmpeg (``self._proc``) and the thread that notes its frames' times."""
        frames = write_fd = None
        if self.opts["codec"] != "copy":  # copy filters nothing, so reports no frame
            read_fd, write_fd = os.pipe()
            keep = round(self.opts["fps"] * (3 * self.segment_seconds + 30))
            frames = FrameTimes(read_fd, self.opts["fps"], keep, self.camera)
        argv = self.argv(open_dir, write_fd)
        log.debug("camera %s: %s", self.camera, shlex.join(argv))
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=() if write_fd is None else (write_fd,),
                preexec_fn=dies_with_parent(signal.SIGKILL),
                # Its own session: a Ctrl-C or a unit stop aimed at the group must not
                # reach ffmpeg directly; a second signal makes it drop the open segment.
                start_new_session=True,
            )
        except OSError as exc:
            raise CameraError(f"cannot start {argv[0]}: {exc.strerror}") from None
        finally:
            if write_fd is not None:
                os.close(write_fd)  # ffmpeg holds it: the pipe ends when ffmpeg does
            if frames is not None:  # reads to the end, even when ffmpeg did not start
                threading.Thread(target=frames.read, daemon=True, name="ffmpeg-frames").start()
        return frames

    def _read_stderr(self, proc: subprocess.Popen[bytes], errors: deque[str]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                errors.append(line)
                log.warning("camera %s: ffmpeg: %s", self.camera, line)

    def stop(self) -> None:
        self._signal(signal.SIGINT)  # ffmpeg finishes and lists the open segment

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with self._lock:
            if sig == signal.SIGINT and self._stopping.is_set():
                return  # a second SIGINT makes ffmpeg drop the segment it is finishing
            self._stopping.set()
            if self._proc is not None and self._proc.poll() is None:
                self._proc.send_signal(sig)


def _times(listed: str, frames: FrameTimes | None) -> tuple[float | None, float | None]:
    """(duration, wall time of its first frame) of a segment list entry's "start,end"."""
    try:
        start, end = (float(x) for x in listed.split(",")[:2])
    except ValueError:
        return None, None
    return end - start, frames.first_frame_at(start, end) if frames else None


def cause(errors: deque[str]) -> str:
    """The line of ffmpeg's last error lines that names the cause."""
    causes = [line for line in errors if not NOT_A_CAUSE.match(line)]
    line = (causes or list(errors) or ["no message"])[-1]
    if "matches no streams" in line:
        return f"the input has no video stream ({line.rstrip('.')})"
    return line


@hookimpl
def livecam_register_cameras(register: Register) -> None:
    register("ffmpeg", FfmpegCamera)
