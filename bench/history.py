"""Query times of the embedded historian: one tag with 1M readings (one a second, ~11.6
days) in 1-minute buckets over the whole range, a raw history of 10k readings, and the latest
value of 50,000 tags.

    python -m bench.history [--rows 1000000] [--influx]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import urllib3

from anomaly.core.batch import Batch
from bench.influx import server
from bench.table import Row
from gateway.site.model import HistorianSection, Point, Site, SiteSection
from gateway.status import SinkStatus
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.influxdb.reader import InfluxReader
from gateway.storage.influxdb.sink import InfluxSink

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


def one_tag_entries(rows: int, per_store: int = STORE_ROWS) -> Iterator[tuple[int, Batch]]:
    """Spool entries of one tag (point 0) read once a second from START: `rows` readings."""
    rng = np.random.default_rng(1)
    for seq, i in enumerate(range(0, rows, per_store), start=1):
        n = min(per_store, rows - i)
        ts = START + (i + np.arange(n, dtype=np.int64)) * SECOND
        yield seq, Batch.of(source_ts=ts, point=np.zeros(n), value=rng.normal(100, 5, n),
                            quality=0)


def embedded_vs_influx(tmp: Path, rows: int, url: str) -> tuple[float, float]:
    """Median wall ms of the 1-minute buckets over all of one tag's `rows` readings: the
    embedded historian (compacted), and InfluxDB at `url` through `InfluxReader`."""
    h = EmbeddedHistorian(tmp / "one.sqlite", ["flow"])
    for entry in one_tag_entries(rows):
        h.store([entry])
    while h.compact(full=True):
        pass
    end = START + rows * SECOND
    embedded = _wall_ms(lambda: h.buckets("flow", START, end, 60 * SECOND))
    h.close()
    site = Site(site=SiteSection(name="bench", data_dir=tmp), points=[Point(tag="flow")],
                historian=HistorianSection(kind="influxdb", api="v1", url=url,
                                           database="history", timeout=120))
    urllib3.request("POST", f"{url}/query", fields={"q": 'CREATE DATABASE "history"'})
    sink = InfluxSink(site, None, SinkStatus("influxdb"))  # type: ignore[arg-type]
    for entry in one_tag_entries(rows, 100_000):
        sink.store([entry])
    sink.close()
    reader = InfluxReader(site)
    influx = _wall_ms(lambda: reader.buckets("flow", START, end, 60 * SECOND))
    reader.close()
    return embedded, influx


def _wall_ms(fn: Callable[[], object], runs: int = 5) -> float:
    fn()
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - t) * 1e3)
    return statistics.median(walls)


def run(quick: bool, url: str) -> list[Row]:
    """1-minute buckets over one tag: the embedded historian beside InfluxDB at `url`."""
    rows = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        embedded, influx = embedded_vs_influx(Path(tmp), rows, url)
    return [Row(f"history query, one tag with {rows:,} readings, 1-minute buckets "
                f"({rows // 60:,}), median wall time", f"embedded: {embedded:,.1f} ms",
                f"InfluxDB 1.6 via InfluxReader: {influx:,.0f} ms", embedded / influx,
                f"python -m bench.history --rows {rows} --influx")]


def one_tag(path: Path, rows: int) -> None:
    h = EmbeddedHistorian(path, ["flow"])
    began = time.perf_counter()
    for entry in one_tag_entries(rows):
        h.store([entry])
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
    p.add_argument("--influx", action="store_true",
                   help="also the buckets query on InfluxDB (starts Debian's influxd)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one_tag(Path(tmp) / "one.sqlite", args.rows)
        many_tags(Path(tmp) / "many.sqlite", args.tags)
    if args.influx:
        with server(None) as url, tempfile.TemporaryDirectory() as tmp:
            embedded, influx = embedded_vs_influx(Path(tmp), args.rows, url)
        print(f"buckets(1 min) over {args.rows:,} readings: embedded {embedded:.1f} ms, "
              f"InfluxDB {influx:.1f} ms (InfluxReader; median wall of 5)")
    print(f"({os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
