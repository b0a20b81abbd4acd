"""Query times of the embedded historian: one tag with 1M readings (one a second, ~11.6
days) in 1-minute buckets over the whole range, a raw history of 10k readings, and the latest
value of 50,000 tags.

    python -m bench.history [--rows 1000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anomaly.batch import Batch
from gateway.historian import EmbeddedHistorian

SECOND = 1_000_000_000
START = 1_767_225_600 * SECOND  # 2026-01-01T00:00:00Z
STORE_ROWS = 1000  # readings per store, as the drain would hand them over


def timed(fn: Callable[[], object], runs: int = 7) -> tuple[str, object]:
    """Median wall and CPU milliseconds of `runs` calls (after a warm-up), and the result.
    CPU time is this thread's: on a busy machine it is the steadier figure."""
    result = fn()
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.thread_time()
        result = fn()
        wall.append((time.perf_counter() - w) * 1e3)
        cpu.append((time.thread_time() - c) * 1e3)
    return f"{statistics.median(wall):.2f} ms ({statistics.median(cpu):.2f} ms CPU)", result


def chunk_count(h: EmbeddedHistorian) -> str:
    db = h._reader()
    chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    fresh = db.execute("SELECT count(*) FROM fresh").fetchone()[0]
    return f"{chunks} chunks + {fresh} fresh rows"


def one_tag(path: Path, rows: int) -> None:
    h = EmbeddedHistorian(path, ["flow"])
    rng = np.random.default_rng(1)
    began = time.perf_counter()
    for seq, i in enumerate(range(0, rows, STORE_ROWS), start=1):
        n = min(STORE_ROWS, rows - i)
        ts = START + (i + np.arange(n, dtype=np.int64)) * SECOND
        h.store([(seq, Batch.of(source_ts=ts, point=np.zeros(n), value=rng.normal(100, 5, n),
                                quality=0))])
    stored = time.perf_counter() - began
    print(f"one tag, {rows:,} readings stored in {stored:.1f} s "
          f"({rows / stored:,.0f} readings/s, {STORE_ROWS} per store)")
    end = START + rows * SECOND
    mid = START + rows // 2 * SECOND
    for label in ("as stored", "after compact(full=True)"):
        if label != "as stored":
            while h.compact(full=True):
                pass
        ms, b = timed(lambda: h.buckets("flow", START, end, 60 * SECOND))
        print(f"  {label} ({chunk_count(h)}):")
        print(f"    buckets(1 min) over all {rows:,} readings: {ms} ({len(b):,} buckets)")
        ms, raw = timed(lambda: h.history("flow", mid, mid + 10_000 * SECOND))
        print(f"    history, raw, {len(raw):,} readings: {ms}")
    h.close()


def many_tags(path: Path, tags: int) -> None:
    h = EmbeddedHistorian(path, [f"t{i}" for i in range(tags)])
    for seq in range(1, 4):
        h.store([(seq, Batch.of(source_ts=np.full(tags, START + seq * SECOND),
                                point=np.arange(tags), value=np.arange(tags), quality=0))])
    ms, latest = timed(h.latest)
    print(f"latest() of {tags:,} tags: {ms} ({len(latest):,} readings)")
    some = [f"t{i}" for i in range(0, tags, tags // 100)]
    ms, _ = timed(lambda: h.latest(some))
    print(f"latest() of {len(some)} tags among {tags:,}: {ms}")
    h.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--tags", type=int, default=50_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one_tag(Path(tmp) / "one.sqlite", args.rows)
        many_tags(Path(tmp) / "many.sqlite", args.tags)
    print(f"({os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
