"""Process-wide CPU settings for training: torch's thread count and the C allocator (docs/performance.md).

A training step allocates and frees tens of megabytes of activations and gradients (the first conv's
output alone is 8 MB at batch 64). glibc serves blocks that large with fresh ``mmap`` pages and returns
them to the OS on free, so every step paid ~10,000 page faults of zero-filling (25–35 ms of a ~200 ms
step on our 2-core machine). Keeping freed memory in the heap removes that without raising the peak:
the process still holds only its high-water mark.
"""

from __future__ import annotations

import ctypes
import sys

import torch

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # blocks below this come from the heap (glibc's own upper limit for it)
_TRIM_THRESHOLD = 1 << 30  # free heap memory kept for reuse, not returned to the OS after each step


def configure_cpu(threads: int | None = None) -> None:
    """Set torch's intra-op threads (None: torch's default, one per core) and keep freed memory for reuse."""
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed blocks instead of unmapping them; False where that is not glibc (no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library: leave its defaults alone
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
