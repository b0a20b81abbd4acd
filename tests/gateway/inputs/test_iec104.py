"""The IEC 60870-5-104 client against c104's server (lib60870-C: a stack we did not write) and
a hostile station of our own on loopback; its site-file keys through check-config."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import c104
import httpx
import numpy as np
import pytest
from support.harness import api_until, comms_alarm_round_trip
from support.peers.iec104_peers import (
    HostileStation,
    asdu_frame,
    c104_station,
    certificate,
    float_object,
    nothing,
    sends,
)
from support.peers.modbus_servers import Sink, free_port

from anomaly.core.batch import Batch, Quality
from gateway.inputs import quality
from gateway.inputs.iec104 import apci
from gateway.inputs.iec104.client import build_sessions
from gateway.site.loader import ConfigError, load_site
from gateway.site.model import Device, Point, Site, SiteSection
from gateway.status import GatewayStatus
from simulators.servers.iec104_frames import cp56

LIMIT = 10.0  # seconds any wait in this file may take before it fails
CA = 7
T0 = datetime(2026, 3, 1, 6, 0, 0, 125000, tzinfo=UTC)
# Short timers: a hostile peer is found out in a second, not in the standard's 15 s.
FAST = {"t0": 1.0, "t1": 0.5, "t2": 0.2, "t3": 2.0, "poll_interval": 0.05}


def site_of(port: int, ioas: list[int], tmp_path: Path, **device: Any) -> Site:
    settings = {**FAST, "common_address": CA, **device}
    return Site(site=SiteSection(name="t", data_dir=tmp_path), devices=[
        Device(name="rtu", protocol="iec104", host="127.0.0.1", port=port, **settings)],
        points=[Point(tag=f"p{ioa}", device="rtu", ioa=ioa) for ioa in ioas])


def sessions(site: Site, sink: Sink) -> tuple[list, GatewayStatus]:
    status = GatewayStatus(site="t")
    return build_sessions(site, status, sink), status


def rows(sink: Sink) -> Batch:
    return Batch.concat(sink.batches)


def ns(t: datetime) -> int:
    return int(t.timestamp() * 1000) * 1_000_000


# --- values, qualities, timestamps -----------------------------------------------------------

SB, NT = c104.Quality.Substituted, c104.Quality.NonTopical
IV = quality.IEC104_BASE | 0x80
# type, info sent (a function of the time tag), value stored, quality, cause
READINGS: list[tuple[c104.Type, Callable[[datetime], Any], float, Quality, int]] = [
    (c104.Type.M_SP_TB_1, lambda t: c104.SingleInfo(True, recorded_at=t), 1.0, Quality.GOOD, 0),
    (c104.Type.M_DP_TB_1, lambda t: c104.DoubleInfo(c104.Double.ON, c104.Quality.Blocked,
                                                    recorded_at=t),
     2.0, Quality.UNCERTAIN, quality.IEC104_BASE | 0x10),
    (c104.Type.M_ST_TB_1, lambda t: c104.StepInfo(c104.Int7(-5), False, recorded_at=t),
     -5.0, Quality.GOOD, 0),
    (c104.Type.M_BO_TB_1, lambda t: c104.BinaryInfo(c104.Byte32(0xDEADBEEF), recorded_at=t),
     float(0xDEADBEEF), Quality.GOOD, 0),
    (c104.Type.M_ME_TD_1, lambda t: c104.NormalizedInfo(c104.NormalizedFloat(0.5),
                                                        recorded_at=t),
     0.5, Quality.GOOD, 0),
    (c104.Type.M_ME_TE_1, lambda t: c104.ScaledInfo(c104.Int16(-1234), c104.Quality.Overflow,
                                                    recorded_at=t),
     -1234.0, Quality.UNCERTAIN, quality.IEC104_BASE | 0x01),
    (c104.Type.M_ME_TF_1, lambda t: c104.ShortInfo(25.5, SB | NT, recorded_at=t),
     25.5, Quality.UNCERTAIN, quality.IEC104_BASE | 0x60),
    (c104.Type.M_ME_TF_1, lambda t: c104.ShortInfo(3.75, c104.Quality.Invalid, recorded_at=t),
     math.nan, Quality.BAD, IV),
    (c104.Type.M_IT_TB_1, lambda t: c104.BinaryCounterInfo(
        123456, c104.UInt5(3), c104.BinaryCounterQuality.Carry, recorded_at=t),
     123456.0, Quality.UNCERTAIN, quality.IEC104_BASE | 0x100),
    (c104.Type.M_ME_NC_1, lambda t: c104.ShortInfo(-0.125), -0.125, Quality.GOOD, 0),
]


def test_values_qualities_and_device_times_arrive_exactly(tmp_path: Path) -> None:
    port = free_port()
    ioas = [100 + i for i in range(len(READINGS))]
    times = [T0 + timedelta(seconds=i, milliseconds=i) for i in range(len(READINGS))]

    async def scenario() -> tuple[Batch, int, int]:
        with c104_station(port, CA, {a: r[0] for a, r in zip(ioas, READINGS, strict=True)}
                          ) as points:
            sink = Sink()
            found, status = sessions(site_of(port, ioas, tmp_path), sink)
            async with sink.running(found):
                await sink.wait(lambda s: len(rows(s)) >= len(ioas), LIMIT)  # interrogated
                sent = len(rows(sink))
                before = time.time_ns()
                for a, r, t in zip(ioas, READINGS, times, strict=True):
                    points[a].info = r[1](t)
                    points[a].transmit(cause=c104.Cot.SPONTANEOUS)
                await sink.wait(lambda s: len(rows(s)) >= sent + len(ioas), LIMIT)
                after = time.time_ns()
                assert status.devices["rtu"].state == "ok"
        return rows(sink).take(np.arange(sent, sent + len(ioas))), before, after

    batch, before, after = asyncio.run(scenario())
    by_point = {int(p): i for i, p in enumerate(batch.point)}
    for k, (kind, _, value, q, cause) in enumerate(READINGS):
        i = by_point[k]
        assert (batch.quality[i], batch.cause[i]) == (q, cause), kind
        assert (math.isnan(value) and math.isnan(batch.value[i])) or batch.value[i] == value
        if kind == c104.Type.M_ME_NC_1:  # no time tag: the receipt time
            assert before // 10**6 * 10**6 <= batch.source_ts[i] <= after
        else:
            assert batch.source_ts[i] == ns(times[k]), kind
        assert batch.server_ts[i] == batch.source_ts[i]
        assert before // 10**6 * 10**6 <= batch.gateway_ts[i] <= after


# the bit set in a CP56Time2a tag's minute octet, the cause kept, whether the tag is the time
MARKED_TAGS = [(0x80, quality.IEC104_BASE | 0x400, False),
               (0x40, quality.IEC104_BASE | 0x800, True)]


@pytest.mark.parametrize(("bit", "cause", "tag_is_time"), MARKED_TAGS, ids=["iv", "sb"])
def test_a_time_tag_marked_invalid_or_substituted(bit: int, cause: int, tag_is_time: bool,
                                                  tmp_path: Path) -> None:
    """The value is kept, uncertain; a tag marked invalid is not the time (the receipt time
    is), a substituted one is."""
    tag = bytearray(cp56(T0))
    tag[2] |= bit
    short_float = (1).to_bytes(3, "little") + struct.pack("<fB", 4.5, 0) + bytes(tag)

    async def scenario() -> tuple[Batch, int, int]:
        station = HostileStation(sends(asdu_frame(0, 36, short_float, 1, common_address=CA)))
        async with station.running():
            sink = Sink()
            found, _ = sessions(site_of(station.port, [1], tmp_path), sink)
            before = time.time_ns()
            await sink.run(found, lambda s: len(rows(s)) > 0, LIMIT)
            return rows(sink), before, time.time_ns()

    batch, before, after = asyncio.run(scenario())
    assert (batch.value[0], batch.quality[0], batch.cause[0]) == (4.5, Quality.UNCERTAIN, cause)
    if tag_is_time:
        assert batch.source_ts[0] == ns(T0)
    else:
        assert before // 10**6 * 10**6 <= batch.source_ts[0] <= after


def test_general_interrogation_counter_interrogation_and_scale(tmp_path: Path) -> None:
    """On connect: every point's value by GI (COT 20), counters by CI (COT 37)."""
    port = free_port()
    with c104_station(port, CA, {1: c104.Type.M_ME_NB_1, 2: c104.Type.M_IT_NA_1}) as points:
        points[1].info = c104.ScaledInfo(c104.Int16(1234))
        points[2].info = c104.BinaryCounterInfo(
            77, c104.UInt5(1), c104.BinaryCounterQuality())  # c104 wants all three
        site = site_of(port, [], tmp_path)
        site = site.model_copy(update={"points": [
            Point(tag="flow", device="rtu", ioa=1, typeid="M_ME_NB_1", scale=0.1, offset=1.0),
            Point(tag="energy", device="rtu", ioa=2, typeid="M_IT_NA_1")]})
        sink = Sink()

        async def scenario() -> None:
            found, _ = sessions(site, sink)
            await sink.run(found, lambda s: {0, 1} <= set(rows(s).point.tolist()), LIMIT)

        asyncio.run(scenario())
    batch = rows(sink)
    assert batch.value[batch.point == 0][0] == pytest.approx(124.4)
    assert 77.0 in batch.value[batch.point == 1]


