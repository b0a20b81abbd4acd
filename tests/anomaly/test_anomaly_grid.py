"""Grid events per feeder (`voltage_sag`, `voltage_swell`, `line_outage`, `overload`) and per
frequency point (`frequency`): each injected event gives one alarm of its kind on its feeder
and nothing else does, on two small synthetic feeders with a daily load cycle (sensor faults
on one bus, a lone dead reading, a spiking loading reading, gaps); nominal voltages given,
from lo/hi, or learned; `limit` leaves the points the grid detector judges; state that
resumes; and real simulator exports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.alarms import Alarm
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo, PointTable
from anomaly.engine import Engine, EngineSettings
from anomaly.grid import Grid, claims

S = 10**9
MIN = 60 * S
GRID_KINDS = {"voltage_sag", "voltage_swell", "line_outage", "overload", "frequency"}
BUSES = 4


def feeders(nominal: str) -> list[PointInfo]:
    """Two feeders f1, f2: a 110 kV supply, four 20 kV buses, transformer loading, two lines
    (current, loading, status) each; a zone-less frequency point and one power point.
    `nominal`: "given" (the `nominal` key), "band" (lo/hi 0.9-1.1 of nominal) or "learned"
    (neither: the detector learns it)."""
    def volt(tag: str, zone: str, kv: float) -> PointInfo:
        extra = {"given": {"nominal": kv}, "band": {"lo": 0.9 * kv, "hi": 1.1 * kv},
                 "learned": {}}[nominal]
        return PointInfo(tag, "voltage", "kV", zone=zone, **extra)

    points = []
    for z in ("f1", "f2"):
        points += [volt(f"{z}.hv.voltage", z, 110.0),
                   *[volt(f"{z}.bus{i}.voltage", z, 20.0) for i in range(BUSES)],
                   PointInfo(f"{z}.trafo.loading", "other", "%", zone=z, lo=0.0, hi=100.0)]
        for line in ("line1", "line2"):
            points += [PointInfo(f"{z}.{line}.current", "current", "A", zone=z, lo=0.0,
                                 hi=300.0),
                       PointInfo(f"{z}.{line}.loading", "other", "%", zone=z, lo=0.0,
                                 hi=100.0),
                       PointInfo(f"{z}.{line}.status", "status", "", zone=z)]
    return [*points, PointInfo("grid.frequency", "frequency", "Hz", lo=49.8, hi=50.2),
            PointInfo("f1.p", "power", "MW", zone="f1", lo=-5.0, hi=5.0)]


TAGS = [p.tag for p in feeders("given")]
COL = {t: i for i, t in enumerate(TAGS)}


def col(*names: str) -> list[int]:
    return [COL[n] for n in names]


def recording(hours: float, step_s: float, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(times ns, values time x point): load with a daily cycle and steps of normal switching
    (a 10 % load step every 3 hours), bus voltages that fall along the feeder with load,
    110 kV wandering about 113 kV, frequency wandering about 50 Hz; noisy readings."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, hours * 3600, step_s)
    load = 0.55 + 0.25 * np.sin(2 * np.pi * (t / 86400 - 0.3)) ** 2
    load *= 1 + 0.1 * ((t // 10800) % 2)
    v = np.zeros((t.size, len(TAGS)))
    for z in ("f1", "f2"):
        v[:, COL[f"{z}.hv.voltage"]] = 113 + 1.0 * np.sin(t / 7000) + rng.normal(0, 0.05, t.size)
        for i in range(BUSES):
            v[:, COL[f"{z}.bus{i}.voltage"]] = 20.4 - (0.3 + 0.25 * i) * load
        v[:, COL[f"{z}.trafo.loading"]] = 80 * load
        for k, line in enumerate(("line1", "line2")):
            v[:, COL[f"{z}.{line}.current"]] = (150 - 60 * k) * load
            v[:, COL[f"{z}.{line}.loading"]] = (50 - 20 * k) * load
            v[:, COL[f"{z}.{line}.status"]] = 1.0
    v[:, COL["grid.frequency"]] = 50 + 0.03 * np.sin(t / 900) + rng.normal(0, 0.005, t.size)
    v[:, COL["f1.p"]] = 3 * load
    noisy = ~np.isin(np.arange(len(TAGS)), col(*[f"{z}.{x}.status" for z in ("f1", "f2")
                                                   for x in ("line1", "line2")]))
    v[:, noisy] += rng.normal(0, 0.01, (t.size, noisy.sum())) * np.abs(v[:, noisy]) / 20
    return (t * S).astype(np.int64), v


def alarms_of(points: list[PointInfo], times: np.ndarray, values: np.ndarray,
              interval: float = 60.0, bad: np.ndarray | None = None) -> list[Alarm]:
    """Raised alarms of the default detectors (limits and grid, no river) over a recording
    (NaN: no reading; `bad`: bad-quality readings)."""
    engine = Engine(points, EngineSettings(interval=interval, lateness=0.0, zone_model=False))
    engine.detectors = [d for d in engine.detectors if d.name in ("limits", "grid")]
    raised = []
    bad = np.zeros(values.shape, dtype=bool) if bad is None else bad
    for rows in np.array_split(np.arange(len(times)), max(1, len(times) // 20)):
        ok = ~np.isnan(values[rows])
        row_of, point = np.nonzero(ok)
        batch = Batch.of(source_ts=times[rows][row_of], point=point, value=values[rows][ok],
                         quality=np.where(bad[rows][ok], Quality.BAD, Quality.GOOD))
        raised += [e.alarm for e in engine.process(batch) if e.action == "raise"]
    return raised + [e.alarm for e in engine.finish() if e.action == "raise"]


def subject(a: Alarm) -> str:
    return a.tag or a.zone or ""


F1_BUSES = [f"f1.bus{i}.voltage" for i in range(BUSES)]
F1_VOLTAGES = ["f1.hv.voltage", *F1_BUSES]


def inject(event: str, times: np.ndarray, v: np.ndarray) -> None:
    """Write `event` into the recording, from hour 10 on."""
    h = times / (3600 * S)
    during = (h >= 10) & (h < 11)
    if event == "sag":  # upstream sag: every voltage of f1 at 80 %
        v[np.ix_(during, col(*F1_VOLTAGES))] *= 0.8
    elif event == "shallow long undervoltage":  # 88 %: an EN 50160 slow variation
        v[np.ix_((h >= 10) & (h < 14), col(*F1_VOLTAGES))] *= 0.88 / 0.99
    elif event == "fast dip":  # one reading (of a second) at 60 % in one minute
        v[np.ix_(np.argmax(h >= 10) + np.array([3]), col(*F1_VOLTAGES))] *= 0.6
    elif event == "noisy transducers":  # every reading of f1 off by 6 % at random
        noise = np.random.default_rng(4).normal(1.0, 0.06, (len(h), len(F1_VOLTAGES)))
        v[:, col(*F1_VOLTAGES)] *= noise
    elif event == "swell":
        v[np.ix_(during, col("f2.hv.voltage", *[f"f2.bus{i}.voltage" for i in range(BUSES)]))] \
            *= 1.15
    elif event == "outage":  # line2 of f1 trips: buses 2 and 3 behind it dead
        v[np.ix_(during, col("f1.bus2.voltage", "f1.bus3.voltage", "f1.line2.current",
                             "f1.line2.loading", "f1.line2.status"))] = 0.0
    elif event == "outage restored":  # ... and a tie re-energises the buses after 10 min
        v[np.ix_(during, col("f1.line2.current", "f1.line2.loading", "f1.line2.status"))] = 0.0
        v[np.ix_(during & (h < 10 + 1 / 6), col("f1.bus2.voltage", "f1.bus3.voltage"))] = 0.0
    elif event == "overload":
        v[np.ix_((h >= 10) & (h < 13), col("f1.trafo.loading"))] = 120.0
    elif event == "frequency":
        v[during, COL["grid.frequency"]] -= 0.3
    elif event == "drifting bus":  # a transducer drifting down 0.5 kV an hour
        v[:, COL["f1.bus1.voltage"]] -= 0.5 * np.clip(h - 10, 0, None)
    elif event == "stuck bus":
        frozen = h >= 10
        v[frozen, COL["f1.bus3.voltage"]] = v[np.argmax(frozen), COL["f1.bus3.voltage"]]
    elif event == "dead reading":  # a voltage transformer's fuse blows: one bus reads 0
        v[during, COL["f1.bus1.voltage"]] = 0.0
    elif event == "loading spike":
        v[np.argmax(h >= 10), COL["f1.trafo.loading"]] = 140.0
    elif event == "gaps":  # readings lost at random, an hour of nothing, then all bad
        rng = np.random.default_rng(3)
        v[rng.random(v.shape) < 0.2] = np.nan
        v[during] = np.nan
    elif event != "clean":
        raise ValueError(event)


CASES = [  # event, the alarms it must give (kind, subject), nothing else
    ("sag", {("voltage_sag", "f1")}),
    ("shallow long undervoltage", {("voltage_sag", "f1")}),
    # A polled value is no half-cycle RMS: one reading beyond the band is no sag, nor are
    # readings scattered both ways (never sag and swell at once).
    ("fast dip", set()),
    ("noisy transducers", set()),
    ("swell", {("voltage_swell", "f2")}),
    ("outage", {("line_outage", "f1")}),
    ("outage restored", {("line_outage", "f1")}),
    ("overload", {("overload", "f1")}),
    ("frequency", {("frequency", "grid.frequency")}),
    ("clean", set()),
    ("drifting bus", set()),
    ("stuck bus", set()),
    ("dead reading", set()),
    ("loading spike", set()),
    ("gaps", set()),
]


NOMINAL_CASES = [c for c in CASES if c[0] in ("sag", "swell", "outage", "clean",
                                                "drifting bus")]


@pytest.mark.parametrize(("event", "expected", "nominal"), [
    *[(*c, "given") for c in CASES],
    *[(*c, nominal) for c in NOMINAL_CASES for nominal in ("band", "learned")]])
def test_each_event_gives_one_alarm_of_its_kind_and_nothing_else_does(
        event: str, expected: set[tuple[str, str]], nominal: str) -> None:
    times, values = recording(14, 30.0)  # two readings a tick: min, max and mean differ
    inject(event, times, values)
    found = alarms_of(feeders(nominal), times, values)
    grid = [(a.kind, subject(a)) for a in found if a.kind in GRID_KINDS]
    assert sorted(grid) == sorted(expected)  # one alarm per feeder, not one per bus
    assert [a for a in found if a.kind == "limit"] == []


@pytest.mark.parametrize(("event", "expected"), [c for c in CASES if c[0] not in (
    "fast dip", "noisy transducers")])
def test_sparse_readings_as_in_a_15_minute_export(event: str,
                                                  expected: set[tuple[str, str]]) -> None:
    times, values = recording(24, 900.0)
    inject(event, times, values)
    found = alarms_of(feeders("band"), times, values)
    assert sorted((a.kind, subject(a)) for a in found if a.kind in GRID_KINDS) == \
        sorted(expected)


def test_the_messages_name_what_is_at_fault() -> None:
    times, values = recording(14, 30.0)
    inject("outage", times, values)
    inject("overload", times, values)
    messages = {a.kind: a.message for a in alarms_of(feeders("given"), times, values)}
    assert messages["line_outage"] == \
        "f1: line outage; lines out of service: line2; dead buses: bus2, bus3"
    assert messages["overload"].startswith("f1: overload, trafo at 1")
    assert messages["overload"].endswith("% of its rating (limit 100 %, 10-min mean); "
                                         "1 item(s) over")


def test_bad_quality_readings_are_no_readings() -> None:
    times, values = recording(14, 30.0)
    bad = np.zeros(values.shape, dtype=bool)
    bad[(times >= 10 * 3600 * S) & (times < 11 * 3600 * S)] = True
    values[bad] = 0.0  # what a failed read might carry: must not look like a dead feeder
    assert [a for a in alarms_of(feeders("given"), times, values, bad=bad)
            if a.kind in GRID_KINDS] == []


def test_limit_still_judges_the_points_the_grid_detector_does_not() -> None:
    points = feeders("band")
    table = PointTable(points)
    judged = {t for t, c in zip(table.tags, claims(table), strict=True) if c}
    assert "f1.p" not in judged and "f1.line1.status" not in judged
    assert {"f1.bus0.voltage", "f1.trafo.loading", "f1.line1.current", "grid.frequency"} <= judged
    times, values = recording(14, 30.0)
    inject("sag", times, values)
    values[(times >= 12 * 3600 * S) & (times < 13 * 3600 * S), COL["f1.p"]] = 9.0
    found = {(a.kind, subject(a)) for a in alarms_of(points, times, values)}
    assert found == {("voltage_sag", "f1"), ("limit", "f1.p")}


def test_a_restart_resumes_with_what_was_learned(tmp_path: Path) -> None:
    """Saved mid-sag and restored into a new engine: the same alarms as one run."""
    points = feeders("learned")
    times, values = recording(14, 30.0)
    inject("sag", times, values)
    inject("overload", times, values)

    def run(engines: list[Engine]) -> list[tuple[str, str, int]]:
        out = []
        for k, (t, row) in enumerate(zip(times, values, strict=True)):
            engine = engines[0] if t < 10.5 * 3600 * S else engines[-1]
            if len(engines) > 1 and k and times[k - 1] < 10.5 * 3600 * S <= t:
                engines[-1].load_state(engines[0].state())
            events = engine.process(Batch.of(source_ts=t, point=np.arange(len(row)),
                                             value=row, quality=Quality.GOOD))
            out += [(e.action, e.alarm.id, e.alarm.end_ns or 0) for e in events]
        return out

    def engine() -> Engine:
        return Engine(points, EngineSettings(lateness=0.0, zone_model=False),
                      detectors=[Grid(PointTable(points), EngineSettings())])

    once = run([engine()])
    assert {i.split(":")[0] for _, i, _ in once} == {"voltage_sag", "overload"}
    assert run([engine(), engine()]) == once


def test_empty_and_unrelated_sites_find_nothing() -> None:
    water = [PointInfo("dma.flow", "flow", "L/s", zone="dma"),
             PointInfo("dma.valve", "other", "%", zone="dma", hi=100.0)]
    grid = Grid(PointTable(water), EngineSettings())
    assert not claims(PointTable(water)).any()  # no voltage in the zone: not a feeder
    times = np.arange(60) * MIN
    engine = Engine(water, EngineSettings(zone_model=False), detectors=[grid])
    for t in times:
        assert engine.process(Batch.of(source_ts=t, point=[0, 1], value=[10.0, 150.0],
                                       quality=Quality.GOOD)) == []


# ----- voltage points outside any feeder -----

STATION = [PointInfo("station.flow", "flow", "L/s", zone="station"),
           PointInfo("station.pressure", "pressure", "bar", zone="station"),
           PointInfo("station.current", "current", "A", zone="station"),
           PointInfo("station.supply", "voltage", "V", zone="station"),
           PointInfo("cabinet.supply", "voltage", "V")]


def station(minutes: int, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A pumping station read every second: a pump's flow, pressure and motor current, the
    motor's 230 V supply noisy by 5 % (a test rig's is), and a zone-less cabinet supply."""
    rng = np.random.default_rng(seed)
    t = np.arange(minutes * 60)
    flow = 30 + rng.normal(0, 0.3, t.size)
    v = np.column_stack([flow, 2 + 0.01 * flow, 1.5 + 0.02 * flow,
                         230 * rng.normal(1, 0.05, t.size), 230 * rng.normal(1, 0.01, t.size)])
    return (t * S).astype(np.int64), v


