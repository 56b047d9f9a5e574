"""The C allocator told to give large freed blocks back to the system at once (glibc; elsewhere nothing).

glibc maps a block above its mmap threshold on its own and unmaps it when freed, but when such a block is freed
it raises the threshold to that block's size (up to 32 MiB): the next frames' buffers then come from the heap,
which keeps freed memory up to twice the threshold before it trims. A device that decodes frames of different
sizes then holds, for good, tens of MB it no longer uses (21 MB after one frame near the decode limit,
docs/performance.md "Frames near the decode limit"). A fixed threshold (``mallopt(M_MMAP_THRESHOLD)``, which also
stops the adjustment) maps every frame-sized buffer apart, so freeing it returns it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MAPPED_FROM_BYTES = 1 << 20  # blocks of 1 MiB and more (a 1024 x 1024 grey frame) are mapped, and unmapped on free


def map_large_blocks_apart(threshold: int = MAPPED_FROM_BYTES) -> bool:
    """Fix the allocator's mmap threshold at ``threshold`` bytes; False where the C library has no ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in the C library: the allocator keeps its own threshold")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