# --- recovery --------------------------------------------------------------------------------

def test_station_restart_is_one_outage_no_duplicate_and_a_fresh_interrogation(
        tmp_path: Path) -> None:
    port = free_port()
    types = {1: c104.Type.M_ME_TF_1, 2: c104.Type.M_ME_NC_1}
    tagged = T0 + timedelta(seconds=30)

    def serve(points: dict[int, c104.Point], value: float) -> None:
        points[1].info = c104.ShortInfo(value, recorded_at=tagged)
        points[2].value = value

    async def scenario() -> tuple[Batch, GatewayStatus]:
        sink = Sink()
        found, status = sessions(site_of(port, [1, 2], tmp_path), sink)
        async with sink.running(found):
            with c104_station(port, CA, types) as points:
                serve(points, 1.5)
                points[1].transmit(cause=c104.Cot.SPONTANEOUS)
                await sink.wait(lambda s: (rows(s).value == 1.5).sum() >= 2, LIMIT)
            await sink.wait(lambda s: (rows(s).quality == Quality.BAD).sum() == 2, LIMIT)
            assert status.devices["rtu"].state == "down"
            with c104_station(port, CA, types) as points:
                serve(points, 1.5)  # the same event, as a station holds it after a restart
                await sink.wait(lambda s: status.devices["rtu"].reconnects_total == 1
                                and (rows(s).point[-1:] == 1).all(), LIMIT)
                points[2].value = 2.5
                points[2].transmit(cause=c104.Cot.SPONTANEOUS)
                await sink.wait(lambda s: 2.5 in rows(s).value, LIMIT)
        return rows(sink), status

    batch, status = asyncio.run(scenario())
    bad = batch.quality == Quality.BAD
    assert batch.cause[bad].tolist() == [quality.CONNECTION] * 2
    assert np.isnan(batch.value[bad]).all()
    tag = batch.point == 0
    assert batch.source_ts[tag & ~bad].tolist() == [ns(tagged)], "an event stored twice"
    other = batch.value[(batch.point == 1) & ~bad].tolist()
    assert other[0] == 1.5 and other[-2:] == [1.5, 2.5]  # GI before and after, then the report
    assert status.devices["rtu"].state == "ok" and status.devices["rtu"].reconnects_total == 1


