"""What the process asks of the C allocator, so that RSS follows the memory in use.

A gateway runs for months on a small box, and its biggest transient, the anomaly engine's
state save (~10 MB of arrays at 10,000 points), comes every few minutes. glibc, left alone,
raises its mmap threshold to the largest block freed (up to 32 MiB), so those saves move from
mmap into the heap, whose free space then creeps up save after save: +7 MB in the first 5
minutes and +0.8 MB per save after, at flat bytes in use (found by the soak in
tests/system/test_reliability.py). glibc also gives each thread that allocates an arena of its
own (up to 8 per core), each keeping its own free memory: the gateway's drains and writers run in
threads that take turns on the GIL, so they gain nothing from that, and what one thread frees
another does not reuse. At 50,000 points the heap held 25-35 MB free with an arena per thread,
10-15 MB with one (`python -m bench.footprint`, glibc's mallinfo2), 0-3 MB since the historian
packs its blocks as SQLite writes them (gateway/storage/historian.py). Other C libraries (musl)
have no such heuristics and no `malloc_trim`: there these calls do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
import time

M_MMAP_THRESHOLD = -3  # mallopt's parameters, <malloc.h>
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's initial value
ARENAS = 1  # every thread allocates from the main heap
RELEASE_INTERVAL = 10.0  # seconds between hand-backs of free heap pages (a few ms each)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def tune_allocator() -> None:
    """For a long-running process, before its threads start: pin glibc's mmap threshold at
    its initial 128 KiB (large blocks are mapped and unmapped, never carved from the heap),
    keep to ARENAS malloc arenas, and hand free heap pages back every RELEASE_INTERVAL seconds
    (a daemon thread), so that RSS follows the memory in use."""
    with contextlib.suppress(AttributeError):
        if libc := _libc():
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(M_ARENA_MAX, ARENAS)
            threading.Thread(target=_release_periodically, name="memory-release",
                             daemon=True).start()


def _release_periodically() -> None:
    while True:
        time.sleep(RELEASE_INTERVAL)
        release_free_memory()


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (a few ms): after a large transient,
    so that RSS shows what the process holds."""
    with contextlib.suppress(AttributeError):
        if libc := _libc():
            libc.malloc_trim(0)
