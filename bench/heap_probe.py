"""Run `scadawatch ...` in this process with a thread that logs, every PERIOD seconds, where its
memory is: RSS (anonymous, file-backed), glibc's heap (mallinfo2: the arena, its bytes in use
and free, the blocks mapped on their own) and SQLite's own allocations (sqlite3_memory_used,
page caches included) with the SQLite files open. A passive probe: it walks no objects and
traces nothing, so the process measured holds what it would without it.
`bench.footprint --heap-log` starts the gateway through it.

    python -m bench.heap_probe LOG run --config site.toml
"""

from __future__ import annotations

import _sqlite3
import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
import time
from pathlib import Path

PERIOD = 1.0  # seconds between lines
SQLITE_SUFFIXES = (".sqlite", ".sqlite-wal", ".db")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _open_sqlite_files() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since listed
            n += os.readlink(f"/proc/self/fd/{fd}").endswith(SQLITE_SUFFIXES)
    return n


def line(t0: float, libc: ctypes.CDLL, sqlite: ctypes.CDLL) -> str:
    """One log line: MB, seconds since `t0`."""
    heap = libc.mallinfo2()
    roll = {f[0].rstrip(":"): int(f[1]) / 1024 for f in (
        row.split() for row in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])}
    return (f"t={time.monotonic() - t0:.0f}s rss={roll['Rss']:.1f} anon={roll['Anonymous']:.1f} "
            f"file={roll['Rss'] - roll['Anonymous']:.1f} heap_arena={heap.arena / 1e6:.1f} "
            f"heap_inuse={heap.uordblks / 1e6:.1f} heap_free={heap.fordblks / 1e6:.1f} "
            f"mmapped={heap.hblkhd / 1e6:.1f} sqlite={sqlite.sqlite3_memory_used() / 1e6:.2f} "
            f"sqlite_files={_open_sqlite_files()}")


def _log(path: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    sqlite = ctypes.CDLL(_sqlite3.__file__)  # its libsqlite3's symbols, the one in use
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    t0 = time.monotonic()
    with path.open("a") as out:
        while True:
            print(line(t0, libc, sqlite), file=out, flush=True)
            time.sleep(PERIOD)


def main() -> None:
    log, args = Path(sys.argv[1]), sys.argv[2:]
    threading.Thread(target=_log, args=(log,), name="heap-probe", daemon=True).start()
    from scadawatch.cli import main as scadawatch
    raise SystemExit(scadawatch(args))


if __name__ == "__main__":
    main()