def test_an_unreachable_station_is_marked_once_and_retried(tmp_path: Path) -> None:
    async def scenario() -> tuple[Sink, GatewayStatus]:
        sink = Sink()
        found, status = sessions(site_of(free_port(), [1], tmp_path), sink)
        async with sink.running(found):
            await asyncio.sleep(0.5)
            while status.devices["rtu"].poll_errors_total < 3:
                await asyncio.sleep(0.05)
        return sink, status

    sink, status = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert rows(sink).cause.tolist() == [quality.CONNECTION]
    assert status.devices["rtu"].state == "down"
    assert "cannot connect to 127.0.0.1" in (status.devices["rtu"].last_error or "")


# --- hostile stations ------------------------------------------------------------------------

GOOD = asdu_frame(0, 13, float_object(1, 4.5), 1, common_address=CA)
# behaviour, confirms STARTDT, cause of the outage, words of the device's last error
HOSTILE = [
    (sends(b"\x68\x02\x00\x00"), True, quality.INVALID_RESPONSE, "APDU length 2"),
    (sends(b"\x68\xfe\x00\x00\x00\x00"), True, quality.INVALID_RESPONSE,
     "APDU length 254, outside 4..253"),
    (sends(b"\x68\x05\x01\x00\x00\x00\x00"), True, quality.INVALID_RESPONSE,
     "S frame of length 5, not 4"),
    (sends(b"\x68\x04\x00\x00\x00\x00"), True, quality.INVALID_RESPONSE,
     "I frame without an ASDU"),
    (sends(b"\x15" + GOOD[1:]), True, quality.INVALID_RESPONSE, "starts with 0x15"),
    (sends(asdu_frame(5, 13, float_object(1, 4.5), 1, common_address=CA)), True,
     quality.INVALID_RESPONSE, "sequence error: I frame N(S)=5, expected 0"),
    (sends(apci.s_frame(9)), True, quality.INVALID_RESPONSE,
     "N(R)=9 acknowledges I frames never sent"),
    (sends(apci.u_frame(apci.STARTDT_ACT_BIT)), True, quality.INVALID_RESPONSE,
     "STARTDT act from the controlled station"),
    (nothing, True, quality.TIMEOUT, "t1 (0.5 s) expired: I frame N(S)=0 not acknowledged"),
    (nothing, False, quality.TIMEOUT, "t1 (0.5 s) expired: STARTDT act not confirmed"),
]


