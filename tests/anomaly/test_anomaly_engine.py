"""The engine's core contract: ticks independent of batching, alarm hygiene, state that resumes.

The detectors have their own tests; these use the engine with its default detectors on
synthetic signals, and with a scripted detector where the gate's timing is the subject.
"""

from __future__ import annotations

import itertools
import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.alarms import AlarmEvent, Finding
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo
from anomaly.core.ticks import MAX_SILENT_TICKS, Tick, TickAccumulator
from anomaly.engine import Engine, EngineSettings, StateError
from anomaly.tables.precision import Float32Fields
from gateway.engine_state import load_state, save_state

S = 10**9
MIN = 60 * S


def readings(n_points: int, minutes: int, seed: int = 7) -> Batch:
    """Every point read every 10 s with noise around a daily-ish wave, in time order."""
    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(0, minutes * MIN, 10 * S), n_points)
    point = np.tile(np.arange(n_points), len(ts) // n_points)
    value = 50 + 10 * np.sin(ts / (3600 * S)) + rng.normal(0, 0.5, len(ts)) + point
    return Batch.of(source_ts=ts, point=point, value=value, quality=Quality.GOOD)


def split(batch: Batch, sizes: list[int]) -> list[Batch]:
    edges = np.cumsum(sizes)
    return [batch.take(np.arange(a, min(b, len(batch))))
            for a, b in zip([0, *edges[:-1]], edges, strict=True) if a < len(batch)]


def summary(events: list[AlarmEvent]) -> list[tuple]:
    return [(e.action, e.alarm.id, e.alarm.kind, e.alarm.start_ns, e.alarm.end_ns)
            for e in events]


def ticks_of(batches: list[Batch], n: int) -> list[Tick]:
    acc = TickAccumulator(n, interval_ns=MIN, lateness_ns=0)
    out = [t for b in batches for t in acc.add(b)]
    return out + acc.finish()


@pytest.mark.parametrize("sizes", [[10**9], [1] * 540, [7, 13, 1000], [333] * 20])
def test_ticks_do_not_depend_on_how_readings_are_batched(sizes: list[int]) -> None:
    whole = readings(3, 30)
    expected = ticks_of([whole], 3)
    got = ticks_of(split(whole, sizes), 3)
    assert [t.start_ns for t in got] == [t.start_ns for t in expected]
    for a, b in zip(got, expected, strict=True):
        for name in ("count", "min", "max", "last", "last_ts", "bad"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        # A sum's last bit depends on the order of its terms.
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)


def test_silent_minutes_close_as_empty_ticks_and_bad_readings_are_counted_apart() -> None:
    acc = TickAccumulator(2, interval_ns=MIN, lateness_ns=0)
    batch = Batch.of(source_ts=[0, 1 * S, 5 * MIN], point=[0, 1, 0], value=[1.0, np.nan, 2.0],
                     quality=[Quality.GOOD, Quality.BAD, Quality.GOOD])
    ticks = acc.add(batch) + acc.finish()
    assert [t.start_ns // MIN for t in ticks] == [0, 1, 2, 3, 4, 5]
    assert ticks[0].count.tolist() == [1, 0] and ticks[0].bad.tolist() == [0, 1]
    assert all(t.count.sum() == 0 for t in ticks[1:5])


@pytest.mark.parametrize("feed", ["batch", "clock"])
def test_a_long_silence_is_skipped_after_enough_empty_ticks(feed: str) -> None:
    """A restart a week later must not grind through 600,000 empty one-second ticks."""
    acc = TickAccumulator(1, interval_ns=S, lateness_ns=0)
    week = 7 * 86400 * S
    ticks = acc.add(Batch.of(source_ts=[0], point=[0], value=[1.0], quality=0))
    if feed == "batch":  # the silence ends with a reading: its tick is judged
        ticks += acc.add(Batch.of(source_ts=[week], point=[0], value=[2.0], quality=0))
        ticks += acc.finish()
        assert [t.start_ns for t in ticks[-2:]] == [MAX_SILENT_TICKS * S, week]
    else:  # the live clock runs on through the silence
        ticks += acc.advance(week)
        assert len(ticks) == 1 + MAX_SILENT_TICKS
        assert acc.advance(week + S)[0].start_ns == week
    assert [t.start_ns for t in ticks[:3]] == [0, S, 2 * S]
    assert all(t.count.sum() == 0 for t in ticks[1:1 + MAX_SILENT_TICKS])


def polled(seconds: list[int], point: int = 0) -> Batch:
    """Good readings of `point` at `seconds`, valued by their time."""
    return Batch.of(source_ts=np.array(seconds) * S, point=np.full(len(seconds), point),
                    value=np.array(seconds, dtype=float) / 7, quality=Quality.GOOD)


@pytest.mark.parametrize("batches", [
    # a device's poll reaching a tick another device's backlog opened and filled in one go
    [polled(list(range(0, 300, 20))), polled([130], 1)],
    # a backlog reaching ticks another backlog filled, through and beyond them
    [polled(list(range(0, 300, 20))), polled(list(range(70, 400, 30)), 1)],
    # a backlog with a gap over a tick another device's poll opened
    [polled([0, 190], 1), polled([30, 70, 100, 150, 330, 370])],
    # the backlog reaches through a tick a poll opened first
    [polled([0, 130], 1), polled(list(range(0, 300, 20)))],
], ids=["poll-into-backlog", "backlog-into-backlog", "backlog-over-poll", "backlog-after-poll"])
def test_ticks_still_open_take_every_batch_that_reaches_them(batches: list[Batch]) -> None:
    """Batches from several devices come in any order within the lateness: each reading
    lands in its tick, whether that tick was opened reading by reading or filled in one go
    from a batch spanning many ticks (a recording's chunk, a device's backlog)."""
    acc = TickAccumulator(2, interval_ns=MIN, lateness_ns=10 * MIN)
    got = [t for b in batches for t in acc.add(b)] + acc.finish()
    whole = Batch.concat(batches)
    expected = ticks_of([whole.take(np.argsort(whole.source_ts, kind="stable"))], 2)
    assert [t.start_ns for t in got] == [t.start_ns for t in expected]
    assert acc.late_total == 0
    for a, b in zip(got, expected, strict=True):
        for name in ("count", "min", "max", "last", "last_ts", "bad"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name),
                                          err_msg=f"{name} of tick {a.start_ns // MIN}")
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)


