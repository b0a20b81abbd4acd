"""Alarm transitions into a real InfluxDB 1.6 (`influxd` on loopback): every tag and field of
measurement `alarms`, exactly one point per journal entry across a restart of the writer, and
an InfluxDB outage under a running gateway that loses nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.alarm_helpers import NS, T0, alarm, cleared, raised
from support.harness import RUN_LIMIT
from support.peers.influx_servers import Influxd, influxd

from gateway.alarms.annotations import AlarmWriter
from gateway.alarms.store import AlarmStore
from gateway.data_dir import store_path
from gateway.runtime import Gateway
from gateway.site.model import HistorianSection, Site, SiteSection
from gateway.status import SinkStatus

SITE = "plant 1"
TAGS = ("site", "kind", "priority", "zone", "tag", "device", "transition")
FIELDS = ("id", "event_id", "message", "state", "value", "who", "comment")


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd for the module; each test uses its own database."""
    server = influxd(tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


def make_site(tmp_path: Path, influx: Influxd, database: str, **historian: object) -> Site:
    return Site(site=SiteSection(name=SITE, data_dir=tmp_path / "data"),
                historian=HistorianSection(kind="influxdb", api="v1", url=influx.url,
                                           database=database, **historian))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlarmStore]:
    s = AlarmStore(store_path(tmp_path / "data"))
    yield s
    s.close()


def write_all(writer: AlarmWriter) -> None:
    for _ in range(1000):  # bounded; each step takes a batch of the journal
        if not writer.step():
            return
    raise AssertionError("the writer never caught up")


def points(influx: Influxd, database: str) -> list[dict]:
    """Every point of `alarms`, oldest first, as {column: value}."""
    series = influx.query("SELECT * FROM alarms ORDER BY time", db=database)
    if not series:
        return []
    (s,) = series
    return [dict(zip(s["columns"], v, strict=True)) for v in s["values"]]


def lifecycle(store: AlarmStore) -> None:
    """Engine events and operator actions as the gateway and the API record them."""
    leak = dataclasses.replace(alarm("leak", "dma1"), value=12.5, message="leak in dma1, "
                               'about 12.5 L/s ("night flow")')
    spike = dataclasses.replace(alarm("spike", "dma1.inlet.flow", scope="tag"),
                                device="plc 1", value=-3.25)
    repeats = [alarm("leak", "dma1", T0 + s * NS) for s in (120, 125)]  # `leak`'s series
    store.apply([raised(leak), raised(spike)], now_ns=T0)
    store.ack(leak.id, "op, shift=A", 'seen\nteam "north" sent', now_ns=T0 + 1 * NS)
    store.shelve(spike.id, "op2", "sensor work", 3600 * NS, now_ns=T0 + 2 * NS)
    store.unshelve(spike.id, "op2", now_ns=T0 + 3 * NS)
    store.suppress("zone", "dma1", "op2", "valve works", now_ns=T0 + 4 * NS)
    store.unsuppress("zone", "dma1", "op2", now_ns=T0 + 5 * NS)
    store.apply([cleared(leak, T0 + 60 * NS)], now_ns=T0 + 60 * NS)
    store.comment(leak.id, "op", "burst main found", now_ns=T0 + 70 * NS)
    store.apply([e for r in repeats for e in (raised(r), cleared(r, T0 + 130 * NS))],
                now_ns=T0 + 130 * NS)
    # One millisecond, one series (ack of a leak in dma1): two transitions, two points.
    store.ack_many([r.id for r in repeats], "op", now_ns=T0 + 140 * NS + 123_456)


