"""A simulated site's Modbus TCP face: one pymodbus server, one unit id per device.

Each unit serves the signals `simulators.servers.registers` placed on it, read-only:

- holding/input registers: float32 (or any `Signal.type`) in the signal's word order, where
  ABCD is big-endian (most significant word first), CDAB swaps the words, BADC swaps the
  bytes within each word and DCBA does both; integer types hold `round(value / scale)`.
- coils/discrete inputs: pump and breaker status, one bit per signal.

What a Modbus client sees when the site has no good value to give:

- dropout (NaN reading): float registers hold a quiet NaN (0x7FC00000 as float32); integer
  registers and bits keep their last value, as an RTU without a sentinel does.
- comms state "silent": the unit answers nothing; the client times out. Unknown unit ids are
  silent too, like a gateway with no such slave behind it.
- comms state "exception": every request to the unit's map gets exception `EXCEPTION_CODE`
  (0x04 server device failure): the device answers, but its I/O has failed.
- writes get ILLEGAL ADDRESS (0x02): the simulator is a field instrument, not a setpoint.
- before the first `publish` every unit answers exception `STARTING_CODE` (0x06 server device
  busy): the process has no values yet, and an empty register map would read as zeros.

Requests outside a unit's map get ILLEGAL ADDRESS, even from a unit in state "exception":
pymodbus checks addresses before it asks the unit. (Without our request hook, pymodbus would
answer an unknown unit id with exception 0x04.)

`requests` counts every request received, per (unit id, function code), answered or not.

Consistency: `publish` encodes a whole sample into fresh per-unit register lists and swaps
them in with one assignment. pymodbus handles each request in the event loop without yielding
between our copy of the snapshot and its read, so no reply mixes two updates.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.signals import Signal

EXCEPTION_CODE = ExcCodes.DEVICE_FAILURE
STARTING_CODE = ExcCodes.DEVICE_BUSY
TABLES = ("coil", "discrete", "holding", "input")  # the order of SimDevice's simdata tuple
BIT_TABLES = frozenset({"coil", "discrete"})
# Function code -> table it reads or writes (pymodbus' own mapping of SimDevice blocks).
_FUNCTION_TABLE = {1: 0, 5: 0, 15: 0, 2: 1, 3: 2, 6: 2, 16: 2, 22: 2, 23: 2, 4: 3}
_DTYPE = {"int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4", "int64": ">i8",
          "float32": ">f4", "float64": ">f8"}
_SWAP_WORDS = frozenset({"CDAB", "DCBA"})
_SWAP_BYTES = frozenset({"BADC", "DCBA"})

Tables = tuple[list[int], ...]  # one list per entry of TABLES, as pymodbus stores them


@dataclass(frozen=True, slots=True)
class _Group:
    """Signals of one table and type whose bytes are laid out alike, encoded in one numpy step."""

    table: int
    columns: np.ndarray  # indices into the sample vector
    dest: np.ndarray  # (n, words) flat indices into the table's array, word order applied
    scale: np.ndarray
    dtype: str  # big-endian numpy dtype of the raw value, "" for bits
    word: str  # dtype the raw bytes are read back as words: ">u2", or "<u2" to swap bytes


class RegisterImage:
    """The register and bit tables of every unit, encoded from a sample with numpy."""

    def __init__(self, signals: Sequence[Signal]) -> None:
        units = sorted({s.unit_id for s in signals})
        size = {(u, t): 0 for u in units for t in range(len(TABLES))}
        for s in signals:
            if s.register not in TABLES:
                raise ValueError(f"signal {s.tag}: unknown Modbus table {s.register!r}")
            if s.type != "bool" and s.type not in _DTYPE:
                raise ValueError(f"signal {s.tag}: unknown Modbus type {s.type!r}")
            if s.address is None:
                raise ValueError(f"signal {s.tag}: no Modbus address assigned")
            key = (s.unit_id, TABLES.index(s.register))
            size[key] = max(size[key], s.address + _width(s))
        self.units = units
        self.sizes = size  # (unit, table) -> registers or bits used
        # Units' tables are laid end to end in one array per table, so one fancy-index
        # assignment per group encodes every unit at once.
        self._offset: dict[tuple[int, int], int] = {}
        totals = [0] * len(TABLES)
        for (u, t), n in size.items():
            self._offset[u, t] = totals[t]
            totals[t] += n
        self._arrays = [np.zeros(n, dtype=bool if TABLES[t] in BIT_TABLES else np.uint16)
                        for t, n in enumerate(totals)]
        self._groups = self._group(signals)

    def _group(self, signals: Sequence[Signal]) -> list[_Group]:
        members: dict[tuple[int, str, str], list[int]] = {}
        for i, s in enumerate(signals):
            swap_bytes = s.type != "bool" and s.word_order in _SWAP_BYTES
            key = (TABLES.index(s.register), s.type, "<u2" if swap_bytes else ">u2")
            members.setdefault(key, []).append(i)
        groups = []
        for (table, type_, word), idx in members.items():
            rows = []
            for i in idx:
                s = signals[i]
                start = self._offset[s.unit_id, table] + s.address
                cols = list(range(start, start + _width(s)))
                rows.append(cols[::-1] if s.word_order in _SWAP_WORDS else cols)
            groups.append(_Group(table, np.array(idx), np.array(rows, dtype=np.intp),
                                 np.array([signals[i].scale for i in idx], dtype=np.float64),
                                 _DTYPE.get(type_, ""), word))
        return groups

    def encode(self, values: np.ndarray) -> dict[int, Tables]:
        """Per unit id, its four tables as pymodbus lists; bits packed 16 to a register."""
        for g in self._groups:
            raw = values[g.columns]
            arr = self._arrays[g.table]
            if not g.dtype:
                ok = ~np.isnan(raw)
                arr[g.dest[ok, 0]] = raw[ok] != 0
                continue
            raw = raw / g.scale
            if g.dtype[1] == "f":
                arr[g.dest] = raw.astype(g.dtype).view(g.word).reshape(-1, g.dest.shape[1])
                continue
            ok = ~np.isnan(raw)
            info = np.iinfo(g.dtype)
            ints = np.clip(np.rint(raw[ok]), info.min, info.max).astype(g.dtype)
            arr[g.dest[ok]] = ints.view(g.word).reshape(-1, g.dest.shape[1])
        return {u: tuple(self._unit_table(u, t) for t in range(len(TABLES))) for u in self.units}

    def _unit_table(self, unit: int, table: int) -> list[int]:
        start = self._offset[unit, table]
        part = self._arrays[table][start:start + self.sizes[unit, table]]
        if TABLES[table] in BIT_TABLES:
            # pymodbus keeps bits 16 to a register, the lowest address in the lowest bit.
            padded = np.zeros(-(-part.size // 16) * 16, dtype=bool)
            padded[:part.size] = part
            return np.packbits(padded, bitorder="little").view("<u2").tolist()
        return part.tolist()


def _width(s: Signal) -> int:
    return 1 if s.type == "bool" else np.dtype(_DTYPE[s.type]).itemsize // 2


@dataclass(frozen=True, slots=True)
class _Snapshot:
    tables: Mapping[int, Tables]
    comms: Mapping[int, str]  # unit id -> "ok" | "silent" | "exception" | "starting"


class ModbusSiteServer:
    """pymodbus TCP server for all units of a site, serving the latest published snapshot."""

    def __init__(self, signals: Sequence[Signal], *, host: str = "127.0.0.1",
                 port: int = 5020) -> None:
        self.image = RegisterImage(signals)
        self.host = host
        self._port = port
        # (unit id, function code) -> requests received, answered or not.
        self.requests: Counter[tuple[int, int]] = Counter()
        initial = self.image.encode(np.full(len(signals), np.nan))
        self._snapshot = _Snapshot(initial, dict.fromkeys(self.image.units, "starting"))
        self._server: ModbusTcpServer | None = None

    def _device(self, unit: int) -> SimDevice:
        blocks: list[list[SimData]] = []
        for t, name in enumerate(TABLES):
            n = self.image.sizes[unit, t]
            if name in BIT_TABLES:
                # A SimDevice needs every table; an empty bit table is refused in `_access`.
                blocks.append([SimData(0, count=max(n, 1), values=False, datatype=DataType.BITS)])
            elif n:
                blocks.append([SimData(0, count=n, datatype=DataType.REGISTERS)])
            else:
                blocks.append([SimData(0, datatype=DataType.INVALID)])
        return SimDevice(unit, simdata=tuple(blocks),  # type: ignore[arg-type]
                         action=functools.partial(self._access, unit))

    async def start(self) -> None:
        self._server = ModbusTcpServer([self._device(u) for u in self.image.units],
                                       address=(self.host, self._port), trace_pdu=self._on_pdu)
        await self._server.serve_forever(background=True)

    @property
    def port(self) -> int:
        """The port listened on (the one the OS picked when asked for port 0)."""
        if self._server is None or self._server.transport is None:
            return self._port
        return self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def publish(self, values: np.ndarray, comms: Mapping[int, str]) -> None:
        """Serve `values` (one per signal) and every unit's comms state from the next request."""
        self._snapshot = _Snapshot(self.image.encode(values), dict(comms))

    def _on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        self.requests[pdu.dev_id, pdu.function_code] += 1
        if self._snapshot.comms.get(pdu.dev_id, "silent") == "silent":
            return None  # pymodbus handles no request it is not given: the client times out
        return pdu

    async def _access(self, unit: int, function_code: int, _start: int, address: int,
                      _count: int, registers: list[int], values: list | None) -> ExcCodes | None:
        snap = self._snapshot
        state = snap.comms.get(unit)
        if state == "exception":
            return EXCEPTION_CODE
        if state == "starting":
            return STARTING_CODE
        table = _FUNCTION_TABLE[function_code]
        if values is not None or (TABLES[table] in BIT_TABLES
                                  and address >= self.image.sizes[unit, table]):
            return ExcCodes.ILLEGAL_ADDRESS
        # The whole table is a few dozen registers: copying it all is cheaper than the
        # bookkeeping of copying only the requested range.
        current = snap.tables[unit][table]
        registers[:len(current)] = current
        return None
