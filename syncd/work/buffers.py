"""Large upload buffers given back to the OS when freed."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter: allocations from this size on are served by mmap."""


def return_large_buffers() -> None:
    """Serve chunk buffers (MiBs) from mmap, so that freeing them returns them to the OS.

    Otherwise glibc's adaptive threshold keeps a freed chunk in each worker thread's arena
    and the resident size grows by about a chunk per worker after the first large upload.
    """
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):
        log.debug("mallopt is not available; large buffers stay with the allocator")
