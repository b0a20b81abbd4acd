"""A real small filesystem to fill up: a tmpfs mounted for one test (root, or CAP_SYS_ADMIN).

Writes to it fail as on a full disk (ENOSPC from the kernel, SQLITE_FULL from SQLite); nothing
in the code under test is patched. Where mounting is not permitted the test is skipped, saying
why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class SmallFs:
    root: Path

    @property
    def ballast(self) -> Path:
        return self.root / "ballast"

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Grow the ballast file until `leave` bytes are free (or fewer: pages are 4 KiB)."""
        with open(self.ballast, "ab") as f:
            while (room := self.free_bytes() - leave) > 0:
                try:
                    f.write(b"\0" * min(room, 1 << 20))
                    f.flush()
                except OSError:  # full: the last write was cut short
                    break

    def empty(self) -> None:
        """Space is back: the ballast goes."""
        self.ballast.unlink(missing_ok=True)


@contextlib.contextmanager
def small_filesystem(where: Path, mib: int = 20) -> Iterator[SmallFs]:
    where.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        reason = getattr(e, "stderr", None) or e
        pytest.skip(f"cannot mount a {mib} MiB tmpfs to fill up (needs root or "
                    f"CAP_SYS_ADMIN): {str(reason).strip()}")
    try:
        yield SmallFs(where)
    finally:
        # Lazy: a process of the test may still hold a file open on it.
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
