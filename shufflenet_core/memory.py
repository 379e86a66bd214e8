"""Keep freed memory in the process: a CPU training step page-faults far less.

glibc's malloc hands large blocks (over its mmap threshold, or at the top of the heap beyond
its trim threshold) back to the kernel when they are freed. An eager training step frees and
re-allocates the same few-megabyte activations and gradients every step, and each one comes
back as fresh pages that fault in on first touch: about 10,000 minor faults per step of a
2.0x g3 proxy step here, 10% of its time. Pinning both thresholds keeps those blocks in the
heap for reuse (the process keeps its peak memory, which the next step needs anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20
"""glibc's largest allowed mmap threshold on 64-bit systems: blocks up to 32 MiB stay in the heap."""
TRIM_THRESHOLD_BYTES = 1 << 30
"""Free memory at the top of the heap returned to the kernel only beyond 1 GiB."""


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc for this process once (see the module docstring); returns whether it
    applied (False off glibc, e.g. macOS or musl, where nothing is changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
