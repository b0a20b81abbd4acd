"""Modbus request planning and decoding, without I/O: requests are answered from an `Image`.

Decoding of literal wire words is table-driven from the folders in tests/cases/modbus_decode/."""

from __future__ import annotations

import itertools
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from support.peers.modbus_servers import ORDERS, TYPES, Image, source

from gateway.inputs.modbus.plan import DevicePlan, plan_device, wire_positions
from gateway.site.model import REGISTER_WIDTH, Device, Point

DECODE_CASES = Path(__file__).resolve().parents[2] / "cases" / "modbus_decode"


def device(**kw: object) -> Device:
    return Device(name="d", protocol="modbus-tcp", **kw)


def point(address: int, type_: str = "float32", table: str = "holding", order: str = "ABCD",
          scale: float = 1.0, offset: float = 0.0, tag: str | None = None) -> Point:
    return Point(tag=tag or f"{table}.{address}.{type_}.{order}", device="d",
                 register_kind=table, address=address, type=type_, word_order=order,
                 scale=scale, offset=offset)


def answer(plan: DevicePlan, image: Image) -> np.ndarray:
    """Decode one poll whose requests are answered from `image`."""
    registers, bits = plan.buffers()
    tables = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
    for r in plan.requests:
        table = image.tables[tables[r.function_code]]
        words = [table.get(a, 0) for a in range(r.address, r.address + r.count)]
        (bits if r.function_code <= 2 else registers)[r.offset:r.offset + r.count] = words
    return plan.decode(registers, bits)


def spans(plan: DevicePlan) -> list[tuple[int, int, int]]:
    return [(r.function_code, r.address, r.count) for r in plan.requests]


@pytest.mark.parametrize(("table", "type_", "order"), [
    *itertools.product(["holding", "input"], TYPES, ORDERS),
    ("coil", "bool", "ABCD"), ("discrete", "bool", "ABCD"),
])
def test_decode_round_trip(table: str, type_: str, order: str) -> None:
    # Three points of the type back to back, between neighbours in another order, so that
    # offsets inside a request and the gathering of bytes across registers are exercised.
    width = REGISTER_WIDTH[type_] if table in ("holding", "input") else 1
    pts = [point(0, "uint16", table if table in ("holding", "input") else "holding"),
           *[point(1 + i * width, type_, table, order) for i in range(3)]]
    image = Image()
    values = [7.0, source(type_, 0), source(type_, 1), source(type_, 2)]
    for p, v in zip(pts, values, strict=True):
        image.put(p, v)
    plan = plan_device(device(), list(enumerate(pts)))
    got = answer(plan, image)
    want = np.array(values)[plan.points]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("order", "registers", "positions"), [
    ("ABCD", 1, [0, 1]), ("CDAB", 1, [0, 1]), ("BADC", 1, [1, 0]), ("DCBA", 1, [1, 0]),
    ("ABCD", 2, [0, 1, 2, 3]), ("CDAB", 2, [2, 3, 0, 1]),
    ("BADC", 2, [1, 0, 3, 2]), ("DCBA", 2, [3, 2, 1, 0]),
    ("ABCD", 4, [0, 1, 2, 3, 4, 5, 6, 7]), ("CDAB", 4, [6, 7, 4, 5, 2, 3, 0, 1]),
    ("BADC", 4, [1, 0, 3, 2, 5, 4, 7, 6]), ("DCBA", 4, [7, 6, 5, 4, 3, 2, 1, 0]),
])
def test_word_orders(order: str, registers: int, positions: list[int]) -> None:
    assert wire_positions(order, registers) == positions


