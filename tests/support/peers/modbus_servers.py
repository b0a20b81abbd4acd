"""Modbus servers on loopback for the driver tests, and the register images they serve.

- `source()`: test values per type; `encode()`: a value as the registers a device sends
  (struct-based, written apart from the gateway's decoder so that round trips test it).
- `Image`: the four Modbus tables, filled per point.
- `pymodbus_tcp()` / `pymodbus_rtu()`: pymodbus 3.16 servers in the running event loop,
  counting requests per (unit, function code); `silent` units never answer.
- `pymodbustcp()`: pyModbusTCP's server (a Modbus stack we did not write), in its threads.
- `serial_pair()`: a virtual null-modem cable made by socat.
- `Sink`: an emit callback that keeps batches and runs buses until a condition holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import struct
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pyModbusTCP.server import ModbusServer

from anomaly.core.batch import Batch
from gateway.site.model import Device, Point, Site, SiteSection
from gateway.status import DeviceStatus
from scadawatch.ports import free_port

_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
           "float32": "f", "float64": "d"}
TYPES = ["bool", *_STRUCT]
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
# Values whose bytes all differ, so that any mix-up of words or bytes shows.
_SOURCE = {"bool": 1.0, "int16": -12345.0, "uint16": 54321.0, "int32": -123456789.0,
           "uint32": 3_000_000_000.0, "int64": -1_234_567_890_123_456.0,
           "float32": float(np.float32(3.14159)), "float64": -2.718281828459045}
_OTHER = {"bool": 0.0, "uint16": 0x0102, "uint32": 0x01020304}
SCALES = [(1.0, 0.0), (0.5, 10.0), (-2.0, 0.25)]


def source(type_: str, i: int) -> float:
    """The i-th test value of a type: alternately a big one and its negation (or another)."""
    return _SOURCE[type_] if i % 2 == 0 else _OTHER.get(type_, -_SOURCE[type_])


def encode(value: float, type_: str, word_order: str) -> list[int]:
    """Registers of `value` as sent by a device with this word order (see modbus_plan)."""
    if type_ == "bool":
        value, type_ = bool(value), "uint16"
    big = struct.pack(">" + _STRUCT[type_], value if type_[0] == "f" else int(value))
    words = [big[i:i + 2] for i in range(0, len(big), 2)]
    if word_order in ("CDAB", "DCBA"):
        words.reverse()
    if word_order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def every_type_order_and_table() -> tuple[list[Point], list[float]]:
    """One point per table x type x word order, back to back, and the values to serve."""
    points, raw = [], []
    scales = itertools.cycle(SCALES)
    address = {"holding": 0, "input": 0, "coil": 0, "discrete": 0}
    combos = [(t, ty, o) for t in ("holding", "input") for ty in TYPES for o in ORDERS]
    combos += [(t, "bool", "ABCD") for t in ("coil", "discrete") for _ in range(3)]
    for i, (table, type_, order) in enumerate(combos):
        scale, offset = next(scales)
        points.append(Point(tag=f"{table}.{type_}.{order}.{i}", device="dev",
                            register_kind=table, address=address[table], type=type_,
                            word_order=order, scale=scale, offset=offset))
        address[table] += points[-1].width
        raw.append(source(type_, i))
    return points, raw


@dataclass
class Image:
    """Contents of the four tables: address -> bool (coil, discrete) or uint16 (registers)."""

    tables: dict[str, dict[int, int]] = field(
        default_factory=lambda: {"coil": {}, "discrete": {}, "holding": {}, "input": {}})

    def put(self, point: Point, value: float) -> None:
        assert point.address is not None
        table = self.tables[point.register_kind]
        if point.register_kind in ("coil", "discrete"):
            table[point.address] = int(bool(value))
        else:
            for i, word in enumerate(encode(value, point.type, point.word_order)):
                table[point.address + i] = word

    def runs(self, table: str) -> list[tuple[int, list[int]]]:
        """Contiguous (start, values) runs; addresses outside them are invalid."""
        out: list[tuple[int, list[int]]] = []
        for address in sorted(self.tables[table]):
            if out and out[-1][0] + len(out[-1][1]) == address:
                out[-1][1].append(self.tables[table][address])
            else:
                out.append((address, [self.tables[table][address]]))
        return out

    def sim_device(self, unit: int) -> SimDevice:
        blocks = []
        for table in ("coil", "discrete"):
            runs = self.runs(table) or [(0, [0])]
            blocks.append([SimData(a, values=[bool(v) for v in vs], datatype=DataType.BITS)
                           for a, vs in runs])
        for table in ("holding", "input"):
            runs = self.runs(table) or [(0, [0])]
            blocks.append([SimData(a, values=vs, datatype=DataType.REGISTERS)
                           for a, vs in runs])
        return SimDevice(id=unit, simdata=tuple(blocks))  # type: ignore[arg-type]


@dataclass
class Served:
    """What a test server saw."""

    port: int = 0
    requests: Counter[tuple[int, int]] = field(default_factory=Counter)  # (unit, fc) -> n
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request
    connections: int = 0

    def function_codes(self) -> set[int]:
        return {fc for _, fc in self.requests}

    def count(self, unit: int | None = None, fc: int | None = None) -> int:
        return sum(n for (u, f), n in self.requests.items()
                   if unit in (None, u) and fc in (None, f))


def _tracers(served: Served, silent: Collection[int]) -> dict:
    def trace_pdu(sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        served.requests[(pdu.dev_id, pdu.function_code)] += 1
        served.arrivals.append(time.monotonic())
        # Returning None makes the pymodbus server drop the request: a unit that never answers.
        return None if pdu.dev_id in silent else pdu

    def trace_connect(connected: bool) -> None:
        served.connections += connected

    return {"trace_pdu": trace_pdu, "trace_connect": trace_connect}


@contextlib.asynccontextmanager
async def pymodbus_tcp(images: dict[int, Image], silent: Collection[int] = (),
                       port: int = 0) -> AsyncIterator[Served]:
    """A pymodbus TCP server on 127.0.0.1 serving one image per unit id."""
    served = Served()
    devices = [img.sim_device(unit) for unit, img in images.items()]
    devices += [Image().sim_device(unit) for unit in silent if unit not in images]
    server = ModbusTcpServer(devices, address=("127.0.0.1", port), **_tracers(served, silent))
    await server.serve_forever(background=True)
    served.port = server.transport.sockets[0].getsockname()[1]
    try:
        yield served
    finally:
        await server.shutdown()


@contextlib.asynccontextmanager
async def pymodbus_rtu(tty: str, images: dict[int, Image],
                       silent: Collection[int] = ()) -> AsyncIterator[Served]:
    """A pymodbus RTU server on serial port `tty`."""
    served = Served()
    devices = [img.sim_device(unit) for unit, img in images.items()]
    devices += [Image().sim_device(unit) for unit in silent if unit not in images]
    server = ModbusSerialServer(devices, port=tty, baudrate=115200, **_tracers(served, silent))
    await server.serve_forever(background=True)
    try:
        yield served
    finally:
        await server.shutdown()


@contextlib.contextmanager
def pymodbustcp(image: Image) -> Iterator[int]:
    """pyModbusTCP's server on 127.0.0.1 with `image`; yields its port."""
    server = ModbusServer(host="127.0.0.1", port=free_port(), no_block=True)
    bank = server.data_bank
    setters = {"coil": bank.set_coils, "discrete": bank.set_discrete_inputs,
               "holding": bank.set_holding_registers, "input": bank.set_input_registers}
    for table, set_values in setters.items():
        for start, values in image.runs(table):
            set_values(start, [bool(v) for v in values] if table in ("coil", "discrete")
                       else values)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


