"""The ``picamera2`` camera backend: a Raspberry Pi CSI camera cut into gapless segments.

The camera's YUV420 main stream goes straight into picamera2's software H.264
encoder (``LibavH264Encoder``: x264 through PyAV). It is chosen by class, not by
the ``H264Encoder`` alias, because that alias means the V4L2 hardware encoder on
older Pis and on any machine where chip detection finds nothing, and a Pi 5 has
no hardware encoder. The encoder feeds a ``SplittableOutput`` that holds one
``PyavOutput`` per segment file. A timer (the thread running ``record``, never
the camera's thread) asks for a keyframe and calls ``split_output``, which moves
to the next file at that keyframe without losing or repeating a frame.

Each file starts at t=0: picamera2 stamps packets with camera time since the
first frame, so every file after the first would otherwise start late. Dropped
frames show as gaps in those timestamps and are reported to the sink; a camera
that delivers nothing for ``frame_timeout`` fails with CameraError, after the
frames it did deliver are closed into a last segment.

picamera2 and libcamera come from apt on Raspberry Pi OS, so they are imported
only when a camera records; elsewhere the camera fails with "picamera2 not
available".

One private picamera2 detail is used, in one place: ``release_pending_split``.
It is tested against picamera2 ``TESTED_PICAMERA2``; a picamera2 that changed it
fails at the start of recording with a clear error, never silently.

The modules, by concern (this package is ``livecam_plugins.picamera2``; every
import in it is absolute, so ``picamera2`` is always the library):

- ``backend``: ``Picamera2Camera``, the recording loop, splits, stop and failure;
- ``options``: the options, and the libcamera controls and transform they make;
- ``opening``: finding the camera by Id or number, opening and configuring it;
- ``segments``: the segment file output, the frame clock, the split's private detail;
- ``snapshots``: the JPEG of the newest frame, made in the recorder's thread;
- ``library``: the lazy import of picamera2 and what its errors need.
"""

from __future__ import annotations

from livecam import hookimpl
from livecam.pluginhost.hookspecs import Register
from livecam_plugins.picamera2.backend import Picamera2Camera


@hookimpl
def livecam_register_cameras(register: Register) -> None:
    register("picamera2", Picamera2Camera)
