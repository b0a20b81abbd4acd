"""A simulated site served live: Modbus TCP read by mbpoll (a client we did not write) and OPC UA
read by asyncua's client give the same values for the same simulated time, and comms faults and
dropouts show on both as documented in simulators/servers/modbus_server.py and opcua_server.py.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pytest
from asyncua import Client, ua
from support.peers.modbus_servers import encode

from scadawatch.ports import free_port
from simulators.scenario import MIN_OUTAGE
from simulators.serve import serve
from simulators.servers.modbus_server import TABLES, RegisterImage
from simulators.servers.opcua_server import namespace_uri
from simulators.signals import Signal
from simulators.site import build_site

if TYPE_CHECKING:
    from conftest import ServedSite

MBPOLL_TABLE = {"coil": "0", "discrete": "1", "input": "3", "holding": "4"}
MBPOLL_TYPE = {"bool": "", "int16": "", "uint16": "", "int32": ":int", "float32": ":float"}
MBPOLL_WORDS = {"ABCD": ["-B"], "CDAB": []}  # mbpoll's 32-bit default is CDAB
WIDTH = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "float32": 2}
FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}  # read function codes
READING = re.compile(r"^\[(\d+)\]:\s+(\S+)", re.M)
TIMEOUT_TEXT = "Connection timed out"
FAILURE_TEXT = "Slave device or server failure"  # libmodbus' text for exception 0x04


def mbpoll(port: int, unit: int, register: str, type_: str, word_order: str, address: int,
           count: int, timeout: float = 1.0) -> subprocess.CompletedProcess[str]:
    if type_ not in MBPOLL_TYPE or (WIDTH[type_] == 2 and word_order not in MBPOLL_WORDS):
        raise AssertionError(f"mbpoll cannot read {type_} in word order {word_order}")
    words = MBPOLL_WORDS[word_order] if WIDTH[type_] == 2 else []
    return subprocess.run(
        ["mbpoll", "-m", "tcp", "-p", str(port), "-a", str(unit), "-0", "-1", "-o", f"{timeout:g}",
         "-t", MBPOLL_TABLE[register] + MBPOLL_TYPE[type_], "-r", str(address), "-c", str(count),
         *words, "127.0.0.1"],
        capture_output=True, text=True, timeout=timeout + 20, stdin=subprocess.DEVNULL)


def read_modbus(port: int, signals: Sequence[Signal]) -> dict[str, float]:
    """Each signal's value as mbpoll decodes it, raw (before scale); one mbpoll per run of
    contiguous signals of one unit, table, type and word order."""
    runs: list[list[Signal]] = []
    for s in sorted(signals, key=lambda s: (s.unit_id, s.register, s.address)):
        last = runs[-1][-1] if runs else None
        if (last is not None and len(runs[-1]) < 60
                and (last.unit_id, last.register, last.type, last.word_order)
                == (s.unit_id, s.register, s.type, s.word_order)
                and last.address + WIDTH[last.type] == s.address):  # type: ignore[operator]
            runs[-1].append(s)
        else:
            runs.append([s])
    out: dict[str, float] = {}
    for run in runs:
        first = run[0]
        done = mbpoll(port, first.unit_id, first.register, first.type, first.word_order,
                      first.address, len(run))  # type: ignore[arg-type]
        assert done.returncode == 0, f"{first.tag}: {done.stdout[-300:]} {done.stderr}"
        got = {int(a): float(v) for a, v in READING.findall(done.stdout)}
        for s in run:
            raw = got[s.address]  # type: ignore[index]
            out[s.tag] = raw - 65536 if s.type == "int16" and raw > 32767 else raw
    return out


def read_opcua(served: ServedSite, tags: Sequence[str]) -> dict[str, ua.DataValue]:
    async def read() -> list[ua.DataValue]:
        async with Client(served.opcua_endpoint, timeout=10) as client:
            ns = await client.get_namespace_index(namespace_uri(served.site.name))
            nodes = [client.get_node(ua.NodeId(tag, ns)) for tag in tags]
            return await client.read_attributes(nodes)

    return dict(zip(tags, asyncio.run(read()), strict=True))


def assert_same(sig: Signal, modbus: float, opcua: float) -> None:
    """mbpoll prints 6 significant digits; int16 registers hold value/scale rounded."""
    if sig.type == "bool":
        assert modbus == (opcua != 0), sig.tag
    elif sig.type == "float32":
        assert modbus == pytest.approx(opcua, rel=1e-5, abs=1e-6), sig.tag
    else:
        assert abs(modbus * sig.scale - opcua) <= sig.scale / 2 + 1e-9, sig.tag


@pytest.mark.parametrize("name", ["water", "grid"])
def test_modbus_and_opcua_serve_the_same_sample(
        serve_site: Callable[..., ServedSite], name: str) -> None:
    served = serve_site(name)  # frozen clock: both clients read the sample at the start
    signals = served.site.signals
    modbus = read_modbus(served.modbus_port, signals)
    opcua = read_opcua(served, [s.tag for s in signals])

    layouts = set()
    for s in signals:
        dv = opcua[s.tag]
        assert dv.StatusCode.is_good(), s.tag
        assert dv.SourceTimestamp == served.site.start, s.tag
        assert_same(s, modbus[s.tag], dv.Value.Value)
        layouts.add((s.register, s.type, s.word_order if WIDTH[s.type] == 2 else "-"))
    # Every table, type and word order the site serves was read and compared.
    assert {("coil", "bool", "-"), ("holding", "float32", "ABCD"),
            ("input", "float32", "CDAB")} <= layouts
    units = {s.unit_id for s in signals}
    assert {u for u, fc in served.server.modbus.requests} == units


@dataclass
class FaultyWater:
    served: ServedSite
    devices: dict[str, str]  # role (silent, exception, ok, dropout) -> Modbus device


@pytest.fixture(scope="module")
def faulty_water(serve_site: Callable[..., ServedSite],
                 tmp_path_factory: pytest.TempPathFactory) -> FaultyWater:
    """Water site, frozen, with a silent unit, an exception unit, a healthy unit, and a unit
    whose float32 and int16 sensors drop out from 2 min on."""
    import tomli_w

    probe = build_site("water", "normal", seed=1, start=datetime.now(UTC), step=60.0)
    types = {d: {s.type for s in probe.signals if s.device == d} for d in probe.devices}
    dropout = next(d for d, t in types.items() if {"float32", "int16"} <= t)
    silent, failing, healthy = [d for d in probe.devices if d != dropout][:3]
    events = [{"kind": "comms", "target": silent, "start": "0s", "duration": "1d",
               "mode": "silent"},
              {"kind": "comms", "target": failing, "start": "0s", "duration": "1d",
               "mode": "exception"}]
    events += [{"kind": "dropout", "target": _first(probe.signals, dropout, t).tag,
                "start": "2min", "duration": "1h"} for t in ("float32", "int16")]
    path = tmp_path_factory.mktemp("scenario") / "faults.toml"
    path.write_text(tomli_w.dumps({"water": {"events": events}}), encoding="utf-8")
    return FaultyWater(serve_site("water", path), {"silent": silent, "exception": failing,
                                                   "ok": healthy, "dropout": dropout})


def _first(signals: Sequence[Signal], device: str, type_: str) -> Signal:
    return next(s for s in signals if s.device == device and s.type == type_)


@pytest.mark.parametrize(("role", "error", "status"), [
    ("silent", TIMEOUT_TEXT, ua.StatusCodes.BadCommunicationError),
    ("exception", FAILURE_TEXT, ua.StatusCodes.BadCommunicationError),
    ("ok", None, ua.StatusCodes.Good),
    ("unknown unit", TIMEOUT_TEXT, None),
], ids=["silent", "exception", "ok", "unknown-unit"])
def test_comms_state_of_a_unit_shows_on_both_protocols(
        faulty_water: FaultyWater, role: str, error: str | None, status: int | None) -> None:
    served = faulty_water.served
    site = served.site
    if role in faulty_water.devices:
        device = faulty_water.devices[role]
        unit = site.devices[device]
        signals = [s for s in site.signals if s.device == device]
    else:
        unit, signals = max(site.devices.values()) + 1, []
    sig = signals[0] if signals else site.signals[0]
    counted = served.server.modbus.requests
    before = counted[unit, FUNCTION[sig.register]]

    done = mbpoll(served.modbus_port, unit, sig.register, sig.type, sig.word_order,
                  sig.address, 1, timeout=0.5)  # type: ignore[arg-type]

    if error is None:
        assert done.returncode == 0 and READING.search(done.stdout), done.stdout[-300:]
    else:
        assert done.returncode != 0 and error in done.stdout + done.stderr, done.stdout[-300:]
    assert counted[unit, FUNCTION[sig.register]] == before + 1  # received, answered or not
    if status is not None:
        values = read_opcua(served, [s.tag for s in signals])
        assert {dv.StatusCode.value for dv in values.values()} == {status}


def test_dropout_is_nan_in_float_registers_and_last_value_in_int16(
        faulty_water: FaultyWater) -> None:
    served = faulty_water.served
    site = served.site
    float_sig, int_sig = (_first(site.signals, faulty_water.devices["dropout"], t)
                          for t in ("float32", "int16"))
    before = read_modbus(served.modbus_port, [float_sig, int_sig])
    assert not math.isnan(before[float_sig.tag])

    served.call(served.server.publish(180.0))  # inside both dropouts (from 2 min)

    after = read_modbus(served.modbus_port, [float_sig, int_sig])
    assert math.isnan(after[float_sig.tag])
    assert after[int_sig.tag] == before[int_sig.tag]
    values = read_opcua(served, [float_sig.tag, int_sig.tag])
    for dv in values.values():
        assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure
        assert dv.SourceTimestamp == site.start + timedelta(seconds=180)


def test_serve_runs_the_clock_at_speed_then_closes_its_ports() -> None:
    site = build_site("water", "normal", seed=1, start=datetime.now(UTC), step=60.0)
    modbus_port, opcua_port, iec104_port = free_port(), free_port(), free_port()
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/scadawatch/water"
    sig = next(s for s in site.signals if s.register == "holding")
    later = site.start + timedelta(seconds=150)  # past two 60 s physics steps
    seen: list[datetime] = []

    async def watch() -> subprocess.CompletedProcess[str]:
        async with Client(endpoint, timeout=10) as client:
            node = client.get_node(ua.NodeId(sig.tag, await client.get_namespace_index(
                namespace_uri("water"))))
            for _ in range(500):  # bounded: at 600x the clock passes `later` in ~0.25 s
                seen.append((await node.read_data_value()).SourceTimestamp)
                if seen[-1] > later:
                    break
                await asyncio.sleep(0.01)
        return await asyncio.to_thread(mbpoll, modbus_port, sig.unit_id, sig.register,
                                       sig.type, sig.word_order, sig.address, 1)

    async def main() -> subprocess.CompletedProcess[str]:
        ready = asyncio.Event()
        serving = asyncio.create_task(serve(
            site, modbus_port=modbus_port, opcua_port=opcua_port, iec104_port=iec104_port,
            speed=600.0, duration=3.0, update_interval=0.05, ready=ready))
        await asyncio.wait_for(ready.wait(), 60)
        answer = await watch()
        await asyncio.wait_for(serving, 60)  # returns by itself after `duration`
        return answer

    answer = asyncio.run(main())
    assert seen == sorted(seen) and seen[-1] > later
    assert site.time >= 180.0  # the physics stepped along
    assert answer.returncode == 0, answer.stdout[-300:]
    for port in (modbus_port, opcua_port, iec104_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


@pytest.mark.parametrize("word_order", ["ABCD", "CDAB", "BADC", "DCBA"])
@pytest.mark.parametrize(("type_", "value", "scale"), [
    ("int16", -1234.5, 0.5), ("uint16", 1234.5, 0.5), ("int32", -123456.5, 0.5),
    ("uint32", 123456.5, 0.5), ("int64", -1234567.5, 0.5), ("float32", -1234.5, 1.0),
    ("float64", 0.1, 1.0),
])
def test_register_image_lays_out_every_type_and_word_order(
        type_: str, value: float, scale: float, word_order: str) -> None:
    """Types and orders the shipped sites do not serve yet, against a struct-based encoder."""
    sig = Signal("t", "flow", "", device="d", unit_id=7, register="holding", address=3,
                 type=type_, word_order=word_order, scale=scale)
    tables = RegisterImage([sig]).encode(np.array([value]))
    assert tables[7][TABLES.index("holding")][3:] == encode(value / scale, type_, word_order)


def test_before_its_first_values_a_simulator_answers_busy_not_zeros() -> None:
    """A site whose process has no values yet: Modbus answers exception 0x06 (server device
    busy) on every unit, never an empty register map read as zeros, and OPC UA says
    BadWaitingForInitialData; the first sample ends both."""
    from simulators.servers.modbus_server import ModbusSiteServer
    from simulators.servers.opcua_server import OpcUaSiteServer

    site = build_site("water", "normal", seed=1, start=datetime(2026, 3, 1, tzinfo=UTC),
                      step=60.0)
    coil = next(s for s in site.signals if s.register == "coil")
    level = next(s for s in site.signals if s.type == "int16")

    async def main() -> tuple[list, list, int]:
        modbus = ModbusSiteServer(site.signals, port=0)
        opcua = OpcUaSiteServer("water", site.signals, port=free_port())
        await modbus.start()
        await opcua.start()
        try:
            def read() -> list[subprocess.CompletedProcess[str]]:
                return [mbpoll(modbus.port, s.unit_id, s.register, s.type, s.word_order,
                               s.address, 1) for s in (coil, level)]  # type: ignore[arg-type]

            before = await asyncio.to_thread(read)
            async with Client(opcua.endpoint, timeout=10) as client:
                ns = await client.get_namespace_index(namespace_uri("water"))
                status = (await client.get_node(ua.NodeId(level.tag, ns)).read_data_value(
                    raise_on_bad_status=False)).StatusCode.value
            values = site.sample(0.0)
            modbus.publish(values, dict.fromkeys(site.devices.values(), "ok"))
            return before, await asyncio.to_thread(read), status
        finally:
            await opcua.stop()
            await modbus.stop()

    before, after, status = asyncio.run(main())
    for done in before:
        assert done.returncode != 0 and "busy" in (done.stdout + done.stderr), done.stdout
    assert status == ua.StatusCodes.BadWaitingForInitialData
    assert all(done.returncode == 0 and READING.search(done.stdout) for done in after)


def test_a_wall_clock_scenario_keeps_its_outage_at_any_speed(
        scenario_file: Callable[..., object]) -> None:
    """`clock = "wall"` (the demo's scenario): served at 120x, an outage from second 1 starts
    then for a client, and lasts at least MIN_OUTAGE (10 s) of wall-clock time, not 2
    simulated seconds (17 ms) of it."""
    path = scenario_file({"clock": "wall", "water": {"events": [
        {"kind": "comms", "target": "water-dma1", "start": "1s", "duration": "2s",
         "mode": "silent"}]}})
    site = build_site("water", path, seed=1, start=datetime.now(UTC), step=60.0, speed=120.0)
    (event,) = site.events
    assert (event.start, event.duration) == (120.0, MIN_OUTAGE * 120.0)
    unit = site.devices["water-dma1"]
    port = free_port()

    async def main() -> list[tuple[float, bool]]:
        from pymodbus.client import AsyncModbusTcpClient
        from pymodbus.exceptions import ModbusException

        ready = asyncio.Event()
        serving = asyncio.create_task(serve(site, modbus_port=port, opcua_port=free_port(),
                                            iec104_port=free_port(), speed=120.0,
                                            duration=4.0, update_interval=0.05, ready=ready))
        await asyncio.wait_for(ready.wait(), 60)
        began = asyncio.get_running_loop().time()
        answers = []
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.1, retries=0)
        await client.connect()
        while not serving.done():
            try:
                rr = await client.read_holding_registers(0, count=2, device_id=unit)
                answers.append((asyncio.get_running_loop().time() - began, not rr.isError()))
            except (ModbusException, OSError):  # a silent unit: the request times out
                answers.append((asyncio.get_running_loop().time() - began, False))
                if not client.connected:
                    await client.connect()
            await asyncio.sleep(0.05)
        client.close()
        await serving
        return answers

    answers = asyncio.run(main())
    silent = [t for t, ok in answers if not ok]
    assert silent and silent[-1] - silent[0] >= 2.0, answers
    assert any(ok for t, ok in answers if t < silent[0])
    assert not any(ok for t, ok in answers if t > silent[0]), "still silent at the end"
