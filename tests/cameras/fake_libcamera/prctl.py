"""A stand-in for python-prctl, which picamera2's FfmpegOutput imports at module level.

Building python-prctl needs libcap headers and a compiler; livecam never uses
FfmpegOutput, so the tests only need the import to succeed.
"""


def set_pdeathsig(signal: int) -> None:
    """Accept the call; the tests never start FfmpegOutput's ffmpeg."""
