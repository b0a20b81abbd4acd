"""Alarm latency: a value changed at the device -> its `raise` event on /api/v1/alarms/stream.

`scadawatch run` (a child process) polls loopback pymodbus servers (`bench.modbus.Servers`, a
separate process) every `--interval` s; every point has a limit `hi` far above its value. Each
trial writes a value beyond `hi` into one point's registers at a random phase of the poll
cycle, and times the write's answer to the arrival of that point's `limit` raise on the event
stream (an SSE client with a viewer token). The engine judges ticks of `--tick` s, each
`--lateness` s after its end. Printed: p50 and p99 of the latency, and the same minus the poll
interval (the wait for the next poll, which the site's configuration sets).

    python -m bench.alarm_latency [--devices 4] [--points 250] [--interval 1] [--trials 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import struct
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from pymodbus.client import ModbusTcpClient

from bench.footprint import site_file, start
from bench.modbus import Servers
from bench.table import Row
from gateway.tokens import TokenStore
from scadawatch.demo import free_port

HI = 1e6  # above every served value (0 .. points-1)
TRIP = 1e9  # the value written: beyond HI by far more than the limit's tolerance
WAIT = 30.0  # seconds a trial waits for its event


class Stream:
    """The alarm event stream, read in a thread: arrival times of `limit` raises per tag."""

    def __init__(self, url: str, token: str) -> None:
        self.raised: dict[str, float] = {}
        self.arrived = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._read, args=(url, token), daemon=True)
        self.thread.start()

    def _read(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with (contextlib.suppress(httpx.HTTPError),
              httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(5, read=20)) as r):
            event = ""
            for line in r.iter_lines():
                if self.closing:
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "raise":
                    alarm = json.loads(line[6:])
                    if alarm.get("kind") == "limit" and alarm.get("tag"):
                        with self.arrived:
                            self.raised.setdefault(alarm["tag"], time.perf_counter())
                            self.arrived.notify_all()

    def wait(self, tag: str, timeout: float) -> float | None:
        with self.arrived:
            self.arrived.wait_for(lambda: tag in self.raised, timeout)
            return self.raised.get(tag)

    def close(self) -> None:
        self.closing = True  # the read timeout or the server's shutdown ends the thread
        self.thread.join(timeout=25)


def measure(devices: int, points: int, interval: float, trials: int, tick: float = 1.0,
            lateness: float = 0.5) -> list[float]:
    """Seconds from each write's answer to its event on the stream (missing: not counted)."""
    servers = Servers(devices, points)
    api_port = free_port()
    latencies = []
    rng = random.Random(1)
    trip = list(struct.unpack(">HH", struct.pack(">f", TRIP)))
    try:
        with tempfile.TemporaryDirectory(prefix="alarm-latency-") as tmp:
            config = site_file(Path(tmp), servers.ports, points, interval, api_port, hi=HI,
                               anomaly={"interval": tick, "lateness": lateness})
            _, token = TokenStore(Path(tmp) / "data").create("viewer")
            proc, first = start(config, api_port, token)
            try:
                if first is None:
                    raise SystemExit("scadawatch run stored nothing within its start limit")
                stream = Stream(f"http://127.0.0.1:{api_port}/api/v1/alarms/stream", token)
                time.sleep(2 * tick + lateness)  # the first ticks: every point known
                for k in range(trials):
                    device, point = k % devices, (k // devices) % points
                    time.sleep(rng.uniform(0, interval))
                    with ModbusTcpClient("127.0.0.1", port=servers.ports[device]) as client:
                        client.write_registers(2 * point, trip, device_id=1)
                        wrote = time.perf_counter()
                    arrived = stream.wait(f"plc{device}.f{point}", WAIT)
                    if arrived is not None:
                        latencies.append(arrived - wrote)
                stream.close()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    finally:
        servers.stop()
    return latencies


def summary(latencies: list[float], interval: float) -> tuple[float, float, float, float]:
    """p50, p99, and each minus the poll interval (s)."""
    p50, p99 = np.percentile(latencies, [50, 99])
    return p50, p99, p50 - interval, p99 - interval


SIZES = ((4, 250), (4, 2500))  # devices x points: 1,000 and 10,000 points


def run(quick: bool) -> list[Row]:
    """p50/p99 at 1,000 and 10,000 points polled every second, minus the poll interval."""
    trials, interval = (3 if quick else 20), 1.0
    rows = []
    for devices, points in SIZES:
        got = measure(devices, points, interval, trials)
        n = devices * points
        what = (f"alarm latency, {n:,} points @ 1 s: value written at the device -> `limit` "
                f"raise on /alarms/stream (engine tick 1 s + 0.5 s lateness), minus the poll "
                f"interval")
        command = (f"python -m bench.alarm_latency --devices {devices} --points {points} "
                   f"--trials {trials}")
        if not got:
            rows.append(Row(what, f"no event within {WAIT:g} s", "", None, command))
            continue
        _, _, net50, net99 = summary(got, interval)
        rows.append(Row(what, f"p50 {net50:.2f} s, p99 {net99:.2f} s "
                              f"({len(got)} of {trials} trials)",
                        "the poll interval: 1 s", None, command))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--points", type=int, default=250)
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval, s")
    ap.add_argument("--tick", type=float, default=1.0, help="engine tick, s")
    ap.add_argument("--lateness", type=float, default=0.5, help="engine lateness, s")
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    got = measure(args.devices, args.points, args.interval, args.trials, args.tick,
                  args.lateness)
    print(f"{args.devices * args.points:,} points every {args.interval:g} s; engine tick "
          f"{args.tick:g} s, lateness {args.lateness:g} s; {len(got)} of {args.trials} events")
    if got:
        p50, p99, net50, net99 = summary(got, args.interval)
        print(f"  write -> event: p50 {p50:.2f} s, p99 {p99:.2f} s; minus the poll interval: "
              f"p50 {net50:.2f} s, p99 {net99:.2f} s (min {min(got):.2f}, max {max(got):.2f})")


if __name__ == "__main__":
    main()
