"""Readings per second through the InfluxDB sink, beside the raw ceiling in the same run: a bare
loop POSTing pre-built line protocol of the same readings, as many requests in flight as the
sink, to the same server. Both write APIs:

- v1: the sink (`api = "v1"`, `/write`) and the bare loop into InfluxDB 1.6 (Debian's influxd,
  started here unless `--url`);
- v2: the sink (`api = "v2"`, `/api/v2/write`) and the bare loop into VictoriaMetrics' v2
  endpoint (Debian's victoria-metrics, started here): the v2 path must keep the v1 path's
  throughput.

    python -m bench.influx                   # both
    python -m bench.influx --url http://127.0.0.1:8086 --readings 2000000

The sink's figure includes everything it does per reading: the lean schema's lines from the
columns (`value` alone for a good reading), gzip when on (`--gzip`; off by default on
loopback) and the POSTs. Readings are float32 values widened to float64 (17 digits, as a
Modbus float32 gives), stamped to the ms, an hour ago (VictoriaMetrics keeps no older than its
retention). Each run writes to a fresh database. Beside each rate, this process's CPU per
reading (all its threads; the server's not): on a machine others keep busy the rates fall with
the CPU this process gets, its CPU per reading much less.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from gzip import compress
from pathlib import Path
from typing import NamedTuple

import numpy as np
import urllib3

from anomaly.core.batch import Batch
from bench.table import Row
from gateway.site.model import HistorianSection, Point, Site, SiteSection
from gateway.status import SinkStatus
from gateway.storage.influxdb.sink import (
    IN_FLIGHT,
    InfluxSink,
    SeriesKeys,
    line_protocol,
    precision_of,
)

BATCH_LINES = 5000
STORE_ROWS = 100_000  # what the drain hands the sink per store


@contextlib.contextmanager
def _started(kind: str) -> Iterator[str]:
    """The URL of a server of `kind` ("influxd", "victoria") started by the test helpers (on
    a free port, with its own config and data), stopped on exit."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from support.peers import influx_servers

    with tempfile.TemporaryDirectory() as tmp:
        started = getattr(influx_servers, kind)(Path(tmp))
        try:
            yield started.url
        finally:
            started.stop()


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """An InfluxDB 1.x at `url`, or one started here."""
    if url:
        yield url
        return
    with _started("influxd") as started:
        yield started


def victoria() -> contextlib.AbstractContextManager[str]:
    return _started("victoria")


def create(http: urllib3.PoolManager, url: str, db: str) -> None:
    """Create database `db` on the InfluxDB 1.x at `url`."""
    http.request("POST", f"{url}/query", fields={"q": f'CREATE DATABASE "{db}"'})