@pytest.mark.parametrize(("behaviour", "confirm", "cause", "words"), HOSTILE,
                         ids=["length", "too-long", "s-length", "empty-i", "start", "ns", "nr",
                              "startdt", "no-ack", "no-startdt"])
def test_a_hostile_station_ends_as_a_clear_cause(behaviour: Any, confirm: bool, cause: int,
                                                 words: str, tmp_path: Path) -> None:
    async def scenario() -> tuple[Batch, str, str | None]:
        station = HostileStation(behaviour, confirm_start=confirm)
        async with station.running():
            sink = Sink()
            found, status = sessions(site_of(station.port, [1], tmp_path), sink)
            state, error = await sink.fault_then_reconnect(
                found, status.devices["rtu"], lambda: station.connections, LIMIT)
        return rows(sink), state, error

    batch, state, error = asyncio.run(scenario())
    assert batch.cause[0] == cause and np.isnan(batch.value[0])
    assert state == "down" and words in (error or "")


@pytest.mark.parametrize(("frame", "words"), [
    (asdu_frame(0, 99, b"\x01\x00\x00\x00", 1, common_address=CA), "unknown type id 99"),
    (asdu_frame(0, 13, float_object(1, 1.0), 3, common_address=CA),
     "3 objects of 8 octets need 24, the ASDU carries 8"),
], ids=["type-id", "object-count"])
def test_an_undecodable_asdu_is_skipped_and_the_link_kept(frame: bytes, words: str,
                                                           tmp_path: Path) -> None:
    async def scenario() -> tuple[Batch, GatewayStatus]:
        later = asdu_frame(1, 13, float_object(1, 4.5), 1, common_address=CA)
        station = HostileStation(sends(frame, later))
        async with station.running():
            sink = Sink()
            found, status = sessions(site_of(station.port, [1], tmp_path), sink)
            await sink.run(found, lambda s: len(rows(s)) > 0, LIMIT)
        return rows(sink), status

    batch, status = asyncio.run(scenario())
    assert batch.value.tolist() == [4.5] and batch.quality.tolist() == [Quality.GOOD]
    device = status.devices["rtu"]
    assert words in (device.last_error or "") and device.request_errors_total == {
        "invalid_asdu": 1}


# --- site file ---------------------------------------------------------------------------------

DEVICE = 'name = "rtu"\nprotocol = "iec104"\nhost = "10.0.0.9"\ncommon_address = 3'


