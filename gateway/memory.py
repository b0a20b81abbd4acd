"""What the process asks of the C allocator, so that RSS follows the memory in use.

A gateway runs for months on a small box, and its biggest transient, the anomaly engine's
state save (~10 MB of arrays at 10,000 points), comes every few minutes. glibc, left alone,
raises its mmap threshold to the largest block freed (up to 32 MiB), so those saves move from
mmap into the heap, whose free space then creeps up save after save: +7 MB in the first 5
minutes and +0.8 MB per save after, at flat bytes in use (found by the soak in
tests/test_reliability.py). Other C libraries (musl) have no such heuristic and no
`malloc_trim`: there both calls do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # mallopt's parameter, <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's initial value


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def keep_mmap_threshold() -> None:
    """Pin glibc's mmap threshold at its initial 128 KiB: large blocks are mapped and
    unmapped, never carved from the heap."""
    with contextlib.suppress(AttributeError):
        if libc := _libc():
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (a few ms): after a large transient,
    so that RSS shows what the process holds."""
    with contextlib.suppress(AttributeError):
        if libc := _libc():
            libc.malloc_trim(0)
