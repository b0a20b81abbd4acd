"""Sparkplug B from two gateways to one `scadawatch central`, through Debian's mosquitto on
loopback, every part in its own process: the centre holds every reading each gateway's own
historian holds, once, across a broker outage (after which live readings come first and the
backlog as historical), a kill -9 of a gateway and a restart of the centre; a site whose
gateway dies raises its comms alarm at the centre within seconds of its will; and the
payloads, decoded independently of our schema (tests/support/sparkplug_wire.py), are Sparkplug B.

The outage lasts 30 s times SCADAWATCH_RELIABILITY_SCALE (CI: 0.2)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
import tomli_w
from conftest import CliRun
from support import sparkplug_wire as wire
from support.harness import RUN_LIMIT, auth_headers, gateway_site, start_simulator
from support.peers.influx_servers import Influxd, influxd

from bench.mosquitto import Mosquitto
from central.host import Central
from gateway.site.loader import load_site
from gateway.site.model import Site
from gateway.storage.historian import EmbeddedHistorian
from scadawatch.ports import free_port

SCALE = float(os.environ.get("SCADAWATCH_RELIABILITY_SCALE", "1"))
OUTAGE = 30.0 * SCALE
WILL_TO_ALARM = 10.0  # seconds the issue allows from a site's will to its comms alarm
SITES = ("site-a", "site-b")
GROUP, HOST = "utility", "control-room"
# A pressure transmitter reading 75 m high from the first second: a limit alarm at once.
SCENARIO = """clock = "wall"
[water]
[[water.events]]
kind = "offset"
target = "dma2.j237.pressure"
start = "1s"
duration = "30m"
size = 75.0
"""


@dataclass
class Captured:
    topic: str
    payload: bytes
    at: float


class Subscriber:
    """A plain paho-mqtt client (not scadawatch's) that keeps every Sparkplug message of the
    group, in a persistent session, so a broker outage loses it nothing either."""

    def __init__(self, port: int) -> None:
        self.messages: list[Captured] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="raw-observer",
                                  clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe(f"spBv1.0/{GROUP}/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.append(
            Captured(m.topic, bytes(m.payload), time.time()))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def of(self, kind: str, node: str) -> list[Captured]:
        prefix = f"spBv1.0/{GROUP}/{kind}/{node}"
        return [m for m in list(self.messages) if m.topic.split("/")[:4] == prefix.split("/")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def until(what: str, check: Callable[[], object], limit: float = RUN_LIMIT) -> object:
    deadline = time.monotonic() + limit
    while True:
        with_value = check()
        if with_value:
            return with_value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "scadawatch", *args],
                                stdout=subprocess.DEVNULL, stderr=out)


def readings(historian: Path, tags: list[str]) -> Counter:
    """(tag, ms, value or None) of every stored reading: the centre has milliseconds, as
    Sparkplug timestamps are."""
    h = EmbeddedHistorian(historian, tags, readonly=True)
    try:
        out: Counter = Counter()
        for t in tags:
            b = h.history(t, 0, 2**62)
            out.update((t, ts // 1_000_000, None if math.isnan(v) else v)
                       for ts, v in zip(b.source_ts.tolist(), b.value.tolist(), strict=True))
        return out
    finally:
        h.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    m = Mosquitto(tmp_path / "mosquitto")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.reliability
def test_two_sites_reach_the_centre_once_across_outage_and_kill_9(
        tmp_path: Path, broker: Mosquitto, processes: list[subprocess.Popen]) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    observer = Subscriber(broker.port)
    sites: dict[str, Site] = {}
    configs: dict[str, Path] = {}
    for name in SITES:
        folder = tmp_path / name
        folder.mkdir()
        sim, sim_site = start_simulator(folder, scenario=scenario)
        processes.append(sim)
        path = gateway_site(sim_site, folder)
        raw = tomllib.loads(path.read_text())
        raw["site"]["name"] = name
        raw["northbound"] = [{"kind": "sparkplug", "url": broker.url, "group": GROUP,
                              "primary_host": HOST, "keepalive": 5}]
        path.write_text(tomli_w.dumps(raw))
        configs[name], sites[name] = path, load_site(path)
    central_dir = tmp_path / "central"
    central_dir.mkdir()
    port = free_port()
    (central_dir / "central.toml").write_text(tomli_w.dumps({
        "site": {"name": "control-room", "data_dir": str(central_dir / "data")},
        "central": {"url": broker.url, "group": GROUP, "host_id": HOST, "keepalive": 5},
        "api": {"port": port}}))
    (central_dir / "data").mkdir()
    headers = auth_headers(central_dir / "data", "operator")
    central = spawn(["central", "--config", str(central_dir / "central.toml")],
                    central_dir / "central.log")
    processes.append(central)
    gateways = {n: spawn(["gateway", "--config", str(configs[n])], tmp_path / n / "gw.log")
                for n in SITES}
    processes += gateways.values()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)

    def site_rows() -> dict[str, dict]:
        try:
            return {s["site"]: s for s in http.get("/api/v1/sites").json()}
        except (httpx.TransportError, ValueError):
            return {}

    def all_online() -> bool:
        rows = site_rows()
        return all(rows.get(n, {}).get("online") and rows[n]["readings_total"] for n in SITES)

    until("both sites online at the centre with readings", all_online)

    # The broker stops; the gateways keep polling into their spools meanwhile.
    outage_start = time.time()
    before_outage = len(observer.messages)
    broker.stop()
    time.sleep(OUTAGE)
    broker.start()
    outage_end = time.time()
    until("both sites back after the outage", all_online)
    # Back, each site sends its current readings live first, then the backlog as historical.
    for name in SITES:
        flags = until(f"{name}'s backlog after the outage", lambda name=name: (
            (f := historical_flags(observer.messages[before_outage:], name)) and any(f) and f))
        assert isinstance(flags, list) and not flags[0], f"{name}: the first DDATA is historical"

    # Gateway A dies without a word: the broker sends its will (NDEATH) at once.
    gateways["site-a"].send_signal(signal.SIGKILL)
    gateways["site-a"].wait()
    killed = time.monotonic()

    def comms_alarm() -> list[dict]:
        answer = http.get("/api/v1/alarms", params={"kind": "comms", "device": "site-a"})
        return [a for a in answer.json()["alarms"] if a["active"]] if answer.is_success else []

    until("site-a's comms alarm at the centre", comms_alarm, limit=WILL_TO_ALARM + 5)
    assert time.monotonic() - killed < WILL_TO_ALARM
    health = http.get("/api/v1/health").json()  # the sites are the centre's devices
    assert {d["name"]: d["state"] for d in health["devices"]} == {"site-a": "down",
                                                                  "site-b": "ok"}
    assert health["status"] == "degraded" and http.get("/").status_code == 200
    deaths = observer.of("NDEATH", "site-a")
    assert deaths, "no NDEATH (will) of site-a seen"

    # The host asks site-b for a rebirth: NBIRTH again, seq from 0, the session's bdSeq.
    births_b = len(observer.of("NBIRTH", "site-b"))
    command = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="raw-command")
    command.connect("127.0.0.1", broker.port)
    command.loop_start()
    rebirth = bytes.fromhex("12") + _len(_rebirth_metric()) + _rebirth_metric()
    command.publish(f"spBv1.0/{GROUP}/NCMD/site-b", rebirth, qos=1).wait_for_publish(10)
    command.loop_stop()
    command.disconnect()
    until("site-b reborn", lambda: len(observer.of("NBIRTH", "site-b")) > births_b)

    gateways["site-a"] = spawn(["gateway", "--config", str(configs["site-a"])],
                               tmp_path / "site-a" / "gw.log")
    processes.append(gateways["site-a"])
    until("site-a back, its comms alarm cleared",
          lambda: all_online() and not comms_alarm())

    # The centre restarts while the gateways run: it decodes what waited for it at the broker
    # with the births it kept, asks every site for a rebirth, and knows every point's name and
    # unit again. (A kill -9 would lose what it had taken from the broker but not yet stored:
    # its last 0.2 s; see gateway/northbound/sparkplug/README.md.)
    central.send_signal(signal.SIGTERM)
    assert central.wait(timeout=30) == 0
    asked = {n: len(observer.of("NCMD", n)) for n in SITES}
    time.sleep(2)
    central = spawn(["central", "--config", str(central_dir / "central.toml")],
                    central_dir / "central.log")
    processes.append(central)
    until("every site asked for a rebirth by the restarted centre",
          lambda: all(len(observer.of("NCMD", n)) > asked[n] for n in SITES))
    until("both sites online at the restarted centre", all_online)
    units = {p["tag"]: p["unit"] for p in http.get("/api/v1/points").json()["points"]}
    assert units == {f"{n}/{p.tag}": p.unit for n in SITES for p in sites[n].points}
    time.sleep(2)
    for p in gateways.values():  # a clean stop: the sinks flush, the edge sends NDEATH
        p.send_signal(signal.SIGTERM)
    for p in gateways.values():
        assert p.wait(timeout=60) == 0

    def settled() -> bool:
        rows = site_rows()
        if any(rows.get(n, {}).get("online", True) for n in SITES):
            return False
        time.sleep(1.0)
        return rows == site_rows()

    until("the centre settled", settled)
    latest = http.get("/api/v1/latest").json()["readings"]
    alarms = http.get("/api/v1/alarms").json()["alarms"]
    # ... acknowledged at the centre, as any alarm of its list
    limit_a = next(a for a in alarms if a["id"].startswith("site-a:") and a["kind"] == "limit")
    acked = http.post(f"/api/v1/alarms/{limit_a['id']}/ack", json={"comment": "seen"})
    assert acked.status_code == 200 and acked.json()["acknowledged"], acked.text
    central.send_signal(signal.SIGTERM)
    assert central.wait(timeout=30) == 0
    observer.close()

    # The centre shows both sites' points and their own alarms (the limit alarm travelled).
    for name in SITES:
        assert {r["tag"] for r in latest} >= {f"{name}/{p.tag}" for p in sites[name].points}
        assert any(a["id"].startswith(f"{name}:") and a["kind"] == "limit"
                   and a["tag"] == f"{name}/dma2.j237.pressure" for a in alarms), alarms

    # Nothing lost, nothing twice: the centre holds what each gateway's historian holds.
    for name in SITES:
        tags = [p.tag for p in sites[name].points]
        own = readings(sites[name].site.data_dir / "historian.sqlite", tags)
        centre = readings(central_dir / "data" / "sites" / name / "historian.sqlite", tags)
        assert sum(own.values()) > 1000
        assert own - centre == Counter(), f"{name}: lost at the centre"
        assert centre - own == Counter(), f"{name}: at the centre only"
        assert max(centre.values()) == 1, f"{name}: stored twice at the centre"

    # Independently decoded: the births, sessions and data are Sparkplug B as specified.
    a_births = [wire.payload(m.payload) for m in observer.of("NBIRTH", "site-a")]
    bd = [next(x["value"] for x in p["metrics"] if x["name"] == "bdSeq") for p in a_births]
    assert [p["seq"] for p in a_births] == [0] * len(a_births)
    # A new bdSeq per connection (three of site-a's); rebirths in a session keep theirs.
    assert len(set(bd)) >= 3 and bd == sorted(bd), bd
    assert any(x["name"] == "Node Control/Rebirth" for x in a_births[0]["metrics"])
    will = wire.payload(deaths[0].payload)
    assert will["metrics"][0]["name"] == "bdSeq" and will["metrics"][0]["value"] in bd
    a = sites["site-a"]
    alias_tag: dict[int, str] = {}
    for m in observer.of("DBIRTH", "site-a"):
        device = m.topic.split("/")[-1]
        born = {x["name"]: x for x in wire.payload(m.payload)["metrics"]}
        for p in (p for p in a.points if p.device == device):
            x = born[p.tag]
            assert x["datatype"] == (11 if p.type == "bool" else 10)
            assert x["properties"]["engUnit"] == p.unit
            assert x["properties"].get("engLow") == p.lo
            assert x["properties"].get("engHigh") == p.hi
            alias_tag[x["alias"]] = p.tag
    decoded: set = set()
    historical_in_outage = 0
    for m in observer.of("DDATA", "site-a"):
        for x in wire.payload(m.payload)["metrics"]:
            if x["alias"] is None:
                continue  # the record number
            decoded.add((alias_tag[x["alias"]], x["timestamp"],
                         None if x["is_null"] else float(x["value"])))
            historical_in_outage += (x["is_historical"] and
                                     outage_start * 1e3 <= x["timestamp"] <= outage_end * 1e3)
    own_a = readings(a.site.data_dir / "historian.sqlite", [p.tag for p in a.points])
    assert decoded == set(own_a)
    assert historical_in_outage > 0, "the outage's backlog was not sent as historical"
    # seq counts every message of a session modulo 256, from 0 at each NBIRTH (it wraps)
    previous, wrapped = None, 0
    for m in observer.messages:
        _, _, kind, node, *_ = m.topic.split("/")
        if node != "site-b" or kind in ("NDEATH", "NCMD", "DCMD"):
            continue
        seq = wire.payload(m.payload)["seq"]
        if kind == "NBIRTH":
            assert seq == 0
        else:
            assert previous is not None and seq == (previous + 1) % 256, (m.topic, seq)
            wrapped += seq == 0
        previous = seq
    assert wrapped


def historical_flags(messages: list[Captured], node: str) -> list[bool]:
    """Per DDATA of `node`'s first session born in `messages`: any reading historical?"""
    flags: list[bool] = []
    births = 0
    for m in messages:
        _, _, kind, of, *_ = m.topic.split("/")
        if of != node:
            continue
        births += kind == "NBIRTH"
        if births > 1:
            break
        if births and kind == "DDATA":
            metrics = [x for x in wire.payload(m.payload)["metrics"] if x["alias"] is not None]
            flags.append(any(x["is_historical"] for x in metrics))
    return flags


def _rebirth_metric() -> bytes:
    """Metric{name: "Node Control/Rebirth", datatype: Boolean, boolean_value: true}."""
    name = b"Node Control/Rebirth"
    return b"\x0a" + bytes([len(name)]) + name + b"\x20\x0b" + b"\x70\x01"


def _len(b: bytes) -> bytes:
    return bytes([len(b)])


DEPLOY = Path(__file__).parents[2] / "deploy" / "sparkplug"
SITE_HEAD = '[site]\nname = "w1"\n'


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('[[northbound]]\nkind = "sparkplug"\nurl = "http://broker"\n', "northbound[0].url",
     "is not mqtt://host[:port] or mqtts://host[:port]"),
    ('[[northbound]]\nkind = "sparkplug"\ngroup = "a/b"\n', "northbound[0].group",
     "without '/', '+', '#', ':' or spaces"),
    ('[[northbound]]\nkind = "sparkplug"\nnode = "site:1"\n', "northbound[0].node",
     "without '/', '+', '#', ':' or spaces"),
    ('[[northbound]]\nkind = "mqtt-json"\n', "northbound[0].kind", "'sparkplug'"),
    ('[[northbound]]\nkind = "sparkplug"\nkeepalive = 1\n', "northbound[0].keepalive",
     "must be at least 2, got 1"),
    ('[[northbound]]\nkind = "sparkplug"\npasword_env = "X"\n', "northbound[0].pasword_env",
     "unknown key"),
    ('[central]\ngroup = "utility"\nhost = "x"\n', "central.host", "unknown key"),
    ('[central]\nurl = "mqtt://b"\n[historian]\nkind = "influxdb"\n', "historian.bucket",
     "required with api = 'v2'"),
])
def test_bad_northbound_and_central_keys_are_named(cli: CliRun, tmp_path: Path, text: str,
                                                   key: str, reason: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE_HEAD + text)
    code, _, err = cli("check-config", "--config", path)
    assert code == 2
    assert f"{path}: {key}: " in err and reason in err, err


