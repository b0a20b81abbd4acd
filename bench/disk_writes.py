"""Bytes written to storage per reading by `scadawatch run`: what wears a field gateway's
SD card or eMMC.

Starts loopback pymodbus servers (`bench.modbus.Servers`, a separate process), writes a site
file of `--devices` x `--points` float32 polled every `--interval` s with the defaults of
everything else (spool, embedded historian, anomaly engine, API), runs
`scadawatch run --config` as a child with its data_dir on the disk under `--dir` and, after
`--warmup` seconds, reads the child's `/proc/<pid>/io` over `--seconds`:

- `write_bytes`: bytes the process caused to be sent to storage (counted when a page turns
  dirty, so a page rewritten before the kernel writes it back counts once);
- `write_bytes - cancelled_write_bytes`: less the dirty pages of files deleted or truncated
  before they reached the disk (a status file replaced every second never does);
- `wchar`: bytes passed to write() calls.

Each is divided by the readings the spool took in the same window (its metrics). The aim
for a 25-tag site polled every second is <= 200 bytes per reading. The window should span
several of the kernel's writeback periods (`vm.dirty_expire_centisecs`, 30 s by default), or
the figure depends on where in the period it falls.

A window of minutes misses what a small site does every few hours: the historian moving its
readings into per-tag chunks and checkpointing them. `lifetime()` adds that figure: the same
site's spool and historian in this process over 60,000 readings of simulated time, from
the poll to the checkpoint of the chunks (tests/gateway/storage/test_disk_writes.py bounds it).

    python -m bench.disk_writes [--devices 1] [--points 25] [--interval 1] [--warmup 45]
                                [--seconds 180] [--flush-interval S] [--fsync-interval S]
                                [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
import unittest.mock
from pathlib import Path

import httpx
import numpy as np

import gateway.storage.spool
from anomaly.core.batch import Batch
from api.tokens import TokenStore
from bench.footprint import site_file, start
from bench.modbus import Servers
from bench.table import Row
from gateway.site.model import HistorianSection, SpoolSection
from gateway.status import SpoolStatus
from gateway.storage.historian import EmbeddedHistorian, store_readings
from gateway.storage.spool import Spool
from scadawatch.ports import free_port

AIM = 200.0  # bytes written per reading, 25 tags polled every second
LIFETIME_READINGS = 60_000  # 40 min of a 25-tag site


def io_counters(pid: int) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split(": ") for line in
                                  Path(f"/proc/{pid}/io").read_text().splitlines())}


def spooled(api_port: int, token: str) -> int:
    """Readings the gateway has appended to its spool (its metrics)."""
    text = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/metrics", timeout=10,
                     headers={"Authorization": f"Bearer {token}"}).text
    for line in text.splitlines():
        if line.startswith("scadawatch_spool_readings_appended_total "):
            return int(float(line.split()[1]))
    raise RuntimeError("no scadawatch_spool_readings_appended_total in the metrics")


def filesystem(path: Path) -> str:
    """The type of the filesystem holding `path` (from /proc/mounts: the longest mount point
    that is a prefix of it)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def measure(devices: int, points: int, interval: float, warmup: float, seconds: float,
            where: Path, **sections: dict) -> dict[str, float]:
    """Bytes per reading (write_bytes, net of cancelled, wchar) and readings/s."""
    servers = Servers(devices, points)
    api_port = free_port()
    try:
        with tempfile.TemporaryDirectory(prefix="disk-writes-", dir=where) as tmp:
            data = Path(tmp) / "data"
            config = site_file(Path(tmp), servers.ports, points, interval, api_port,
                               **sections)
            _, token = TokenStore(data).create("viewer")
            proc, first = start(config, api_port, token)
            if first is None:
                raise RuntimeError("scadawatch run stored no reading within 120 s")
            try:
                time.sleep(warmup)
                io0, n0, t0 = io_counters(proc.pid), spooled(api_port, token), time.perf_counter()
                time.sleep(seconds)
                io1, n1, t1 = io_counters(proc.pid), spooled(api_port, token), time.perf_counter()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    finally:
        servers.stop()
    readings = max(n1 - n0, 1)
    d = {k: io1[k] - io0[k] for k in io0}
    return {"write": d["write_bytes"] / readings,
            "net": (d["write_bytes"] - d["cancelled_write_bytes"]) / readings,
            "wchar": d["wchar"] / readings,
            "rate": readings / (t1 - t0),
            "bytes_per_s": d["write_bytes"] / (t1 - t0)}


