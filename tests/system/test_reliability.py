"""The reliability suite (`pytest -m reliability`): faults that bite in the field, injected
into real parts on loopback: crashes, a historian outage, a device that keeps restarting, a
device that talks garbage, a full disk, idle HTTP clients, bad files, and a long run at
10,000 points beside a twin with a leak put in.

Each case runs for the issue's figure (10 minutes of soak, a 5-minute outage ...) times
SCADAWATCH_RELIABILITY_SCALE (default 1; tests/run.sh sets 0.2 in CI); the soak has a CI
scale of its own (CI_SOAK).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest
import tomli_w
from conftest import CliRun
from pymodbus.client import AsyncModbusTcpClient
from support.harness import (
    RUN_LIMIT,
    auth_headers,
    gateway_site,
    spooled,
    start_simulator,
    stored,
)
from support.ingest_faults import (
    PASSWORD,
    influx_count,
    kill_9_runs,
    outage,
    stored_counts,
    wait_polling,
    with_influx,
)
from support.peers.hostile_modbus import Flood, hostile_server, register_value
from support.peers.influx_servers import Influxd
from support.peers.modbus_servers import Image, pymodbus_tcp, site
from support.small_fs import SmallFs

from anomaly.core.batch import Batch, Quality
from gateway.alarms.store import AlarmStore, Filter
from gateway.data_dir import historian_path, status_path, store_path
from gateway.inputs.modbus.bus import ModbusBus, build_buses
from gateway.site.loader import load_site
from gateway.site.model import Device, Point, Site, SiteSection, SpoolSection
from gateway.status import GatewayStatus
from gateway.storage.historian import EmbeddedHistorian
from scadawatch.commands.serve import serve as run_gateway
from scadawatch.ports import free_port

pytestmark = pytest.mark.reliability

SCALE = float(os.environ.get("SCADAWATCH_RELIABILITY_SCALE", "1"))
SUPPORT = Path(__file__).resolve().parents[1] / "support"


def scaled(figure: float) -> float:
    """The issue's figure (seconds, frames) times SCADAWATCH_RELIABILITY_SCALE."""
    return figure * SCALE


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def registers(device: str, n: int) -> list[Point]:
    """`n` uint16 holding registers of `device` at addresses 0..n-1."""
    return [Point(tag=f"{device}.r{i}", device=device, address=i, type="uint16")
            for i in range(n)]


class Tally:
    """An emit that counts readings per device and quality instead of keeping them, so that a
    long run holds no growing state of the test's own."""

    def __init__(self, points: list[Point]) -> None:
        self.device = np.array([p.device for p in points])
        self.expected = np.array([register_value(p.address or 0) for p in points], float)
        self.counts: Counter[tuple[str, int]] = Counter()
        self.wrong: Counter[str] = Counter()  # good readings whose value is not the device's
        self.good_while: Counter[str] = Counter()  # good readings while `flood` is on
        self.flood: Flood | None = None

    async def __call__(self, batch: Batch) -> None:
        device = self.device[batch.point[0]]
        for q in (Quality.GOOD, Quality.BAD):
            self.counts[(device, int(q))] += int((batch.quality == q).sum())
        good = batch.quality == Quality.GOOD
        self.wrong[device] += int((batch.value[good] != self.expected[batch.point[good]]).sum())
        if self.flood is not None and not self.flood.done:
            self.good_while[device] += int(good.sum())


async def run_buses(buses: list[ModbusBus], seconds: float) -> None:
    tasks = [asyncio.create_task(b.run()) for b in buses]
    try:
        done, _ = await asyncio.wait(tasks, timeout=seconds)
        for t in done:
            t.result()  # a bus that stopped on its own failed
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- a device talking garbage ---------------------------------------------------------------

HOSTILE = 4  # devices (each its own bus) sharing the flood
FLOOD_LIMIT = 300.0  # seconds the full flood may take before the test fails


