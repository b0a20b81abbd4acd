"""The DNP3 master (dnp3py) against opendnp3's outstation (yadnp3: a stack we did not write)
and a hostile outstation of our own on loopback; its site-file keys through check-config."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import opendnp3 as o
import pytest
from support.dnp3_peers import (
    HostileOutstation,
    nothing,
    opendnp3_outstation,
    responds,
)
from support.modbus_servers import Sink, free_port

from anomaly.batch import Batch, Quality
from gateway.inputs import quality
from gateway.inputs.dnp3.master import build_sessions
from gateway.site.loader import ConfigError, load_site
from gateway.site.model import Device, Point, Site, SiteSection
from gateway.status import GatewayStatus

LIMIT = 10.0  # seconds any wait in this file may take before it fails
T0 = 1_772_344_800_125  # 2026-03-01 06:00:00.125 UTC, ms
FAST = {"poll_interval": 0.1, "timeout": 0.5}
# The exact variations: floats with flags (static) and with time (events); binaries and
# counters with flags, their events with time.
ANALOG = {"group": 30, "variation": 5, "event_variation": 7}
BINARY = {"group": 1, "variation": 2, "event_variation": 2}
COUNTER = {"group": 20, "variation": 1, "event_variation": 5}


def site_of(port: int, points: list[dict[str, Any]], tmp_path: Path, **device: Any) -> Site:
    return Site(site=SiteSection(name="t", data_dir=tmp_path), devices=[
        Device(name="rtu", protocol="dnp3", host="127.0.0.1", port=port, **{**FAST, **device})],
        points=[Point(tag=f"p{i}", device="rtu", **p) for i, p in enumerate(points)])


def sessions(site: Site, sink: Sink) -> tuple[list, GatewayStatus]:
    status = GatewayStatus(site="t")
    return build_sessions(site, status, sink), status


def rows(sink: Sink) -> Batch:
    return Batch.concat(sink.batches)


def flags(*bits: Any) -> o.Flags:
    return o.Flags(sum(int(b.value) for b in bits))


def when(ms: int) -> o.DNPTime:
    return o.DNPTime(ms, o.TimestampQuality.SYNCHRONIZED)


ON = o.AnalogQuality.ONLINE
# point keys, the outstation's measurement (given its time), value, quality, cause
READINGS: list[tuple[dict[str, Any], Callable[[int], Any], float, Quality, int]] = [
    ({**ANALOG, "index": 0}, lambda t: o.Analog(25.5, flags(ON), when(t)), 25.5, Quality.GOOD, 0),
    ({**ANALOG, "index": 1}, lambda t: o.Analog(-0.125, flags(ON, o.AnalogQuality.OVERRANGE),
                                                when(t)),
     -0.125, Quality.UNCERTAIN, quality.dnp3(quality.DNP3_ANALOG, 0x21)),
    ({**ANALOG, "index": 2}, lambda t: o.Analog(7.0, flags(ON, o.AnalogQuality.COMM_LOST),
                                                when(t)),
     math.nan, Quality.BAD, quality.dnp3(quality.DNP3_ANALOG, 0x05)),
    ({**ANALOG, "index": 3}, lambda t: o.Analog(1.0, flags(o.AnalogQuality.RESTART), when(t)),
     math.nan, Quality.BAD, quality.dnp3(quality.DNP3_ANALOG, 0x02)),
    ({**BINARY, "index": 0}, lambda t: o.Binary(True, flags(o.BinaryQuality.ONLINE), when(t)),
     1.0, Quality.GOOD, 0),
    ({**BINARY, "index": 1}, lambda t: o.Binary(True, flags(
        o.BinaryQuality.ONLINE, o.BinaryQuality.LOCAL_FORCED), when(t)),
     1.0, Quality.UNCERTAIN, quality.dnp3(quality.DNP3_BINARY, 0x11)),
    ({**COUNTER, "index": 0}, lambda t: o.Counter(123456, flags(o.CounterQuality.ONLINE),
                                                  when(t)),
     123456.0, Quality.GOOD, 0),
]
KINDS = {30: 0, 1: 1, 20: 2}  # the test's own order of the outstation's point types


def test_values_qualities_and_outstation_times_arrive_exactly(tmp_path: Path) -> None:
    """Integrity poll: the changes so far as events, then the static values; later changes
    as events of the event poll. opendnp3 reports analogs as g30v1/g32v1 (integers) unless
    asked, and its unsolicited responses as g32v1 whatever is asked: the reads ask for
    ANALOG's variations, unsolicited responses are off."""
    port = free_port()
    n = len(READINGS)
    times = [T0 + 1001 * i for i in range(n)]

    def changes(shift: int) -> list[tuple[Any, int]]:
        return [(r[1](t + shift), r[0]["index"]) for r, t in zip(READINGS, times, strict=True)]

    async def scenario() -> tuple[Batch, Batch, int, int]:
        with opendnp3_outstation(port) as outstation:
            outstation.update(*changes(-60_000))
            sink = Sink()
            site = site_of(port, [r[0] for r in READINGS], tmp_path, unsolicited=False)
            found, status = sessions(site, sink)
            async with sink.running(found):
                await sink.wait(lambda s: len(rows(s)) >= 2 * n, LIMIT)
                integrity = rows(sink)
                before = time.time_ns()
                outstation.update(*changes(0), force=True)
                await sink.wait(lambda s: len(rows(s)) >= 3 * n, LIMIT)
                after = time.time_ns()
                assert status.devices["rtu"].state == "ok"
        return integrity, rows(sink).take(np.arange(2 * n, 3 * n)), before, after

    integrity, events, before, after = asyncio.run(scenario())
    static = integrity.take(np.flatnonzero(integrity.source_ts == integrity.gateway_ts))
    early = integrity.take(np.flatnonzero(integrity.source_ts != integrity.gateway_ts))
    for batch, shift in ((static, None), (early, -60_000), (events, 0)):
        order = np.argsort(batch.point, kind="stable")
        assert batch.point[order].tolist() == list(range(n))
        for row, (keys, _, value, q, cause) in zip(order, READINGS, strict=True):
            assert (batch.quality[row], batch.cause[row]) == (q, cause), keys
            assert (math.isnan(value) and math.isnan(batch.value[row])) or (
                batch.value[row] == value), keys
        if shift is not None:
            assert batch.source_ts[order].tolist() == [(t + shift) * 1_000_000 for t in times]
    assert (integrity.point[:n] == early.point).all(), "the events come before the static data"
    assert (events.server_ts == events.source_ts).all()
    assert ((events.gateway_ts >= before // 10**6 * 10**6) & (events.gateway_ts <= after)).all()
