"""Run the livecam command as on a Pi whose camera stack is the fake one here.

``python livecam_fake_pi.py ARGS`` is ``livecam ARGS`` with the fake DMA heap
installed (see fake_dma_heap); put this folder first on PYTHONPATH so that
picamera2 also finds the fake libcamera binding, pykms and prctl.
"""

import sys

import fake_dma_heap

from livecam.main import main

fake_dma_heap.install()
sys.exit(main(sys.argv[1:]))