@pytest.mark.slow
def test_malformed_frames_neither_crash_nor_hang_the_gateway(tmp_path: Path) -> None:
    """100,000 malformed frames across four devices and many connections: every reading of
    theirs is bad (never a value from a frame that was not the answer), memory stays flat,
    the healthy device beside them keeps polling, and once the frames are right again the
    hostile devices read good at once."""
    flood = Flood(budget=int(scaled(100_000)))
    healthy_image = Image()
    healthy_points = registers("healthy", 10)
    for p in healthy_points:
        healthy_image.put(p, register_value(p.address or 0))

    async def scenario() -> tuple[list[int], list[int], Tally, GatewayStatus]:
        async with (pymodbus_tcp({1: healthy_image}) as served,
                    contextlib.AsyncExitStack() as stack):
            ports = [await stack.enter_async_context(hostile_server(flood, seed))
                     for seed in range(HOSTILE)]
            devices = [Device(name=f"hostile{i}", protocol="modbus-tcp", port=port,
                              poll_interval=0.01, timeout=0.05, stale_after=1000)
                       for i, port in enumerate(ports)]
            devices.append(Device(name="healthy", protocol="modbus-tcp", port=served.port,
                                  poll_interval=0.05, timeout=0.5))
            points = [q for d in devices for q in registers(d.name, 10)]
            tally = Tally(points)
            tally.flood = flood
            status = GatewayStatus(site="t")
            buses = build_buses(site(devices, points), status, tally)
            tasks = [asyncio.create_task(b.run()) for b in buses]
            rss: list[int] = []
            healthy_polls: list[int] = []
            try:
                deadline = time.monotonic() + FLOOD_LIMIT
                for quarter in (1, 2, 3, 4):  # bounded: four checkpoints, each in time
                    while flood.frames < flood.budget * quarter / 4:
                        assert time.monotonic() < deadline, f"stuck at {flood.sent}"
                        assert not any(t.done() for t in tasks), [t for t in tasks if t.done()]
                        await asyncio.sleep(0.05)
                    rss.append(rss_bytes())
                    healthy_polls.append(status.devices["healthy"].polls_total)
                # Right answers again: every hostile device recovers (its breaker's backoff is
                # at most BACKOFF_MAX, 60 s).
                recovered = time.monotonic() + 90
                while any(tally.counts[(d.name, Quality.GOOD)] == 0 for d in devices):
                    assert time.monotonic() < recovered, tally.counts
                    await asyncio.sleep(0.05)
            finally:
                for t in tasks:
                    t.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                if not isinstance(r, asyncio.CancelledError | None):
                    raise r
            return rss, healthy_polls, tally, status

    rss, healthy_polls, tally, status = asyncio.run(scenario())
    assert set(flood.sent) >= {"random", "truncated", "wrong_tid", "wrong_fc", "exception",
                               "oversized", "short_count", "trickle"}, flood.sent
    assert flood.connections > HOSTILE  # the server closed connections; the gateway came back
    for i in range(HOSTILE):
        name = f"hostile{i}"
        assert tally.good_while[name] == 0, name  # no malformed frame passed for an answer
        assert tally.counts[(name, Quality.BAD)] > 0
        assert status.devices[name].request_errors_total, name
    assert sum(tally.wrong.values()) == 0, tally.wrong
    assert tally.counts[("healthy", Quality.BAD)] == 0
    assert healthy_polls == sorted(set(healthy_polls)), healthy_polls  # it kept polling
    # Memory: flat from the first quarter of the flood to its end (an allowance for the
    # allocator's arenas, far below what keeping frames or tasks would cost).
    assert rss[-1] - rss[0] < 16 * 2**20, [r / 2**20 for r in rss]



# --- a full disk ------------------------------------------------------------------------------

FULL_FOR = 5.0  # seconds the disk stays full once health has said so


async def health_when(http: httpx.AsyncClient, ok: Callable[[dict], bool], within: float
                      ) -> dict:
    """The first `/health` (with details) that satisfies `ok`, asked every 0.1 s."""
    deadline = time.monotonic() + within
    while True:
        body = (await http.get("/api/v1/health")).json()
        if ok(body):
            return body
        assert time.monotonic() < deadline, f"not within {within:g} s: {body}"
        await asyncio.sleep(0.1)


def test_a_full_disk_keeps_polling_says_why_and_resumes_by_itself(small_fs: SmallFs) -> None:
    """`scadawatch run` with its data_dir on a 20 MiB filesystem that fills up: polling goes
    on (into memory) and health names `disk_full` within 10 s; once space is back, the held
    readings and the historian are written by themselves; the historian ends up with every
    reading the spool acknowledged, once, and none was lost."""
    image = Image()
    points = [Point(tag=f"plc.f{i}", device="plc", address=2 * i, type="float32")
              for i in range(10)]
    for p in points:
        image.put(p, 1.5)

    async def scenario() -> tuple[Site, dict, dict, dict]:
        async with pymodbus_tcp({1: image}) as served:
            site_ = Site(site=SiteSection(name="full", data_dir=small_fs.root / "data"),
                         spool=SpoolSection(segment_bytes=1 << 30),  # keeps every record
                         devices=[Device(name="plc", protocol="modbus-tcp", port=served.port,
                                         poll_interval=0.2, timeout=1.0)], points=points)
            port, stop = free_port(), asyncio.Event()
            headers = auth_headers(site_.site.data_dir, "viewer")
            gateway = asyncio.create_task(run_gateway(site_, gateway=True, api=True,
                                                      port=port, stop=stop))
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                             headers=headers, timeout=10) as http:
                    await until_served(http)
                    await health_when(http, lambda h: h["status"] == "ok" and h["sinks"][0][
                        "readings_total"] > 0, RUN_LIMIT)
                    small_fs.fill()
                    full = await health_when(http, lambda h: any(
                        "disk_full" in r for r in h["reasons"]), 10.0)
                    polls = full["devices"][0]["polls_total"]
                    await asyncio.sleep(FULL_FOR)
                    during = (await http.get("/api/v1/health")).json()
                    assert during["devices"][0]["polls_total"] >= polls + FULL_FOR / 0.2 / 2
                    small_fs.empty()
                    after = await health_when(http, lambda h: h["status"] == "ok" and all(
                        s["backlog_readings"] == 0 for s in h["sinks"])
                        and h["spool"]["held_readings"] == 0, RUN_LIMIT)
            finally:
                stop.set()
                await gateway
            return site_, full, during, after

    site_, full, during, after = asyncio.run(scenario())
    assert full["status"] == "degraded", full
    assert during["spool"]["held_readings"] > 0, during["spool"]
    assert after["spool"]["readings_lost_total"] == 0, after["spool"]
    in_spool, in_historian = spooled(site_), stored(site_)
    assert sum(in_spool.values()) >= len(points) * (FULL_FOR / 0.2 + 10)
    assert max(in_spool.values()) == 1  # each reading spooled once
    assert in_historian == in_spool  # ... and stored once