@pytest.mark.parametrize(("event", "expected", "message"), [
    ("noisy", set(), None),  # readings beyond both bands every minute: no sag, no swell
    ("supply at 85 %", {("voltage_sag", "station.supply")},
     "station.supply: 10-minute mean 20"),
    ("one reading at 50 %", set(), None),
    ("cabinet at 115 %", {("voltage_swell", "cabinet.supply")},
     "cabinet.supply: 10-minute mean 254 V, 111 % of its nominal 230 V, above 110 %"),
])
def test_a_voltage_outside_any_feeder_is_judged_as_a_tag(event: str, expected: set,
                                                          message: str | None) -> None:
    times, values = station(40)
    minute = times // MIN
    if event == "supply at 85 %":
        values[(minute >= 15) & (minute < 35), 3] *= 0.85
    elif event == "one reading at 50 %":
        values[20 * 60, 3] *= 0.5
    elif event == "cabinet at 115 %":
        values[(minute >= 15) & (minute < 35), 4] *= 1.15
    found = alarms_of(STATION, times, values)
    assert {(a.kind, subject(a)) for a in found} == expected
    for a in found:
        assert a.tag is not None and a.zone == PointTable(STATION).zone_name(
            PointTable(STATION).tags.index(a.tag))
        assert message is not None and a.message.startswith(message)
        assert 15 * MIN < a.start_ns < 26 * MIN  # within ten minutes of its start