@pytest.mark.parametrize(("device", "points", "reason"), [
    ("", 'tag = "a"\ndevice = "rtu"',
     "points[0].ioa: required for a point on IEC 104 device 'rtu'"),
    ("", 'tag = "a"\ndevice = "rtu"\nioa = 16777216', "points[0].ioa: must be at most 16777215"),
    ("", 'tag = "a"\ndevice = "rtu"\nioa = 1\ntypeid = "M_ME_XX_1"',
     "points[0].typeid: 'M_ME_XX_1' is not allowed"),
    ("", 'tag = "a"\ndevice = "rtu"\nioa = 5\ntypeid = "M_ME_NC_1"\n[[points]]\ntag = "b"\n'
         'device = "rtu"\nioa = 5\ntypeid = "M_ME_TF_1"',
     "points[1].ioa: IOA 5 at common address 3 of device 'rtu' is also 'a' (points[0]), "
     "type M_ME_NC_1"),
    ("t1 = 5\nt2 = 10", 'tag = "a"\ndevice = "rtu"\nioa = 1',
     "devices[0].t2: 10 s must be below t1 (5 s)"),
    ("k = 4\nw = 8", 'tag = "a"\ndevice = "rtu"\nioa = 1', "devices[0].w: 8 must not be above k"),
    ("time_zone = \"Mars/Olympus\"", 'tag = "a"\ndevice = "rtu"\nioa = 1',
     "devices[0].time_zone: unknown time zone 'Mars/Olympus'"),
    ("common_address = 0", 'tag = "a"\ndevice = "rtu"\nioa = 1',
     "devices[0].common_address: must be at least 1"),
    ('tls_cert = "gw.pem"', 'tag = "a"\ndevice = "rtu"\nioa = 1',
     "devices[0].tls_key: required with tls_cert"),
    ('tls_ca = "ca.pem"', 'tag = "a"\ndevice = "rtu"\nioa = 1', "ca.pem: file not found"),
], ids=["no-ioa", "ioa-range", "typeid", "same-ioa", "t2", "w", "time-zone", "ca", "tls-pair",
        "tls-file"])
