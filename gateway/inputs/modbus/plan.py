"""Modbus request planning and vectorised decoding (pure: no I/O).

`plan_device()` coalesces a device's points into as few read requests as the limits allow
(`max_registers`/`max_bits` per request, `max_gap` unused addresses a request may span; no
value ever straddles two requests) and precomputes the index arrays that turn one poll's
registers and bits into float64 engineering values in a handful of numpy operations.

Byte and word order, for the bytes of a value from most to least significant (A first):

| order | 32-bit registers (r0, r1) | 64-bit registers (r0..r3) | 16-bit r0 |
|-------|---------------------------|---------------------------|-----------|
| ABCD  | AB CD (big-endian)        | AB CD EF GH               | AB        |
| CDAB  | CD AB (word-swapped)      | GH EF CD AB               | AB        |
| BADC  | BA DC (byte-swapped)      | BA DC FE HG               | BA        |
| DCBA  | DC BA (little-endian)     | HG FE DC BA               | BA        |

ABCD is mbpoll's `-B`, CDAB its default for floats. A 16-bit value has one word, so only the
byte swap (BADC, DCBA) applies to it. `value = raw * scale + offset`. A `bool` in a coil or
discrete input is the bit; a `bool` in a register is bit 0 of the (byte-ordered) register.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.site.model import BIT_TABLES, REGISTER_WIDTH, Device, Point

FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_WIRE_DTYPE = {"bool": ">u2", "int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4",
               "float32": ">f4", "int64": ">i8", "float64": ">f8"}
_WORD_SWAP = {"ABCD": False, "CDAB": True, "BADC": False, "DCBA": True}
_BYTE_SWAP = {"ABCD": False, "CDAB": False, "BADC": True, "DCBA": True}


def wire_positions(word_order: str, registers: int) -> list[int]:
    """Byte positions, within a value's registers on the wire, of its bytes A, B, C...

    >>> wire_positions("CDAB", 2), wire_positions("DCBA", 2), wire_positions("BADC", 1)
    ([2, 3, 0, 1], [3, 2, 1, 0], [1, 0])
    """
    out = []
    for j in range(2 * registers):
        word, byte = divmod(j, 2)
        if _WORD_SWAP[word_order]:
            word = registers - 1 - word
        if _BYTE_SWAP[word_order]:
            byte = 1 - byte
        out.append(2 * word + byte)
    return out


@dataclass(frozen=True, slots=True)
class Request:
    """One read request; `offset` is where its first register (bit) lands in the poll buffer."""

    function_code: int
    address: int
    count: int
    offset: int


@dataclass(frozen=True, slots=True)
class _Group:
    """Points that share a wire dtype: `rows` in the plan, `byte_index` (k, width) into the
    poll's wire bytes, most significant byte first."""

    dtype: np.dtype
    rows: np.ndarray
    byte_index: np.ndarray
    bit0: bool  # bool in a register


