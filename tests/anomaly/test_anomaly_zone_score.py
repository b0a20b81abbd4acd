"""The zone model (`anomaly` on a zone) at any step: a zone's readings that move against how
they usually move together raise it, on a pump rig read every second as on a water zone read
every hour; a clean recording, a silent zone or a missing tag do not; nothing during its
warm-up; a more specific alarm in the zone silences it; its state resumes; the engine leaves it
out when asked to; a real export stays quiet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.alarms import Alarm
from anomaly.core.batch import Batch
from anomaly.core.points import PointInfo, PointTable
from anomaly.engine import Detector, Engine, EngineSettings, default_detectors
from anomaly.tags.limits import Limits
from anomaly.zone_score import WARM_CYCLE_S, WARM_SAMPLES, ZoneScore
from gateway.site.model import AnomalySection

S = 10**9


@dataclass(frozen=True)
class Site:
    """A synthetic recording: its points, step, length and where a fault goes."""

    points: list[PointInfo]
    step: int  # seconds
    samples: int
    fault: slice  # rows of the fault

    def times(self) -> np.ndarray:
        return np.arange(self.samples, dtype=np.int64) * self.step * S


RIG = Site([PointInfo("rig.flow", "flow", "L/min", zone="rig", lo=0.0, hi=60.0),
            PointInfo("rig.pressure", "pressure", "bar", zone="rig", lo=0.0, hi=6.0),
            PointInfo("rig.current", "current", "A", zone="rig", lo=0.0, hi=5.0),
            PointInfo("rig.temperature", "temperature", "degC", zone="rig"),
            PointInfo("rig.vibration", "other", "g", zone="rig"),
            PointInfo("rig.voltage", "voltage", "V", zone="rig")],
           step=1, samples=900, fault=slice(600, 780))
WATER = Site([PointInfo("z.inlet.flow", "flow", "L/s", zone="z", role="inflow", lo=0.0, hi=100.0),
              *[PointInfo(f"z.j{i}.pressure", "pressure", "m", zone="z", lo=20.0, hi=100.0)
                for i in (1, 2, 3)],
              PointInfo("y.inlet.flow", "flow", "L/s", zone="y", role="inflow", lo=0.0, hi=100.0),
              PointInfo("y.j4.pressure", "pressure", "m", zone="y", lo=20.0, hi=100.0)],
             step=3600, samples=10 * 24, fault=slice(9 * 24 + 10, 9 * 24 + 16))


def rig(seed: int = 5) -> np.ndarray:
    """A pump rig read every second: the pump's flow wanders, pressure and motor current
    follow it; a warming temperature, vibration, and a 230 V supply noisy by 4 %."""
    rng = np.random.default_rng(seed)
    n = RIG.samples
    flow = 32 + np.cumsum(rng.normal(0, 0.05, n)) * 0.2 + rng.normal(0, 0.3, n)
    pressure = 2.0 + 0.02 * (flow - 32) + rng.normal(0, 0.01, n)
    current = 1.5 + 0.03 * (flow - 32) + rng.normal(0, 0.02, n)
    temperature = 70 + 2 * (1 - np.exp(-np.arange(n) / 3000)) + rng.normal(0, 0.05, n)
    vibration = 0.03 + rng.normal(0, 0.001, n)
    voltage = 230 * (1 + rng.normal(0, 0.04, n))
    return np.column_stack([flow, pressure, current, temperature, vibration, voltage])


def water(seed: int = 5) -> np.ndarray:
    """Two zones read every hour: a daily demand cycle, pressures falling as demand rises."""
    rng = np.random.default_rng(seed)
    t = WATER.times() / S
    demand = 1.0 + 0.6 * np.sin(2 * np.pi * (t / 86400 - 0.3)) ** 2
    flow = 30 * demand + rng.normal(0, 0.5, t.size)
    pressure = 45 - np.array([2.0, 3.0, 4.5]) * demand[:, None] ** 2
    pressure += rng.normal(0, 0.1, pressure.shape)
    y_flow = 12 * demand + rng.normal(0, 0.3, t.size)
    y_pressure = 50 - 3 * demand + rng.normal(0, 0.1, t.size)
    return np.column_stack([flow, pressure, y_flow, y_pressure])


def valve_closed(v: np.ndarray) -> None:
    """The valve at the pump's inlet closes part way: a little less flow and more pressure,
    and the motor current does not fall with the flow; each within its limits."""
    v[RIG.fault, 0] -= 1.5
    v[RIG.fault, 1] += 0.05


def pump_trip(v: np.ndarray) -> None:
    v[WATER.fault, 1:4] -= 12.0  # every pressure of zone z, demand as usual


def pump_trip_in_y(v: np.ndarray) -> None:
    v[WATER.fault, 5] -= 12.0  # zone y's only pressure: the zone beside z, fewer points


def pressure_below_limit(v: np.ndarray) -> None:
    v[WATER.fault, 1:4] -= 30.0  # so far down that the pressures leave their limits


def silent(site: Site) -> Callable[[np.ndarray], None]:
    def fault(v: np.ndarray) -> None:
        v[site.fault] = np.nan
    return fault


def one_tag_missing(site: Site) -> Callable[[np.ndarray], None]:
    def fault(v: np.ndarray) -> None:
        v[site.fault.start - 100:, 1] = np.nan
    return fault


def alarms_of(site: Site, values: np.ndarray,
              detectors: Callable[[PointTable, EngineSettings], list[Detector]]) -> list[Alarm]:
    settings = EngineSettings(interval=site.step, lateness=0.0)
    engine = Engine(site.points, settings, detectors=detectors(PointTable(site.points),
                                                               settings))
    raised = []
    for t, row in zip(site.times(), values, strict=True):
        ok = np.isfinite(row)
        batch = Batch.of(source_ts=t, point=np.flatnonzero(ok), value=row[ok], quality=0)
        raised += [e.alarm for e in engine.process(batch) if e.action == "raise"]
    return raised + [e.alarm for e in engine.finish() if e.action == "raise"]


def zone_model(table: PointTable, settings: EngineSettings) -> list[Detector]:
    return [ZoneScore(table, settings)]


def with_limits(table: PointTable, settings: EngineSettings) -> list[Detector]:
    return [Limits(table), ZoneScore(table, settings)]


CASES = [  # site, recording, fault, detectors, the alarms (kind, zone), nothing else
    (RIG, rig, None, zone_model, set()),
    (RIG, rig, valve_closed, zone_model, {("anomaly", "rig")}),
    (RIG, rig, silent(RIG), zone_model, set()),  # silence is comms' business
    (RIG, rig, one_tag_missing(RIG), zone_model, set()),
    (WATER, water, None, zone_model, set()),
    (WATER, water, pump_trip, zone_model, {("anomaly", "z")}),
    (WATER, water, pump_trip_in_y, zone_model, {("anomaly", "y")}),  # each zone on its own
    (WATER, water, silent(WATER), zone_model, set()),
    # The limit alarms explain the zone's state: no catch-all on top of them.
    (WATER, water, pressure_below_limit, with_limits, {("limit", "z")}),
]


@pytest.mark.parametrize(("site", "recording", "fault", "detectors", "expected"), CASES,
                         ids=[f"{'rig 1 s' if c[0] is RIG else 'water 1 h'}: "
                              f"{getattr(c[2], '__qualname__', 'clean').split('.')[0]}"
                              f"{' +limits' if c[3] is with_limits else ''}" for c in CASES])
def test_zone_conditions_at_any_step(
        site: Site, recording: Callable[[], np.ndarray], fault: Callable | None,
        detectors: Callable[[PointTable, EngineSettings], list[Detector]],
        expected: set[tuple[str, str]]) -> None:
    values = recording()
    if fault is not None:
        fault(values)
    alarms = alarms_of(site, values, detectors)
    assert {(a.kind, a.zone) for a in alarms} == expected
    times = site.times()
    during = (times[site.fault.start], times[site.fault.stop - 1] + 4 * site.step * S)
    assert all(during[0] <= a.start_ns <= during[1] for a in alarms)


@pytest.mark.parametrize(("site", "recording", "fault", "warm_s"), [
    (RIG, rig, valve_closed, WARM_SAMPLES),  # a machine: judged within minutes
    (WATER, water, pump_trip, WARM_CYCLE_S),  # a network: after a week of its cycles
])
def test_nothing_during_warm_up(site: Site, recording: Callable[[], np.ndarray],
                                fault: Callable[[np.ndarray], None], warm_s: float) -> None:
    values = recording()
    faulty = values.copy()
    fault(faulty)
    change = (faulty - values)[site.fault]
    early = int(warm_s / site.step / 2)  # the same fault, half-way through the warm-up
    values[early:early + len(change)] += change
    assert [a for a in alarms_of(site, values, zone_model) if a.start_ns < warm_s * S] == []


def test_the_message_names_the_tags_furthest_from_usual() -> None:
    values = rig()
    valve_closed(values)
    alarm, = alarms_of(RIG, values, zone_model)
    assert alarm.message.startswith("rig: readings unlike the zone's learned behaviour; "
                                    "furthest from usual: rig.flow 3")
    assert " L/min from its usual 3" in alarm.message and " SD)" in alarm.message
    assert alarm.value is not None and alarm.limit is not None and alarm.value > alarm.limit


def test_state_resumes(tmp_path: Path) -> None:
    """Save half-way, load into a new engine: the same alarms as one uninterrupted run."""
    values = water()
    pump_trip(values)
    settings = EngineSettings(interval=WATER.step, lateness=0.0)

    def engine() -> Engine:
        return Engine(WATER.points, settings,
                      detectors=[ZoneScore(PointTable(WATER.points), settings)])

    def feed(e: Engine, rows: slice) -> list[str]:
        ids = []
        for t, row in zip(WATER.times()[rows], values[rows], strict=True):
            batch = Batch.of(source_ts=t, point=np.arange(len(row)), value=row, quality=0)
            ids += [ev.alarm.id for ev in e.process(batch)]
        return ids

    whole = feed(engine(), slice(None))
    first, half = engine(), WATER.fault.start - 20
    before = feed(first, slice(0, half))
    second = engine()
    second.load_state(first.state())
    assert before + feed(second, slice(half, None)) == whole
    assert whole  # the trip is in the second part


@pytest.mark.parametrize(("section", "present"), [
    ({}, True), ({"zone_model": False}, False),
    ({"river": False}, False),  # its key when it was river's HalfSpaceTrees still reads
])
def test_the_site_file_turns_it_off(section: dict, present: bool) -> None:
    from gateway.detection import engine_settings

    settings = engine_settings(AnomalySection.model_validate(section))
    detectors = default_detectors(PointTable(WATER.points), settings)
    assert any(isinstance(d, ZoneScore) for d in detectors) is present


@pytest.mark.slow
def test_a_real_normal_export_stays_quiet(tmp_path: Path) -> None:
    """Twelve days of the simulator's normal water network at hourly steps (tuning seed 2):
    judged after its week of warm-up, and no zone anomaly."""
    from gateway.site.loader import load_site
    from gateway.storage.recording import RecordingReader
    from scadawatch.cli import main as cli_main

    assert cli_main(["simulate", "water", "--scenario", "normal", "--seed", "2", "--days", "12",
                     "--step", "1h", "--export", str(tmp_path)]) == 0
    points = [PointInfo.of(p) for p in load_site(tmp_path / "site.toml").points]
    settings = EngineSettings(interval=3600)
    engine = Engine(points, settings, detectors=[ZoneScore(PointTable(points), settings)])
    raised = []
    with RecordingReader(tmp_path, engine.table.tags) as reader:
        for batch in reader:
            raised += [e.alarm for e in engine.process(batch) if e.action == "raise"]
    model = engine.detectors[0]
    assert isinstance(model, ZoneScore)
    assert min(s.n.min() for s in model.stacks.values()) > WARM_CYCLE_S / 3600  # judged
    assert raised == []