class _Clock:
    """The spool's clock in `lifetime`: one poll interval passes per append, none in between."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return int(self.now * 1e9)


def lifetime(points: int, interval: float, readings: int, where: Path,
             spool: SpoolSection | None = None, historian: HistorianSection | None = None,
             store_rows: int | None = None) -> dict[str, float]:
    """Bytes written per reading over a reading's whole life on the gateway, in this process:
    `readings` of `points` tags polled every `interval` s are spooled (synced every
    `fsync_interval` of the poll clock), stored in the embedded historian every
    `flush_interval` of it, then moved into per-tag chunks (a full compaction) and
    checkpointed (the historian closed). A run of `scadawatch run` sees a few minutes of this;
    the move into chunks comes once per ~260k readings of a small site (hours). Pages rewritten
    between syncs (the spool's cursors) count once here, once per writeback period (30 s) in a
    real run. `net` leaves out SQLite's temporary files (statement journals of the move),
    deleted before they reach the disk. Time does not pass: the poll clock is simulated, so
    this takes seconds."""
    spool = spool or SpoolSection()
    historian = historian or HistorianSection()
    store_rows = store_rows or store_readings(points)
    clock = _Clock()
    polls = readings // points
    per_store = max(1, round(historian.flush_interval / interval))
    t = clock.time_ns() + np.arange(points, dtype=np.int64) * 1000
    with tempfile.TemporaryDirectory(prefix="disk-life-", dir=where) as tmp:
        with unittest.mock.patch.object(gateway.storage.spool, "time", clock):
            sp = Spool(Path(tmp) / "spool", spool, SpoolStatus())
        db = EmbeddedHistorian(Path(tmp) / "historian.sqlite",
                               [f"plc0.f{k}" for k in range(points)])
        io0, seq = io_counters(os.getpid()), 0
        try:
            with unittest.mock.patch.object(gateway.storage.spool, "time", clock):
                for poll in range(polls):
                    ts = t + int(poll * interval * 1e9)
                    sp.append(Batch.of(source_ts=ts, gateway_ts=ts, point=np.arange(points),
                                       quality=np.ones(points), value=np.sin(ts / 1e10)))
                    clock.now += interval
                    if (poll + 1) % per_store == 0 or poll == polls - 1:
                        # In commits of up to `store_rows` readings, as the gateway's drain.
                        while entries := sp.read_records_after(seq, store_rows):
                            db.store(entries)
                            seq = entries[-1][0]
                            sp.ack("historian", seq)
                while db.compact(full=True):
                    pass
        finally:
            db.close()
            with unittest.mock.patch.object(gateway.storage.spool, "time", clock):
                sp.close()
        io1 = io_counters(os.getpid())
    n = polls * points
    d = {k: io1[k] - io0[k] for k in io0}
    return {"write": d["write_bytes"] / n,
            "net": (d["write_bytes"] - d["cancelled_write_bytes"]) / n,
            "wchar": d["wchar"] / n}


def run(quick: bool) -> list[Row]:
    """A 25-tag site polled every second: bytes written per reading against the aim."""
    warmup, seconds = (20.0, 40.0) if quick else (45.0, 180.0)
    m = measure(1, 25, 1.0, warmup, seconds, Path(tempfile.gettempdir()))
    life = lifetime(25, 1.0, LIFETIME_READINGS, Path(tempfile.gettempdir()))
    return [Row("disk writes of `scadawatch run`, 25 tags @ 1 s",
                f"{m['write']:.0f} B per reading written ({m['net']:.0f} net of deleted "
                f"files; {m['bytes_per_s'] * 86400 / 2**20:.0f} MiB/day); over a reading's "
                f"life, into chunks and checkpointed: {life['net']:.0f} B",
                f"aim {AIM:.0f} B per reading", m["write"] / AIM,
                "python -m bench.disk_writes")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--points", type=int, default=25)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=45.0)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--flush-interval", type=float, default=None,
                    help="[historian] flush_interval: seconds between the historian's commits")
    ap.add_argument("--fsync-interval", type=float, default=None,
                    help="[spool] fsync_interval: seconds between the spool's syncs")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the data_dir goes: a real disk (tmpfs counts no writes)")
    args = ap.parse_args()
    kind = filesystem(args.dir)
    sections = {name: {key: value} for name, key, value in (
        ("historian", "flush_interval", args.flush_interval),
        ("spool", "fsync_interval", args.fsync_interval)) if value is not None}
    m = measure(args.devices, args.points, args.interval, args.warmup, args.seconds, args.dir,
                **sections)
    n = args.devices * args.points
    print(f"scadawatch run: {n} points ({args.devices} devices) every {args.interval:g} s, "
          f"data_dir on {kind} under {args.dir}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.seconds:g} s after {args.warmup:g} s warm-up")
    print(f"  {m['rate']:.1f} readings/s spooled; {m['bytes_per_s'] / 1024:.1f} KiB/s written "
          f"({m['bytes_per_s'] * 86400 / 2**30:.2f} GiB/day)")
    print(f"  bytes per reading: write_bytes {m['write']:.0f}   net of cancelled "
          f"{m['net']:.0f}   wchar {m['wchar']:.0f}   (aim: <= {AIM:.0f} written)")
    life = lifetime(n, args.interval, LIFETIME_READINGS, args.dir,
                    SpoolSection(**sections.get("spool", {})),
                    HistorianSection(**sections.get("historian", {})))
    print(f"  over a reading's life (spool, historian, its move into chunks, the checkpoint; "
          f"{LIFETIME_READINGS:,} readings in this process): write_bytes {life['write']:.0f} "
          f"per reading, {life['net']:.0f} net of cancelled")
    if kind == "tmpfs":
        print("  note: tmpfs sends nothing to storage; pass --dir on a real disk")


if __name__ == "__main__":
    main()
