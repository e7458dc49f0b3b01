"""A stand-in for pykms (kms++ bindings, apt-only on Raspberry Pi OS).

picamera2 imports it for its DRM preview window, which livecam never opens.
"""


class PixelFormat:
    """Formats the DRM preview names in its class body; livecam never draws with them."""

    RGB888 = "RGB888"
    BGR888 = "BGR888"
    XRGB8888 = "XRGB8888"
    XBGR8888 = "XBGR8888"
    YUV420 = "YUV420"
    YVU420 = "YVU420"
    NV12 = "NV12"
    YUYV = "YUYV"
    YVYU = "YVYU"


class Card:
    def __init__(self, path: str):
        raise RuntimeError("fake pykms: no DRM device")