async def until_served(http: httpx.AsyncClient) -> None:
    """Until the API answers (it starts beside the gateway)."""
    deadline = time.monotonic() + RUN_LIMIT
    while True:
        with contextlib.suppress(httpx.TransportError):
            await http.get("/api/v1/health")
            return
        assert time.monotonic() < deadline, "the API never answered"
        await asyncio.sleep(0.1)


# --- idle HTTP clients ---------------------------------------------------------------------------

IDLE_CONNECTIONS = 1100
NOFILE = 1024  # systemd's default (soft) descriptor limit
IDLE_FOR = 15.0  # seconds the connections stay open: past the API's HEAD_TIMEOUT


def test_1100_idle_connections_starve_neither_the_sinks_nor_the_log(tmp_path: Path) -> None:
    """`scadawatch run` under a 1,024 descriptor limit, 1,100 connections to its API that
    send nothing: the API keeps its share of descriptors (it closes what is beyond its
    limit, and idle ones after HEAD_TIMEOUT), so polling and storing go on, no comms alarm
    is raised, the log stays short, and the API answers again once they are gone."""
    image = Image()
    points = registers("plc", 10)
    for p in points:
        image.put(p, register_value(p.address or 0))
    api_port = free_port()
    with server_farm([image]) as (port,):
        config = tmp_path / "site.toml"
        config.write_text(tomli_w.dumps({
            "site": {"name": "idle", "data_dir": "data"}, "api": {"port": api_port},
            "devices": [{"name": "plc", "protocol": "modbus-tcp", "host": "127.0.0.1",
                         "port": port, "poll_interval": 0.2}],
            "points": [{"tag": p.tag, "device": "plc", "address": p.address, "type": "uint16"}
                       for p in points]}))
        site_ = load_site(config)
        headers = auth_headers(site_.site.data_dir, "viewer")
        log = tmp_path / "gateway.log"
        with open(log, "wb") as err:
            gw = subprocess.Popen(
                [sys.executable, "-m", "scadawatch", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL, stderr=err,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE)))
            try:
                url = f"http://127.0.0.1:{api_port}/api/v1/health"
                health_of(url, headers, lambda h: h["sinks"][0]["readings_total"] > 0)
                began, fds = time.time(), []
                clients = idle_connections(api_port, IDLE_CONNECTIONS)
                try:
                    while time.time() < began + IDLE_FOR:  # bounded by the time
                        assert gw.poll() is None, "the gateway died"
                        fds.append(len(os.listdir(f"/proc/{gw.pid}/fd")))
                        time.sleep(0.5)
                finally:
                    for c in clients:
                        c.close()
                after = health_of(url, headers, lambda h: h["status"] == "ok")
            finally:
                gw.send_signal(signal.SIGTERM)
                gw.communicate(timeout=RUN_LIMIT)
    assert gw.returncode == 0, log.read_text()[-3000:]
    assert max(fds) < NOFILE - 100, fds
    historian = after["sinks"][0]
    assert (historian["errors_total"], historian["cause"]) == (0, None), after
    assert after["tasks"] and all(t["restarts_total"] == 0 for t in after["tasks"]), after
    # Every poll of the flood was stored: no gap in any tag's readings.
    h = EmbeddedHistorian(historian_path(site_), [p.tag for p in points], readonly=True)
    try:
        ts = h.history(points[0].tag, int(began * 1e9), int((began + IDLE_FOR) * 1e9)).source_ts
    finally:
        h.close()
    assert len(ts) >= IDLE_FOR / 0.2 * 0.8 and np.diff(ts).max() < 1e9, np.diff(ts).max()
    store = AlarmStore(store_path(site_.site.data_dir))
    try:
        comms, _ = store.alarms(Filter(kind="comms", shelved=None, suppressed=None))
    finally:
        store.close()
    assert comms == []
    lines = log.read_text().splitlines()
    assert len(lines) < 100 and log.stat().st_size < 32 * 1024, lines[-20:]