@dataclass(frozen=True)
class DevicePlan:
    """How to poll one device: its requests and how to decode their answers.

    Rows of a decoded poll are in plan order; `points[row]` is the point's index in
    `site.points` and `request_of_row[row]` the request that carries it.
    """

    requests: tuple[Request, ...]
    points: np.ndarray  # int32, read-only
    request_of_row: np.ndarray  # intp
    n_registers: int
    n_bits: int
    groups: tuple[_Group, ...]
    bit_rows: np.ndarray
    bit_index: np.ndarray
    scale: np.ndarray | None  # None when every point has scale 1 and offset 0
    offset: np.ndarray | None

    def __len__(self) -> int:
        return len(self.points)

    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """Empty register (big-endian uint16) and bit buffers for one poll's answers."""
        return np.zeros(self.n_registers, dtype=">u2"), np.zeros(self.n_bits, dtype=bool)

    def decode(self, registers: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Engineering values (float64, plan order) from a poll's filled buffers."""
        out = np.empty(len(self.points), dtype=np.float64)
        if self.groups:
            wire = registers.view(np.uint8)
            for g in self.groups:
                raw = wire[g.byte_index].view(g.dtype).ravel()
                out[g.rows] = raw & 1 if g.bit0 else raw
        if len(self.bit_rows):
            out[self.bit_rows] = bits[self.bit_index]
        if self.scale is not None and self.offset is not None:  # both or neither
            out *= self.scale
            out += self.offset
        return out


def _coalesce(
    spans: list[tuple[int, int, int]], function_code: int, limit: int, max_gap: int, offset: int
) -> tuple[list[Request], dict[int, tuple[int, int]]]:
    """Requests covering `spans` (address, width, row); row -> (request number, buffer offset)."""
    requests: list[Request] = []
    where: dict[int, tuple[int, int]] = {}
    members: list[tuple[int, int]] = []  # (row, address) of the request being built
    start = end = 0

    def close() -> None:
        nonlocal offset
        for row, address in members:
            where[row] = (len(requests), offset + address - start)
        requests.append(Request(function_code, start, end - start, offset))
        offset += end - start
        members.clear()

    for address, width, row in sorted(spans):
        if members and address - end <= max_gap and max(end, address + width) - start <= limit:
            end = max(end, address + width)
        else:
            if members:
                close()
            start, end = address, address + width
        members.append((row, address))
    if members:
        close()
    return requests, where


def plan_device(device: Device, points: Sequence[tuple[int, Point]]) -> DevicePlan:
    """Plan the polling of `device` for `points`, given as (index in site.points, point).

    Expects points that passed the site checks (`load_site`); raises ValueError naming the
    point when one is wider than the device's request limit.
    """
    for _, p in points:
        limit = device.max_bits if p.register_kind in BIT_TABLES else device.max_registers
        if p.width > limit:
            raise ValueError(f"point {p.tag!r}: {p.type} needs {p.width} registers, more than "
                             f"max_registers={limit} of device {device.name!r}")

    requests: list[Request] = []
    row_request: dict[int, int] = {}
    row_offset: dict[int, int] = {}
    n_registers = n_bits = 0
    for table, fc in FUNCTION_CODE.items():
        bits = table in BIT_TABLES
        spans = [(p.address, p.width, row)
                 for row, (_, p) in enumerate(points) if p.register_kind == table]
        if not spans:
            continue
        # arg-type: spans' addresses are ints, site rules require one of every Modbus point
        reqs, where = _coalesce(
            spans,  # type: ignore[arg-type]
            fc, device.max_bits if bits else device.max_registers, device.max_gap,
            n_bits if bits else n_registers)
        for row, (number, off) in where.items():
            row_request[row] = len(requests) + number
            row_offset[row] = off
        requests += reqs
        if bits:
            n_bits = reqs[-1].offset + reqs[-1].count
        else:
            n_registers = reqs[-1].offset + reqs[-1].count

    # Rows in request order, so a request's points are contiguous.
    order = sorted(range(len(points)), key=lambda r: (row_request[r], row_offset[r]))
    plan_points = [points[r][1] for r in order]
    index = np.array([points[r][0] for r in order], dtype=np.int32)
    index.flags.writeable = False
    request_of_row = np.array([row_request[r] for r in order], dtype=np.intp)
    offsets = [row_offset[r] for r in order]

    by_type: dict[str, list[int]] = {}
    bit_rows: list[int] = []
    for row, p in enumerate(plan_points):
        if p.register_kind in BIT_TABLES:
            bit_rows.append(row)
        else:
            by_type.setdefault(p.type, []).append(row)
    groups = []
    for type_, rows in by_type.items():
        byte_index = np.array(
            [[2 * offsets[r] + k for k in wire_positions(plan_points[r].word_order,
                                                         REGISTER_WIDTH[type_])] for r in rows],
            dtype=np.intp)
        groups.append(_Group(np.dtype(_WIRE_DTYPE[type_]), np.array(rows, dtype=np.intp),
                             byte_index, type_ == "bool"))

    scale = np.array([p.scale for p in plan_points], dtype=np.float64)
    offset = np.array([p.offset for p in plan_points], dtype=np.float64)
    identity = bool(np.all(scale == 1.0) and np.all(offset == 0.0))
    return DevicePlan(
        requests=tuple(requests),
        points=index,
        request_of_row=request_of_row,
        n_registers=n_registers,
        n_bits=n_bits,
        groups=tuple(groups),
        bit_rows=np.array(bit_rows, dtype=np.intp),
        bit_index=np.array([offsets[r] for r in bit_rows], dtype=np.intp),
        scale=None if identity else scale,
        offset=None if identity else offset,
    )