def test_every_transition_is_one_point_with_every_tag_and_field(
        tmp_path: Path, influx: Influxd, database: str, store: AlarmStore) -> None:
    lifecycle(store)
    writer = AlarmWriter(make_site(tmp_path, influx, database), store,
                         SinkStatus(AlarmWriter.name))
    write_all(writer)
    writer.close()
    journal = [e for e in store.events_after(0, 1000) if e.alarm_id is not None]
    got = points(influx, database)
    assert [p["event_id"] for p in got] == [e.seq for e in journal]
    assert [p["transition"] for p in got] == [
        "raise", "raise", "ack", "shelve", "unshelve", "suppress", "suppress", "unsuppress",
        "unsuppress", "clear", "comment", "raise", "clear", "raise", "clear", "ack", "ack"]
    for p, e in zip(got, journal, strict=True):
        a = e.data
        assert p["time"] == e.ts_ns - e.ts_ns % 10**6 + e.seq % 10**6, e
        assert {k: p[k] for k in TAGS} == {
            "site": SITE, "kind": a["kind"], "priority": a["priority"], "zone": a["zone"],
            "tag": a["tag"], "device": a["device"], "transition": e.transition}
        assert {k: p[k] for k in FIELDS} == {
            "id": a["id"], "event_id": e.seq, "message": a["message"], "state": a["state"],
            "value": a["value"], "who": e.who,
            "comment": None if e.comment is None else e.comment.replace("\n", " ")}
    ack = got[2]
    assert (ack["who"], ack["comment"], ack["state"]) == (
        "op, shift=A", 'seen team "north" sent', "active-acknowledged")
    assert (got[1]["device"], got[1]["value"], got[0]["zone"]) == ("plc 1", -3.25, "dma1")
    same = [{k: p[k] for k in (*TAGS, "time")} for p in got[-2:]]
    assert same[0]["time"] // 10**6 == same[1]["time"] // 10**6  # same ms and series ...
    assert {**same[0], "time": 0} == {**same[1], "time": 0}
    assert got[-2]["id"] != got[-1]["id"]  # ... yet both points are there
    assert writer.status.readings_total == len(journal)
    assert writer.cursor() == store.last_event_id()


@pytest.mark.parametrize("rewind_to", [0, 9])
def test_a_restart_resends_from_its_cursor_and_each_transition_stays_one_point(
        tmp_path: Path, influx: Influxd, database: str, store: AlarmStore,
        rewind_to: int) -> None:
    alarms = [alarm("comms", f"dma1.p{i}", T0 + i * NS, scope="tag") for i in range(20)]
    store.apply([raised(a) for a in alarms], now_ns=T0)
    store.apply([cleared(a) for a in alarms], now_ns=T0 + 100 * NS)
    site = make_site(tmp_path, influx, database, batch_size=7)
    first = AlarmWriter(site, store, SinkStatus(AlarmWriter.name))
    assert first.step() and first.step()
    first.close()
    # A crash after the write and before the cursor's update: that part is sent again.
    store.set_cursor(AlarmWriter.name, rewind_to)
    reopened = AlarmStore(store_path(tmp_path / "data"))
    try:
        second = AlarmWriter(site, reopened, SinkStatus(AlarmWriter.name))
        write_all(second)
        second.close()
        assert second.status.readings_total == 40 - rewind_to
    finally:
        reopened.close()
    got = points(influx, database)
    assert sorted(p["event_id"] for p in got) == list(range(1, 41))
    assert [p["transition"] for p in got] == ["raise"] * 20 + ["clear"] * 20


def test_influxdb_down_then_up_under_a_gateway_loses_no_transition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.runtime.FLUSH_TIMEOUT", 0.5)  # no readings to flush here
    server = influxd(tmp_path / "influxd")
    try:
        server.create_database("outage")
        server.stop()
        site = make_site(tmp_path, server, "outage", timeout=2.0)

        async def run() -> tuple[SinkStatus, int, int]:
            gateway, stop = Gateway(site), asyncio.Event()
            task = asyncio.create_task(gateway.run(stop))
            status = gateway.status.sinks[AlarmWriter.name]
            try:
                lifecycle(gateway.alarms)
                for _ in range(int(RUN_LIMIT / 0.05)):  # bounded: the first step fails
                    if status.errors_total >= 2:
                        break
                    await asyncio.sleep(0.05)
                held = gateway.alarms.cursor(AlarmWriter.name) or 0
                backlog = status.backlog_readings
                assert status.last_error is not None and "unreachable" in status.last_error
                await asyncio.to_thread(server.start)
                last = gateway.alarms.last_event_id()
                for _ in range(int(RUN_LIMIT / 0.05)):  # bounded: backoff, then it catches up
                    if gateway.alarms.cursor(AlarmWriter.name) == last:
                        break
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await task
            return status, held, backlog

        status, held, backlog = asyncio.run(run())
        check = AlarmStore(store_path(tmp_path / "data"))
        journal = [e.seq for e in check.events_after(0, 1000) if e.alarm_id is not None]
        check.close()
        assert held == 0 and backlog == len(journal) + 2  # + the out-of-service rule's two
        assert [p["event_id"] for p in points(server, "outage")] == journal
        assert status.readings_total == len(journal) and status.backlog_readings == 0
    finally:
        server.stop()
