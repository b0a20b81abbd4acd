"""The DNP3 master (dnp3py) against opendnp3's outstation (yadnp3: a stack we did not write)
and a hostile outstation of our own on loopback; its site-file keys through check-config."""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import opendnp3 as o
import pytest
from support.harness import comms_alarm_round_trip
from support.peers.dnp3_peers import (
    HostileOutstation,
    nothing,
    opendnp3_outstation,
    responds,
    short_length,
    wrong_sequence,
)
from support.peers.modbus_servers import Sink, free_port

from anomaly.core.batch import Batch, Quality
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


def test_unsolicited_responses_time_sync_and_the_restart_indication(tmp_path: Path) -> None:
    """The outstation asks for time (IIN1.4) and says it restarted (IIN1.7): its clock is set
    once, its restart acknowledged once (no integrity poll after the first); a change comes
    unsolicited, long before an event poll would ask. Link addresses other than the
    defaults, on both ends."""
    port = free_port()
    keys = [{**COUNTER, "index": 0}, {**BINARY, "index": 0}]

    async def scenario() -> tuple[Batch, Any, int, int]:
        with opendnp3_outstation(port, need_time=True, address=1024, master=3) as outstation:
            sink = Sink()
            site = site_of(port, keys, tmp_path, poll_interval=600, master_address=3,
                           outstation_address=1024)
            found, _ = sessions(site, sink)
            async with sink.running(found):
                await sink.wait(lambda s: len(rows(s)) >= 2, LIMIT)  # the integrity poll
                before = time.time_ns()
                outstation.update((o.Counter(9, flags(o.CounterQuality.ONLINE)), 0))
                await sink.wait(lambda s: 9.0 in rows(s).value, LIMIT)
                after = time.time_ns()
                await asyncio.sleep(0.5)  # time for a wrong second integrity poll
            return rows(sink), outstation.application, before, after

    batch, application, before, after = asyncio.run(scenario())
    # integrity (g1, g20), then the unsolicited event; no second integrity poll
    assert batch.point.tolist() == [1, 0, 0]
    assert batch.quality[:2].tolist() == [Quality.BAD] * 2  # never set since the restart
    assert batch.cause[:2].tolist() == [quality.dnp3(quality.DNP3_BINARY, 0x02),
                                        quality.dnp3(quality.DNP3_COUNTER, 0x02)]
    assert before <= batch.source_ts[2] <= after  # g22v1 has no time: the receipt time
    assert len(application.written) == 1 and not application.need_time
    assert 0 <= application.written_at[0] - application.written[0] < 1000


def test_outstation_restart_is_one_outage_no_duplicate_and_a_fresh_integrity_poll(
        tmp_path: Path) -> None:
    port = free_port()
    keys = [{**ANALOG, "index": 0}, {**ANALOG, "index": 1}]
    tagged = T0 + 30_000

    def serve(outstation: Any) -> None:  # an event as a station holding it across a restart
        outstation.update((o.Analog(1.5, flags(ON), when(tagged)), 0),
                          (o.Analog(2.25, flags(ON), when(tagged)), 1))

    async def scenario() -> tuple[Batch, GatewayStatus]:
        sink = Sink()
        found, status = sessions(site_of(port, keys, tmp_path, unsolicited=False), sink)
        async with sink.running(found):
            with opendnp3_outstation(port) as outstation:
                serve(outstation)
                await sink.wait(lambda s: (rows(s).value == 1.5).sum() >= 2, LIMIT)
            await sink.wait(lambda s: (rows(s).quality == Quality.BAD).sum() == 2, LIMIT)
            assert status.devices["rtu"].state == "down"
            with opendnp3_outstation(port) as outstation:
                serve(outstation)
                await sink.wait(lambda s: status.devices["rtu"].reconnects_total == 1
                                and (rows(s).value == 2.25).sum() >= 2, LIMIT)
                outstation.update((o.Analog(3.75, flags(ON), when(tagged + 1000)), 0))
                await sink.wait(lambda s: 3.75 in rows(s).value, LIMIT)
        return rows(sink), status

    batch, status = asyncio.run(scenario())
    bad = batch.quality == Quality.BAD
    assert batch.cause[bad].tolist() == [quality.CONNECTION] * 2
    events = batch.source_ts[(batch.point == 0) & ~bad & (batch.source_ts != batch.gateway_ts)]
    assert events.tolist() == [tagged * 10**6, (tagged + 1000) * 10**6], "an event stored twice"
    statics = batch.value[(batch.point == 1) & ~bad & (batch.source_ts == batch.gateway_ts)]
    assert statics.tolist() == [2.25, 2.25]  # an integrity poll before and after the restart
    assert status.devices["rtu"].state == "ok" and status.devices["rtu"].reconnects_total == 1


