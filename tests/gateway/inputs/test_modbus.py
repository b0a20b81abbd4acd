"""The Modbus driver against real servers on loopback: pymodbus (TCP and RTU through a socat
serial pair) and pyModbusTCP, a Modbus stack we did not write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)
from support.peers.hostile_modbus import liar_server
from support.peers.modbus_servers import (
    Image,
    Served,
    Sink,
    every_type_order_and_table,
    pymodbus_rtu,
    pymodbus_tcp,
    pymodbustcp,
    serial_pair,
    site,
    source,
)

from anomaly.core.batch import Batch, Quality
from gateway.inputs import quality
from gateway.inputs.modbus import responses
from gateway.inputs.modbus.bus import build_buses
from gateway.site.model import Device, Point
from gateway.status import GatewayStatus
from scadawatch.ports import free_port

READ_CODES = {1, 2, 3, 4}
FAST = {"poll_interval": 0.05, "timeout": 0.2}


def modbus_device(name: str, endpoint: dict, **kw: object) -> Device:
    protocol = "modbus-rtu" if "serial_port" in endpoint else "modbus-tcp"
    return Device(name=name, protocol=protocol, **{**FAST, **endpoint, **kw})


def float32_points(device: str, n: int, start: int = 0) -> list[Point]:
    return [Point(tag=f"{device}.f{i}", device=device, register_kind="holding",
                  address=start + 2 * i, type="float32") for i in range(n)]


@contextlib.asynccontextmanager
async def serve(kind: str, images: dict[int, Image], tmp: Path, silent: tuple[int, ...] = ()
                ) -> AsyncIterator[tuple[dict, Served | None]]:
    """A server of `kind` with `images`: (how a Device reaches it, what it saw or None)."""
    if kind == "pymodbus-tcp":
        async with pymodbus_tcp(images, silent) as served:
            yield {"port": served.port}, served
    elif kind == "pymodbus-rtu":
        with serial_pair(tmp) as (server_end, gateway_end):
            async with pymodbus_rtu(server_end, images, silent) as served:
                yield {"serial_port": gateway_end, "baudrate": 115200}, served
    else:
        assert kind == "pyModbusTCP" and not silent and list(images) == [1]
        with pymodbustcp(images[1]) as port:
            yield {"port": port}, None


def polls(sink: Sink, device_points: range | list[int]) -> list[Batch]:
    return sink.of(set(device_points))


@pytest.mark.parametrize("kind", ["pymodbus-tcp", "pyModbusTCP", "pymodbus-rtu"])
def test_round_trip_every_type_word_order_and_table(kind: str, tmp_path: Path) -> None:
    points, raw = every_type_order_and_table()
    image = Image()
    for p, v in zip(points, raw, strict=True):
        image.put(p, v)
    want = np.array([v * p.scale + p.offset for p, v in zip(points, raw, strict=True)])

    async def scenario() -> tuple[Batch, Served | None]:
        async with serve(kind, {1: image}, tmp_path) as (endpoint, served):
            sink = Sink()
            buses = build_buses(site([modbus_device("dev", endpoint)], points),
                                GatewayStatus(site="t"), sink)
            await sink.run(buses, lambda s: len(s.batches) >= 1)
            return sink.batches[0], served

    batch, served = asyncio.run(scenario())
    assert (batch.quality == Quality.GOOD).all()
    got = dict(zip(batch.point.tolist(), batch.value.tolist(), strict=True))
    wrong = [(p.tag, got[i], want[i]) for i, p in enumerate(points) if got[i] != want[i]]
    assert not wrong
    assert sorted(got) == list(range(len(points)))
    if served is not None:  # the gateway is read-only: read function codes only
        assert served.function_codes() == READ_CODES


@pytest.mark.parametrize(("ours", "theirs"), [
    (responses.HoldingRegisters, ReadHoldingRegistersResponse),
    (responses.InputRegisters, ReadInputRegistersResponse)])
@pytest.mark.parametrize("data", [
    bytes([250]) + bytes(range(250)),  # 125 registers, a full read
    bytes([2, 0xFF, 0xFE]),
    bytes([4, 0, 1, 0x80, 0]) + b"\x00",  # bytes beyond the count are not registers
    bytes([0]) + b"\x00",
])
def test_register_responses_decode_as_pymodbus_does(ours: type, theirs: type,
                                                     data: bytes) -> None:
    # The driver's one-call decode of read responses gives pymodbus' registers.
    mine, reference = ours(), theirs()
    mine.decode(data)
    reference.decode(data)
    assert list(mine.registers) == reference.registers


@pytest.mark.parametrize("data", [bytes([4, 0, 1, 2]), bytes([3, 0, 1, 2, 3])],
                         ids=["count beyond the frame", "half a register"])
def test_malformed_register_responses_are_refused(data: bytes) -> None:
    with pytest.raises(ModbusIOException):
        responses.HoldingRegisters().decode(data)


@pytest.mark.parametrize(("type_", "order", "flags"), [
    ("float32", "ABCD", ["-B"]), ("float32", "CDAB", []),
    ("int32", "ABCD", ["-B"]), ("int32", "CDAB", []),
])
def test_word_orders_mean_what_mbpoll_means(type_: str, order: str, flags: list[str]) -> None:
    """mbpoll (libmodbus) reads ABCD with `-B` and CDAB by default; so does the gateway."""
    mbpoll = shutil.which("mbpoll")
    assert mbpoll, "mbpoll is not installed (tests/run.sh installs it)"
    p = Point(tag="x", device="dev", address=4, type=type_, word_order=order)
    image = Image()
    image.put(p, source(type_, 1))

    async def scenario() -> tuple[str, Batch]:
        async with pymodbus_tcp({1: image}) as served:
            kind = "float" if type_ == "float32" else "int"
            proc = await asyncio.create_subprocess_exec(
                mbpoll, "-m", "tcp", "-p", str(served.port), "-a", "1", "-0", "-1", "-r", "4",
                "-t", f"4:{kind}", *flags, "127.0.0.1", stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            sink = Sink()
            await sink.run(build_buses(site([modbus_device("dev", {"port": served.port})], [p]),
                                       GatewayStatus(site="t"), sink),
                           lambda s: len(s.batches) >= 1)
            return out.decode(), sink.batches[0]

    out, batch = asyncio.run(scenario())
    read = re.search(r"^\[4\]:\s+(\S+)$", out, re.MULTILINE)
    assert read, out
    assert float(read[1]) == pytest.approx(source(type_, 1), rel=1e-6)  # mbpoll prints %g
    assert batch.value.tolist() == [source(type_, 1)]


@pytest.mark.parametrize("n", [1, 62, 63, 300])
def test_n_adjacent_float32_cost_ceil_n_over_62_requests(n: int) -> None:
    points = float32_points("dev", n)
    image = Image()
    for i, p in enumerate(points):
        image.put(p, i + 0.25)

    async def scenario() -> tuple[Batch, int]:
        async with pymodbus_tcp({1: image}) as served:
            sink = Sink()
            buses = build_buses(site([modbus_device("dev", {"port": served.port})], points),
                                GatewayStatus(site="t"), sink)
            await sink.run(buses, lambda s: len(s.batches) >= 1)
            return sink.batches[0], served.count(fc=3)

    batch, requests = asyncio.run(scenario())
    assert requests == math.ceil(n / 62)
    assert batch.value[np.argsort(batch.point)].tolist() == [i + 0.25 for i in range(n)]


def test_exception_response_marks_only_its_points_and_is_not_retried() -> None:
    points = float32_points("dev", 1) + float32_points("dev", 1, start=10)
    image = Image()
    image.put(points[0], 1.5)  # nothing at 10: the device answers "illegal data address"
    status = GatewayStatus(site="t")

    async def scenario() -> tuple[Sink, int]:
        async with pymodbus_tcp({1: image}) as served:
            sink = Sink()
            dev = modbus_device("dev", {"port": served.port}, retries=2)
            await sink.run(build_buses(site([dev], points), status, sink),
                           lambda s: len(s.batches) >= 3)
            return sink, served.count(fc=3)

    sink, requests = asyncio.run(scenario())
    assert requests == 2 * len(sink.batches)
    for b in sink.batches:
        by_point = {int(p): (v, q, c) for p, v, q, c in zip(b.point, b.value, b.quality,
                                                              b.cause, strict=True)}
        assert by_point[0] == (1.5, Quality.GOOD, quality.OK)
        v, q, c = by_point[1]
        assert math.isnan(v) and q == Quality.BAD
        assert c == quality.MODBUS_EXCEPTION_BASE + 2
    dev = status.devices["dev"]
    assert dev.state == "degraded"
    assert dev.request_errors_total == {"illegal_data_address": len(sink.batches)}


@pytest.mark.parametrize(("lie", "unit", "cause"), [
    ("tid_zero", 1, "invalid_response"),
    ("tid_other", 1, "invalid_response"),
    ("unit_other", 1, "invalid_response"),
    ("unit_other", 0, "invalid_response"),  # unit 0: pymodbus takes any unit's frame
    ("fc_other", 1, "invalid_response"),
    ("exception_0", 1, "modbus_exception_0"),
])
def test_a_frame_that_is_not_the_answer_is_never_a_good_reading(lie: str, unit: int,
                                                                 cause: str) -> None:
    """Well-formed frames with the registers asked for, but another transaction id, unit or
    function code (or an exception code no device may send): bad readings, named."""
    points = float32_points("dev", 2)
    status = GatewayStatus(site="t")

    async def scenario() -> Sink:
        async with liar_server(lie) as port:
            sink = Sink()
            dev = modbus_device("dev", {"port": port}, unit=unit, retries=0)
            await sink.run(build_buses(site([dev], points), status, sink),
                           lambda s: len(s.batches) >= 3)
            return sink

    sink = asyncio.run(scenario())
    readings = Batch.concat(sink.batches)
    assert (readings.quality == Quality.BAD).all() and np.isnan(readings.value).all()
    assert {quality.cause_name(int(c)) for c in readings.cause} == {cause}
    assert set(status.devices["dev"].request_errors_total) == {cause}


@pytest.mark.parametrize("kind", ["pymodbus-tcp", "pymodbus-rtu"])
def test_dead_devices_go_bad_and_do_not_hold_the_bus(kind: str, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A unit that never answers shares the live unit's bus; another device's endpoint is
    gone (closed port, missing serial port). The live unit stays good at its interval."""
    live, mute, gone = (float32_points(name, 4) for name in ("live", "mute", "gone"))
    image = Image()
    for i, p in enumerate(live):
        image.put(p, float(i))
    status = GatewayStatus(site="t")

    async def scenario() -> tuple[Sink, Served]:
        async with serve(kind, {1: image}, tmp_path, silent=(2,)) as (endpoint, served):
            dead = ({"serial_port": str(tmp_path / "no-such-tty")} if "serial_port" in endpoint
                    else {"port": free_port()})
            devices = [modbus_device("live", endpoint), modbus_device("mute", endpoint, unit=2),
                       modbus_device("gone", dead)]
            sink = Sink()
            buses = build_buses(site(devices, live + mute + gone), status, sink)
            await sink.run(buses, lambda s: len(polls(s, range(4))) >= 40, timeout=20)
            assert served is not None
            return sink, served

    with caplog.at_level(logging.INFO, logger="gateway.inputs.modbus.bus"):
        sink, served = asyncio.run(scenario())

    assert all((b.quality == Quality.GOOD).all() for b in polls(sink, range(4)))
    for points, causes in [(range(4, 8), {quality.TIMEOUT}), (range(8, 12), {quality.CONNECTION})]:
        batches = polls(sink, points)
        assert batches and all((b.quality == Quality.BAD).all() for b in batches)
        assert all(np.isnan(b.value).all() for b in batches)
        assert {int(c) for b in batches for c in b.cause} == causes
    assert {name: d.state for name, d in status.devices.items()} == {
        "live": "ok", "mute": "down", "gone": "down"}
    # Retries: its first poll tries twice (retries=1), each probe after that once.
    probes = sum(int(b.cause[0]) == quality.TIMEOUT for b in polls(sink, range(4, 8)))
    assert status.devices["mute"].request_errors_total == {"timeout": probes + 1}
    # The circuit breaker: the mute unit is asked far less often than the live one.
    assert served.count(unit=2) * 4 < served.count(unit=1)
    assert served.function_codes() <= READ_CODES
    downs = sorted(r.getMessage() for r in caplog.records
                   if r.getMessage().startswith("event=device_down"))
    assert len(downs) == 2
    for line, name, cause in zip(downs, ["gone", "mute"], ["connection", "timeout"],
                                 strict=True):
        bus = status.devices[name].bus
        assert line.startswith(f"event=device_down device={name} bus={bus} cause={cause} "
                               "backoff=")


