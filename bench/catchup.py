"""A catch-up into InfluxDB with the live lane: how long live readings wait while a backlog
drains, and the backlog's drain rate next to `max_rate`.

    python -m bench.catchup                  # starts its own influxd (Debian's influxdb)
    python -m bench.catchup --backlog 2000000 --max-rate 100000 --live-rate 10000

A spool holds `--backlog` readings (InfluxDB was down); a feeder thread appends live readings
at `--live-rate` (one record per 0.1 s, as polls do) while the sink's lanes drain the spool
(`gateway.storage.influxdb.catchup.LiveFirst`, the gateway's own code). A live record's wait is
from its append to the end of the step that stored it (the write was acknowledged by InfluxDB).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import urllib3

from anomaly.core.batch import Batch
from bench.influx import create, readings, server
from gateway.site.model import HistorianSection, Point, Site, SiteSection
from gateway.status import SinkStatus, SpoolStatus
from gateway.storage.influxdb.catchup import LiveFirst
from gateway.storage.influxdb.sink import InfluxSink
from gateway.storage.spool import Spool

TAGS = 1000
RECORD = 10_000  # backlog readings per spool record
LIVE_PERIOD = 0.1  # seconds between live records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an InfluxDB 1.x to use (default: start influxd)")
    ap.add_argument("--backlog", type=int, default=1_000_000, help="readings spooled")
    ap.add_argument("--max-rate", type=float, default=100_000.0, help="[historian] max_rate")
    ap.add_argument("--live-rate", type=int, default=10_000, help="live readings/s")
    args = ap.parse_args()
    with server(args.url) as url, tempfile.TemporaryDirectory() as tmp:
        db = f"catchup_{time.time_ns()}"
        create(urllib3.PoolManager(), url, db)
        site = Site(site=SiteSection(name="bench", data_dir=Path(tmp)),
                    historian=HistorianSection(kind="influxdb", api="v1", url=url, database=db,
                                               max_rate=args.max_rate),
                    points=[Point(tag=f"t{i}", kind="flow", unit="m3/h") for i in range(TAGS)])
        spool = Spool(Path(tmp) / "spool", site.spool, SpoolStatus())
        spool.use_points(site.points)
        backlog = readings(TAGS, args.backlog)
        for a in range(0, args.backlog, RECORD):
            spool.append(backlog.take(slice(a, a + RECORD)))
        status = SinkStatus("influxdb")
        sink = InfluxSink(site, spool, status)
        lanes = LiveFirst(spool, sink, status, Path(tmp) / "progress.json", args.max_rate)

        appended: dict[int, float] = {}  # live seq -> append time
        lock = threading.Lock()
        stop = threading.Event()
        one = readings(TAGS, max(1, int(args.live_rate * LIVE_PERIOD)))

        def feed() -> None:
            for i in range(int(3600 / LIVE_PERIOD)):  # bounded: an hour at most
                if stop.wait(LIVE_PERIOD):
                    return
                # Times after the backlog's, one second apart per record.
                ts = one.source_ts + 10**12 + i * 10**9
                seq = spool.append(Batch(**{k: getattr(one, k) for k in Batch.DTYPES}
                                         | {"source_ts": ts}))
                with lock:
                    appended[seq] = time.monotonic()

        feeder = threading.Thread(target=feed, daemon=True)
        waits: list[float] = []
        start = time.monotonic()
        feeder.start()
        backlog_done = None
        for _ in range(100_000):  # bounded: each step stores a turn
            lanes.step()
            now = time.monotonic()
            p = lanes.progress
            assert p is not None
            with lock:
                for seq in [s for s in appended
                            if s <= p.low or any(a <= s <= b for a, b in p.ranges)]:
                    waits.append(now - appended.pop(seq))
            if backlog_done is None and status.backlog_readings == 0 and not p.ranges:
                backlog_done = now - start
                break
        stop.set()
        feeder.join()
        sink.close()
        spool.close()
    w = np.array(waits)
    print(f"backlog {args.backlog:,} readings, max_rate {args.max_rate:,.0f}/s, "
          f"live {args.live_rate:,}/s")
    print(f"backlog drained in {backlog_done:.1f} s: "
          f"{args.backlog / backlog_done:,.0f} readings/s "
          f"(ratio to max_rate {args.backlog / backlog_done / args.max_rate:.2f})")
    print(f"live records stored during the catch-up: {len(w)}; wait p50 {np.median(w):.2f} s, "
          f"p95 {np.percentile(w, 95):.2f} s, max {w.max():.2f} s")
    print(f"(one oldest-first cursor instead: a reading polled as the catch-up began would wait "
          f"the whole drain, {backlog_done:.1f} s)")


if __name__ == "__main__":
    main()
