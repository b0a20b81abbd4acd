"""Water network physics: leaks, bursts and pump trips show through the hydraulics."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from gateway.site.loader import load_site
from scadawatch.cli import main as cli_main
from simulators.physics.water import WaterNetwork
from simulators.scenario import Event

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, the CLI's default
HOUR = 3600.0
# wntr fits Net3's three-point pump curves; it silences scipy's warning, pytest shows it again.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")

# --- exports: minimum night flow and pressures ----------------------------------------------

LEAK_ZONE, FAR_ZONE = "dma1", "dma3"
LEAK_SIZE = 8.0  # L/s, about the zone's night consumption
LEAK_START = 22 * HOUR  # between the two nights the exports cover
LEAK_SCENARIO = {"water": {"events": [
    {"kind": "leak", "target": LEAK_ZONE, "start": "22:00", "duration": "1d", "size": LEAK_SIZE}]}}
NIGHTS = ((2.0, 4.0), (26.0, 28.0))  # hours: minimum night flow before and after the leak


@dataclass(frozen=True)
class Export:
    hours: np.ndarray
    tags: list[str]
    values: np.ndarray  # (time, tag)
    net: dict[str, np.ndarray]  # zone -> inflow minus outflow, by the site file's roles

    def column(self, tag: str) -> np.ndarray:
        return self.values[:, self.tags.index(tag)]

    def night_flow(self, zone: str, night: tuple[float, float]) -> float:
        return float(self.net[zone][(self.hours >= night[0]) & (self.hours < night[1])].mean())


def _read(out: Path) -> Export:
    with (out / "readings.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    stamps = [datetime.fromisoformat(r[0]) for r in rows[1:]]
    hours = np.array([(s - START).total_seconds() / HOUR for s in stamps])
    tags = rows[0][1:]
    values = np.array([[float(c) if c else np.nan for c in r[1:]] for r in rows[1:]])
    net: dict[str, np.ndarray] = {}
    for p in load_site(out / "site.toml").points:
        if p.zone and p.role:
            sign = 1.0 if p.role == "inflow" else -1.0
            net[p.zone] = net.get(p.zone, 0.0) + sign * values[:, tags.index(p.tag)]
    return Export(hours, tags, values, net)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Export]:
    """A normal and a leak export, same seed, 29 hours every 15 minutes."""
    tmp = tmp_path_factory.mktemp("water")
    leak = tmp / "leak.toml"
    leak.write_text(tomli_w.dumps(LEAK_SCENARIO), encoding="utf-8")
    out = {}
    for name, scenario in (("normal", "normal"), ("leak", str(leak))):
        code = cli_main(["simulate", "water", "--scenario", scenario, "--export",
                         str(tmp / name), "--days", "1.2", "--step", "15min", "--seed", "1"])
        assert code == 0
        out[name] = _read(tmp / name)
    return out


@pytest.mark.parametrize(("name", "rise"), [("leak", LEAK_SIZE), ("normal", 0.0)])
def test_minimum_night_flow_rises_by_the_leak_size(exports: dict[str, Export], name: str,
                                                   rise: float) -> None:
    rec = exports[name]
    before, after = (rec.night_flow(LEAK_ZONE, night) for night in NIGHTS)
    assert after - before == pytest.approx(rise, abs=0.1 * LEAK_SIZE)


def test_exports_differ_only_once_the_leak_starts(exports: dict[str, Export]) -> None:
    leak, normal = exports["leak"], exports["normal"]
    assert leak.tags == normal.tags
    before = leak.hours < LEAK_START / HOUR
    np.testing.assert_array_equal(leak.values[before], normal.values[before])
    assert not np.array_equal(leak.values[~before], normal.values[~before])


def test_leak_lowers_pressures_in_its_zone_not_far_away(exports: dict[str, Export]) -> None:
    leak, normal = exports["leak"], exports["normal"]
    after = leak.hours >= LEAK_START / HOUR
    drop = {tag: float(np.mean(normal.column(tag)[after] - leak.column(tag)[after]))
            for tag in leak.tags if tag.endswith(".pressure")}
    near = {t: d for t, d in drop.items() if t.startswith(f"{LEAK_ZONE}.")}
    far = {t: d for t, d in drop.items() if t.startswith(f"{FAR_ZONE}.")}
    assert len(near) >= 3 and len(far) >= 3
    assert all(d > 0.1 for d in near.values()), near  # m; twice a logger's noise
    assert all(abs(d) < 0.05 for d in far.values()), far


@pytest.mark.parametrize("pump", ["pump1", "pump2"])
def test_a_motor_current_reads_0_a_while_its_pump_stands_and_never_below(
        exports: dict[str, Export], pump: str) -> None:
    """A motor current is an RMS magnitude: its transducer's noise must not make a stopped
    pump read -1.5 A (which is outside the point's lo 0, a `limit` alarm on a healthy site)."""
    normal = exports["normal"]
    running = normal.column(f"plant.{pump}.status") == 1.0
    current = normal.column(f"plant.{pump}.current")
    assert running.any() and (~running).any()  # both states within the export
    assert np.all(current[~running] == 0.0), current[~running]
    assert np.all(current[running] > 10.0)  # A: a running motor's current stays readable


# --- events on the model, against the same network without them ----------------------------

EVENTS = [
    Event("leak", "dma1", 1 * HOUR, 2 * HOUR, {"size": 5.0}, key="abrupt"),
    Event("burst", "dma1", 4 * HOUR, 1 * HOUR, {"junction": "j229"}, key="burst"),
    Event("leak", "dma2", 1 * HOUR, 4 * HOUR, {"size": 6.0, "ramp": 2 * HOUR}, key="ramp"),
    Event("pump_trip", "pump1", 2 * HOUR, 1 * HOUR, key="trip"),
]
RUN_HOURS = 4.5


def _zone_net(model: WaterNetwork, values: np.ndarray, zone: str) -> float:
    return sum((1.0 if s.role == "inflow" else -1.0) * v
               for s, v in zip(model.signals, values, strict=True)
               if s.zone == zone and s.role)


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[WaterNetwork, dict[float, np.ndarray]]]:
    """True values every 5 minutes with and without EVENTS, by hour since the start."""
    out = {}
    for name, events in (("base", []), ("events", EVENTS)):
        model = WaterNetwork(events, seed=3, start=START)
        values = {0.0: model.values()}
        while model.time < RUN_HOURS * HOUR:
            values[(model.time + 300.0) / HOUR] = model.advance(300.0)
        out[name] = (model, values)
    return out