def test_check_config_says_where_the_central_keeps_its_readings(cli: CliRun,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text(SITE_HEAD + '[central]\nurl = "mqtt://b"\n[historian]\nkind = "influxdb"\n'
                    'api = "v1"\nurl = "http://influx:8086"\ndatabase = "plants"\n')
    code, out, err = cli("check-config", "--config", path)
    assert code == 0, err
    assert "historian: influxdb http://influx:8086 (v1: database plants, site as a tag)" in out


def test_compose_files_of_the_sparkplug_deployment_check(cli: CliRun) -> None:
    for name, head in (("site-a", "site: site-a"), ("site-b", "site: site-b"),
                       ("central", "central: control-room")):
        code, out, err = cli("check-config", "--config", DEPLOY / f"{name}.toml")
        assert code == 0 and head in out, err
    compose = subprocess.run(["docker-compose", "-f", str(DEPLOY / "docker-compose.yml"),
                              "config", "--services"], capture_output=True, text=True,
                             check=True)
    assert set(compose.stdout.split()) == {"mosquitto", "sim-a", "sim-b", "site-a", "site-b",
                                           "central"}


def test_the_centre_files_once_ignores_bad_messages_and_tracks_deaths(tmp_path: Path) -> None:
    """The host fed directly (no broker): births, a payload that is not protobuf, data sent
    twice, data after a gap in seq, a stale death of an older session, then the real death
    and a rebirth."""
    import asyncio

    import numpy as np

    from anomaly.core.batch import Batch
    from central.config import CentralFile, CentralSection
    from central.host import Central
    from gateway.alarms.store import Filter
    from gateway.northbound.sparkplug import payloads as sp
    from gateway.site.model import Point, SiteSection

    central = Central(CentralFile(site=SiteSection(name="c", data_dir=tmp_path),
                                  central=CentralSection(group="g")))
    point = Point(tag="p", device="plc", unit="bar", lo=0.0, hi=10.0)
    batch = Batch.of(source_ts=[1_700_000_000_000_000_000], point=[0], value=[4.5], quality=0)
    data = sp.device_data(1024, batch, np.array([1]), np.zeros(1, bool), 0, False)
    later = Batch.of(source_ts=[1_700_000_001_000_000_000], point=[0], value=[5.5], quality=0)
    after_gap = sp.device_data(2048, later, np.array([1]), np.zeros(1, bool), 0, False)

    async def feed() -> None:
        for topic, payload in [
            ("NBIRTH/s1", sp.with_seq(0, sp.node_birth(7, 0))),
            ("DBIRTH/s1/plc", sp.with_seq(1, sp.device_birth([(1, point)], 0))),
            ("DDATA/s1/plc", b"\xff\xff\xff not protobuf"),
            ("DDATA/s1/plc", sp.with_seq(2, data)),
            ("DDATA/s1/plc", sp.with_seq(3, data)),  # the same record again
            ("DDATA/s1/plc", sp.with_seq(9, after_gap)),  # seq 4-8 lost: still filed
            ("NDEATH/s1", sp.node_death(6, 0)),  # an older session's will: not this one
        ]:
            await central.handle(f"spBv1.0/g/{topic}", payload)
        assert central.links["s1"].online
        await central.handle("spBv1.0/g/NDEATH/s1", sp.node_death(7, 0))
        await central._flush()
        assert not central.links["s1"].online
        comms, _ = central.alarms.alarms(Filter(states=("active",), kind="comms"))
        assert [a["device"] for a in comms] == ["s1"]
        await central.handle("spBv1.0/g/NBIRTH/s1", sp.with_seq(0, sp.node_birth(8, 0)))
        await central._flush()

    try:
        asyncio.run(feed())
        assert central.alarms.alarms(Filter(states=("active",), kind="comms"))[0] == []
        stored = central.historians["s1"].history("p", 0, 2**62)
        assert stored.value.tolist() == [4.5, 5.5] and central.links["s1"].duplicates_total == 1
        assert central.links["s1"].points == [point]
    finally:
        central.close()


T0 = 1_700_000_000_000_000_000


def ddata(spool_seq: int, after_seq: int, historical: bool, value: float | None = None) -> bytes:
    """A gateway's DDATA of spool record `spool_seq` (one reading of alias 1, at second
    `spool_seq`, worth `value` or `spool_seq`) sent after record `after_seq` in its lane."""
    import numpy as np

    from anomaly.core.batch import Batch
    from gateway.northbound.sparkplug import payloads as sp

    b = Batch.of(source_ts=[T0 + spool_seq * 10**9], point=[0], quality=0,
                 value=[float(spool_seq) if value is None else value])
    last = sp.MAX_DEVICES - 1
    return sp.device_data(spool_seq * sp.MAX_DEVICES + last, b, np.array([1]),
                          np.zeros(1, bool), 0, historical,
                          after=after_seq * sp.MAX_DEVICES + last)


# Live data first (the current reading, the next), then the backlog.
LANES = [(5, 4, False), (6, 5, False), (2, 1, True), (3, 2, True), (4, 3, True)]


async def feed(central: Central, node: str, messages: list[bytes]) -> None:
    """`node`'s births (a point `p` in bar on device `plc`), then `messages` as its DDATA,
    each flushed on its own."""
    from gateway.northbound.sparkplug import payloads as sp
    from gateway.site.model import Point

    point = Point(tag="p", device="plc", unit="bar")
    await central.handle(f"spBv1.0/g/NBIRTH/{node}", sp.with_seq(0, sp.node_birth(1, 0)))
    await central.handle(f"spBv1.0/g/DBIRTH/{node}/plc",
                         sp.with_seq(1, sp.device_birth([(1, point)], 0)))
    for i, body in enumerate(messages):
        await central.handle(f"spBv1.0/g/DDATA/{node}/plc", sp.with_seq(2 + i, body))
        await central._flush()


def test_the_centre_stores_a_backlog_after_the_live_data_once_and_in_time_order(
        tmp_path: Path) -> None:
    """Live data first, then the backlog (historical), then both sent again (a gateway killed
    before it saved its progress), then the centre restarted: each reading is stored once, and
    the history reads in source-time order."""
    import asyncio

    from central.config import CentralFile, CentralSection
    from central.host import Central
    from gateway.site.model import SiteSection

    config = CentralFile(site=SiteSection(name="c", data_dir=tmp_path),
                         central=CentralSection(group="g"))
    lanes = [ddata(*lane) for lane in LANES]
    central = Central(config)
    try:
        asyncio.run(feed(central, "s1", [*lanes, lanes[1], lanes[3]]))
    finally:
        central.close()
    central = Central(config)  # what it stored is known after a restart too
    try:
        asyncio.run(feed(central, "s1", lanes))
        stored = central.historians["s1"].history("p", 0, 2**62)
        assert stored.value.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
        assert central.links["s1"].duplicates_total == len(lanes)
    finally:
        central.close()


async def ask_api(central: Central, data_dir: Path, tags: tuple[str, ...]
                  ) -> dict[str, httpx.Response]:
    """The central API's answers (over loopback) to a history of each of `tags`."""
    import asyncio

    from api.server import serve
    from central.app import create_central_app

    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(create_central_app(central), "127.0.0.1", 0, ready))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{await ready}", timeout=10,
                                     headers=auth_headers(data_dir, "viewer")) as http:
            return {tag: await http.get("/api/v1/history", params={
                "tag": tag, "start": "2023-11-14T22:00:00Z", "end": "2023-11-14T23:00:00Z"})
                for tag in tags}
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = influxd(tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


def test_the_centre_keeps_every_sites_readings_in_influxdb_and_answers_from_it(
        tmp_path: Path, influx: Influxd, database: str) -> None:
    """`[historian] kind = "influxdb"` in the central file: two sites with a tag of the same
    name, one sending a backlog after live data and again after the centre's restart; one
    series per site (site as a tag), every reading once, and the central's history API
    answers each site's from InfluxDB in time order."""
    import asyncio

    from central.config import CentralFile, CentralSection
    from central.host import Central
    from gateway.site.model import HistorianSection, SiteSection

    config = CentralFile(site=SiteSection(name="c", data_dir=tmp_path),
                         central=CentralSection(group="g"),
                         historian=HistorianSection(kind="influxdb", api="v1", url=influx.url,
                                                    database=database))
    lanes = [ddata(*lane) for lane in LANES]
    central = Central(config)
    try:
        asyncio.run(feed(central, "s1", lanes))
    finally:
        central.close()
    central = Central(config)
    try:
        asyncio.run(feed(central, "s1", [*lanes, ddata(7, 6, False)]))
        asyncio.run(feed(central, "s2", [ddata(5, 4, False, value=-5.0)]))
        series = influx.query('SELECT value, site FROM "other" GROUP BY "site", "tag"',
                              db=database)
        assert {(s["tags"]["site"], s["tags"]["tag"]): [v[1] for v in s["values"]]
                for s in series} == {("s1", "p"): [2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
                                     ("s2", "p"): [-5.0]}
        answers = asyncio.run(ask_api(central, tmp_path, ("s1/p", "s2/p")))
        assert all(a.status_code == 200 for a in answers.values()), answers
        got = {tag: a.json() for tag, a in answers.items()}
        assert got["s1/p"]["unit"] == "bar"
        assert got["s1/p"]["value"] == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        assert got["s1/p"]["ts"] == sorted(got["s1/p"]["ts"])
        assert got["s2/p"]["value"] == [-5.0]
    finally:
        central.close()