def read_case(case: Path) -> tuple[list[Point], Image, dict[str, float]]:
    """A tests/cases/modbus_decode/ folder: its points (site-file keys), the device's
    registers (`table address word...`, words as on the wire) and the values expected."""
    keys = tomllib.loads((case / "points.toml").read_text(encoding="utf-8"))["points"]
    points = [Point(device="d", **k) for k in keys]
    image = Image()
    for line in (case / "registers.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            table, address, *words = line.split()
            for i, word in enumerate(words):
                image.tables[table][int(address) + i] = int(word, 0)
    want = {tag: float(value) for tag, value in
            (line.split() for line in (case / "expected.txt").read_text().splitlines() if line)}
    return points, image, want


@pytest.mark.parametrize("case", sorted(p for p in DECODE_CASES.iterdir() if p.is_dir()),
                         ids=lambda p: p.name)
def test_decode_case(case: Path) -> None:
    points, image, want = read_case(case)
    plan = plan_device(device(), list(enumerate(points)))
    got = {points[i].tag: v for i, v in zip(plan.points, answer(plan, image).tolist(),
                                             strict=True)}
    assert got == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize(("points", "settings", "want"), [
    # adjacent values share one request
    ([point(0), point(2), point(4)], {}, [(3, 0, 6)]),
    # listed out of order
    ([point(4), point(0), point(2)], {}, [(3, 0, 6)]),
    # a one-register hole splits them unless max_gap allows it
    ([point(0), point(3)], {}, [(3, 0, 2), (3, 3, 2)]),
    ([point(0), point(3)], {"max_gap": 1}, [(3, 0, 5)]),
    # 125 registers at most, and a float32 never straddles two requests
    ([point(2 * i) for i in range(63)], {}, [(3, 0, 124), (3, 124, 2)]),
    ([point(4 * i, "float64") for i in range(3)], {"max_registers": 5},
     [(3, 0, 4), (3, 4, 4), (3, 8, 4)]),
    # tables are separate requests, in function code order
    ([point(0, table="input"), point(0, "bool", "coil"), point(0),
      point(0, "bool", "discrete")], {}, [(1, 0, 1), (2, 0, 1), (3, 0, 2), (4, 0, 2)]),
    # 2000 bits per request
    ([point(i, "bool", "coil") for i in range(2001)], {}, [(1, 0, 2000), (1, 2000, 1)]),
    ([point(i, "bool", "coil") for i in range(0, 30, 3)], {"max_bits": 10, "max_gap": 2},
     [(1, 0, 10), (1, 12, 10), (1, 24, 4)]),
    # two points on the same registers are read once
    ([point(10, "uint16"), point(10, "int16"), point(10, "int32")], {}, [(3, 10, 2)]),
])
def test_coalescing(points: list[Point], settings: dict, want: list[tuple[int, int, int]]
                    ) -> None:
    plan = plan_device(device(**settings), list(enumerate(points)))
    assert spans(plan) == want


@pytest.mark.parametrize("n", [1, 61, 62, 63, 124, 125, 2500])
def test_n_float32_cost_ceil_n_over_62_requests(n: int) -> None:
    pts = [point(2 * i) for i in range(n)]
    plan = plan_device(device(), list(enumerate(pts)))
    assert len(plan.requests) == math.ceil(n / 62)
    for index, request in zip(plan.points, plan.request_of_row, strict=True):
        r = plan.requests[request]
        assert r.address <= 2 * index and 2 * index + 2 <= r.address + r.count


def test_rows_name_their_site_point() -> None:
    pts = [(7, point(4)), (3, point(0, "bool", "coil")), (11, point(0))]
    plan = plan_device(device(), pts)
    assert sorted(plan.points.tolist()) == [3, 7, 11]
    image = Image()
    for v, (_, p) in zip([4.0, 1.0, 0.5], pts, strict=True):
        image.put(p, v)
    got = dict(zip(plan.points.tolist(), answer(plan, image).tolist(), strict=True))
    assert got == {7: 4.0, 3: 1.0, 11: 0.5}


@pytest.mark.parametrize(("p", "settings"), [
    (point(0, "float64"), {"max_registers": 3}),
    (point(0, "int32"), {"max_registers": 1}),
])
def test_point_wider_than_a_request_is_named(p: Point, settings: dict) -> None:
    with pytest.raises(ValueError, match=f"max_registers={settings['max_registers']}") as err:
        plan_device(device(**settings), [(0, p)])
    assert repr(p.tag) in str(err.value)