@pytest.mark.parametrize(("case", "zone", "hour", "extra"), [
    ("abrupt leak", "dma1", 2.0, 5.0),
    ("after its repair", "dma1", 3.5, 0.0),
    ("burst, default size", "dma1", 4.5, 20.0),
    ("ramp half open", "dma2", 2.0, 3.0),
    ("ramp fully open", "dma2", 3.5, 6.0),
    ("no event", "dma3", 2.0, 0.0),
])
def test_leaks_add_their_flow_to_the_zone_balance(
        runs: dict[str, tuple[WaterNetwork, dict[float, np.ndarray]]], case: str, zone: str,
        hour: float, extra: float) -> None:
    (model, base), (_, events) = runs["base"], runs["events"]
    added = _zone_net(model, events[hour], zone) - _zone_net(model, base[hour], zone)
    assert added == pytest.approx(extra, abs=max(0.1 * extra, 0.1)), case


@pytest.mark.parametrize(("hour", "running"), [(1.5, 1.0), (2.5, 0.0), (3.5, 1.0)])
def test_pump_trip_stops_the_pump_until_it_ends(
        runs: dict[str, tuple[WaterNetwork, dict[float, np.ndarray]]], hour: float,
        running: float) -> None:
    model, values = runs["events"]
    tags = [s.tag for s in model.signals]
    status, flow, level = (values[hour][tags.index(t)] for t in (
        "plant.pump1.status", "plant.pump1.flow", "plant.tank1.level"))
    assert status == running
    assert (flow > 50.0) == bool(running)  # L/s
    if not running:  # the tanks make up for it
        assert level < runs["base"][1][hour][tags.index("plant.tank1.level")]


# --- event checks ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def network() -> WaterNetwork:
    return WaterNetwork([], seed=1, start=START)


def _event(kind: str, target: str, **params: float | str) -> Event:
    return Event(kind, target, HOUR, HOUR, params, key="water.events[0]")


@pytest.mark.parametrize(("event", "reason"), [
    (_event("leak", "dma9", size=1.0), "unknown zone 'dma9'"),
    (_event("leak", "dma1", size=1.0, junction="139"), "junction '139' is not in dma1"),
    (_event("leak", "dma1"), "either size"),
    (_event("leak", "dma1", size=1.0, percent=5.0), "either size"),
    (_event("leak", "dma1", size=-1.0), "size must be above 0"),
    (_event("burst", "dma2", size=5000.0), "size must be above 0"),
    (_event("leak", "dma3", percent=150.0), "percent must be above 0"),
    (_event("leak", "dma3", size=1.0, ramp=-60.0), "ramp must not be negative"),
    (_event("pump_trip", "pump9"), "unknown pump 'pump9'"),
    (_event("leak", "dma1", size=2.0, junction="j215"), None),
    (_event("leak", "dma3", percent=10.0, ramp=7200.0), None),
    (_event("burst", "dma2"), None),
    (_event("pump_trip", "plant.pump2.status"), None),
    (_event("stuck", "dma1.inlet.flow"), None),  # the sensors' business, not the network's
])
def test_check_event_names_what_is_wrong(network: WaterNetwork, event: Event,
                                         reason: str | None) -> None:
    found = network.check_event(event)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_a_bad_event_is_refused_when_the_network_is_built() -> None:
    with pytest.raises(ValueError, match=r"water\.events\[0\]: unknown zone"):
        WaterNetwork([_event("leak", "dma9", size=1.0)], seed=1, start=START)
