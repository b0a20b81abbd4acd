"""`scadawatch probe modbus`: read registers once and show every decoding side by side.

An engineer facing an undocumented RTU knows roughly what a value should be (a pressure near
4.2 bar) but not its type or word order. The probe reads the registers with one read-only
request (function code 3 or 4, never a write) and prints, for every start address in the
read, each type in the four word orders, decoded through the gateway's own plan
(`gateway.inputs.modbus.plan`): the value a cell shows is the value the gateway will store with that
`address`, `type`, `word_order`, `scale` and `offset`. `--expect` marks the cells within 0.5 %
of a known value and prints the site-file keys of each, the closest first.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
from dataclasses import dataclass

import numpy as np

from gateway.inputs.modbus.plan import FUNCTION_CODE, plan_device
from gateway.inputs.quality import MODBUS_EXCEPTION_BASE, cause_name
from gateway.site.model import REGISTER_WIDTH, Device, Point
from scadawatch.cli import EXIT_FAILURE, EXIT_OK, UsageError

TYPES = ("int16", "uint16", "int32", "uint32", "int64", "float32", "float64")
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
MAX_COUNT = 125  # registers in one read request (Modbus Application Protocol, 6.3)
MATCH = 0.005  # relative tolerance of --expect: a float32 holds 7 digits, a scaled int less
_TABLE_NAMES = {"holding": "holding registers", "input": "input registers"}
# What an engineer checks first when a device answers with an exception.
_EXCEPTION_HINTS = {
    1: "the device does not serve this table with this function code: try the other "
       "--register (holding or input)",
    2: "not every address in the range exists on the device: check the register map, and "
       "whether it counts from 1 (register 40001 is address 0 of the holding registers)",
    3: "the device refuses this count: try a smaller --count",
    4: "the device failed while reading: check it, then try again",
    6: "the device is busy: try again",
    10: "the Modbus gateway has no path to this unit: check --unit",
    11: "the Modbus gateway got no answer from the unit behind it: check --unit and its "
        "serial line",
}


class ProbeError(Exception):
    """The read failed; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Cell:
    address: int
    type: str
    word_order: str
    value: float


def decodings(registers: list[int], address: int, scale: float = 1.0,
              offset: float = 0.0) -> list[Cell]:
    """Every (start address, type, word order) that fits in `registers` (read from `address`),
    decoded as the gateway decodes it, ordered by address, type, word order.

    >>> cells = decodings([0x4086, 0x6666], 40)
    >>> [(c.address, c.word_order) for c in cells if round(c.value, 6) == 4.2]
    [(40, 'ABCD')]
    >>> sorted({c.type for c in cells if c.address == 41})
    ['int16', 'uint16']
    """
    end = address + len(registers)
    points = [Point(tag=f"{a}.{t}.{o}", device="probe", address=a, type=t, word_order=o,
                    scale=scale, offset=offset)
              for a in range(address, end) for t in TYPES for o in ORDERS
              if a + REGISTER_WIDTH[t] <= end]
    plan = plan_device(Device(name="probe", protocol="modbus-tcp", max_registers=MAX_COUNT),
                       list(enumerate(points)))
    # One request from `address` (MAX_COUNT registers at most): the buffer is the read.
    buffer, bits = plan.buffers()
    buffer[:] = registers
    values = np.empty(len(points))
    values[plan.points] = plan.decode(buffer, bits)
    return [Cell(p.address or 0, p.type, p.word_order, float(v))
            for p, v in zip(points, values, strict=True)]


