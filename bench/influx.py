"""Readings per second into InfluxDB through the sink, next to the raw ceiling in the same run:
a bare loop POSTing pre-built line protocol in 5,000-line batches to `/write`.

    python -m bench.influx                   # starts its own influxd (Debian's influxdb)
    python -m bench.influx --url http://127.0.0.1:8086 --readings 2000000

The sink's figure includes everything it does per reading: line protocol from the columns,
gzip (level 1; `--no-gzip` to compare) and the POSTs. Each run writes to a fresh database.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import urllib3

from anomaly.batch import Batch
from bench.table import Row
from gateway.config import HistorianSection, Point, Site, SiteSection
from gateway.influx import InfluxSink, SeriesKeys, line_protocol
from gateway.status import SinkStatus

BATCH_LINES = 5000
STORE_ROWS = 100_000  # what the drain hands the sink per store


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    # The test helper that starts influxd on a free port with its own config and data.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from influx_servers import influxd

    with tempfile.TemporaryDirectory() as tmp:
        started = influxd(Path(tmp))
        try:
            yield started.url
        finally:
            started.stop()


def readings(tags: int, count: int) -> Batch:
    """`count` readings of `tags` points polled in turn, one second apart per round."""
    rng = np.random.default_rng(1)
    point = np.arange(count, dtype=np.int32) % tags
    ts = 1_772_000_000 * 10**9 + (np.arange(count) // tags) * 10**9 + point
    return Batch.of(source_ts=ts, point=point, value=rng.normal(50, 10, count).round(4),
                    quality=0, gateway_ts=ts + 1000)


def create(http: urllib3.PoolManager, url: str, db: str) -> None:
    http.request("POST", f"{url}/query", fields={"q": f'CREATE DATABASE "{db}"'})


def raw_ceiling(http: urllib3.PoolManager, url: str, bodies: list[bytes]) -> float:
    """Seconds to POST `bodies` one after the other."""
    t = time.perf_counter()
    for body in bodies:
        r = http.request("POST", f"{url}/write?db=raw&precision=ns", body=body)
        assert r.status == 204, r.data
    return time.perf_counter() - t


def measure(url: str, n: int, tags: int, gzip: bool = True) -> tuple[float, float]:
    """Points/s of the bare POST loop and of the sink, `n` readings of `tags` tags."""
    points = [Point(tag=f"T{i:05d}", device=f"dev{i // 2500:02d}", kind="flow", unit="m3/h",
                    zone=f"z{i % 7}") for i in range(tags)]
    batch = readings(tags, n)
    http = urllib3.PoolManager(retries=False, timeout=60)
    for db in ("raw", "sink"):
        create(http, url, db)
    h = HistorianSection(kind="influxdb", api="v1", url=url, database="sink",
                         batch_size=BATCH_LINES, max_rate=1e12, gzip=gzip)
    with tempfile.TemporaryDirectory() as tmp:
        site = Site(site=SiteSection(name="bench", data_dir=Path(tmp)), historian=h,
                    points=points)
        lines = line_protocol(SeriesKeys.of(site), batch)
        bodies = ["\n".join(lines[a : a + BATCH_LINES]).encode()
                  for a in range(0, len(lines), BATCH_LINES)]
        # Creating a series costs InfluxDB far more than a point: both databases get
        # every series before the clock starts, as a running site has them.
        warm = len(bodies) * tags // len(batch) + 1
        raw_ceiling(http, url, bodies[:warm])
        sink = InfluxSink(site, None, SinkStatus("influxdb"))  # type: ignore[arg-type]
        sink.store([(0, batch.take(np.arange(warm * BATCH_LINES)))])
        raw = raw_ceiling(http, url, bodies)

        entries = [(i + 1, batch.take(np.arange(a, min(a + STORE_ROWS, len(batch)))))
                   for i, a in enumerate(range(0, len(batch), STORE_ROWS))]
        t = time.perf_counter()
        for entry in entries:
            sink.store([entry])
        through_sink = time.perf_counter() - t
        sink.close()
    return n / raw, n / through_sink


def run(quick: bool, url: str) -> list[Row]:
    """The sink's points/s beside the bare POST loop, on the InfluxDB at `url`."""
    n, tags = (200_000, 10_000) if quick else (1_000_000, 50_000)
    raw, ours = measure(url, n, tags)
    return [Row(f"InfluxDB sink (1.6, {tags:,} series, {BATCH_LINES:,}-line gzip requests)",
                f"{ours:,.0f} points/s", f"bare POST loop of pre-built lines: {raw:,.0f}/s",
                ours / raw, f"python -m bench.influx --readings {n} --tags {tags}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an InfluxDB 1.x without auth (default: start one)")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--tags", type=int, default=50_000)
    parser.add_argument("--no-gzip", action="store_true")
    args = parser.parse_args()
    with server(args.url) as url:
        raw, ours = measure(url, args.readings, args.tags, gzip=not args.no_gzip)
    print(f"readings: {args.readings:,} of {args.tags:,} tags; {BATCH_LINES:,} lines a request; "
          f"gzip {'off' if args.no_gzip else 'on (level 1)'}")
    print(f"raw ceiling (bare POST loop, pre-built lines): {raw:12,.0f} points/s")
    print(f"through the sink (columns -> lines -> POST):   {ours:12,.0f} points/s")
    print(f"ratio: {ours / raw:.2f}")

if __name__ == "__main__":
    main()
