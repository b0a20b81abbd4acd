"""The anomaly engine live in the gateway (gateway/detection.py), fed over OPC UA by a real
asyncua server on loopback: device clocks ahead, an operator's release of a chattering alarm."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.harness import stored
from support.peers.opcua_servers import UaServer, eventually, ns, ns_of

from anomaly.core.alarms import AlarmEvent
from anomaly.core.batch import Batch, Quality
from gateway.detection import Detection
from gateway.runtime import Gateway
from gateway.site.model import AnomalySection, Device, Point, Site, SiteSection

HI = 100.0
POINTS = {"a": "plc", "b": "clock-ahead"}  # tag -> device, both on one server


def two_devices(endpoint: str, data_dir: Path) -> Site:
    return Site(
        site=SiteSection(name="t", data_dir=data_dir),
        devices=[Device(name=d, protocol="opcua", endpoint=endpoint, poll_interval=0.05,
                        timeout=0.5) for d in POINTS.values()],
        points=[Point(tag=t, device=d, node=ns_of(t), kind="flow", lo=0.0, hi=HI)
                for t, d in POINTS.items()],
        anomaly=AnomalySection(interval=1.0, lateness=0.5, zone_model=False))


# how far ahead the clock of device `clock-ahead` runs; whether the gateway says so
LEADS = {
    "in step": (timedelta(0), False),
    "10 min ahead": (timedelta(minutes=10), True),
    "1 h ahead": (timedelta(hours=1), True),
    "2 days ahead": (timedelta(days=2), True),
}


@pytest.mark.parametrize(("lead", "warned"), LEADS.values(), ids=LEADS.keys())
def test_a_device_clock_ahead_does_not_silence_the_alarms_of_another(
        lead: timedelta, warned: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raised: set[str] = set()
    stamps: list[datetime] = []  # the clock-ahead device's source times

    def on_events(events: list[AlarmEvent]) -> None:
        raised.update(e.alarm.tag or "" for e in events
                      if e.action == "raise" and e.alarm.kind == "limit")

    async def scenario() -> Gateway:
        async with UaServer() as served:
            gateway = Gateway(two_devices(served.endpoint, tmp_path))
            gateway.alarm_listeners.append(on_events)
            judged = gateway.status.sinks["anomaly"]
            stop = asyncio.Event()
            run = asyncio.create_task(gateway.run(stop))
            try:
                await eventually(lambda: judged.readings_total >= len(POINTS))  # initial values
                # First the readings of the fast clock reach the engine, then the other
                # device's value beyond its limit; two readings, to see one warning.
                for k, value in enumerate([2 * HI, 3 * HI]):
                    stamps.append(datetime.now(UTC) + lead)
                    await served.write("b", value, source=stamps[-1])
                    await eventually(lambda k=k: judged.readings_total >= len(POINTS) + k + 1)
                await served.write("a", 2 * HI, source=datetime.now(UTC))
                await eventually(lambda: {"a", "b"} <= raised)
            finally:
                stop.set()
                await run
            return gateway

    with caplog.at_level(logging.WARNING, logger="gateway.detection"):
        gateway = asyncio.run(scenario())

    assert raised == {"a", "b"}  # the fast clock's own values are judged too
    warnings = [r.getMessage() for r in caplog.records if "event=device_clock_ahead" in r.message]
    assert len(warnings) == warned and all("device=clock-ahead " in w for w in warnings)
    assert gateway.detection is not None
    assert gateway.status.anomaly.clock_ahead_readings_total == (2 if warned else 0)
    b = list(POINTS).index("b")
    kept = {ts for point, ts in stored(gateway.site) if point == b}
    assert {ns(t) for t in stamps} <= kept  # stored as the device stamped them


def test_an_operator_releases_a_chattering_alarm_in_a_running_gateway(tmp_path: Path) -> None:
    """A frequency flapping out of its band and back: two `frequency` alarms, then one
    `chattering` alarm holds the rest back; released through the alarm store (what the API
    route does), the running gateway clears the chattering alarm and annunciates the next
    raise."""
    site = Site(
        site=SiteSection(name="t", data_dir=tmp_path),
        devices=[Device(name="plc", protocol="opcua", endpoint="opc.tcp://127.0.0.1:1/test",
                        poll_interval=0.05, timeout=0.5)],
        points=[Point(tag="a", device="plc", node=ns_of("a"), kind="frequency", unit="Hz",
                      lo=49.8, hi=50.2)],
        anomaly=AnomalySection(interval=1.0, lateness=0.5, zone_model=False,
                               off_delay={"frequency": 0.0}, chattering=[[3, 3600.0]]))
    events: list[AlarmEvent] = []

    async def scenario() -> None:
        async with UaServer() as served:
            device = site.devices[0].model_copy(update={"endpoint": served.endpoint})
            gateway = Gateway(site.model_copy(update={"devices": [device]}))
            gateway.alarm_listeners.append(events.extend)
            stop = asyncio.Event()
            run = asyncio.create_task(gateway.run(stop))

            async def flap_until(condition: Callable[[], bool]) -> None:
                for k in itertools.count():
                    await served.write("a", 50.6 if k % 2 == 0 else 50.0,
                                       source=datetime.now(UTC))
                    await asyncio.sleep(1.2)
                    if condition() or k > 40:
                        return

            def kinds(action: str) -> list[str]:
                return [e.alarm.kind for e in events if e.action == action]

            try:
                await flap_until(lambda: "chattering" in kinds("raise"))
                assert kinds("raise")[:3] == ["frequency", "frequency", "chattering"]
                notice = next(e.alarm for e in events if e.alarm.kind == "chattering")
                gateway.alarms.release(notice.id, "alice", "transmitter replaced")
                await eventually(lambda: "chattering" in kinds("clear"))
                raised_before = kinds("raise").count("frequency")
                await flap_until(lambda: kinds("raise").count("frequency") > raised_before)
                assert kinds("raise").count("frequency") > raised_before
            finally:
                stop.set()
                await run

    asyncio.run(scenario())


def test_the_engine_hands_its_ticks_transients_back_once_a_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: a tick's per-tag vectors (~3 MB at 10,000 tags) fall below the C heap's mmap
    threshold, and their freed pages stayed resident until the gateway's periodic hand-back
    (10 s later): the engine hands them back as its tick closes, once a tick, not once a
    poll (nor after polls within a tick, which allocate little)."""
    released: list[int] = []
    monkeypatch.setattr("gateway.detection.release_free_memory", lambda: released.append(1))
    site = Site(site=SiteSection(name="t", data_dir=tmp_path),
                points=[Point(tag=f"f{k}", kind="flow") for k in range(3)],
                anomaly=AnomalySection(interval=60.0, lateness=2.0, zone_model=False,
                                       save_interval=3600.0))
    detection = Detection(site, emit=lambda events: None)
    s = 10**9
    for seq, t in enumerate(range(0, 3 * 60, 1), start=1):  # a poll a second, 3 ticks
        detection.store([(seq, Batch.of(source_ts=[t * s] * 3, gateway_ts=[t * s] * 3,
                                        point=[0, 1, 2], value=[1.0, 2.0, 3.0],
                                        quality=Quality.GOOD))])
    assert len(released) == 2  # ticks 0 and 1 closed (at 62 s and 122 s); tick 2 is open
    detection.advance(3 * 60 * s + 3 * s)
    assert len(released) == 3
