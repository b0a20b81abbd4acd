"""`scadawatch probe modbus` (scadawatch/commands/probe.py): one read-only read, every decoding
side by side, against pyModbusTCP (a Modbus stack we did not write), the simulator and
pymodbus; a refused connection, a silent unit and an exception response each give a clear
error."""

from __future__ import annotations

import asyncio
import doctest
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pytest
from support.peers.modbus_servers import (
    ORDERS,
    Image,
    encode,
    free_port,
    pymodbus_tcp,
    pymodbustcp,
    source,
)

import scadawatch.commands.probe
from gateway.site.model import Point
from scadawatch.commands.probe import TYPES, decodings

if TYPE_CHECKING:
    from conftest import CliRun, ServedSite

KNOWN = 4.2  # float32 0x40866666: its four bytes differ, so every order decodes differently
ROW = re.compile(r"^(\d+)\s+(\w+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", re.M)


def cells(out: str) -> dict[tuple[int, str, str], str]:
    """The printed table: (address, type, word order) -> cell text."""
    return {(int(m[1]), m[2], order): m[3 + i] for m in ROW.finditer(out)
            for i, order in enumerate(ORDERS)}


def probe(cli: CliRun, port: int, *args: object) -> tuple[int, str, str]:
    return cli("probe", "modbus", "--host", "127.0.0.1", "--port", port, *args)


@pytest.mark.parametrize("type_", TYPES)
@pytest.mark.parametrize("order", ORDERS)
def test_each_type_and_word_order_decodes_where_it_was_encoded(type_: str, order: str) -> None:
    value = source(type_, 0)
    registers = [0xFFFF, *encode(value, type_, order), 0xFFFF]  # a neighbour on each side
    got = {(c.address, c.type, c.word_order): c.value for c in decodings(registers, 100)}
    assert got[(101, type_, order)] == value
    assert (100, type_, order) in got  # every start address in the read is decoded


def test_scale_and_offset_apply_to_every_decoding() -> None:
    plain = decodings(encode(1234, "uint16", "ABCD"), 7)
    scaled = decodings(encode(1234, "uint16", "ABCD"), 7, scale=0.1, offset=-5)
    assert [c.value * 0.1 - 5 for c in plain] == pytest.approx([c.value for c in scaled])


def test_pymodbustcp_known_float32_in_all_word_orders(cli: CliRun) -> None:
    image = Image()
    for k, order in enumerate(ORDERS):
        image.put(Point(tag=order, address=10 + 2 * k, type="float32", word_order=order), KNOWN)
    with pymodbustcp(image) as port:
        code, out, err = probe(cli, port, "--address", 10, "--count", 8, "--expect", KNOWN)
    assert code == 0, err
    table = cells(out)
    for k, order in enumerate(ORDERS):
        assert table[(10 + 2 * k, "float32", order)] == f"{KNOWN}*"
        others = [table[(10 + 2 * k, "float32", o)] for o in ORDERS if o != order]
        assert not any(cell.endswith("*") for cell in others), others
        assert (f'* {KNOWN}: register = "holding", address = {10 + 2 * k}, type = "float32", '
                f'word_order = "{order}"') in out
    assert "10=0x4086  11=0x6666" in out  # the raw registers, to check by eye


def test_simulator_float32_in_the_word_orders_it_serves(serve_site: Callable[..., ServedSite],
                                                        cli: CliRun) -> None:
    served = serve_site("water")  # frozen clock: the sample at the start is served
    values = served.site.sample(served.server.time or 0.0)
    seen = set()
    for register, order in (("holding", "ABCD"), ("input", "CDAB")):
        k, sig = next((k, s) for k, s in enumerate(served.site.signals)
                      if s.register == register and s.type == "float32"
                      and s.word_order == order and values[k] != 0)
        code, out, err = probe(cli, served.modbus_port, "--unit", sig.unit_id, "--register",
                               register, "--address", sig.address, "--count", 2)
        assert code == 0, err
        table = cells(out)
        shown = {o: float(table[(sig.address, "float32", o)]) for o in ORDERS}
        assert shown[order] == pytest.approx(float(np.float32(values[k])), rel=1e-6)
        assert all(shown[o] != pytest.approx(shown[order]) for o in ORDERS if o != order)
        seen.add(order)
    assert seen == {"ABCD", "CDAB"}


def test_connection_refused_is_named(cli: CliRun) -> None:
    code, _, err = probe(cli, free_port(), "--address", 0)
    assert code == 1
    assert "connection refused" in err and "127.0.0.1:" in err


@pytest.mark.parametrize(("unit", "address", "expected"), [
    (2, 0, "no answer within 0.5 s to a read of holding registers 0-3 of unit 2 "
           "(function code 3) (wrong --unit"),
    (1, 500, "answered a read of holding registers 500-503 of unit 1 (function code 3) with "
             "Modbus exception 2 (illegal_data_address): not every address"),
])
def test_silent_unit_and_exception_answer_are_named(cli: CliRun, unit: int, address: int,
                                                   expected: str) -> None:
    image = Image()
    image.put(Point(tag="x", address=0, type="float64"), KNOWN)

    async def run() -> tuple[tuple[int, str, str], set[int]]:
        async with pymodbus_tcp({1: image}, silent=[2]) as served:
            done = await asyncio.to_thread(probe, cli, served.port, "--unit", unit,
                                           "--address", address, "--timeout", "500ms")
            return done, served.function_codes()

    (code, _, err), function_codes = asyncio.run(run())
    assert code == 1
    assert expected in err
    assert function_codes == {3}  # read-only: one read, never a write


def test_docstring_examples() -> None:
    assert doctest.testmod(scadawatch.commands.probe).failed == 0