def test_reconnects_after_the_server_restarts() -> None:
    points = float32_points("dev", 3)
    image = Image()
    for p in points:
        image.put(p, 2.0)
    port = free_port()
    status = GatewayStatus(site="t")

    def good(s: Sink) -> int:
        return sum(bool((b.quality == Quality.GOOD).all()) for b in s.batches)

    async def scenario() -> Sink:
        sink = Sink()
        buses = build_buses(site([modbus_device("dev", {"port": port})], points), status, sink)
        async with contextlib.AsyncExitStack() as first_server:
            await first_server.enter_async_context(pymodbus_tcp({1: image}, port=port))
            async with sink.running(buses):
                await sink.wait(lambda s: good(s) >= 2)
                await first_server.aclose()
                await sink.wait(lambda s: int(s.batches[-1].cause[0]) == quality.CONNECTION)
                before = good(sink)
                async with pymodbus_tcp({1: image}, port=port):
                    await sink.wait(lambda s: good(s) > before)
        return sink

    sink = asyncio.run(scenario())
    causes = [int(b.cause[0]) for b in sink.batches]
    assert causes[0] == quality.OK and causes[-1] == quality.OK
    assert quality.CONNECTION in causes
    dev = status.devices["dev"]
    assert (dev.state, dev.reconnects_total) == ("ok", 1)