def show(value: float, type_: str, scaled: bool) -> str:
    """A value at the precision its type carries: a float32 has ~7 significant digits."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if type_ == "float32":
        return f"{value:.7g}"
    if type_ == "float64" or scaled:
        return f"{value:.15g}"
    return str(int(value))


def matches(value: float, expect: float) -> bool:
    return math.isfinite(value) and abs(value - expect) <= MATCH * max(abs(expect), 1e-9)


def table(cells: list[Cell], scaled: bool, expect: float | None) -> list[str]:
    """Rows of address and type, a column per word order; `*` marks an --expect match."""
    rows = [["address", "type", *ORDERS]]
    by_key = {(c.address, c.type, c.word_order): c.value for c in cells}
    for a, t in dict.fromkeys((c.address, c.type) for c in cells):
        row = [str(a), t]
        for o in ORDERS:
            v = by_key[(a, t, o)]
            row.append(show(v, t, scaled) + ("*" if expect is not None and matches(v, expect)
                                             else ""))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i > 1 else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def read_registers(host: str, port: int, unit: int, register: str, address: int, count: int,
                   timeout: float) -> list[int]:
    """One read of `count` registers; raises ProbeError naming what failed."""
    from pymodbus.client import ModbusTcpClient
    from pymodbus.exceptions import ModbusException, ModbusIOException

    where = f"{host}:{port}"
    what = (f"{_TABLE_NAMES[register]} {address}-{address + count - 1} of unit {unit} "
            f"(function code {FUNCTION_CODE[register]})")
    # pymodbus' connect() logs why a connection failed and returns False: connect here to
    # say refused, unreachable or timed out; the client then uses this socket.
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise ProbeError(f"{where}: no TCP connection within {timeout:g} s (host down, or a "
                         "firewall dropping the port?)") from None
    except ConnectionRefusedError:
        raise ProbeError(f"{where}: connection refused (nothing listens on port {port}; "
                         "Modbus TCP is usually 502)") from None
    except OSError as e:
        raise ProbeError(f"{where}: cannot connect: {e.strerror or e}") from None
    client = ModbusTcpClient(host, port=port, timeout=timeout, retries=0)
    client.socket = sock
    read = (client.read_holding_registers if register == "holding"
            else client.read_input_registers)
    try:
        rr = read(address, count=count, device_id=unit)
    except ModbusIOException:
        raise ProbeError(f"{where}: no answer within {timeout:g} s to a read of {what} "
                         "(wrong --unit, or a gateway that does not forward it?)") from None
    except (ModbusException, OSError) as e:
        raise ProbeError(f"{where}: reading {what} failed: {e}") from None
    finally:
        client.close()
    if rr.isError():
        code = getattr(rr, "exception_code", 0)
        raise ProbeError(f"{where}: the device answered a read of {what} with Modbus "
                         f"exception {code} ({cause_name(MODBUS_EXCEPTION_BASE + code)}): "
                         f"{_EXCEPTION_HINTS.get(code, 'see the device manual')}")
    if len(rr.registers) != count:
        raise ProbeError(f"{where}: asked {what}, got {len(rr.registers)} registers")
    return list(rr.registers)


def main(args: argparse.Namespace) -> int:
    if args.address + args.count > 65536:
        raise UsageError(f"--address {args.address} --count {args.count} reads past the last "
                         "register (65535)")
    try:
        registers = read_registers(args.host, args.port, args.unit, args.register,
                                   args.address, args.count, args.timeout)
    except ProbeError as e:
        print(f"scadawatch probe modbus: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.host}:{args.port} unit {args.unit}, {_TABLE_NAMES[args.register]} "
          f"{args.address}-{args.address + args.count - 1} "
          f"(function code {FUNCTION_CODE[args.register]}, 0-based addresses)")
    print("  ".join(f"{args.address + i}=0x{r:04X}" for i, r in enumerate(registers)))
    scaled = args.scale != 1.0 or args.offset != 0.0
    if scaled:
        print(f"values = raw * {args.scale:g} + {args.offset:g}")
    cells = decodings(registers, args.address, args.scale, args.offset)
    print()
    print("\n".join(table(cells, scaled, args.expect)))
    if args.expect is not None:
        # a 16-bit value has one word: CDAB reads as ABCD and DCBA as BADC; name it once
        hits = sorted((c for c in cells if matches(c.value, args.expect)
                       and (REGISTER_WIDTH[c.type] > 1 or c.word_order in ("ABCD", "BADC"))),
                      key=lambda c: abs(c.value - args.expect))  # the closest first
        print()
        if not hits:
            print(f"no decoding within {MATCH:.1%} of {args.expect:g}: check --address, "
                  "--unit, --scale, or read more registers (--count)")
        for c in hits:
            print(f"* {show(c.value, c.type, scaled)}: register = \"{args.register}\", "
                  f"address = {c.address}, type = \"{c.type}\", word_order = "
                  f"\"{c.word_order}\"" + (f", scale = {args.scale:g}" if args.scale != 1 else "")
                  + (f", offset = {args.offset:g}" if args.offset else ""))
    return EXIT_OK