def idle_connections(port: int, n: int) -> list[socket.socket]:
    """`n` connections to 127.0.0.1:`port` that never send a byte (connecting in the
    background: beyond the server's accept backlog, the kernel completes them later)."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        out.append(s)
    return out


def health_of(url: str, headers: dict, ok: Callable[[dict], bool]) -> dict:
    """The first health (with details) that satisfies `ok`, within RUN_LIMIT."""
    deadline = time.monotonic() + RUN_LIMIT
    body: dict = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = httpx.get(url, headers=headers, timeout=5).json()
            if "sinks" in body and ok(body):
                return body
        time.sleep(0.2)
    raise AssertionError(f"health never satisfied the test within {RUN_LIMIT} s: {body}")


# --- malformed site files and recordings ----------------------------------------------------

SITE = """\
[site]
name = "plant"
data_dir = "data"

[[devices]]
name = "plc"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = 5020
unit = 1
poll_interval = 1.0

[[devices]]
name = "rtu"
protocol = "modbus-tcp"
port = 5021

[[points]]
tag = "flow"
device = "plc"
kind = "flow"
unit = "m3/h"
address = 0
type = "float32"

[[points]]
tag = "pressure"
device = "plc"
kind = "pressure"
unit = "bar"
address = 2
type = "float32"