def test_iec104_settings_are_checked(device: str, points: str, reason: str,
                                     tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    body = DEVICE.replace("common_address = 3", device) if "common_address" in device else (
        f"{DEVICE}\n{device}")
    path.write_text(f'[site]\nname = "t"\n[[devices]]\n{body}\n[[points]]\n{points}\n')
    with pytest.raises(ConfigError) as e:
        load_site(path)
    assert reason in str(e.value)


def test_an_iec104_device_defaults_to_port_2404_and_the_standard_timers(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "t"\n[[devices]]\n{DEVICE}\n[[points]]\ntag = "a"\n'
                    'device = "rtu"\nioa = 1\n')
    d = load_site(path).devices[0]
    assert (d.port, d.t0, d.t1, d.t2, d.t3, d.k, d.w) == (2404, 30, 15, 10, 20, 12, 8)
    assert d.bus == "iec104:10.0.0.9:2404"


# --- end to end --------------------------------------------------------------------------------

def test_gateway_stores_iec104_readings_and_the_api_serves_them(tmp_path: Path) -> None:
    port = free_port()
    with c104_station(port, CA, {11: c104.Type.M_ME_TF_1}) as points:
        points[11].info = c104.ShortInfo(42.25, recorded_at=T0)

        async def value(http: httpx.AsyncClient) -> dict | None:
            (r,) = (await http.get("/api/v1/latest")).json()["readings"]
            return r if r["value"] is not None else None

        got = asyncio.run(api_until(site_of(port, [11], tmp_path), value))
    assert got["value"] == 42.25 and got["quality"] == "good"
    assert got["source_ts"].startswith("2026-03-01T06:00:00.125")


def test_the_plugin_sample_site_file_passes_the_checks() -> None:
    site = load_site(Path(__file__).parents[3] / "gateway/inputs/iec104/sample.toml")
    assert {p.typeid for p in site.points} == {"M_ME_NC_1", "M_ME_NB_1", "M_DP_NA_1",
                                               "M_IT_NA_1"}


# local wall time of a CP56Time2a tag (y, mo, d, h, mi), SU bit, the UTC instant it means
BERLIN = [
    ((2026, 1, 15, 12, 0), False, datetime(2026, 1, 15, 11, 0, tzinfo=UTC)),
    ((2026, 7, 15, 12, 0), True, datetime(2026, 7, 15, 10, 0, tzinfo=UTC)),
    ((2026, 10, 25, 2, 30), True, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # first 02:30
    ((2026, 10, 25, 2, 30), False, datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),  # second
]


@pytest.mark.parametrize(("local", "summer", "utc"), BERLIN)
def test_device_time_in_a_local_zone_with_summer_time(local: tuple[int, ...], summer: bool,
                                                      utc: datetime) -> None:
    from zoneinfo import ZoneInfo

    from gateway.inputs.iec104.asdu import cp56

    y, mo, d, h, mi = local
    tag = np.array([[0xE8, 0x03, mi, h | (0x80 if summer else 0), d, mo, y - 2000]], np.uint8)
    when, flags = cp56(tag, ZoneInfo("Europe/Berlin"))
    assert when.tolist() == [ns(utc) + 1_000_000_000] and flags.tolist() == [0]


def test_readings_are_acknowledged_once_stored_and_stop_sends_stopdt(tmp_path: Path) -> None:
    """A station drops what we acknowledge: no S frame before the spool has the readings."""
    frames = [asdu_frame(n, 13, float_object(1, float(n)), 1, common_address=CA)
              for n in range(3)]

    async def scenario() -> tuple[list, list, list]:
        station = HostileStation(sends(*frames))
        stored = asyncio.Event()
        release = asyncio.Event()
        batches: list[Batch] = []

        async def slow_spool(batch: Batch) -> None:
            await release.wait()
            batches.append(batch)
            stored.set()

        async with station.running():
            site = site_of(station.port, [1], tmp_path, t1=5.0, t2=0.3, w=2)
            (session,) = build_sessions(site, GatewayStatus(site="t"), slow_spool)
            task = asyncio.create_task(session.run())
            await asyncio.sleep(1.0)  # past t2 and w: the station would have its S frame
            before = [h for h in station.heard if h[0] == "S"]
            release.set()
            await asyncio.wait_for(stored.wait(), LIMIT)
            while ("S", 0, 3) not in station.heard:
                await asyncio.sleep(0.02)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return before, station.heard, batches

    before, heard, batches = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert before == []
    assert Batch.concat(batches).value.tolist() == [0.0, 1.0, 2.0]
    assert heard[-1] == ("U", apci.STOPDT_ACT_BIT, 0)


def test_tls_with_certificates_checked_both_ways(tmp_path: Path) -> None:
    """IEC 62351-3: c104's server accepts only our certificate; we only its."""
    station_cert, station_key = certificate(tmp_path, "station")
    our_cert, our_key = certificate(tmp_path, "gateway")
    stranger_cert, _ = certificate(tmp_path, "stranger")
    tls = c104.TransportSecurity(validate=True, only_known=True)
    tls.set_certificate(cert=str(station_cert), key=str(station_key))
    tls.set_ca_certificate(cert=str(our_cert))
    tls.add_allowed_remote_certificate(cert=str(our_cert))
    port = free_port()

    async def read(ca: Path, cert: Path | None = our_cert, key: Path | None = our_key
                   ) -> tuple[Batch, GatewayStatus]:
        sink = Sink()
        site = site_of(port, [1], tmp_path, tls_ca=ca, tls_cert=cert, tls_key=key)
        found, status = sessions(site, sink)
        await sink.run(found, lambda s: len(s.batches) > 0, LIMIT)
        return rows(sink), status

    with c104_station(port, CA, {1: c104.Type.M_ME_NC_1}, tls) as points:
        points[1].value = 6.5
        trusted, _ = asyncio.run(read(station_cert))
        refused, status = asyncio.run(read(stranger_cert))
        anonymous, _ = asyncio.run(read(station_cert, None, None))
    assert trusted.value.tolist() == [6.5]
    assert refused.cause.tolist() == [quality.CONNECTION]
    assert "TLS with 127.0.0.1" in (status.devices["rtu"].last_error or "")
    assert anonymous.quality.tolist() == [Quality.BAD]  # the station wants our certificate


def test_a_station_down_raises_a_comms_alarm_that_clears_when_it_is_back(
        tmp_path: Path) -> None:
    """Through the whole gateway: outage rows -> the anomaly engine's `comms` alarm."""
    port = free_port()
    types = {1: c104.Type.M_ME_NC_1, 2: c104.Type.M_SP_NA_1}
    raised, after = asyncio.run(comms_alarm_round_trip(
        site_of(port, [1, 2], tmp_path), "rtu", lambda: c104_station(port, CA, types), LIMIT))
    assert [(a["device"], a["tags"]) for a in raised] == [("rtu", ["p1", "p2"])]
    assert [(a["id"], a["active"]) for a in after] == [(raised[0]["id"], False)]