def test_readings_for_a_closed_tick_are_counted_late_not_mixed_in() -> None:
    acc = TickAccumulator(1, interval_ns=MIN, lateness_ns=0)
    acc.add(Batch.of(source_ts=[0, 2 * MIN], point=[0, 0], value=[1.0, 1.0], quality=0))
    assert acc.add(Batch.of(source_ts=[10 * S], point=[0], value=[9.0], quality=0)) == []
    assert acc.late_total == 1


class Scripted:
    """A detector whose condition is a script of booleans per tick (None: cannot judge)."""

    name = "scripted"

    def __init__(self, script: list[bool | None], kind: str = "anomaly") -> None:
        self.script, self.kind, self.i = script, kind, 0

    def update(self, tick: Tick) -> list[Finding]:
        step = self.script[self.i] if self.i < len(self.script) else False
        self.i += 1
        return [Finding(self.kind, "tag", np.array([bool(step)]),
                        known=np.array([step is not None]), message="{subject} scripted")]

    def state(self) -> dict[str, np.ndarray]:
        return {"i": np.array([self.i])}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.i = int(state["i"][0])


def run_script(script: list[bool | None], on: float, off: float) -> list[tuple[str, int]]:
    settings = EngineSettings(on_delay={"anomaly": on}, off_delay={"anomaly": off})
    engine = Engine([PointInfo("p")], settings, detectors=[Scripted(script)])
    n = len(script) + 1
    ticks = Batch.of(source_ts=np.arange(n) * MIN, point=np.zeros(n), value=1.0, quality=0)
    events = engine.process(ticks) + engine.finish()
    return [(e.action, (e.alarm.start_ns if e.action == "raise" else e.alarm.end_ns) // MIN)
            for e in events]


T, F, U = True, False, None


@pytest.mark.parametrize(("script", "on", "off", "expected"), [
    ([F, T, T, F, F], 0, 0, [("raise", 2), ("clear", 4)]),
    # on-delay: a one-tick blip raises nothing; a condition held 2 minutes does
    ([T, F, T, T, T, F], 120, 0, [("raise", 5), ("clear", 6)]),
    # off-delay: flapping every tick stays one alarm
    ([T, F, T, F, T, F, T, F, F, F, F], 0, 180, [("raise", 1), ("clear", 11)]),
    # unknown (no data) holds the condition, in both directions
    ([T, U, U, F, F], 0, 60, [("raise", 1), ("clear", 5)]),
    ([F, U, T, U, F], 0, 0, [("raise", 3), ("clear", 5)]),
])
def test_the_gate_raises_and_clears_with_its_delays(script: list, on: float, off: float,
                                                      expected: list) -> None:
    assert run_script(script, on, off) == expected


def test_no_condition_chatters() -> None:
    """The same alarm raised 3+ times within 60 s is a defect, whatever the condition does."""
    rng = np.random.default_rng(3)
    script = [bool(x) for x in rng.random(500) < 0.5]
    raises = [t for action, t in run_script(script, 0, 300) if action == "raise"]
    assert all(b - a >= 5 for a, b in itertools.pairwise(raises))


def flapping(every: int, times: int, then: list[bool | None] | None = None) -> list[bool | None]:
    """A condition on for one tick every `every` ticks, `times` times, then `then`."""
    return [i % every == 0 for i in range(every * times)] + (then or [])


def chatter(script: list[bool | None], release_at: int | None = None,
            rules: tuple[tuple[int, float], ...] = ((3, 3600.0),),
            disable: frozenset[str] = frozenset()) -> list[tuple[str, str, int]]:
    """(action, kind, minute) of the gate's events over a script of 1-minute ticks, no
    off-delay; an operator releases the held alarm as the reading of minute `release_at`
    comes (the gate has judged up to minute `release_at - 1`)."""
    settings = EngineSettings(off_delay={"anomaly": 0.0}, chattering=rules, disable=disable)
    engine = Engine([PointInfo("p")], settings, detectors=[Scripted(script)])
    events = []
    for minute in range(len(script) + 1):
        events += engine.process(Batch.of(source_ts=[minute * MIN], point=[0], value=1.0,
                                          quality=0))
        if minute == release_at:
            held = [a for a in engine.active if a.kind == "chattering"]
            events += engine.release(held[0].id) if held else []
    events += engine.finish()
    return [(e.action, e.alarm.kind, (e.alarm.start_ns if e.action == "raise"
                                      else e.alarm.end_ns) // MIN) for e in events]


R, C = "raise", "clear"


@pytest.mark.parametrize(("script", "release_at", "rules", "expected"), [
    # on every 15 minutes: raised twice, the third raise is a `chattering` alarm instead and
    # holds the rest back; clear for an hour after the last, it is released
    (flapping(15, 6, [False] * 70), None, ((3, 3600.0),),
     [(R, "anomaly", 1), (C, "anomaly", 2), (R, "anomaly", 16), (C, "anomaly", 17),
      (R, "chattering", 31), (C, "chattering", 137)]),
    # held, then on for good: a standing condition is no chatter, its alarm is raised
    (flapping(15, 3, [True] * 70), None, ((3, 3600.0),),
     [(R, "anomaly", 1), (C, "anomaly", 2), (R, "anomaly", 16), (C, "anomaly", 17),
      (R, "chattering", 31), (C, "chattering", 106), (R, "anomaly", 46), (C, "anomaly", 116)]),
    # an operator releases it: the chattering alarm clears, the next raise is annunciated
    (flapping(15, 6), 50, ((3, 3600.0),),
     [(R, "anomaly", 1), (C, "anomaly", 2), (R, "anomaly", 16), (C, "anomaly", 17),
      (R, "chattering", 31), (C, "chattering", 49), (R, "anomaly", 61), (C, "anomaly", 62),
      (R, "anomaly", 76), (C, "anomaly", 77)]),
    # ... and released while its condition is on, it is raised at once
    (flapping(15, 3, [True] * 20), 50, ((3, 3600.0),),
     [(R, "anomaly", 1), (C, "anomaly", 2), (R, "anomaly", 16), (C, "anomaly", 17),
      (R, "chattering", 31), (C, "chattering", 49), (R, "anomaly", 46), (C, "anomaly", 66)]),
    # the slower rule: 10 in a day, whatever the hour's rule says
    (flapping(60, 11), None, ((3, 600.0), (10, 86400.0)),
     [x for k in range(9) for x in ((R, "anomaly", 60 * k + 1), (C, "anomaly", 60 * k + 2))]
     + [(R, "chattering", 541)]),
    # no rules: every raise is annunciated
    (flapping(15, 4), None, (), [x for k in range(4) for x in ((R, "anomaly", 15 * k + 1),
                                                                 (C, "anomaly", 15 * k + 2))]),
])
def test_a_chattering_alarm_is_held_back_until_it_behaves(
        script: list, release_at: int | None, rules: tuple, expected: list) -> None:
    assert chatter(script, release_at, rules) == expected


def test_chattering_can_be_turned_off_and_says_what_it_holds() -> None:
    assert ("raise", "chattering", 31) not in chatter(flapping(15, 4),
                                                      disable=frozenset({"chattering"}))
    engine = Engine([PointInfo("p", priority="high")],
                    EngineSettings(off_delay={"anomaly": 0.0}),
                    detectors=[Scripted(flapping(15, 3))])
    events = engine.process(Batch.of(source_ts=np.arange(40) * MIN, point=np.zeros(40),
                                      value=1.0, quality=0))
    notice = next(e.alarm for e in events if e.alarm.kind == "chattering")
    assert notice.id == "chattering:anomaly:p:1860" and notice.tag == "p"
    assert notice.priority == "high"  # the held alarm's own
    assert notice.message == ("p: the anomaly alarm chatters, raised 3 times in 1 h: held back "
                              "until its condition stays clear (or stays on) for 1 h, or an "
                              "operator releases it. Last: p scripted")


def test_a_hold_survives_a_restart(tmp_path: Path) -> None:
    script = flapping(15, 6, [False] * 70)
    whole = chatter(script)
    settings = EngineSettings(off_delay={"anomaly": 0.0})

    def feed(engine: Engine, minutes: range) -> list[tuple[str, str, int]]:
        return [(e.action, e.alarm.kind, (e.alarm.start_ns if e.action == "raise"
                                          else e.alarm.end_ns) // MIN)
                for m in minutes for e in engine.process(
                    Batch.of(source_ts=[m * MIN], point=[0], value=1.0, quality=0))]

    first = Engine([PointInfo("p")], settings, detectors=[Scripted(script)])
    events = feed(first, range(50))
    second = Engine([PointInfo("p")], settings, detectors=[Scripted(script)])
    second.load_state(first.state())
    events += feed(second, range(50, len(script) + 1))
    assert events + [(e.action, e.alarm.kind, e.alarm.end_ns // MIN)
                     for e in second.finish()] == whole


class Unsure(Scripted):
    """A detector that cannot tell one of its alarm's figures (NaN)."""

    def update(self, tick: Tick) -> list[Finding]:
        return [Finding("leak", "tag", np.array([True]), "{subject}: {size} L/s, {night} at night",
                        details={"size": np.array([2.0]), "night": np.array([np.nan])})]


def test_a_figure_the_detector_cannot_tell_reads_as_a_question_mark() -> None:
    engine = Engine([PointInfo("p")], detectors=[Unsure([])])
    events = engine.process(Batch.of(source_ts=[0], point=[0], value=1.0, quality=0))
    events += engine.finish()
    assert [(e.alarm.message, e.alarm.details) for e in events] == \
        [("p: 2 L/s, ? at night", {"size": 2.0})]


POINTS = [PointInfo("tank.level", "level", "m", lo=0.0, hi=5.0),
          PointInfo("main.pressure", "pressure", "m", zone="z", lo=20.0, hi=80.0)]


def faulty(minutes: int = 240) -> Batch:
    """Two points; the tank overflows its limit for a while."""
    ts = np.repeat(np.arange(0, minutes * MIN, 30 * S), 2)
    point = np.tile([0, 1], len(ts) // 2)
    t = ts / MIN
    level = np.where((t > 60) & (t < 100), 6.0, 3.0 + 0.5 * np.sin(t / 30))
    pressure = 50.0 + 3 * np.sin(t / 45)
    value = np.where(point == 0, level, pressure)
    return Batch.of(source_ts=ts, point=point, value=value, quality=Quality.GOOD)


def test_the_engine_gives_the_same_alarms_however_its_input_is_batched() -> None:
    data = faulty()
    whole = Engine(POINTS)
    expected = summary(whole.process(data) + whole.finish())
    assert any(kind == "limit" for _, _, kind, *_ in expected)
    pieces = Engine(POINTS)
    got = [e for b in split(data, [17] * 100) for e in pieces.process(b)] + pieces.finish()
    assert summary(got) == expected


def test_a_restored_engine_continues_as_if_it_had_never_stopped(tmp_path: Path) -> None:
    data = faulty()
    first, rest = split(data, [len(data) // 3, len(data)])
    whole = Engine(POINTS)
    expected = summary(whole.process(data) + whole.finish())

    before = Engine(POINTS)
    events = before.process(first)
    save_state(before, tmp_path / "state.npz", extra={"cursor": np.array([42])})
    after = Engine(POINTS)
    extra = load_state(after, tmp_path / "state.npz")
    events += after.process(rest) + after.finish()
    assert extra["cursor"].tolist() == [42]
    assert summary(events) == expected


@pytest.mark.parametrize(("other", "reason"), [
    (POINTS[:1], "tags"),
    ([POINTS[1], POINTS[0]], "tags"),
])
def test_a_state_saved_for_other_points_is_refused(tmp_path: Path, other: list[PointInfo],
                                                   reason: str) -> None:
    with pytest.raises(StateError, match=reason):
        Engine(other).load_state(Engine(POINTS).state())


def test_a_file_that_is_not_a_state_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.npz").write_text("not numpy")
    with pytest.raises(StateError, match="not an engine state file"):
        load_state(Engine(POINTS), tmp_path / "state.npz")


# --- limits: judged reading by reading ---------------------------------------------------

def test_a_reading_beyond_its_limit_raises_at_its_own_time_not_a_ticks_end() -> None:
    """One batch, one reading over `hi` in the middle of a 60 s tick: the raise comes with
    that batch, stamped with the reading, and carries its value; back inside, the alarm
    clears when its off-delay (300 s) has passed, stamped exactly then."""
    engine = Engine(POINTS, EngineSettings(zone_model=False))
    level = [3.0, 3.1, 7.25, 7.3, 3.0]
    ts = [0, 10 * S, 30 * S + 5, 31 * S, 40 * S]
    raised = []
    for t, v in zip(ts, level, strict=True):
        raised += engine.process(Batch.of(source_ts=t, point=0, value=v, quality=0))
    (e,) = raised
    assert (e.action, e.alarm.kind, e.alarm.start_ns, e.alarm.value) == (
        "raise", "limit", 30 * S + 5, 7.25)
    assert e.alarm.message == "tank.level at 7.25 m, outside its limit 5"
    assert e.alarm.id == "limit:tank.level:30.000"
    assert engine.advance(40 * S + 300 * S + 2 * S - 1) == []  # the clear waits the lateness
    (clear,) = engine.advance(40 * S + 300 * S + 2 * S)
    assert (clear.action, clear.alarm.end_ns) == ("clear", 340 * S)


@pytest.mark.parametrize("sizes", [[10**9], [1] * 960, [2, 3, 5, 7, 11, 13] * 80, [480] * 2])
def test_limit_alarms_do_not_depend_on_batching_or_on_the_clock(sizes: list[int]) -> None:
    """A tank overflowing three times, the second within the first alarm's off-delay (one
    alarm), and a pressure within its tolerance of its limit: the same alarms, to the
    nanosecond, whether the readings come one by one with the live clock between them or as
    a recording's chunks."""
    data = faulty()
    level = data.value.copy()
    t = data.source_ts / MIN
    level[(data.point == 0) & (t > 102) & (t < 103)] = 5.2  # over again within the off-delay
    level[(data.point == 0) & (t > 150) & (t < 152)] = 5.2  # over again, later
    level[(data.point == 1) & (t > 200) & (t < 201)] = 80.5  # within the pressure's tolerance
    data = Batch.of(source_ts=data.source_ts, point=data.point, value=level, quality=0)
    whole = Engine(POINTS, EngineSettings(zone_model=False))
    expected = summary(whole.process(data) + whole.finish())
    assert [(a, start // MIN, end and end // S) for a, _, k, start, end in expected
            if k == "limit"] == [("raise", 60, None), ("clear", 60, 103 * 60 + 300),
                                 ("raise", 150, None), ("clear", 150, 152 * 60 + 300)]
    pieces = Engine(POINTS, EngineSettings(zone_model=False))
    got = []
    for b in split(data, sizes):
        got += pieces.process(b) + pieces.advance(int(b.source_ts.max()) + S)
    got += pieces.finish()
    assert summary(got) == expected


def test_a_disabled_kind_judged_from_readings_raises_nothing() -> None:
    engine = Engine(POINTS, EngineSettings(zone_model=False, disable=frozenset({"limit"})))
    events = engine.process(faulty()) + engine.finish()
    assert [e for e in events if e.alarm.kind == "limit"] == []


# ----- state files are data, never code (issue 13 D4) -----

ZONED = [PointInfo("z.flow", "flow", "L/s", zone="z"), PointInfo("z.p", "pressure", "m", zone="z"),
         PointInfo("z.v", "voltage", "V", zone="z"), PointInfo("tank.level", "level", "m")]


class Exploit:
    """Unpickling this creates `path`: any code could run in its place."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def river_trees(arrays: dict, marker: Path) -> None:
    """The layout the zone model had: its river trees pickled into a byte array."""
    arrays["zone_score/models"] = np.frombuffer(pickle.dumps(Exploit(marker)), dtype=np.uint8)


def object_array(arrays: dict, marker: Path) -> None:
    arrays["sensor/prev"] = np.array([Exploit(marker)], dtype=object)


def wrong_shape(arrays: dict, marker: Path) -> None:
    arrays["sensor/prev"] = np.zeros(10**3)


def too_many_zones(arrays: dict, marker: Path) -> None:
    arrays["engine/explained"] = np.ones(10**4, dtype=bool)


def text_for_numbers(arrays: dict, marker: Path) -> None:
    arrays["limits/active"] = np.array(["__import__('os')"] * 4)


def alarm_with_other_fields(arrays: dict, marker: Path) -> None:
    arrays["gate/open"] = np.array([json.dumps([["limit", "tag", 0, {"id": "x", "evil": 1}]])])


@pytest.mark.parametrize(("craft", "named"), [
    (river_trees, "zone_score/models"),
    (object_array, "not an engine state file"),
    (wrong_shape, "sensor/prev"),
    (too_many_zones, "engine/explained"),
    (text_for_numbers, "limits/active"),
    (alarm_with_other_fields, "unusable"),
])
def test_a_crafted_state_file_runs_no_code_and_is_refused(
        tmp_path: Path, craft: Callable[[dict, Path], None], named: str) -> None:
    engine = Engine(ZONED)
    ts = np.repeat(np.arange(30) * MIN, 4)
    engine.process(Batch.of(source_ts=ts, point=np.tile(np.arange(4), 30),
                            value=np.tile([10.0, 40.0, 230.0, 2.0], 30), quality=0))
    save_state(engine, tmp_path / "state.npz")
    with np.load(tmp_path / "state.npz") as data:
        arrays = {k: data[k] for k in data.files}
    marker = tmp_path / "code-ran"
    craft(arrays, marker)
    np.savez(tmp_path / "crafted.npz", **arrays)
    with pytest.raises(StateError, match=named):
        load_state(Engine(ZONED), tmp_path / "crafted.npz")
    assert not marker.exists()


def test_every_statistic_a_detector_names_float32_is_held_as_float32() -> None:
    # Float32Fields silently keeps float64 for a name it never sees set: a renamed field
    # would cost memory unnoticed, so every listed name must exist after a run.
    engine = Engine(POINTS)
    engine.process(faulty())
    held = [d for d in engine.detectors if isinstance(d, Float32Fields)]
    assert {type(d).__name__ for d in held} >= {"TagAnomaly", "SensorFaults", "Drift", "Limits"}
    held += [d.ends for d in held if isinstance(getattr(d, "ends", None), Float32Fields)]
    for d in held:
        for name in sorted(d.FLOAT32):
            assert getattr(d, name).dtype == np.float32, f"{type(d).__name__}.{name}"