[[points]]
tag = "level"
device = "rtu"
kind = "level"
unit = "m"
register = "input"
address = 0
type = "int16"
scale = 0.01
"""


def _set(key: str, old: str, new: str, nth: int = 0) -> tuple[str, str]:
    """Replace the `nth` line `old` of SITE by `new`; the error must name `key`."""
    lines = SITE.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.rstrip("\n") == old]
    lines[hits[nth]] = new + "\n"
    return "".join(lines), key


def _garbage(seed: int, n: int = 400) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# (id, file content, a fragment the error must hold besides the file's name: the key path,
# or for a file that does not parse, where it stopped)
BAD_SITES: list[tuple[str, str | bytes, str]] = [
    # Cut inside a string: what is left does not parse.
    *[(f"truncated-{cut}", SITE[:SITE.index(cut) + 2], "") for cut in (
        '"plant', '"modbus-tcp', '"127.0.0.1', '"flow"', '"bar', '"input', '"int16')],
    ("empty", "", "[site]"),
    *[(f"garbage-{seed}", _garbage(seed), "") for seed in range(4)],
    ("nul-bytes", SITE.encode().replace(b"plant", b"pl\0nt"), ""),
    ("utf16", SITE.encode("utf-16"), ""),
    ("duplicate-key", SITE.replace('unit = 1\n', 'unit = 1\nunit = 2\n'), "line 11"),
    ("duplicate-table", SITE + '\n[site]\nname = "again"\n', "site"),
]
BAD_SITES += [(f"{i}-{k}", *_set(k, old, new, nth)) for i, (k, old, new, nth) in enumerate([
    ("devices[0].port", "port = 5020", 'port = "5020"', 0),
    ("devices[0].port", "port = 5020", "port = 70000", 0),
    ("devices[0].unit", "unit = 1", "unit = 300", 0),
    ("devices[0].poll_interval", "poll_interval = 1.0", 'poll_interval = "fast"', 0),
    ("devices[0].poll_interval", "poll_interval = 1.0", "poll_interval = -1.0", 0),
    ("devices[0].protocol", 'protocol = "modbus-tcp"', 'protocol = "modbus-udp"', 0),
    ("devices[1].name", 'name = "rtu"', 'name = "plc"', 0),
    ("devices[0].host", 'host = "127.0.0.1"', "host = 127", 0),
    ("site.name", 'name = "plant"', "name = 5", 0),
    ("site.name", 'name = "plant"', 'nmae = "plant"', 0),
    ("site.data_dir", 'data_dir = "data"', "data_dir = [1, 2]", 0),
    ("devices[0].prot", 'protocol = "modbus-tcp"', 'prot = "modbus-tcp"', 0),
    ("points[0].address", "address = 0", 'address = "0"', 0),
    ("points[0].address", "address = 0", "address = -1", 0),
    ("points[1].address", "address = 2", "address = 65535", 0),
    ("points[1].adress", "address = 2", "adress = 2", 0),
    ("points[1].tag", 'tag = "pressure"', 'tag = "flow"', 0),
    ("points[0].tag", 'tag = "flow"', "tag = 1.5", 0),
    ("points[1].address", "address = 2", "address = 1", 0),  # overlaps points[0]'s registers
    ("points[0].type", 'type = "float32"', 'type = "float33"', 0),
    ("points[0].type", 'type = "float32"', "type = 32", 0),
    ("points[2].register", 'register = "input"', 'register = "inputs"', 0),
    ("points[2].type", 'register = "input"', 'register = "discrete"', 0),
    ("points[2].scale", "scale = 0.01", 'scale = "0.01"', 0),
    ("points[2].scale", "scale = 0.01", "scale = true", 0),
    ("points[0].device", 'device = "plc"', 'device = "plc9"', 0),
    ("points[0].kind", 'kind = "flow"', 'kind = "flux"', 0),
    ("points[0].word_order", 'type = "float32"', 'type = "float32"\nword_order = "ABDC"', 0),
    ("points[0].lo", 'type = "float32"', 'type = "float32"\nlo = 10.0\nhi = 1.0', 0),
    ("historian.kind", "[[devices]]", '[historian]\nkind = "mongo"\n\n[[devices]]', 0),
    ("historian.bukcet", "[[devices]]",
     '[historian]\nkind = "influxdb"\nurl = "http://127.0.0.1:8086"\nbukcet = "b"\n\n'
     "[[devices]]", 0),
    ("sitee", "[site]", "[sitee]", 0),
    ("points", "[[points]]", "[points]", 0),
    ("points_csv", 'data_dir = "data"', 'data_dir = "data"\npoints_csv = "missing.csv"', 0),
])]


def test_fifty_bad_site_files(cli: CliRun, tmp_path: Path) -> None:
    assert len(BAD_SITES) == 50
    ok = tmp_path / "ok.toml"
    ok.write_text(SITE)
    assert cli("check-config", "--config", ok)[0] == 0  # the mutations' origin is valid
    failures = []
    for name, content, fragment in BAD_SITES:
        path = tmp_path / f"{name}.toml"
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        code, _, err = cli("check-config", "--config", path)
        lines = err.strip().splitlines()
        if not (code == 2 and lines and all(str(path) in line for line in lines)
                and fragment in err and len(lines) <= 6):
            failures.append((name, code, err))
    assert not failures, "\n\n".join(f"{n}: exit {c}\n{e}" for n, c, e in failures)


RECORDING = "timestamp,flow,pressure,level\n" + "".join(
    f"2026-03-01T06:{m:02d}:00Z,{100 + m}.5,{3 + m / 10:.2f},{2 + m / 100:.2f}\n"
    for m in range(20))


def _row(n: int, new: str) -> str:
    """RECORDING with its row `n` (1: the header) replaced by `new`."""
    lines = RECORDING.splitlines()
    lines[n - 1] = new
    return "\n".join(lines) + "\n"


def _cell(n: int, column: int, text: str) -> str:
    cells = RECORDING.splitlines()[n - 1].split(",")
    cells[column] = text
    return _row(n, ",".join(cells))


# (id, file content, what the error must name besides the file)
BAD_RECORDINGS: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "empty"),
    ("header-only", "timestamp,flow,pressure,level\n", "no readings"),
    ("blank-lines", "\n\n\n", "row 1"),
    *[(f"garbage-{seed}", _garbage(seed + 10), "") for seed in range(4)],
    ("utf16", RECORDING.encode("utf-16"), ""),
    ("latin1-header", "timestamp,débit\n".encode("latin-1") + b"2026-03-01,1\n", "row 1"),
    ("gzip-lookalike", b"\x1f\x8b\x08\x00" + _garbage(3, 100), ""),
    ("no-timestamp", RECORDING.replace("timestamp,", "time,", 1), "timestamp"),
    ("timestamp-last", _row(1, "flow,pressure,level,timestamp"), "timestamp"),
    ("unknown-column", _row(1, "timestamp,flow,pressure,levle"), "levle"),
    ("duplicate-column", _row(1, "timestamp,flow,pressure,flow"), "flow"),
    ("empty-column-name", _row(1, "timestamp,flow,,level"), "row 1"),
    ("only-timestamp", "timestamp\n2026-03-01T06:00:00Z\n", "row 1"),
    ("header-cut", RECORDING[:20], ""),
    *[(f"truncated-row-{n}", RECORDING[:RECORDING.index(f"06:{n - 2:02d}:00Z") + 12],
       f"row {n}") for n in (2, 7, 15)],
    *[(f"short-row-{n}", _row(n, RECORDING.splitlines()[n - 1].rsplit(",", 1)[0]),
       f"row {n}") for n in (2, 11, 21)],
    *[(f"long-row-{n}", _row(n, RECORDING.splitlines()[n - 1] + ",9.9"), f"row {n}")
      for n in (3, 12)],
    *[(f"not-a-number-{n}-{c}", _cell(n, c, text), f"row {n}")
      for n, c, text in [(2, 1, "abc"), (5, 2, "1,5"), (9, 3, "0x1F"), (13, 1, "1.2.3"),
                         (17, 2, "--1"), (20, 3, "12 m"), (4, 1, "true"), (6, 2, "≈3")]],
    *[(f"bad-timestamp-{n}", _cell(n, 0, text), f"row {n}")
      for n, text in [(2, "yesterday"), (3, "2026-13-01T00:00:00Z"), (4, ""),
                      (5, "06:00"), (6, "2026-03-01T25:00:00Z"), (7, "1772344800"),
                      (8, "2026-02-30")]],
    *[(f"unsorted-{n}", _cell(n, 0, "2026-03-01T05:00:00Z"), f"row {n}") for n in (3, 10, 21)],
    *[(f"duplicate-timestamp-{n}", _cell(n, 0, RECORDING.splitlines()[n - 2].split(",")[0]),
       f"row {n}") for n in (3, 12, 21)],
    ("nul-in-cell", _cell(8, 1, "1\x002"), "row 8"),
    ("quote-unclosed", _cell(9, 1, '"12.5'), "row 9"),
    ("binary-tail", RECORDING.encode() + _garbage(7, 200), ""),
    ("crlf-mixed-garbage", RECORDING.replace("\n", "\r\n", 3) + "\x00\x01\x02\n", ""),
]


def test_fifty_bad_recordings(cli: CliRun, tmp_path: Path) -> None:
    assert len(BAD_RECORDINGS) == 50
    config = tmp_path / "site.toml"
    config.write_text(SITE)
    ok = tmp_path / "ok.csv"
    ok.write_text(RECORDING)
    out = tmp_path / "alarms.jsonl"
    assert cli("replay", "--config", config, "--input", ok, "--out", out)[0] == 0
    failures = []
    for name, content, fragment in BAD_RECORDINGS:
        path = tmp_path / f"{name}.csv"
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        code, _, err = cli("replay", "--config", config, "--input", path, "--out", out)
        lines = err.strip().splitlines()
        if not (code == 2 and len(lines) == 1 and str(path) in err and fragment in err):
            failures.append((name, code, err))
    assert not failures, "\n\n".join(f"{n}: exit {c}\n{e}" for n, c, e in failures)


# --- crashes and a historian outage during ingest --------------------------------------------

@pytest.mark.slow
def test_kill_9_ten_times_during_ingest_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    sim, sim_site = start_simulator(tmp_path)
    try:
        config = gateway_site(sim_site, tmp_path)
        site_ = load_site(config)
        kill_9_runs(config, site_, kills=10)
    finally:
        sim.terminate()
        sim.wait(timeout=RUN_LIMIT)
    in_spool, in_historian = spooled(site_), stored(site_)
    assert sum(in_spool.values()) > 1000  # the runs really polled
    assert max(in_spool.values()) == 1  # each reading was spooled once
    assert in_historian == in_spool  # ... and stored exactly once


@pytest.mark.slow
def test_influxdb_outage_loses_nothing_and_never_pauses_polling(
        tmp_path: Path, own_influx: Influxd, monkeypatch: pytest.MonkeyPatch) -> None:
    """InfluxDB stopped for 5 minutes during ingest: InfluxDB ends up with every reading the
    embedded historian holds, once; polling goes on at its rate meanwhile."""
    monkeypatch.setenv("INFLUX_PASSWORD", PASSWORD)
    own_influx.create_database("outage")
    sim, sim_site = start_simulator(tmp_path)
    try:
        config = with_influx(gateway_site(sim_site, tmp_path), own_influx, "outage")
        site_ = load_site(config)
        normal, during = outage(site_, own_influx, scaled(300.0))
    finally:
        sim.terminate()
        sim.wait(timeout=RUN_LIMIT)
    assert abs(during - normal) <= 0.1 * normal, (normal, during)
    assert sum(stored_counts(site_).values()) > 1000
    assert influx_count(own_influx, "outage") == stored_counts(site_)


# --- a device that keeps restarting ---------------------------------------------------------

RESTART_EVERY = 5.0  # seconds: up 4 s, then down 1 s while it restarts
RESTART_DOWN = 1.0
POLL = 0.1  # seconds, every device; also the base of the reconnect backoff


class CountingClient(AsyncModbusTcpClient):
    """pymodbus' client, counting connect attempts per port: a refused connection leaves no
    trace on the server's side. (A real client that counts; nothing in it is faked.)"""

    attempts: ClassVar[Counter[int]] = Counter()

    def __init__(self, host: str, port: int = 502, **kw: object) -> None:
        super().__init__(host, port=port, **kw)  # type: ignore[arg-type]
        self.counted_port = port

    async def connect(self) -> bool:
        CountingClient.attempts[self.counted_port] += 1
        return await super().connect()


