"""Readings per second through spool append + drain into the embedded historian, and the CPU
they cost, as the gateway runs them: one asyncio loop appends device-sized batches while the
drain task stores them (in a thread, compaction included).

    python -m bench.spool                       # as fast as it goes: readings/s
    python -m bench.spool --rate 100000         # paced: the share of a core at that rate

Defaults mirror the target site: 50,000 tags polled as 20 devices x 2,500 points.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from anomaly.core.batch import Batch
from gateway.site.model import SpoolSection
from gateway.status import SinkStatus, SpoolStatus
from gateway.storage.drain import drain
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.spool import Spool

MAX_BACKLOG = 1_000_000  # readings spooled but not stored, flat out


def device_polls(tags: int, batch: int, count: int) -> Iterator[Batch]:
    """One poll per device in turn: each batch is `batch` consecutive points, one timestamp."""
    rng = np.random.default_rng(1)
    devices = -(-tags // batch)
    points = [(d * batch + np.arange(batch, dtype=np.int32)) % tags for d in range(devices)]
    values = [rng.normal(size=batch) for _ in range(devices)]
    zeros = np.zeros(batch, np.uint8), np.zeros(batch, np.uint32)
    now = time.time_ns()
    for i in range(count):
        ts = np.full(batch, now + i * 1_000_000, np.int64)
        yield Batch(source_ts=ts, server_ts=ts, gateway_ts=ts, point=points[i % devices],
                    value=values[i % devices], quality=zeros[0], cause=zeros[1])


async def run(data: Path, tags: int, batch: int, readings: int, rate: float, idle: float
              ) -> None:
    spool_status = SpoolStatus()
    spool = Spool(data / "spool", SpoolSection(), spool_status)
    historian = EmbeddedHistorian(data / "historian.sqlite", [f"t{i}" for i in range(tags)])
    count = max(1, readings // batch)
    total = count * batch
    status = SinkStatus(name=historian.name)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sink = asyncio.create_task(drain(spool, historian, status, spool.read_records_after, idle=idle))
    append_s = 0.0
    for i, b in enumerate(device_polls(tags, batch, count)):
        if rate:
            delay = wall0 + i * batch / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            # Flat out, but no faster than the historian stores: the spool's size bound
            # would otherwise drop readings, and this measures the storing.
            while spool.backlog(historian.cursor())[0] > MAX_BACKLOG:
                await asyncio.sleep(0.001)
        t = time.perf_counter()
        spool.append(b)
        append_s += time.perf_counter() - t
        await asyncio.sleep(0)
    appended = time.perf_counter()
    while historian.cursor() < spool.last_seq:
        await asyncio.sleep(0.01)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sink.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sink
    spool.close()
    historian.close()
    db = sqlite3.connect(data / "historian.sqlite")
    chunks, fresh = (db.execute(f"SELECT count(*), coalesce(sum(n), 0) FROM {t}").fetchone()
                     for t in ("chunks", "fresh"))
    db.close()
    size = sum(f.stat().st_size for f in data.iterdir() if f.is_file())
    print(f"{total:,} readings ({tags:,} tags, batches of {batch:,}"
          f"{f', paced at {rate:,.0f}/s' if rate else ''}, drain idle {idle:g} s):")
    if spool_status.readings_dropped_total:
        print(f"  DROPPED by the spool bounds: {spool_status.readings_dropped_total:,}")
    print(f"  stored in {wall:.2f} s wall ({appended - wall0:.2f} s appending): "
          f"{total / wall:,.0f} readings/s")
    print(f"  CPU {cpu:.2f} s: {cpu / total * 1e6:.2f} CPU s per million readings, "
          f"{cpu / wall:.0%} of one core over the run; append alone "
          f"{append_s / total * 1e6:.3f} s per million")
    print(f"  historian: {chunks[0]:,} chunks ({chunks[1]:,} readings), {fresh[0]:,} fresh rows "
          f"({fresh[1]:,} readings), files {size / 1e6:.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tags", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=2_500, help="readings per append (one poll)")
    p.add_argument("--readings", type=int, default=3_000_000)
    p.add_argument("--rate", type=float, default=0.0, help="readings/s to pace at (0: flat out)")
    p.add_argument("--idle", type=float, default=0.05, help="drain's wait once caught up (s)")
    p.add_argument("--dir", type=Path, default=None, help="data directory (default: a temp dir)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(run(Path(tmp), args.tags, args.batch, args.readings, args.rate,
                        args.idle))
    print(f"  ({os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