def test_an_unreachable_outstation_is_marked_once_and_retried(tmp_path: Path) -> None:
    async def scenario() -> tuple[Sink, GatewayStatus]:
        sink = Sink()
        found, status = sessions(site_of(free_port(), [{**ANALOG, "index": 0}], tmp_path),
                                 sink)
        async with sink.running(found):
            while status.devices["rtu"].poll_errors_total < 3:
                await asyncio.sleep(0.05)
        return sink, status

    sink, status = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert rows(sink).cause.tolist() == [quality.CONNECTION]
    assert status.devices["rtu"].state == "down"
    assert "cannot connect to 127.0.0.1" in (status.devices["rtu"].last_error or "")


# --- hostile outstations ---------------------------------------------------------------------

FLOAT_0 = bytes([30, 5, 0x00, 0, 0]) + b"\x01" + struct.pack("<f", 4.5)  # g30v5 index 0
# behaviour, cause of the outage, words of the device's last error
HOSTILE = [
    (responds(FLOAT_0, crc_ok=False), quality.INVALID_RESPONSE, "formed no valid response"),
    (short_length, quality.INVALID_RESPONSE, "formed no valid response"),
    (wrong_sequence, quality.INVALID_RESPONSE, "formed no valid response"),
    (nothing, quality.TIMEOUT, "no response within 0.5 s"),
]


@pytest.mark.parametrize(("behaviour", "cause", "words"), HOSTILE,
                         ids=["crc", "length", "sequence", "silent"])
def test_a_hostile_outstation_ends_as_a_clear_cause(behaviour: Any, cause: int, words: str,
                                                    tmp_path: Path) -> None:
    async def scenario() -> tuple[Batch, str, str | None]:
        peer = HostileOutstation(behaviour)
        async with peer.running():
            sink = Sink()
            site = site_of(peer.port, [{**ANALOG, "index": 0}], tmp_path, unsolicited=False)
            found, status = sessions(site, sink)
            state, error = await sink.fault_then_reconnect(
                found, status.devices["rtu"], lambda: peer.connections, LIMIT)
        return rows(sink), state, error

    batch, state, error = asyncio.run(scenario())
    assert batch.cause.tolist() == [cause] and np.isnan(batch.value[0])
    assert state == "down" and words in (error or "")


@pytest.mark.parametrize(("answer", "error", "words"), [
    # dnp3py cannot size an object it has no layout for (g50v4 in opendnp3's class 0 was one)
    (responds(FLOAT_0, bytes([99, 1, 0x00, 0, 0, 0xAA, 0xBB])), "unknown_object",
     "cut short at group 99 variation 1"),
    (responds(FLOAT_0, iin=0x0200), "request_refused",  # IIN2.1 object unknown
     "the outstation refused READ g32v7, g60v2, g60v3, g60v4: object unknown (IIN2.1)"),
], ids=["unknown-object", "refused"])
def test_what_dnp3py_cannot_read_is_named_and_the_link_kept(answer: Any, error: str,
                                                            words: str, tmp_path: Path) -> None:
    """The values before the gap are stored; the gap is counted and named; no reconnect."""
    async def scenario() -> tuple[Batch, GatewayStatus, int]:
        peer = HostileOutstation(answer)
        async with peer.running():
            sink = Sink()
            site = site_of(peer.port, [{**ANALOG, "index": 0}], tmp_path, unsolicited=False)
            found, status = sessions(site, sink)
            await sink.run(found, lambda s: len(rows(s)) >= 2, LIMIT)  # two polls' values
            return rows(sink), status, peer.connections

    batch, status, connections = asyncio.run(scenario())
    assert batch.value.tolist() == [4.5, 4.5] and connections == 1
    device = status.devices["rtu"]
    assert device.state == "ok" and device.request_errors_total[error] >= 2
    assert words in (device.last_error or "")


# --- site file ---------------------------------------------------------------------------------

