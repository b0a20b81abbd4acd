"""Physics of the simulated MV grid: normal operation within limits, each event's signature."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from simulators import scenario
from simulators.physics.grid import FREQUENCY_TAG, RESTORE_DELAY, GridNetwork
from simulators.scenario import Event
from simulators.servers.registers import assign_addresses, device_name

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
PEAK = 18 * 3600 + 900  # Monday 18:15, the evening peak
Column = Callable[[str], int]  # tag -> its column in the values
Check = Callable[[GridNetwork, Column, np.ndarray, np.ndarray], None]
TIES = {"feeder1.line6_7", "feeder1.line11_4", "feeder2.line14_8"}  # CIGRE's S2, S3, S1
POINT_KINDS = {"pressure", "flow", "level", "status", "voltage", "current", "frequency", "power",
               "temperature", "other"}


def event(kind: str, target: str, start: float = PEAK - 600, duration: float = 3600,
          **params: float) -> Event:
    return Event(kind, target, start, duration, params, key=f"grid.events[{kind}]")


@pytest.fixture(scope="module")
def grid() -> GridNetwork:
    """An event-free grid, for its signal list and check_event."""
    return GridNetwork([], seed=7, start=START)


@pytest.fixture(scope="module")
def column(grid: GridNetwork) -> Column:
    index = {s.tag: i for i, s in enumerate(grid.signals)}
    return index.__getitem__


@pytest.fixture(scope="module")
def baseline() -> Callable[[float], np.ndarray]:
    """True values of the event-free grid (seed 7) at a time, computed once per time."""
    cache: dict[float, np.ndarray] = {}

    def at(t: float) -> np.ndarray:
        if t not in cache:
            cache[t] = GridNetwork([], seed=7, start=START).advance(t)
        return cache[t]

    return at


def test_signals_are_named_typed_and_bounded(grid: GridNetwork) -> None:
    tags = [s.tag for s in grid.signals]
    assert len(tags) == len(set(tags))
    assert grid.zones == ["feeder1", "feeder2"]
    for s in grid.signals:
        assert s.kind in POINT_KINDS, s.tag
        assert s.tag.startswith(f"{s.zone}." if s.zone else "substation."), s.tag
        if s.kind == "status":
            assert s.noise == 0 and s.resolution == 0, s.tag
        else:
            assert s.lo is not None and s.hi is not None and s.lo < s.hi, s.tag
            assert s.noise > 0 and s.resolution > 0, s.tag
        if s.unit == "%":
            assert (s.kind, s.lo, s.hi) == ("other", 0.0, 100.0), s.tag
    devices = {s.device for s in assign_addresses("grid", grid.signals)}
    assert devices == {device_name("grid", z) for z in [*grid.zones, None]}


def test_normal_operation_stays_within_limits() -> None:
    net = GridNetwork([], seed=3, start=START)
    rows = np.array([net.values()] + [net.advance(2 * 3600) for _ in range(24)])  # two days
    assert not np.isnan(rows).any()
    for i, s in enumerate(net.signals):
        if s.kind == "status":
            closed = s.tag.removesuffix(".status") not in TIES
            assert (rows[:, i] == float(closed)).all(), s.tag
        else:
            assert (rows[:, i] >= s.lo).all() and (rows[:, i] <= s.hi).all(), s.tag
    frequency = rows[:, [s.tag for s in net.signals].index(FREQUENCY_TAG)]
    assert frequency.std() > 0.005  # it wanders


def _zone_voltages(grid: GridNetwork, zone: str) -> np.ndarray:
    return np.array([i for i, s in enumerate(grid.signals)
                     if s.zone == zone and s.kind == "voltage"])


def _check_sag(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    f1, f2 = _zone_voltages(grid, "feeder1"), _zone_voltages(grid, "feeder2")
    ratio = v[f1] / base[f1]
    assert ((ratio > 0.67) & (ratio < 0.71)).all(), ratio  # depth 0.3, loads' ZIP share
    np.testing.assert_allclose(v[f2], base[f2], rtol=1e-6)


def _check_swell(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    f1, f2 = _zone_voltages(grid, "feeder1"), _zone_voltages(grid, "feeder2")
    ratio = v[f2] / base[f2]
    assert ((ratio > 1.09) & (ratio < 1.11)).all(), ratio
    assert (v[f2] > 22.0).any()  # above EN 50160's +10 %
    np.testing.assert_allclose(v[f1], base[f1], rtol=1e-6)


def _check_overload(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    for tag in ("feeder1.trafo.loading", "feeder1.line1_2.loading"):
        assert base[col(tag)] < 100 < v[col(tag)], tag


def _check_dark(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    for tag in ("feeder1.bus4.voltage", "feeder1.bus5.voltage", "feeder1.bus6.voltage",
                "feeder1.line3_4.current", "feeder1.line4_5.current", "feeder1.line5_6.current",
                "feeder1.line3_4.loading", "feeder1.line3_4.status"):
        assert v[col(tag)] == 0.0, tag
    assert 18.0 < v[col("feeder1.bus3.voltage")] < 22.0
    assert not np.isnan(v).any()


def _check_restored(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    for bus in (4, 5, 6):
        assert 18.0 < v[col(f"feeder1.bus{bus}.voltage")] < 22.0, bus
    assert v[col("feeder1.line3_4.current")] == 0.0
    assert v[col("feeder1.line3_4.status")] == 0.0
    assert v[col("feeder1.line6_7.status")] == 1.0  # tie S2 closed
    assert v[col("feeder1.line6_7.current")] > 10.0


def _check_backfed(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    assert v[col("feeder2.p")] == 0.0  # its own bay is dead ...
    for bus in (13, 14):  # ... its buses are fed from feeder 1 through tie S1
        assert 18.0 < v[col(f"feeder2.bus{bus}.voltage")] < 22.0, bus
    assert v[col("feeder2.line14_8.status")] == 1.0
    assert v[col("feeder1.p")] > base[col("feeder1.p")]


def _check_frequency(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    assert v[col(FREQUENCY_TAG)] - base[col(FREQUENCY_TAG)] == pytest.approx(-0.25, abs=1e-9)
    others = np.arange(len(v)) != col(FREQUENCY_TAG)
    np.testing.assert_allclose(v[others], base[others], rtol=1e-6)


def _check_unchanged(grid: GridNetwork, col: Column, v: np.ndarray, base: np.ndarray) -> None:
    np.testing.assert_allclose(v, base, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("events", "at", "check"), [
    ([event("voltage_sag", "feeder1", depth=0.3)], PEAK, _check_sag),
    ([event("voltage_swell", "feeder2", start=3 * 3600, depth=0.1)], 3 * 3600 + 900,
     _check_swell),
    ([event("overload", "feeder1", factor=2.0)], PEAK, _check_overload),
    ([event("line_outage", "feeder1.line3_4", restore=0)], PEAK, _check_dark),
    ([event("line_outage", "feeder1.line3_4", restore=1)], PEAK - 600 + RESTORE_DELAY - 60,
     _check_dark),
    ([event("line_outage", "feeder1.line3_4", restore=1)], PEAK - 600 + RESTORE_DELAY,
     _check_restored),
    ([event("line_outage", "feeder2.line12_13", restore=1)], PEAK + 600, _check_backfed),
    ([event("frequency", "grid", deviation=-0.25)], PEAK, _check_frequency),
    ([event("line_outage", "feeder1.line3_4", restore=1),
      event("overload", "feeder2", factor=2.0)], PEAK - 600 + 3600, _check_unchanged),
], ids=["sag", "swell", "overload", "outage", "outage-before-restore", "outage-restored",
        "outage-backfed", "frequency", "after-events"])
def test_event_shows_its_physical_signature(grid: GridNetwork, column: Column,
                                            baseline: Callable[[float], np.ndarray],
                                            events: list[Event], at: float, check: Check) -> None:
    net = GridNetwork(events, seed=7, start=START)
    net.advance(at - 3600)  # stepping through the event's start, as a live run does
    check(grid, column, net.advance(3600), baseline(at))


def test_same_seed_gives_identical_values_and_another_seed_does_not() -> None:
    runs = [GridNetwork([], seed=s, start=START) for s in (5, 5, 6)]
    rows = [np.array([r.advance(1800) for _ in range(3)]) for r in runs]
    np.testing.assert_array_equal(rows[0], rows[1])
    assert not np.allclose(rows[0], rows[2])


def test_values_at_a_time_do_not_depend_on_the_step() -> None:
    coarse, fine = (GridNetwork([event("overload", "feeder1", start=600, factor=1.5)], seed=2,
                                start=START) for _ in range(2))
    for _ in range(4):
        fine.advance(900)
    np.testing.assert_allclose(coarse.advance(3600), fine.values(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("ev", "reason"), [
    (event("voltage_sag", "feeder1", depth=0.3), None),
    (event("frequency", "grid", deviation=0.2), None),
    (event("frequency", "feeder2", deviation=-1.0), None),
    (event("line_outage", "feeder2.line13_14"), None),
    (event("stuck", "feeder1.p"), None),  # sensor faults are the measurement layer's
    (event("voltage_sag", "feeder9", depth=0.3), "unknown target 'feeder9'"),
    (event("voltage_sag", "grid", depth=0.3), "unknown target 'grid'"),
    (event("voltage_sag", "feeder1"), "needs the parameter 'depth'"),
    (event("voltage_sag", "feeder1", depth=0.8), "depth must be above 0 and at most 0.5"),
    (event("voltage_swell", "feeder1", depth=0.0), "depth must be above 0"),
    (event("overload", "feeder1", factor=0.5), "factor must be above 1"),
    (event("frequency", "grid", deviation=3.0), "|deviation| must be above 0 and at most 2"),
    (event("line_outage", "feeder1.line99_100"), "unknown line 'feeder1.line99_100'"),
    (event("line_outage", "feeder1.line6_7"), "normally open tie"),
    (event("line_outage", "feeder1.line3_4", restore=2), "restore must be 0 or 1"),
    (event("leak", "feeder1", size=1.0), "not a grid event"),
])
def test_check_event_names_what_is_wrong(grid: GridNetwork, ev: Event, reason: str | None) -> None:
    found = grid.check_event(ev)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_only_valid_physics_events_act_on_the_grid(
        baseline: Callable[[float], np.ndarray]) -> None:
    # An invalid event is the site's to report (with its file and key); the physics skips it,
    # as it skips the measurement layer's faults.
    ignored = [event("overload", "feeder3", factor=1.5), event("stuck", "feeder1.p"),
               event("line_outage", "feeder1.line6_7")]
    net = GridNetwork(ignored, seed=7, start=START)
    np.testing.assert_allclose(net.advance(PEAK), baseline(PEAK), rtol=1e-6)


@pytest.mark.parametrize(("ev", "location"), [
    (event("line_outage", "feeder1.line3_8"), "feeder1"),
    (event("line_outage", "feeder2.line13_14"), "feeder2"),
    (event("frequency", "grid", deviation=0.2), FREQUENCY_TAG),
    (event("overload", "feeder2", factor=1.5), "feeder2"),
])
def test_labels_name_a_zone_or_a_tag(grid: GridNetwork, ev: Event, location: str) -> None:
    assert grid.event_location(ev) == location


@pytest.mark.parametrize("name", ["grid-events", "sensor-faults", "comms-faults"])
def test_shipped_scenarios_start_early_and_fit_the_grid(grid: GridNetwork, name: str) -> None:
    events = scenario.load(name).for_site("grid")
    assert events and events[0].start < 3600
    tags = {s.tag for s in grid.signals}
    devices = {device_name("grid", z) for z in [*grid.zones, None]}
    for e in events:
        assert grid.check_event(e) is None, e.key
        if e.kind == "comms":
            assert e.target in devices and e.params["mode"] in ("silent", "exception"), e.key
        elif scenario.EVENT_KINDS[e.kind][0] == "any":
            assert e.target in tags, e.key
    if name == "grid-events":
        assert {e.kind for e in events} == {"voltage_sag", "voltage_swell", "overload",
                                            "line_outage", "frequency"}
        assert any(e.params.get("restore") == 1 for e in events)
    if name == "comms-faults":
        assert {e.params["mode"] for e in events} == {"silent", "exception"}
