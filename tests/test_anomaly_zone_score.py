"""The zone-level river detector (`anomaly` on a zone): a zone's readings that move together in
a way never learned raise it (a pump trip: pressures sag at normal demand); a clean daily
cycle, a silent zone or a missing tag do not; a more specific alarm in the zone silences it;
its state resumes; the engine leaves it out when asked to; a real export stays quiet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from anomaly.alarms import Alarm
from anomaly.batch import Batch
from anomaly.engine import Detector, Engine, EngineSettings, default_detectors
from anomaly.limits import Limits
from anomaly.points import PointInfo, PointTable
from anomaly.zone_score import WARMUP_DAYS, ZoneScore

pytest.importorskip("river")  # the `ml` extra

S = 10**9
STEP = 300  # seconds: one reading per 5 minutes, as the water exports
DAYS = 5
POINTS = [
    PointInfo("z.inlet.flow", "flow", "L/s", zone="z", role="inflow", lo=0.0, hi=100.0),
    *[PointInfo(f"z.j{i}.pressure", "pressure", "m", zone="z", lo=20.0, hi=100.0)
      for i in (1, 2, 3)],
    PointInfo("y.inlet.flow", "flow", "L/s", zone="y", role="inflow", lo=0.0, hi=100.0),
    PointInfo("y.j4.pressure", "pressure", "m", zone="y", lo=20.0, hi=100.0),
]
TRIP = slice(int(4.4 * 86400 / STEP), int(4.4 * 86400 / STEP) + 36)  # 3 h on day 5


def zones(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(times ns, values (time x point)): two zones with a daily demand cycle and pressures
    that fall as demand rises, noisy readings."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, DAYS * 86400, STEP)
    demand = 1.0 + 0.6 * np.sin(2 * np.pi * (t / 86400 - 0.3)) ** 2
    flow = 30 * demand + rng.normal(0, 0.5, t.size)
    pressure = 45 - np.array([2.0, 3.0, 4.5]) * demand[:, None] ** 2
    pressure += rng.normal(0, 0.1, pressure.shape)
    y_flow = 12 * demand + rng.normal(0, 0.3, t.size)
    y_pressure = 50 - 3 * demand + rng.normal(0, 0.1, t.size)
    values = np.column_stack([flow, pressure, y_flow, y_pressure])
    return (t * S).astype(np.int64), values


def pump_trip(v: np.ndarray) -> None:
    v[TRIP, 1:4] -= 12.0  # every pressure of zone z, demand as usual


def pump_trip_in_y(v: np.ndarray) -> None:
    v[TRIP, 5] -= 12.0  # zone y's only pressure: the zone beside z, with fewer points


def pump_trip_below_limit(v: np.ndarray) -> None:
    v[TRIP, 1:4] -= 30.0  # so far down that the pressures leave their limits


def zone_silent(v: np.ndarray) -> None:
    v[TRIP, 0:4] = np.nan


def one_tag_missing(v: np.ndarray) -> None:
    v[int(3 * 86400 / STEP):, 2] = np.nan


def alarms_of(values: np.ndarray, times: np.ndarray,
              detectors: Callable[[PointTable, EngineSettings], list[Detector]],
              ) -> list[Alarm]:
    settings = EngineSettings(interval=STEP, lateness=0.0)
    engine = Engine(POINTS, settings, detectors=detectors(PointTable(POINTS), settings))
    raised = []
    for t, row in zip(times, values, strict=True):
        ok = np.isfinite(row)
        batch = Batch.of(source_ts=t, point=np.flatnonzero(ok), value=row[ok], quality=0)
        raised += [e.alarm for e in engine.process(batch) if e.action == "raise"]
    return raised + [e.alarm for e in engine.finish() if e.action == "raise"]


def zone_score_only(table: PointTable, settings: EngineSettings) -> list[Detector]:
    return [ZoneScore(table, settings)]


def with_limits(table: PointTable, settings: EngineSettings) -> list[Detector]:
    return [Limits(table), ZoneScore(table, settings)]


@pytest.mark.parametrize(("fault", "detectors", "expected"), [
    (None, zone_score_only, set()),
    (pump_trip, zone_score_only, {("anomaly", "z")}),
    (pump_trip_in_y, zone_score_only, {("anomaly", "y")}),  # each zone judged on its own points
    (zone_silent, zone_score_only, set()),  # silence is comms' business
    (one_tag_missing, zone_score_only, set()),
    # The limit alarms explain the zone's state: no catch-all on top of them.
    (pump_trip_below_limit, with_limits, {("limit", "z")}),
])
def test_zone_conditions(fault: Callable[[np.ndarray], None] | None,
                         detectors: Callable[[PointTable, EngineSettings], list[Detector]],
                         expected: set[tuple[str, str]]) -> None:
    times, values = zones()
    if fault is not None:
        fault(values)
    alarms = alarms_of(values, times, detectors)
    assert {(a.kind, a.zone) for a in alarms} == expected
    trip = (times[TRIP.start], times[TRIP.stop] + 3600 * S)  # found within the hour after
    assert all(trip[0] <= a.start_ns <= trip[1] for a in alarms)


def test_no_alarm_during_warm_up() -> None:
    times, values = zones()
    values[: int(2 * 86400 / STEP), 1:4] -= 12.0  # the trip happens while it learns
    early = [a for a in alarms_of(values, times, zone_score_only)
             if a.start_ns < WARMUP_DAYS * 86400 * S]
    assert early == []


def test_state_resumes(tmp_path: Path) -> None:
    """Save half-way, load into a new engine: the same alarms as one uninterrupted run."""
    times, values = zones()
    pump_trip(values)
    settings = EngineSettings(interval=STEP, lateness=0.0)

    def engine() -> Engine:
        return Engine(POINTS, settings, detectors=[ZoneScore(PointTable(POINTS), settings)])

    def feed(e: Engine, rows: slice) -> list[str]:
        ids = []
        for t, row in zip(times[rows], values[rows], strict=True):
            ok = np.isfinite(row)
            batch = Batch.of(source_ts=t, point=np.flatnonzero(ok), value=row[ok], quality=0)
            ids += [ev.alarm.id for ev in e.process(batch)]
        return ids

    whole = feed(engine(), slice(None))
    first, half = engine(), len(times) * 3 // 4
    before = feed(first, slice(0, half))
    first.save(tmp_path / "state.npz")
    second = engine()
    second.load(tmp_path / "state.npz")
    assert before + feed(second, slice(half, None)) == whole
    assert whole  # the trip is in the second part


@pytest.mark.parametrize(("river", "present"), [(True, True), (False, False)])
def test_engine_builds_it_only_when_asked(river: bool, present: bool) -> None:
    detectors = default_detectors(PointTable(POINTS), EngineSettings(river=river))
    assert any(isinstance(d, ZoneScore) for d in detectors) is present


@pytest.mark.slow
def test_a_real_normal_export_stays_quiet(tmp_path: Path) -> None:
    """Four days of the simulator's normal water network (tuning seed 2): no zone anomaly."""
    from gateway.config import load_site
    from gateway.recording import RecordingReader
    from scadawatch.cli import main as cli_main

    assert cli_main(["simulate", "water", "--scenario", "normal", "--seed", "2", "--days", "4",
                     "--step", "5min", "--export", str(tmp_path)]) == 0
    points = [PointInfo.of(p) for p in load_site(tmp_path / "site.toml").points]
    settings = EngineSettings(interval=STEP)
    engine = Engine(points, settings, detectors=[ZoneScore(PointTable(points), settings)])
    raised = []
    with RecordingReader(tmp_path, engine.table.tags) as reader:
        for batch in reader:
            raised += [e.alarm for e in engine.process(batch) if e.action == "raise"]
    assert engine.detectors[0].samples.min() > WARMUP_DAYS * 48  # it did judge
    assert raised == []
