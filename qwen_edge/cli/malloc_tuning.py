"""Keeping freed memory in the process for reuse (glibc), for the build's short-lived arrays.

The quantizer allocates and frees several 1 MiB numpy arrays per chunk of weights, thousands in
a build. With glibc's defaults a freed block of that size soon goes back to the system, and the
next allocation page-faults fresh zeroed pages in again. In a Qwen2.5-0.5B-shaped int4 build
that was ~600k minor page faults and 1.2 s of system time, 0.6 s of 8.9 s wall. A fixed mmap
threshold of 16 MiB and a trim threshold of 64 MiB keep such blocks for reuse; the build's peak
RSS did not change (872 vs 874 MB). Larger arrays (whole tensors) are still mapped and returned.

Process-wide, so the library never calls this itself: the CLI does, at start.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 16 << 20
TRIM_THRESHOLD_BYTES = 64 << 20


def reuse_freed_memory() -> bool:
    """Apply the thresholds above; returns whether the C library took them (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # musl's mallopt exists but does nothing and returns 0.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                 TRIM_THRESHOLD_BYTES))