def readings(tags: int, count: int) -> Batch:
    """`count` readings of `tags` points polled in turn, one second apart per round."""
    rng = np.random.default_rng(1)
    point = np.arange(count, dtype=np.int32) % tags
    start = (time.time_ns() // 10**9 - 3600) * 10**9
    ts = start + (np.arange(count) // tags) * 10**9 + point % 1000 * 10**6
    value = rng.normal(50, 10, count).astype(np.float32).astype(np.float64)
    return Batch.of(source_ts=ts, point=point, value=value, quality=0)


def bodies(site: Site, batch: Batch) -> list[bytes]:
    keys = SeriesKeys.of(site)
    unit = precision_of(batch.source_ts).ns
    return ["\n".join(line_protocol(keys, batch.take(slice(a, a + BATCH_LINES)), unit)).encode()
            for a in range(0, len(batch), BATCH_LINES)]


class Took(NamedTuple):
    wall: float  # seconds
    cpu: float  # this process's CPU seconds, every thread (the server's are its own)


@contextlib.contextmanager
def timed(took: list[Took]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    took.append(Took(time.perf_counter() - wall, time.process_time() - cpu))


def bare_loop(post: Callable[[bytes], None], data: list[bytes]) -> Took:
    """The time to POST `data`, IN_FLIGHT at a time."""
    took: list[Took] = []
    with timed(took), ThreadPoolExecutor(IN_FLIGHT) as pool:
        for _ in pool.map(post, data):
            pass
    return took[0]


def through_sink(site: Site, batch: Batch) -> Took:
    """The time for the sink to store `batch`, handed over as the drain does."""
    sink = InfluxSink(site, None, SinkStatus("influxdb"))  # type: ignore[arg-type]
    took: list[Took] = []
    try:
        with timed(took):
            for a in range(0, len(batch), STORE_ROWS):
                sink.store([(1, batch.take(slice(a, a + STORE_ROWS)))])
        return took[0]
    finally:
        sink.close()


def measure(api: str, url: str, n: int, tags: int, gzip: bool | None = None
            ) -> tuple[Took, Took]:
    """The bare POST loop's time and the sink's, `n` readings of `tags` tags, through `api`
    ("v1": InfluxDB 1.x at `url`; "v2": VictoriaMetrics at `url`)."""
    points = [Point(tag=f"T{i:05d}", device=f"dev{i // 2500:02d}", kind="flow", unit="m3/h",
                    zone=f"z{i % 7}") for i in range(tags)]
    batch = readings(tags, n)
    http = urllib3.PoolManager(retries=False, timeout=60, maxsize=IN_FLIGHT)
    if api == "v1":
        for db in ("raw", "sink"):
            create(http, url, db)
        h = HistorianSection(kind="influxdb", api="v1", url=url, database="sink",
                             batch_size=BATCH_LINES, max_rate=1e12, gzip=gzip)
        raw_url = f"{url}/write?db=raw&precision=ms"
    else:
        h = HistorianSection(kind="influxdb", api="v2", url=url, bucket="sink", org="bench",
                             batch_size=BATCH_LINES, max_rate=1e12, gzip=gzip)
        raw_url = f"{url}/api/v2/write?bucket=raw&org=bench&precision=ms"

    headers = {"Content-Encoding": "gzip"} if gzip else {}

    def post(body: bytes) -> None:
        r = http.request("POST", raw_url, body=body, headers=headers)
        assert r.status == 204, r.data

    with tempfile.TemporaryDirectory() as tmp:
        site = Site(site=SiteSection(name="bench", data_dir=Path(tmp)), historian=h,
                    points=points)
        data = [compress(b, 1) if gzip else b for b in bodies(site, batch)]
        # Creating a series costs the server far more than a point: both get every series
        # before the clock starts, as a running site has them.
        first = batch.take(np.arange(tags))
        bare_loop(post, [compress(b, 1) if gzip else b for b in bodies(site, first)])
        through_sink(site, first)
        return bare_loop(post, data), through_sink(site, batch)


def run(quick: bool, url: str) -> list[Row]:
    """The sink's readings/s beside the bare POST loop: v1 into InfluxDB at `url`, v2 into a
    VictoriaMetrics started here."""
    n, tags = (200_000, 10_000) if quick else (1_000_000, 50_000)
    rows = []
    for api, server_name, where in (("v1", "InfluxDB 1.6", url), ("v2", "VictoriaMetrics", None)):
        with contextlib.ExitStack() as stack:
            at = where or stack.enter_context(victoria())
            raw, ours = measure(api, at, n, tags)
        rows.append(Row(f"InfluxDB sink, api {api} into {server_name} ({tags:,} series, "
                        f"{BATCH_LINES:,}-line requests, {IN_FLIGHT} in flight)",
                        f"{n / ours.wall:,.0f} readings/s, {ours.cpu / n * 1e6:.2f} us CPU a "
                        f"reading", f"bare POST loop of pre-built lines: {n / raw.wall:,.0f}/s, "
                        f"{raw.cpu / n * 1e6:.2f} us", raw.wall / ours.wall,
                        f"python -m bench.influx --readings {n} --tags {tags}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an InfluxDB 1.x without auth (default: start one)")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--tags", type=int, default=50_000)
    parser.add_argument("--gzip", action="store_true", help="gzip the bodies (level 1)")
    parser.add_argument("--api", choices=("v1", "v2", "both"), default="both")
    args = parser.parse_args()
    gzip = True if args.gzip else None
    print(f"readings: {args.readings:,} of {args.tags:,} tags; {BATCH_LINES:,} lines a request, "
          f"{IN_FLIGHT} in flight; gzip {'on (level 1)' if args.gzip else 'off (loopback)'}")
    for api in ("v1", "v2") if args.api == "both" else (args.api,):
        with server(args.url) if api == "v1" else victoria() as url:
            raw, ours = measure(api, url, args.readings, args.tags, gzip)
        name = "InfluxDB 1.6 /write" if api == "v1" else "VictoriaMetrics /api/v2/write"
        print(f"{api} into {name}:")
        for what, took in (("raw ceiling (bare POST loop, pre-built lines)", raw),
                           ("through the sink (columns -> lines -> POST)  ", ours)):
            print(f"  {what}: {args.readings / took.wall:12,.0f} readings/s, "
                  f"{took.cpu / args.readings * 1e6:.2f} us CPU a reading")
        print(f"  ratio: {raw.wall / ours.wall:.2f}")


if __name__ == "__main__":
    main()
