"""Alarm latency with default settings: a device going silent -> its `comms` raise, and a value
written beyond `hi` -> its `limit` raise, each timed to its event on /api/v1/alarms/stream.

`scadawatch run` (a child process) polls loopback pymodbus servers (`bench.modbus.Servers`, a
separate process) every `--interval` s; every point has a limit `hi` far above its value; the
site sets nothing else (`stale_after` 3, timeout 1 s, retries 1; `[anomaly]` at its defaults:
60 s ticks, 2 s lateness). An SSE client with a viewer token reads the event stream.

- limit: each trial writes a value beyond `hi` into one point's registers at a random phase
  of the poll cycle and times the write's answer to that point's `limit` raise. Aim: p99 at
  most the poll interval + 1 s (the wait for the next poll, then the spool and the engine).
- comms: each trial silences one device (it drops every request, as a dead radio link) at a
  random phase and times it to the device's `comms` raise, then wakes it and waits for the
  clear. Aim: p99 at most the stale window (stale_after x poll interval) + 1 s.

    python -m bench.alarm_latency [--devices 4] [--points 250] [--interval 1] [--trials 20]

`run(quick)` gives the rows of `python -m bench` at 1,000 and 10,000 points.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from pymodbus.client import ModbusTcpClient

from api.tokens import TokenStore
from bench.footprint import site_file, start
from bench.modbus import Servers
from bench.table import Row
from scadawatch.ports import free_port

HI = 1e6  # above every served value (0 .. points-1)
TRIP = 1e9  # the value written: beyond HI by far more than the limit's tolerance
WAIT = 30.0  # seconds a trial waits for its event
STALE_AFTER = 3  # the site file's default, in poll intervals


class Stream:
    """The alarm event stream, read in a thread: arrival times of raises and clears per
    (kind, subject)."""

    def __init__(self, url: str, token: str) -> None:
        self.seen: dict[tuple[str, str, str], float] = {}  # (transition, kind, subject)
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
                elif line.startswith("data: ") and event in ("raise", "clear"):
                    alarm = json.loads(line[6:])
                    subject = alarm.get("tag") or alarm.get("device") or ""
                    with self.arrived:
                        self.seen[event, alarm.get("kind", ""), subject] = time.perf_counter()
                        self.arrived.notify_all()

    def wait(self, transition: str, kind: str, subject: str, timeout: float) -> float | None:
        """When that event arrived (None: not within `timeout`); forgets it, for the next
        trial on the same subject."""
        key = (transition, kind, subject)
        with self.arrived:
            self.arrived.wait_for(lambda: key in self.seen, timeout)
            return self.seen.pop(key, None)

    def close(self) -> None:
        self.closing = True  # the read timeout or the server's shutdown ends the thread
        self.thread.join(timeout=25)


@dataclass
class Latencies:
    limit: list[float]
    comms: list[float]


def limit_trial(servers: Servers, stream: Stream, rng: random.Random, device: int, point: int,
                interval: float) -> float | None:
    trip = list(struct.unpack(">HH", struct.pack(">f", TRIP)))
    time.sleep(rng.uniform(0, interval))
    with ModbusTcpClient("127.0.0.1", port=servers.ports[device]) as client:
        client.write_registers(2 * point, trip, device_id=1)
        wrote = time.perf_counter()
    arrived = stream.wait("raise", "limit", f"plc{device}.f{point}", WAIT)
    return None if arrived is None else arrived - wrote


def comms_trial(servers: Servers, stream: Stream, rng: random.Random, device: int,
                interval: float) -> float | None:
    time.sleep(rng.uniform(0, interval))
    servers.silence(device)
    silent = time.perf_counter()
    try:
        arrived = stream.wait("raise", "comms", f"plc{device}", WAIT)
    finally:
        servers.silence(device, False)
    # back to normal before the next trial: the breaker probes it, the alarm clears
    stream.wait("clear", "comms", f"plc{device}", WAIT + 60)
    return None if arrived is None else arrived - silent


def measure(devices: int, points: int, interval: float, trials: int) -> Latencies:
    """Seconds from each write (silence) to its event on the stream; missing ones are not
    counted."""
    servers = Servers(devices, points)
    api_port = free_port()
    rng = random.Random(1)
    out = Latencies([], [])
    try:
        with tempfile.TemporaryDirectory(prefix="alarm-latency-") as tmp:
            config = site_file(Path(tmp), servers.ports, points, interval, api_port, hi=HI)
            _, token = TokenStore(Path(tmp) / "data").create("viewer")
            proc, first = start(config, api_port, token)
            try:
                if first is None:
                    raise SystemExit("scadawatch run stored nothing within its start limit")
                stream = Stream(f"http://127.0.0.1:{api_port}/api/v1/alarms/stream", token)
                time.sleep(3 * interval)  # every device polled and answering
                for k in range(trials):
                    got = limit_trial(servers, stream, rng, k % devices,
                                      (k // devices) % points, interval)
                    if got is not None:
                        out.limit.append(got)
                for k in range(trials):
                    got = comms_trial(servers, stream, rng, k % devices, interval)
                    if got is not None:
                        out.comms.append(got)
                stream.close()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    finally:
        servers.stop()
    return out


def p50_p99(latencies: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(latencies, [50, 99])
    return float(p50), float(p99)


SIZES = ((4, 250), (4, 2500))  # devices x points: 1,000 and 10,000 points


def rows_of(got: Latencies, devices: int, points: int, interval: float, trials: int,
            command: str) -> list[Row]:
    n = devices * points
    window = STALE_AFTER * interval
    out = []
    for kind, latencies, aim, what in (
            ("limit", got.limit, interval + 1.0,
             "value written beyond `hi` at the device -> `limit` raise"),
            ("comms", got.comms, window + 1.0,
             "device silent -> `comms` raise")):
        label = (f"alarm latency, {n:,} points @ {interval:g} s, default settings: {what} on "
                 "/alarms/stream")
        if not latencies:
            out.append(Row(label, f"no event within {WAIT:g} s", "", None, command))
            continue
        p50, p99 = p50_p99(latencies)
        basis = (f"poll interval + 1 s: {aim:g} s" if kind == "limit"
                 else f"stale window ({STALE_AFTER} x {interval:g} s) + 1 s: {aim:g} s")
        out.append(Row(label, f"p50 {p50:.2f} s, p99 {p99:.2f} s ({len(latencies)} of "
                              f"{trials} trials)", f"aim, {basis}", p99 / aim, command))
    return out


def run(quick: bool) -> list[Row]:
    """p50/p99 at 1,000 and 10,000 points polled every second, beside their aims."""
    trials, interval = (3 if quick else 20), 1.0
    rows = []
    for devices, points in SIZES:
        got = measure(devices, points, interval, trials)
        rows += rows_of(got, devices, points, interval, trials,
                        f"python -m bench.alarm_latency --devices {devices} --points {points} "
                        f"--trials {trials}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--points", type=int, default=250)
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval, s")
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    got = measure(args.devices, args.points, args.interval, args.trials)
    print(f"{args.devices * args.points:,} points every {args.interval:g} s, default settings; "
          f"load average {os.getloadavg()[0]:.1f}")
    for kind, latencies, aim in (("limit", got.limit, args.interval + 1.0),
                                 ("comms", got.comms, STALE_AFTER * args.interval + 1.0)):
        if not latencies:
            print(f"  {kind}: no event in {args.trials} trials")
            continue
        p50, p99 = p50_p99(latencies)
        print(f"  {kind}: {len(latencies)} of {args.trials} events; p50 {p50:.2f} s, p99 "
              f"{p99:.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f}); aim p99 <= "
              f"{aim:g} s: {'met' if p99 <= aim else 'NOT met'}")


if __name__ == "__main__":
    main()