@contextlib.contextmanager
def serial_pair(tmp: Path) -> Iterator[tuple[str, str]]:
    """Two pty ends joined by socat: (server end, gateway end)."""
    socat = shutil.which("socat")
    assert socat, "socat is not installed (tests/run.sh installs it)"
    a, b = tmp / "ttyA", tmp / "ttyB"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "socat did not start"
            time.sleep(0.01)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        assert proc.stderr is not None
        proc.stderr.close()


def site(devices: list[Device], points: list[Point]) -> Site:
    return Site(site=SiteSection(name="test"), devices=devices, points=points)


class Sink:
    """An `emit` that keeps the batches; `running()` runs buses, `wait()` awaits a condition
    on the batches so far."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)
        self._changed.set()

    def of(self, points: Collection[int]) -> list[Batch]:
        """The batches of one device, given its point indices."""
        return [b for b in self.batches if len(b) and int(b.point[0]) in points]

    @contextlib.asynccontextmanager
    async def running(self, buses: list) -> AsyncIterator[Sink]:
        self._tasks = [asyncio.create_task(bus.run()) for bus in buses]
        try:
            yield self
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self, until: Callable[[Sink], bool], timeout: float = 10.0) -> None:
        """Until `until(self)` holds; fail after `timeout` s or when a bus stops on an error."""
        waiter = asyncio.create_task(self._wait(until))
        try:
            done, _ = await asyncio.wait([waiter, *self._tasks], timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in self._tasks:
                if t in done:
                    t.result()  # raises what stopped the bus
            assert waiter in done, f"condition not met within {timeout} s"
        finally:
            waiter.cancel()

    async def run(self, buses: list, until: Callable[[Sink], bool],
                  timeout: float = 10.0) -> None:
        async with self.running(buses):
            await self.wait(until, timeout)

    async def fault_then_reconnect(self, inputs: list, device: DeviceStatus,
                                   connections: Callable[[], int], limit: float
                                   ) -> tuple[str, str | None]:
        """Run `inputs` against a hostile peer until the first batch (the fault it causes), then
        until the session lives on and reconnects (`connections()` reaches 2): the device's
        state and last error at the fault."""
        async with self.running(inputs):
            await self.wait(lambda s: len(s.batches) > 0, limit)
            state, error = device.state, device.last_error
            async with asyncio.timeout(limit):
                while connections() < 2:
                    await asyncio.sleep(0.05)
        return state, error

    async def _wait(self, until: Callable[[Sink], bool]) -> None:
        while not until(self):
            self._changed.clear()
            await self._changed.wait()