@pytest.mark.slow
def test_a_device_restarting_every_5_s_reconnects_on_backoff_and_spares_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    duration = scaled(120.0)
    baseline = max(10.0, duration / 4)
    monkeypatch.setattr("gateway.inputs.modbus.bus.AsyncModbusTcpClient", CountingClient)
    CountingClient.attempts.clear()
    image = Image()
    for p in registers("any", 10):
        image.put(p, register_value(p.address or 0))
    flaky_port = free_port()

    def device(name: str, port: int) -> Device:
        return Device(name=name, protocol="modbus-tcp", port=port, poll_interval=POLL,
                      timeout=0.5, retries=0)

    async def rates(devices: list[Device], seconds: float) -> dict[str, float]:
        points = [q for d in devices for q in registers(d.name, 10)]
        status = GatewayStatus(site="t")
        tally = Tally(points)
        began = time.monotonic()
        await run_buses(build_buses(site(devices, points), status, tally), seconds)
        elapsed = time.monotonic() - began
        assert sum(tally.wrong.values()) == 0
        return {d.name: status.devices[d.name].polls_total / elapsed for d in devices}

    async def restarting(served: list[int]) -> None:
        for _ in range(math.ceil(duration / RESTART_EVERY) + 1):  # bounded by the run
            async with pymodbus_tcp({1: image}, port=flaky_port) as s:
                await asyncio.sleep(RESTART_EVERY - RESTART_DOWN)
                served.append(s.connections)
            await asyncio.sleep(RESTART_DOWN)

    async def scenario() -> tuple[dict[str, float], dict[str, float], list[int]]:
        async with contextlib.AsyncExitStack() as stack:
            ports = [(await stack.enter_async_context(pymodbus_tcp({1: image}))).port
                     for _ in range(3)]
            healthy = [device(f"healthy{i}", port) for i, port in enumerate(ports)]
            alone = await rates(healthy, baseline)
            served: list[int] = []
            flaky = asyncio.create_task(restarting(served))
            try:
                beside = await rates([*healthy, device("flaky", flaky_port)], duration)
            finally:
                flaky.cancel()
                await asyncio.gather(flaky, return_exceptions=True)
            return alone, beside, served

    alone, beside, served = asyncio.run(scenario())
    for name, rate in alone.items():
        assert abs(beside[name] - rate) <= 0.1 * rate, (name, rate, beside[name])
    # It came back after (nearly) every restart...
    restarts = int(duration / RESTART_EVERY)
    assert sum(n > 0 for n in served) >= restarts - 1, served
    # ... with the backoff's connect attempts: n failed ones span at least
    # POLL/2 * (2^n - 1) s (equal jitter), so a 1 s outage allows log2(1 + 2 * 1 / POLL) + 1,
    # and then one that succeeds. A storm would try at every poll, or faster.
    per_outage = math.floor(math.log2(1 + 2 * RESTART_DOWN / POLL)) + 2
    attempts = CountingClient.attempts[flaky_port]
    assert attempts <= (restarts + 1) * per_outage + 2, (attempts, restarts)