# ----- real simulator exports -----

@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Two and a half days of a shipped grid scenario (seed 2), exported and replayed."""
    from scadawatch.cli import main as cli_main

    made: dict[str, Path] = {}

    def get(scenario: str) -> Path:
        if scenario not in made:
            out = tmp_path_factory.mktemp(scenario)
            assert cli_main(["simulate", "grid", "--scenario", scenario, "--seed", "2",
                             "--days", "2.5", "--export", str(out)]) == 0
            assert cli_main(["replay", "--config", str(out / "site.toml"), "--input",
                             str(out / "readings.csv"), "--out", str(out / "alarms.jsonl")]) == 0
            made[scenario] = out
        return made[scenario]

    return get


def grid_alarms(folder: Path) -> list[dict]:
    alarms = [json.loads(line) for line in (folder / "alarms.jsonl").read_text().splitlines()]
    return [a for a in alarms if a["kind"] in GRID_KINDS]


def test_a_real_export_finds_its_grid_events(export: Callable[[str], Path]) -> None:
    folder = export("grid-events")
    labels = [line.split(",") for line in (folder / "labels.csv").read_text().splitlines()[1:]]
    assert {k for k, *_ in labels} == {"voltage_sag", "voltage_swell", "frequency", "overload"}
    found = {(a["kind"], a["zone"] or a["tag"]) for a in grid_alarms(folder)}
    assert found == {(k, location) for k, location, *_ in labels}
    for a in grid_alarms(folder):
        assert any(k == a["kind"] and start <= a["start"] <= end
                   for k, _, start, end in labels), a


@pytest.mark.parametrize("scenario", ["normal", "sensor-faults"])
def test_a_real_export_without_grid_events_gives_no_grid_alarm(
        export: Callable[[str], Path], scenario: str) -> None:
    assert grid_alarms(export(scenario)) == []
