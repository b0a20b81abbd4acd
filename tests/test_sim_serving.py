"""A simulated site served live: Modbus TCP read by mbpoll (a client we did not write) and OPC UA
read by asyncua's client give the same values for the same simulated time, and comms faults and
dropouts show on both as documented in simulators/modbus_server.py and opcua_server.py.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from asyncua import Client, ua

from simulators.opcua_server import namespace_uri
from simulators.serve import serve
from simulators.signals import Signal
from simulators.site import build_site

if TYPE_CHECKING:
    from tests.conftest import ServedSite

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


@pytest.fixture(scope="module")
def faulty_water(serve_site: Callable[..., ServedSite],
                 tmp_path_factory: pytest.TempPathFactory) -> ServedSite:
    """Water site, frozen, with one silent and one exception unit and two dropouts at 2 min."""
    import tomli_w

    probe = build_site("water", "normal", seed=1, start=datetime.now(UTC), step=60.0)
    silent, failing, healthy = list(probe.devices)[:3]
    dropouts = [next(s.tag for s in probe.signals if s.device == healthy and s.type == t)
                for t in ("float32", "int16")]
    events = [{"kind": "comms", "target": silent, "start": "0s", "duration": "1d",
               "mode": "silent"},
              {"kind": "comms", "target": failing, "start": "0s", "duration": "1d",
               "mode": "exception"}]
    events += [{"kind": "dropout", "target": tag, "start": "2min", "duration": "1h"}
               for tag in dropouts]
    path = tmp_path_factory.mktemp("scenario") / "faults.toml"
    path.write_text(tomli_w.dumps({"water": {"events": events}}), encoding="utf-8")
    return serve_site("water", path)


def _device(served: ServedSite, index: int) -> str:
    return list(served.site.devices)[index]


@pytest.mark.parametrize(("case", "device_index", "error", "status"), [
    ("silent", 0, TIMEOUT_TEXT, ua.StatusCodes.BadCommunicationError),
    ("exception", 1, FAILURE_TEXT, ua.StatusCodes.BadCommunicationError),
    ("ok", 2, None, ua.StatusCodes.Good),
    ("unknown unit", None, TIMEOUT_TEXT, None),
])
def test_comms_state_of_a_unit_shows_on_both_protocols(
        faulty_water: ServedSite, case: str, device_index: int | None, error: str | None,
        status: int | None) -> None:
    site = faulty_water.site
    if device_index is None:
        unit, signals = max(site.devices.values()) + 1, []
    else:
        device = _device(faulty_water, device_index)
        unit = site.devices[device]
        signals = [s for s in site.signals if s.device == device]
    sig = signals[0] if signals else site.signals[0]
    before = faulty_water.server.modbus.requests[unit, FUNCTION[sig.register]]

    done = mbpoll(faulty_water.modbus_port, unit, sig.register, sig.type, sig.word_order,
                  sig.address, 1, timeout=0.5)  # type: ignore[arg-type]

    if error is None:
        assert done.returncode == 0 and READING.search(done.stdout), done.stdout[-300:]
    else:
        assert done.returncode != 0 and error in done.stdout + done.stderr, done.stdout[-300:]
    # Received and counted, answered or not.
    assert faulty_water.server.modbus.requests[unit, FUNCTION[sig.register]] > before
    if status is not None:
        values = read_opcua(faulty_water, [s.tag for s in signals])
        assert {dv.StatusCode.value for dv in values.values()} == {status}


def test_dropout_is_nan_in_float_registers_and_last_value_in_int16(
        faulty_water: ServedSite) -> None:
    site = faulty_water.site
    healthy = _device(faulty_water, 2)
    float_sig, int_sig = (next(s for s in site.signals if s.device == healthy and s.type == t)
                          for t in ("float32", "int16"))
    before = read_modbus(faulty_water.modbus_port, [float_sig, int_sig])
    assert not math.isnan(before[float_sig.tag])

    faulty_water.call(faulty_water.server.publish(180.0))  # inside both dropouts (from 2 min)

    after = read_modbus(faulty_water.modbus_port, [float_sig, int_sig])
    assert math.isnan(after[float_sig.tag])
    assert after[int_sig.tag] == before[int_sig.tag]
    values = read_opcua(faulty_water, [float_sig.tag, int_sig.tag])
    for dv in values.values():
        assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure
        assert dv.SourceTimestamp == site.start + timedelta(seconds=180)


def test_served_clock_runs_at_speed_and_steps_the_physics(
        serve_site: Callable[..., ServedSite]) -> None:
    served = serve_site("grid", speed=600.0, update_interval=0.05)
    tag, start = served.site.signals[0].tag, served.site.start
    seen: list[datetime] = []
    for _ in range(200):  # bounded: 600x runs past two 60 s physics steps within ~0.3 s
        seen.append(read_opcua(served, [tag])[tag].SourceTimestamp)
        if seen[-1] > start + timedelta(seconds=150):
            break
    assert seen == sorted(seen)
    assert seen[-1] > start + timedelta(seconds=150)
    assert served.site.time >= 180.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_stops_after_its_duration_and_closes_both_ports() -> None:
    site = build_site("grid", "normal", seed=1, start=datetime.now(UTC), step=60.0)
    modbus_port, opcua_port = _free_port(), _free_port()
    unit = next(iter(site.devices.values()))
    answers: list[subprocess.CompletedProcess[str]] = []

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(serve(site, modbus_port=modbus_port, opcua_port=opcua_port,
                                         speed=60.0, duration=1.0, ready=ready))
        await asyncio.wait_for(ready.wait(), 60)
        answers.append(await asyncio.to_thread(
            mbpoll, modbus_port, unit, "holding", "float32", "ABCD", 0, 1))
        await asyncio.wait_for(task, 60)

    asyncio.run(main())
    assert answers[0].returncode == 0, answers[0].stdout[-300:]
    for port in (modbus_port, opcua_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