# --- a long run at 10,000 points ------------------------------------------------------------

SAMPLE_EVERY = 5.0  # seconds between RSS and file-descriptor samples
# Seconds between the engine's state saves (default 300): the biggest transient, made to come
# in the warm-up, and several times in every measured window.
SOAK_SAVE_INTERVAL = 30.0
LEAK_MB_PER_MIN = 0.6  # the leak the soak must catch (tests/support/leaky.py puts it in)


@dataclass(frozen=True)
class SoakScale:
    devices: int  # pymodbus servers of 1,000 float32 each, polled every second
    warm_up: float  # seconds before the measured window, not judged
    window: float  # seconds of the measured window
    tick: float | None  # the engine's tick interval (None: the site default, 60 s)


# The figures: 10,000 points, 10 minutes after a 2-minute warm-up (the SQLite page
# caches fill in ~10 s, the engine's first ticks and state saves come within it; past it, RSS
# holds within ~1 MB where nothing leaks, see gateway/memory.py).
FULL_SOAK = SoakScale(devices=10, warm_up=120.0, window=600.0, tick=None)
# CI (SCADAWATCH_RELIABILITY_SCALE < 1): 2,000 points for 3.5 minutes after 1.5. The engine
# ticks every 10 s, so that what it sets up over its first ticks (a 2-minute window after a
# 2-minute warm-up still held some of it at the default 60 s: +14 % projected) is done within
# the warm-up. Measured over four runs beside others' jobs: the gateway alone +0 to +1.8 %,
# with a leak of 0.6 MB/min +8.1 and +9.4 % (docs/development.md).
CI_SOAK = SoakScale(devices=2, warm_up=90.0, window=210.0, tick=10.0)


