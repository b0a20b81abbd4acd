"""The anomaly engine live in the gateway (gateway/detection.py), fed over OPC UA by a real
asyncua server on loopback."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import stored
from test_opcua import UaServer, eventually, ns, ns_of

from anomaly.alarms import AlarmEvent
from gateway.config import AnomalySection, Device, Point, Site, SiteSection
from gateway.runtime import Gateway

HI = 100.0
POINTS = {"a": "plc", "b": "clock-ahead"}  # tag -> device, both on one server


def two_devices(endpoint: str, data_dir: Path) -> Site:
    return Site(
        site=SiteSection(name="t", data_dir=data_dir),
        devices=[Device(name=d, protocol="opcua", endpoint=endpoint, poll_interval=0.05,
                        timeout=0.5) for d in POINTS.values()],
        points=[Point(tag=t, device=d, node=ns_of(t), kind="flow", lo=0.0, hi=HI)
                for t, d in POINTS.items()],
        anomaly=AnomalySection(interval=1.0, lateness=0.5, river=False))


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
    assert gateway.detection.clock_ahead_total == (2 if warned else 0)
    b = list(POINTS).index("b")
    kept = {ts for point, ts in stored(gateway.site) if point == b}
    assert {ns(t) for t in stamps} <= kept  # stored as the device stamped them
