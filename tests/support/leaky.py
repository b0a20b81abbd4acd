"""`python tests/support/leaky.py MB_PER_MIN ARGS...`: `scadawatch ARGS...` with a memory leak
put in on purpose, for the reliability suite to show that its soak fails on one. Test only: a thread
keeps MB_PER_MIN more memory each minute, in 10 KiB pieces written once (so that they count
in RSS), a piece as soon as one is due; nothing in scadawatch is changed.
"""

from __future__ import annotations

import sys
import threading
import time

PIECE = 10 * 1024  # bytes: below glibc's mmap threshold, so it comes from the heap


def leak(mb_per_min: float) -> None:
    kept: list[bytearray] = []
    per_second = mb_per_min * 2**20 / 60 / PIECE
    began = time.monotonic()
    while True:
        due = int((time.monotonic() - began) * per_second) - len(kept)
        kept += [bytearray(PIECE) for _ in range(due)]  # zero-filled: the pages are touched
        time.sleep(0.5)


if __name__ == "__main__":
    threading.Thread(target=leak, args=(float(sys.argv[1]),), daemon=True).start()
    from scadawatch.cli import main

    sys.exit(main(sys.argv[2:]))