def projected_growth(samples: list[tuple[float, int, int]], over: float) -> float:
    """RSS growth over `over` seconds at the rate of `samples` (seconds, RSS, fds), judged on
    what the process holds: the lowest sample of each state-save interval (the save hands the
    heap's free pages back, gateway/memory.py; between saves the ticks' working set swings RSS
    by up to ~7 MB at 10,000 points). The Theil-Sen slope (median of the pairwise slopes) of
    those, which one odd interval cannot tilt."""
    t0 = samples[0][0]
    period = {}
    for t, rss, _ in samples:
        period.setdefault(int((t - t0) // SOAK_SAVE_INTERVAL), []).append((rss, t))
    lows = [min(v) for v in period.values()
            if len(v) >= SOAK_SAVE_INTERVAL / SAMPLE_EVERY / 2]  # not a last stub of one
    rss, t = np.array([r for r, _ in lows], float), np.array([t for _, t in lows])
    i, j = np.triu_indices(len(t), 1)
    return float(np.median((rss[j] - rss[i]) / (t[j] - t[i]))) * over


@contextlib.contextmanager
def server_farm(images: list[Image]) -> Iterator[list[int]]:
    """One pymodbus TCP server per image, in an event loop thread of their own (so that the
    test's waiting does not stall them); yields their ports."""
    loop = asyncio.new_event_loop()
    ports: concurrent.futures.Future[list[int]] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            served = [await stack.enter_async_context(pymodbus_tcp({1: img})) for img in images]
            ports.set_result([s.port for s in served])
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ports.result(timeout=RUN_LIMIT)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=RUN_LIMIT)
        loop.close()


def soak_site(folder: Path, ports: list[int], tick: float | None) -> Path:
    """A site polling 1,000 float32 of each port every second, its data in `folder`."""
    folder.mkdir()
    points = [Point(tag=f"d{d}.p{i}", device=f"d{d}", address=2 * i, type="float32")
              for d in range(len(ports)) for i in range(1000)]
    (folder / "points.csv").write_text("tag,device,kind,address,type\n" + "".join(
        f"{p.tag},{p.device},other,{p.address},float32\n" for p in points))
    anomaly = {"save_interval": SOAK_SAVE_INTERVAL} | ({"interval": tick} if tick else {})
    config = folder / "soak.toml"
    config.write_text(tomli_w.dumps({
        "site": {"name": "soak", "data_dir": "data", "points_csv": "points.csv"},
        "anomaly": anomaly,
        "devices": [{"name": f"d{d}", "protocol": "modbus-tcp", "host": "127.0.0.1",
                     "port": port, "poll_interval": 1.0} for d, port in enumerate(ports)]}))
    return config


@pytest.mark.slow
def test_soak_keeps_memory_and_file_descriptors_flat_and_catches_a_leak(tmp_path: Path) -> None:
    """Two gateways side by side on the same devices, one as shipped and one with a leak of
    LEAK_MB_PER_MIN put in (tests/support/leaky.py): after the warm-up, the first one's RSS grows by
    less than 5 % per 10 minutes (the slope over the measured window) and no file descriptor
    stays open; the second one's grows by more, or the soak could not tell a leak."""
    scale = FULL_SOAK if SCALE >= 1 else CI_SOAK
    image = Image()
    for i in range(1000):
        image.put(Point(tag="x", address=2 * i, type="float32"), float(2 * i))
    duration = scale.warm_up + scale.window
    with server_farm([image] * scale.devices) as ports:
        configs = {name: soak_site(tmp_path / name, ports, scale.tick)
                   for name in ("shipped", "leaky")}
        commands = {"shipped": [sys.executable, "-m", "scadawatch"],
                    "leaky": [sys.executable, str(SUPPORT / "leaky.py"), str(LEAK_MB_PER_MIN)]}
        gateways: dict[str, subprocess.Popen] = {}
        started = time.time()
        with contextlib.ExitStack() as logs:
            try:
                for name, config in configs.items():
                    # stderr to a file: an unread pipe would block the gateway once full.
                    err = logs.enter_context(open(tmp_path / f"{name}.log", "wb"))
                    gateways[name] = subprocess.Popen(
                        [*commands[name], "gateway", "--config", str(config)],
                        stdout=subprocess.DEVNULL, stderr=err)
                for name, gw in gateways.items():
                    wait_polling(gw, load_site(configs[name]), started)
                began = time.monotonic()
                samples: dict[str, list[tuple[float, int, int]]] = {n: [] for n in gateways}
                for _ in range(int(duration / SAMPLE_EVERY) + 1):  # bounded by the duration
                    at = time.monotonic() - began
                    for name, gw in gateways.items():
                        assert gw.poll() is None, f"the {name} gateway died"
                        samples[name].append((at, rss_bytes(gw.pid),
                                              len(os.listdir(f"/proc/{gw.pid}/fd"))))
                    if at >= duration:
                        break
                    time.sleep(SAMPLE_EVERY)
                snapshot = json.loads(status_path(load_site(configs["shipped"])).read_text())
            finally:
                for gw in gateways.values():
                    gw.send_signal(signal.SIGTERM)
                for gw in gateways.values():
                    gw.communicate(timeout=RUN_LIMIT)
    assert gateways["shipped"].returncode == 0, (tmp_path / "shipped.log").read_text()[-3000:]
    states = {d["state"] for d in snapshot["devices"].values()}
    assert states == {"ok"}, snapshot["devices"]
    judged = {}
    for name, taken in samples.items():
        warm = [s for s in taken if s[0] >= scale.warm_up]
        assert len(warm) >= 0.9 * scale.window / SAMPLE_EVERY, taken  # reported throughout
        level = float(np.median([s[1] for s in warm]))
        judged[name] = (projected_growth(warm, 600.0) / level,
                        " ".join(f"{r / 2**20:.1f}/{f}" for _, r, f in warm))
    growth, trace = judged["shipped"]
    assert growth < 0.05, (f"RSS {growth:+.1%} per 10 min; MB/fds every {SAMPLE_EVERY:g} s "
                           f"after the warm-up: {trace}")
    warm = [s for s in samples["shipped"] if s[0] >= scale.warm_up]
    assert max(s[2] for s in warm[-3:]) <= max(s[2] for s in warm[:3]), trace
    leaked, trace = judged["leaky"]
    assert leaked >= 0.05, (f"a leak of {LEAK_MB_PER_MIN} MB/min passed the soak: RSS "
                            f"{leaked:+.1%} per 10 min; MB/fds: {trace}")