@pytest.mark.parametrize("connections", [1, 2])
def test_several_connections_only_where_configured(connections: int) -> None:
    points = float32_points("a", 2) + float32_points("b", 2, start=4)
    image = Image()
    for i, p in enumerate(points):
        image.put(p, float(i))

    async def scenario() -> tuple[Sink, int]:
        async with pymodbus_tcp({1: image}) as served:
            devices = [modbus_device(n, {"port": served.port}, connections=connections)
                       for n in ("a", "b")]
            sink = Sink()
            buses = build_buses(site(devices, points), GatewayStatus(site="t"), sink)
            assert len(buses) == 1
            await sink.run(buses, lambda s: len(s.batches) >= 6)
            return sink, served.connections

    sink, opened = asyncio.run(scenario())
    assert opened == connections
    for b in sink.batches:
        assert b.value.tolist() == b.point.astype(float).tolist()


def test_batches_carry_site_indices_timestamps_and_status() -> None:
    points = [Point(tag="replay.only"), *float32_points("a", 2),
              *float32_points("b", 1), *float32_points("a", 1, start=10)]
    image = Image()
    for p in points[1:]:
        image.put(p, 7.0)
    status = GatewayStatus(site="t")

    async def scenario() -> tuple[Sink, int, int]:
        async with pymodbus_tcp({1: image}) as served:
            devices = [modbus_device(n, {"port": served.port}) for n in ("a", "b")]
            sink = Sink()
            buses = build_buses(site(devices, points), status, sink)
            t0 = time.time_ns() // 1_000_000 * 1_000_000  # Modbus stamps are to the ms
            await sink.run(buses, lambda s: len(s.batches) >= 4)
            return sink, t0, time.time_ns()

    sink, t0, t1 = asyncio.run(scenario())
    assert {frozenset(b.point.tolist()) for b in sink.batches} == {
        frozenset({1, 2, 4}), frozenset({3})}
    for b in sink.batches:
        assert {k: getattr(b, k).dtype for k in Batch.DTYPES} == {
            k: np.dtype(v) for k, v in Batch.DTYPES.items()}
        assert (t0 <= b.source_ts).all() and (b.source_ts <= b.gateway_ts).all()
        assert (b.gateway_ts <= t1).all()
        assert (b.value == 7.0).all()
    a = status.devices["a"]
    polls_a = len(sink.of({1}))
    assert (a.state, a.polls_total, a.readings_total) == ("ok", polls_a, 3 * polls_a)
    assert a.requests_total == 2 * polls_a  # addresses 0-3 and 10-11: two requests
    assert a.last_success is not None and a.bus == status.devices["b"].bus


def test_pause_spaces_the_requests_of_a_bus() -> None:
    points = float32_points("dev", 3) + float32_points("dev", 1, start=20)
    points += float32_points("dev", 1, start=40)  # three requests per poll
    image = Image()
    for p in points:
        image.put(p, 1.0)

    async def scenario() -> list[float]:
        async with pymodbus_tcp({1: image}) as served:
            sink = Sink()
            dev = modbus_device("dev", {"port": served.port}, pause=0.05)
            await sink.run(build_buses(site([dev], points), GatewayStatus(site="t"), sink),
                           lambda s: len(s.batches) >= 2)
            return served.arrivals

    arrivals = asyncio.run(scenario())
    assert len(arrivals) >= 6
    # A request leaves >= pause after the previous answer, which came after its arrival.
    assert min(np.diff(arrivals)) >= 0.05 - 0.001  # asyncio may fire a timer a tick early