DEVICE = 'name = "rtu"\nprotocol = "dnp3"\nhost = "10.0.0.9"'
A = 'tag = "a"\ndevice = "rtu"\ngroup = 30\nvariation = 5\nindex = 5'


@pytest.mark.parametrize(("device", "points", "reason"), [
    ("", 'tag = "a"\ndevice = "rtu"\nindex = 1',
     "points[0].group: required for a point on DNP3 device 'rtu'"),
    ("", 'tag = "a"\ndevice = "rtu"\ngroup = 30', "points[0].index: required for a point on "
     "DNP3 device 'rtu'"),
    ("", 'tag = "a"\ndevice = "rtu"\ngroup = 31\nindex = 0',
     "points[0].group: 31 is not a group the master reads: 1 (binary input)"),
    ("", 'tag = "a"\ndevice = "rtu"\ngroup = 30\nvariation = 7\nindex = 0',
     "points[0].variation: g30v7 is not a static analog input variation the master reads: "
     "give one of 0, 1, 2, 3, 4, 5, 6"),
    ("", 'tag = "a"\ndevice = "rtu"\ngroup = 1\nevent_variation = 4\nindex = 0',
     "points[0].event_variation: g2v4 is not a binary input event variation: give one of "
     "1, 2, 3"),
    ("", 'tag = "a"\ndevice = "rtu"\ngroup = 30\nindex = 65536',
     "points[0].index: must be at most 65535"),
    ("", f'{A}\n[[points]]\ntag = "b"\ndevice = "rtu"\ngroup = 30\nvariation = 5\nindex = 5',
     "points[1].index: group 30 index 5 of device 'rtu' is also 'a' (points[0])"),
    ("", f'{A}\n[[points]]\ntag = "b"\ndevice = "rtu"\ngroup = 30\nvariation = 1\nindex = 6',
     "points[1].variation: 1 differs from 5 of 'a' (points[0]): the master reads all of "
     "group 30 of device 'rtu' in one variation"),
    ("master_address = 4\noutstation_address = 4", A,
     "devices[0].outstation_address: 4 is also the master_address"),
    ("outstation_address = 65520", A, "devices[0].outstation_address: must be at most 65519"),
], ids=["no-group", "no-index", "group", "variation", "event-variation", "index-range",
        "same-index", "two-variations", "same-address", "address-range"])
def test_dnp3_settings_are_checked(device: str, points: str, reason: str,
                                   tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "t"\n[[devices]]\n{DEVICE}\n{device}\n[[points]]\n'
                    f'{points}\n')
    with pytest.raises(ConfigError) as e:
        load_site(path)
    assert reason in str(e.value)


def test_a_dnp3_device_defaults_to_port_20000_and_the_usual_addresses(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "t"\n[[devices]]\n{DEVICE}\n[[points]]\n{A}\n')
    d = load_site(path).devices[0]
    assert (d.port, d.master_address, d.outstation_address, d.integrity_interval) == (
        20000, 1, 10, 3600)
    assert d.bus == "dnp3:10.0.0.9:20000"


def test_the_plugin_sample_site_file_passes_the_checks() -> None:
    site = load_site(Path(__file__).parents[3] / "gateway/inputs/dnp3/sample.toml")
    assert {p.group for p in site.points} == {1, 3, 20, 30}


# --- end to end --------------------------------------------------------------------------------

def test_an_outstation_down_raises_a_comms_alarm_that_clears_when_it_is_back(
        tmp_path: Path) -> None:
    """Through the whole gateway: outage rows -> the anomaly engine's `comms` alarm."""
    port = free_port()

    @contextlib.contextmanager
    def serving() -> Iterator[None]:  # with good values: opendnp3's own start as RESTART
        with opendnp3_outstation(port) as outstation:
            outstation.update((o.Analog(5.5, flags(ON)), 0),
                              (o.Binary(True, flags(o.BinaryQuality.ONLINE)), 1))
            yield

    site = site_of(port, [{**ANALOG, "index": 0}, {**BINARY, "index": 1}], tmp_path)
    raised, after = asyncio.run(comms_alarm_round_trip(site, "rtu", serving, LIMIT))
    assert [(a["device"], a["tags"]) for a in raised] == [("rtu", ["p0", "p1"])]
    assert [(a["id"], a["active"]) for a in after] == [(raised[0]["id"], False)]

