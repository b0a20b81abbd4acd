"""Bytes written to storage per reading (issue #13 D11): field gateways run on SD cards and
eMMC, which wear by the page written.

`bench.disk_writes.lifetime` runs the spool and the embedded historian in this process over a
fixed workload (a 25-tag site polled every second, 40 minutes of simulated poll clock: no
waiting) with the site file's defaults, from the poll through the historian's move into
per-tag chunks to its checkpoint, and counts what this process sent to storage
(`/proc/self/io` write_bytes). Timing plays no part: the figure is bytes, the clock is the
workload's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.batch import Batch
from bench.disk_writes import filesystem, lifetime
from gateway.storage.historian import PAGE_SIZE, EmbeddedHistorian

# Measured ~207 with the defaults (fsync_interval = flush_interval = 10 s, 1 KiB pages);
# ~1,300 before (1 s each, 4 KiB pages). The readings themselves are ~41 bytes each in the
# spool, in the historian's WAL (fresh rows, then chunks) and once in its file.
BOUND = 250


@pytest.fixture
def real_disk(tmp_path: Path) -> Path:
    if filesystem(tmp_path) == "tmpfs":
        pytest.skip("tmpfs sends nothing to storage: write_bytes stays 0")
    return tmp_path


def test_a_reading_costs_a_bounded_number_of_bytes_over_its_life(real_disk: Path) -> None:
    m = lifetime(25, 1.0, 60_000, real_disk)
    assert 41 < m["net"] <= BOUND, m


def test_a_historian_file_of_4_kib_pages_keeps_them_and_works(tmp_path: Path) -> None:
    """Files made before pages were 1 KiB open as they are: WAL mode fixes the page size."""
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
    tags = ["a", "b"]
    ts = np.array([1, 2], np.int64) * 10**9
    for path in (old, tmp_path / "new.sqlite"):
        h = EmbeddedHistorian(path, tags)
        h.store([(1, Batch.of(source_ts=ts, point=[0, 1], value=[1.5, 2.5], quality=[1, 1]))])
        h.close()
        h = EmbeddedHistorian(path, tags, readonly=True)
        assert h.latest().value.tolist() == [1.5, 2.5]
        assert h.history("b", 0, 10**10).value.tolist() == [2.5]
        h.close()
        with sqlite3.connect(path) as db:
            size = db.execute("PRAGMA page_size").fetchone()[0]
        assert size == (4096 if path == old else PAGE_SIZE)
