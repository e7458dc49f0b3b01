"""A stand-in for the Raspberry Pi kernel's DMA heap, which this machine's kernel lacks.

On a Pi, camera buffers come from ``/dev/dma_heap`` (libcamera's pipeline and
picamera2's default ``DmaAllocator`` both need it: without it a Pi has no camera at
all). picamera2 opens that device itself, not through libcamera, so the fake
binding cannot provide it. This is picamera2's own ``DmaAllocator`` with its memory
from memfd instead: allocation, mapping, request accounting and clean-up stay
picamera2's; only the heap device and its cache-sync ioctl are replaced (memfd
memory is only ever touched by the CPU, so there is nothing to sync).

picamera2's other allocator, ``LibcameraAllocator``, cannot stand in: its sync
unmaps each buffer while ``LibavH264Encoder`` still holds a frame made from it
(BufferError "cannot close exported pointers exist" in picamera2 0.3.38).
"""

from __future__ import annotations

import os

from picamera2.allocators import DmaAllocator
from picamera2.allocators.allocator import Allocator
from picamera2.dma_heap import UniqueFD


class MemfdHeap:
    """``DmaHeap``'s interface over memfd_create."""

    def alloc(self, name: str, size: int) -> UniqueFD:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return UniqueFD(fd)

    def close(self) -> None:
        pass


class MemfdDmaAllocator(DmaAllocator):
    """picamera2's DmaAllocator on memfd memory."""

    def __init__(self) -> None:
        Allocator.__init__(self)  # DmaAllocator.__init__ would open /dev/dma_heap
        self.dmaHeap = MemfdHeap()
        self.mapped_buffers = {}
        self.mapped_buffers_used = {}
        self.frame_buffers = {}
        self.open_fds = []
        self.libcamera_fds = []
        self.sync = self.MappedSync

    class MappedSync:
        """DmaSync without the DMA_BUF_IOCTL_SYNC calls a memfd does not take."""

        def __init__(self, allocator: DmaAllocator, fb: object, write: bool):
            self.allocator, self.fb = allocator, fb

        def __enter__(self):
            return self.allocator.mapped_buffers[self.fb]

        def __exit__(self, *exc: object) -> None:
            pass


def install() -> None:
    """Make the livecam picamera2 plugin's cameras take their buffers from memfd."""
    from livecam_plugins.picamera2 import Picamera2Camera

    Picamera2Camera.allocator_factory = MemfdDmaAllocator
