"""Zone leaks (`leak`): a leak, a ramp or a burst in a zone raises one alarm on that zone with
its size; clean weeks with weekends, pump trips, a metered tank filling and comms gaps raise
none; a repair clears it; state resumes; and a real simulator export."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.alarms import Alarm
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo, PointTable
from anomaly.core.ticks import Tick
from anomaly.engine import Engine, EngineSettings
from anomaly.water.leak import Leak

S = 10**9
HOUR = 3600
DAY = 86400
T0 = 1_767_571_200  # 2026-01-05T00:00:00Z, a Monday

# Zone z: two inlets (one in m3/h), an outlet to a neighbour and a tank main (its role puts
# the tank's filling into the balance), three pressure loggers. Zone y: a quiet neighbour.
POINTS = [
    PointInfo("z.inlet1.flow", "flow", "L/s", zone="z", role="inflow"),
    PointInfo("z.inlet2.flow", "flow", "m3/h", zone="z", role="inflow"),
    PointInfo("z.outlet.flow", "flow", "L/s", zone="z", role="outflow"),
    PointInfo("z.tank.flow", "flow", "L/s", zone="z", role="outflow"),
    *[PointInfo(f"z.j{i}.pressure", "pressure", "m", zone="z") for i in (1, 2, 3)],
    PointInfo("y.inlet.flow", "flow", "L/s", zone="y", role="inflow"),
    PointInfo("y.j1.pressure", "pressure", "m", zone="y"),
    PointInfo("plant.pump.status", "status"),
]
MEAN = 20.0  # L/s, zone z's mean consumption


def shape(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Daily demand shape with mean 1: night floor, morning peak (later at weekends), evening."""
    def peak(centre: float | np.ndarray, width: float) -> np.ndarray:
        return np.exp(-0.5 * (((hour - centre + 12) % 24 - 12) / width) ** 2)

    raw = 0.35 + 1.2 * peak(np.where(weekend, 9.5, 7.0), 1.3) + 0.5 * peak(13, 2.5) \
        + 0.9 * peak(19.5, 1.8)
    return raw / 0.98


def site(days: float, *, seed: int = 1, leak: float = 0.0, leak_at: float = 0.0,
         ramp: float = 0.0, repair_at: float = 1e9, pump_trip: float | None = None,
         tank_fill: bool = False, gap: tuple[float, float] | None = None,
         step: float = 300.0, weekend_later: float = 0.0,
         weekend_more: float = 1.0, tank_swing: float = 0.0,
         second: tuple[float, float] | None = None,
         hot: tuple[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(times ns, values time x point) of `days` from Monday 00:00; times in seconds.
    At weekends the day runs `weekend_later` hours later (Friday's evening past midnight) and
    takes `weekend_more` times the water, day and night. `second`: (L/s, from) of a second
    leak, never repaired. `tank_swing`: L/s into the tank through its metered main, filling by
    night and draining by day (a cosine, no steps). `hot`: (day, factor): that day's demand above
    the night's floor `factor` times (a hot day: gardens, showers), on top of its day factor."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, days * DAY, step)
    day = (t // DAY).astype(int)
    weekend = day % 7 >= 5
    hour = (t % DAY) / HOUR
    late = ((t - weekend_later * HOUR) // DAY).astype(int) % 7 >= 5
    day_hour = (hour - np.where(late, weekend_later, 0.0)) % 24
    day_factor = np.exp(0.07 * rng.standard_normal(day.max() + 1))[day]
    if hot is not None:
        day_factor = day_factor * np.where(day == hot[0], hot[1], 1.0)
    night = 0.35 / 0.98
    ar = np.zeros(t.size)
    for i in range(1, t.size):
        ar[i] = 0.8 * ar[i - 1] + 0.6 * 0.02 * rng.standard_normal()
    consumption = MEAN * (night + (shape(day_hour, weekend) - night) * day_factor) * (1 + ar)
    consumption *= np.where(late, weekend_more, 1.0)
    lost = leak * np.clip(np.asarray((t - leak_at) / ramp if ramp else t >= leak_at, float),
                          0.0, 1.0)
    lost = np.where((t >= leak_at) & (t < repair_at), lost, 0.0)
    if second is not None:
        lost = lost + np.where(t >= second[1], second[0], 0.0)
    tank = np.where(tank_fill & ((hour >= 1) & (hour < 5)), 15.0, 0.0)  # fills 01-05 daily
    tank += tank_swing * np.cos(2 * np.pi * hour / 24)
    outlet = 5.0 + 0.5 * np.sin(2 * np.pi * hour / 24)
    total_in = consumption + lost + outlet + tank
    inlet1 = 0.6 * total_in
    inlet2 = 0.4 * total_in * 3.6  # m3/h
    pump = np.ones(t.size)
    if pump_trip is not None:
        pump[(t >= pump_trip) & (t < pump_trip + 2 * HOUR)] = 0.0
    head = 40 + 6 * pump - 0.01 * total_in ** 1.85
    pressures = head[:, None] - np.array([0.0, 2.0, 5.0]) + rng.normal(0, 0.05, (t.size, 3))
    y_flow = 8 * shape(hour, weekend) + rng.normal(0, 0.1, t.size)
    y_pressure = 45 + 6 * pump - 0.002 * y_flow ** 2
    noise = rng.normal(0, 0.1, (t.size, 4))
    flows = np.column_stack([inlet1, inlet2, outlet, tank]) + noise
    values = np.column_stack([np.round(flows, 2), np.round(pressures, 2), np.round(y_flow, 2),
                              np.round(y_pressure, 2), pump])
    if gap is not None:  # inlet 2's outstation silent
        values[(t >= gap[0]) & (t < gap[1]), 1] = np.nan
    return ((T0 + t) * S).astype(np.int64), values


def run(times: np.ndarray, values: np.ndarray, *, interval: float = 300.0,
        engine: Engine | None = None) -> tuple[list[Alarm], list[Alarm]]:
    """(raised, cleared) leak alarms of a leak-only engine over a recording."""
    engine = engine or make_engine(interval)
    raised, cleared = [], []
    for t, row in zip(times, values, strict=True):
        ok = ~np.isnan(row)
        events = engine.process(Batch.of(source_ts=t, point=np.flatnonzero(ok), value=row[ok],
                                         quality=Quality.GOOD))
        raised += [e.alarm for e in events if e.action == "raise"]
        cleared += [e.alarm for e in events if e.action == "clear"]
    return raised, cleared


def make_engine(interval: float = 300.0) -> Engine:
    settings = EngineSettings(interval=interval, lateness=0.0)
    return Engine(POINTS, settings, detectors=[Leak(PointTable(POINTS), settings)])


def hours_after(ns: int, at_s: float) -> float:
    return (ns / S - T0 - at_s) / HOUR


@pytest.mark.parametrize(("what", "kwargs", "within_h", "size"), [
    ("5 % abrupt at night", {"leak": 1.0, "leak_at": 3 * DAY + 1 * HOUR}, 6, 1.0),
    ("5 % abrupt at midday", {"leak": 1.0, "leak_at": 3 * DAY + 12 * HOUR}, 18, 1.0),
    ("8 % opening over 12 h", {"leak": 1.6, "leak_at": 3 * DAY + 8 * HOUR,
                               "ramp": 12 * HOUR}, 24, 1.6),
    ("a burst at the evening peak", {"leak": 15.0, "leak_at": 3 * DAY + 19 * HOUR}, 1, 15.0),
])
def test_a_leak_raises_one_alarm_on_its_zone(what: str, kwargs: dict, within_h: float,
                                             size: float) -> None:
    raised, _ = run(*site(5, **kwargs))
    assert [a.zone for a in raised] == ["z"], what
    (alarm,) = raised
    assert 0 <= hours_after(alarm.start_ns, kwargs["leak_at"]) <= within_h
    assert alarm.details["size_lps"] == pytest.approx(size, rel=0.5)
    assert 0.0 < alarm.details["confidence"] < 1.0
    assert alarm.message.startswith("z: leak of ~") and " L/s (confidence " in alarm.message
    assert "night consumption" in alarm.message and "usual" in alarm.message


@pytest.mark.parametrize(("what", "kwargs"), [
    ("two clean weeks with weekends", {"days": 14}),
    ("a pump trip: pressures sag, consumption does not rise", {"pump_trip": 3 * DAY + 10 * HOUR}),
    ("a night-time trip", {"pump_trip": 4 * DAY + 2 * HOUR}),
    ("a metered tank filling every night", {"tank_fill": True}),
    ("an inlet meter silent for 3 hours", {"gap": (3 * DAY + 2 * HOUR, 3 * DAY + 5 * HOUR)}),
    ("another seed", {"seed": 7}),
])
def test_normal_operation_raises_no_leak(what: str, kwargs: dict) -> None:
    days = kwargs.pop("days", 6)
    raised, _ = run(*site(days, **kwargs))
    assert raised == [], what



# A hot day: its demand above the night's floor 30-50 % up at once, on top of the day's own
# factor. The day's level, learned over about a day, lags it, and what it has not caught up
# with is in every hour in proportion to the activity; a leak adds the same at every hour.
# A known defect (issue #14): "leak of ~1.1-1.8 L/s" on the night after, and a leak on such a
# day sized 1.6-1.7 L/s for 1.2. The lag in the hours' variance fixed every row but cost other
# leaks (docs/replay.md, leak12 round), so it was withdrawn; strict: a fix turns them green.
HOT_DAY_DEFECT = pytest.mark.xfail(strict=True, raises=AssertionError,
                                   reason="issue #14: the day level lags a hot day")


@HOT_DAY_DEFECT
@pytest.mark.parametrize(("what", "seed", "hot"), [
    ("the second Tuesday 30 % busier", 8, (8, 1.3)),
    ("the second Tuesday 40 % busier", 8, (8, 1.4)),
    ("the first Thursday 40 % busier", 8, (3, 1.4)),
    ("the second Tuesday 50 % busier", 2, (8, 1.5)),
])
def test_a_hot_day_is_no_leak(what: str, seed: int, hot: tuple[int, float]) -> None:
    raised, _ = run(*site(10, seed=seed, hot=hot))
    assert raised == [], what


@HOT_DAY_DEFECT
@pytest.mark.parametrize(("what", "seed", "leak_at", "within_h"), [
    ("from a hot Tuesday's 14:00", 1, 8 * DAY + 14 * HOUR, 12),
    ("from a hot Tuesday's 20:00", 2, 8 * DAY + 20 * HOUR, 8),
])
def test_a_leak_on_a_hot_day_is_found_by_its_night_at_its_size(what: str, seed: int,
                                                                leak_at: float,
                                                                within_h: float) -> None:
    raised, _ = run(*site(10, seed=seed, leak=1.2, leak_at=leak_at, hot=(8, 1.3)))
    (alarm,) = raised
    assert 0 <= hours_after(alarm.start_ns, leak_at) <= within_h, what
    assert alarm.details["size_lps"] == pytest.approx(1.2, rel=0.25), what

# The first weekend (runs start on a Monday): its nights have no profile of their own yet.
@pytest.mark.parametrize(("what", "kwargs"), [
    ("a clean week", {"days": 8}),
    # Saturday's peak comes 4 h after the weekdays' (the shape's 2.5 h, 1.5 h later still) and
    # runs higher: before the weekend is learned, the burst test's envelope must reach it
    ("a clean fortnight whose first Saturday peaks higher", {"days": 14, "seed": 2}),
    # its nights learned less the leak, what was taken out since the repair given back: the
    # second weekend is judged against the first's demand
    ("a second weekend after a leak in alarm over the first",
     {"days": 14, "leak": 1.0, "leak_at": 4 * DAY + 20 * HOUR, "repair_at": 7 * DAY + 12 * HOUR}),
])
def test_a_weekend_running_later_and_taking_more_is_no_leak(what: str, kwargs: dict) -> None:
    """As bench.networks' generator makes weekends (peaks 1.5 h later, 4 % more water): the
    first Saturday's small hours, Friday's evening running on, are no leak evidence; nothing
    is raised but while a leak runs."""
    raised, _ = run(*site(**kwargs, weekend_later=1.5, weekend_more=1.04))
    leaking = (kwargs.get("leak_at", 0.0), kwargs.get("repair_at", 0.0))
    assert [a for a in raised if not 0 <= hours_after(a.start_ns, leaking[0])
            < (leaking[1] - leaking[0]) / HOUR] == [], what
    # a leak's alarm is about the leak (1 L/s), not a weekend's peak taken for a burst (23 L/s)
    assert [a for a in raised if a.details["size_lps"] > 2 * kwargs["leak"]] == [], what


# The first weekend's evenings running on 3.5-4 h later than the weekdays' (held-out Net6's
# first Saturday held Friday's evening in its night window's first bins): before the weekend
# has nights of its own its MNF is the window's median, which a leak raises and a late
# evening's tail does not (the mean raised "leak of ~2.2-2.8 L/s" on these rows).
@pytest.mark.parametrize(("later", "seed"), [(3.5, 4), (4.0, 2)])
def test_a_first_weekend_evening_running_into_its_night_is_no_leak(later: float,
                                                                   seed: int) -> None:
    raised, _ = run(*site(6.5, seed=seed, weekend_later=later, weekend_more=1.04))
    assert raised == [], (later, seed)


# A zone in alarm over its first weekend learns that weekend's nights less the leak: the next
# weekend's first night is judged against them (before, it was a day type's first night, no
# leak evidence, and a leak beginning then waited for Monday's night).
@pytest.mark.parametrize(("what", "first", "repair_at"), [
    ("the first from Thursday, repaired on the next Tuesday", 3 * DAY + HOUR, 8 * DAY + 12 * HOUR),
    ("the first from Friday 20:00, repaired on Monday", 4 * DAY + 20 * HOUR, 7 * DAY + 12 * HOUR),
])
def test_a_leak_after_one_in_alarm_over_the_first_weekend_is_found(what: str, first: float,
                                                                   repair_at: float) -> None:
    second = (1.2, 12 * DAY + HOUR)  # 6 %, the second Saturday 01:00
    raised, cleared = run(*site(14, leak=1.0, leak_at=first, repair_at=repair_at,
                                second=second))
    assert [a.zone for a in raised] == ["z", "z"], what
    assert [a.zone for a in cleared] == ["z"], what
    assert 0 <= hours_after(raised[1].start_ns, second[1]) <= 12, what
    assert raised[1].details["size_lps"] == pytest.approx(second[0], rel=0.5), what


@pytest.mark.parametrize(("what", "size", "leak_at", "repair_at"), [
    ("6 % from Thursday midday", 1.2, 3 * DAY + 12 * HOUR, 1e9),
    # Saturday's night was clean: Sunday's is judged against it
    ("5 % from Saturday 06:00 to Sunday 18:00", 1.0, 5 * DAY + 6 * HOUR, 6 * DAY + 18 * HOUR),
])
def test_a_leak_around_the_first_weekend_is_found(what: str, size: float, leak_at: float,
                                                 repair_at: float) -> None:
    raised, _ = run(*site(8, leak=size, leak_at=leak_at, repair_at=repair_at))
    assert [a.zone for a in raised] == ["z"], what
    assert 0 <= hours_after(raised[0].start_ns, leak_at) <= 24, what


# A first weekend night's MNF is judged against the nights before it, not against a median and
# MAD it is part of (with itself in, a leak's night widened its own margin, and a 6 % leak from
# Friday 23:00 waited for Monday's night: 52.6 h on seed 3, as on the own simulator's
# tuning seeds 1-2, dma3's 10 % leak from Friday 20:00). Judged on every seed of a table, not
# one: at 7.5 % it is found that night on each of seeds 1-8. At 6 % (1.2 L/s) it is on 5 of
# them (6 before the night's window was held where the night began: the leak's own bins had
# moved it a bin later); on the rest the excess, 1.45 L/s against a margin of 1.50 on seed 3,
# waits for the next night. Its alarm holds while the leak runs (before, on seed 5 it ended on
# Monday's night: the weekend's later evening in the first Saturday's 23:00 hour had taken the
# size in alarm to 8.6 L/s, and a night hour at the leak's 1.5 L/s, nearer 0 than 8.6, was
# taken for a repair).
@pytest.mark.parametrize("seed", range(1, 9))
def test_a_leak_on_the_first_weekend_night_is_found_that_night_and_held(seed: int) -> None:
    leak_at = 4 * DAY + 23 * HOUR
    raised, cleared = run(*site(8, seed=seed, leak=1.5, leak_at=leak_at, weekend_later=1.5,
                                weekend_more=1.04))
    assert [a.zone for a in raised] == ["z"]
    assert 0 <= hours_after(raised[0].start_ns, leak_at) <= 12
    assert raised[0].details["size_lps"] == pytest.approx(1.5, rel=0.5)
    assert cleared == []


# The same leak repaired after the weekend: its alarm holds until then and clears by the next
# night (the reverse CUSUM tests each hour against the size from the hours before it, so a
# night at the leak's level is no repair and a quiet one is). Ten days: before, on these seeds
# the alarm ended on Sunday's night while the leak ran (the size in alarm taken to 5-9 L/s by
# the weekend's later evening in its night hours) and a second alarm rose on Monday's night.
@pytest.mark.parametrize(("what", "seed", "repair_at"), [
    ("repaired on Monday 12:00", 3, 7 * DAY + 12 * HOUR),
    ("the same, another seed", 8, 7 * DAY + 12 * HOUR),
    ("repaired on Tuesday 06:00", 4, 8 * DAY + 6 * HOUR),
])
def test_a_leak_alarm_holds_until_its_repair_and_clears_by_the_next_night(
        what: str, seed: int, repair_at: float) -> None:
    leak_at = 4 * DAY + 23 * HOUR
    raised, cleared = run(*site(10, seed=seed, leak=1.5, leak_at=leak_at, repair_at=repair_at,
                                weekend_later=1.5, weekend_more=1.04))
    assert [a.zone for a in raised] == ["z"], what
    assert [a.zone for a in cleared] == ["z"], what
    assert 0 < hours_after(cleared[0].end_ns, repair_at) <= 24, what


# An alarm raised on the first weekend's night holds until the repair: in alarm, hours of a day
# type without a profile of its own are not the leak's size by day (its later, busier day is
# there too: the size grew to 5-11 L/s on the first Saturday's peak, and the reverse CUSUM then
# ended the alarm while the leak ran, or never did, and a second alarm rose for the same leak).
@pytest.mark.parametrize(("what", "seed", "size", "leak_at", "repair_at"), [
    ("6 % from Friday 23:00, never repaired", 4, 1.2, 4 * DAY + 23 * HOUR, 1e9),
    ("10 % from Saturday 00:30 to Sunday 08:00", 3, 2.0, 5 * DAY + HOUR / 2, 6 * DAY + 8 * HOUR),
    ("the same, another seed", 4, 2.0, 5 * DAY + HOUR / 2, 6 * DAY + 8 * HOUR),
    ("the same, a third seed", 5, 2.0, 5 * DAY + HOUR / 2, 6 * DAY + 8 * HOUR),
])
def test_a_leak_alarm_over_the_first_weekend_holds_until_its_repair(
        what: str, seed: int, size: float, leak_at: float, repair_at: float) -> None:
    raised, cleared = run(*site(8, seed=seed, leak=size, leak_at=leak_at, repair_at=repair_at,
                                weekend_later=1.5, weekend_more=1.04))
    assert [a.zone for a in raised] == ["z"], what
    assert raised[0].details["size_lps"] == pytest.approx(size, rel=0.5), what
    # cleared after the repair (by the next night and the off-delay), or not while it runs
    assert [hours_after(a.end_ns, repair_at) > 0 for a in cleared] == (
        [True] if repair_at < 8 * DAY else []), what


# The first weekend's second night, judged against its first: on its morning side (the
# weekdays' rising earlier than a weekend's) its hours weigh by the pooled clock hours'
# variance, not inflated as well for the weekdays' activity there (before: not found).
def test_a_small_leak_from_the_first_saturday_morning_is_found_on_sunday_night() -> None:
    leak_at = 5 * DAY + 6 * HOUR
    raised, _ = run(*site(8, leak=0.6, leak_at=leak_at, repair_at=6 * DAY + 18 * HOUR,
                          weekend_later=1.5, weekend_more=1.04))
    assert [a.zone for a in raised] == ["z"]
    assert 0 <= hours_after(raised[0].start_ns, leak_at) <= 24


# Once a weekend has a profile of its own, its hours are weighed by the variance of their
# residuals against it: learned from its first weekend's hours, against the pooled (weekday)
# profile, that variance held the day types' difference and made its nights count for little
# for weeks, so a leak on a later weekend waited for Monday's night.
@pytest.mark.parametrize(("what", "size", "leak_at"), [
    ("10 % from the second Sunday 01:00", 2.0, 13 * DAY + HOUR),
])
def test_a_leak_on_a_later_weekend_is_found_by_its_night(what: str, size: float,
                                                        leak_at: float) -> None:
    # three weeks' noise drawn, the first two replayed (the test's time)
    times, values = site(22, leak=size, leak_at=leak_at, weekend_later=1.5, weekend_more=1.04)
    kept = times < times[0] + 14 * DAY * S
    raised, _ = run(times[kept], values[kept])
    assert [a.zone for a in raised] == ["z"], what
    assert 0 <= hours_after(raised[0].start_ns, leak_at) <= 12, what
    assert raised[0].details["size_lps"] == pytest.approx(size, rel=0.5), what


def flat_night_hours_found(seed: int, size: float, leak_at: float, days: int = 8) -> float | None:
    """Hours from `leak_at` (s from Monday 00:00) to the first leak finding of a one-meter
    zone whose night is flat for 8 hours (10 L/s, 00:00-08:00; 10 more by day), 5-min data."""
    detector = Leak(PointTable([PointInfo("f.in", "flow", "L/s", zone="f", role="inflow")]))
    rng = np.random.default_rng(seed)
    for k in range(days * DAY // 300):
        t = k * 300
        hour = t % DAY / HOUR
        v = 10.0 + (10.0 * np.sin(np.pi * (hour - 8) / 16) if hour >= 8 else 0.0) \
            + rng.normal(0, 0.1) + (size if t >= leak_at else 0.0)
        a = np.array([v])
        ns = (T0 + t) * S
        (finding,) = detector.update(Tick(ns, ns + 300 * S, np.array([1]), a, a, a, a,
                                          np.array([ns]), np.array([0])))
        if finding.active[0]:
            return (t - leak_at) / HOUR
    return None


# A night's MNF window stays where it was when the night began: the profile learns the night's
# bins as they close, and a leak raising them moved the lowest window on, a bin at a time,
# past the night, which then never ended (tuning net1 seed 18, a 10 L/s leak on the first
# Sunday's night). On the first weekend's night only the MNF test can tell (its hours are no
# leak evidence); before, these waited for Monday's night (51 h).
@pytest.mark.parametrize(("what", "seed", "size"), [
    ("1.5 L/s (11 % of the mean) from Saturday 00:00", 1, 1.5),
    ("the same, another seed", 2, 1.5),
    ("2 L/s (14 %), a third seed", 3, 2.0),
])
def test_a_leak_on_a_flat_first_weekend_night_is_found_that_night(what: str, seed: int,
                                                                 size: float) -> None:
    delay = flat_night_hours_found(seed, size, leak_at=5 * DAY)
    assert delay is not None and 0 <= delay <= 8, what


# A leak repaired on Friday afternoon: its alarm ends by the next night (the repair is
# tested against the size from before it), so a leak after it in the same zone raises an
# alarm of its own (before: the first alarm stayed open for good, the repair tested against a
# size the hours since had pulled down to the floor, and the second leak was only its size
# growing). As the own simulator's small leaks (bench/anomaly.py, evaluation seed 103).
@pytest.mark.parametrize(("what", "second", "within_h"), [
    ("8 % from Saturday 06:00, found by Monday's night", (1.6, 5 * DAY + 6 * HOUR), 48),
    ("8 % from Sunday 01:00, found by Monday's night", (1.6, 6 * DAY + HOUR), 30),
])
def test_a_repair_ends_the_alarm_and_a_later_leak_raises_its_own(
        what: str, second: tuple[float, float], within_h: float) -> None:
    repair_at = 4 * DAY + 13.5 * HOUR
    raised, cleared = run(*site(8, seed=3, leak=1.0, leak_at=3 * DAY + 1.5 * HOUR,
                                repair_at=repair_at, second=second))
    assert [a.zone for a in raised] == ["z", "z"], what
    assert [a.zone for a in cleared] == ["z"], what
    assert 0 < hours_after(cleared[0].end_ns, repair_at) < 24, what
    assert 0 <= hours_after(raised[1].start_ns, second[1]) <= within_h, what
    assert raised[1].details["size_lps"] == pytest.approx(second[0], rel=0.5), what


def test_one_minute_ticks_of_five_minute_data_find_the_same_leak() -> None:
    times, values = site(5, leak=1.0, leak_at=3 * DAY + HOUR)
    fine, _ = run(times, values, interval=60.0)
    coarse, _ = run(times, values)
    assert [a.zone for a in fine] == [a.zone for a in coarse] == ["z"]
    assert abs(fine[0].start_ns - coarse[0].start_ns) <= HOUR * S


def test_a_repair_clears_the_alarm_and_the_leak_is_not_learned() -> None:
    leak_at, repair_at = 3 * DAY + HOUR, 5 * DAY + 14 * HOUR
    raised, cleared = run(*site(8, leak=1.5, leak_at=leak_at, repair_at=repair_at))
    assert [a.zone for a in raised] == ["z"]  # two days of leaking: still one alarm
    assert [a.zone for a in cleared] == ["z"]
    assert cleared[0].end_ns is not None
    assert 0 < hours_after(cleared[0].end_ns, repair_at) < 24 + 12


def test_a_zone_with_a_meter_in_an_unknown_unit_is_not_judged() -> None:
    points = [PointInfo("q.in", "flow", "furlongs/fortnight", zone="q", role="inflow")]
    detector = Leak(PointTable(points))
    assert detector.judged.tolist() == [False]


def test_state_resumes_where_it_left_off(tmp_path: Path) -> None:
    times, values = site(5, leak=1.0, leak_at=3 * DAY + HOUR)
    whole, _ = run(times, values)
    first = make_engine()
    half = int(np.searchsorted(times, (T0 + 2 * DAY + 7 * HOUR) * S))
    before, _ = run(times[:half], values[:half], engine=first)
    second = make_engine()
    second.load_state(first.state())
    after, _ = run(times[half:], values[half:], engine=second)
    assert [a.id for a in before + after] == [a.id for a in whole] != []


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four days of the water simulator with a 10 % leak in dma1 on the fourth night and a pump
    trip the day before, replayed through the whole engine."""
    from scadawatch.cli import main as cli_main

    out = tmp_path_factory.mktemp("water-leak")
    scenario = out / "scenario.toml"
    scenario.write_text("""
[[water.events]]
kind = "pump_trip"
target = "pump1"
start = "2d 11:00"
duration = "2h"
[[water.events]]
kind = "leak"
target = "dma1"
start = "3d 00:30"
duration = "1d"
percent = 10.0
""", encoding="utf-8")
    assert cli_main(["simulate", "water", "--scenario", str(scenario), "--seed", "2",
                     "--days", "4", "--export", str(out)]) == 0
    assert cli_main(["replay", "--config", str(out / "site.toml"), "--input",
                     str(out / "readings.csv"), "--out", str(out / "alarms.jsonl")]) == 0
    return out


def test_a_real_export_finds_its_leak_and_nothing_else(export: Path) -> None:
    alarms = [json.loads(line) for line in (export / "alarms.jsonl").read_text().splitlines()]
    leaks = [a for a in alarms if a["kind"] == "leak"]
    assert [a["zone"] for a in leaks] == ["dma1"]
    assert leaks[0]["start"] >= "2026-01-08T00:30:00Z"
    assert leaks[0]["details"]["size_lps"] > 0.5



# Leaks of 6 % and more within 12 h of an afternoon start (the next night), the size the
# excess over the profile, also where a pump fills an unmetered tank; the pumping alone is no
# leak. Zone t: an inlet and a tank without a meter of
# its own (its level point, area given), filled by a pump switched on the tank's level.
TANK_POINTS = [PointInfo("t.inlet.flow", "flow", "L/s", zone="t", role="inflow"),
               PointInfo("t.tank.level", "level", "m", zone="t", area=150.0)]


def tank_site(days: float, *, leak: float = 0.0, leak_at: float = 0.0,
              seed: int = 1, timed: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zone t at 15-minute readings: consumption as zone z's, and a 45 L/s pump filling the
    tank from 2 m to 3.5 m whenever it has drained, at any hour; `timed`: the hour a second
    pump (30 L/s) starts each day, for an hour (a tariff's timer)."""
    rng = np.random.default_rng(seed)
    step = 900.0
    t = np.arange(0, days * DAY, step)
    hour = (t % DAY) / HOUR
    weekend = (t // DAY).astype(int) % 7 >= 5
    consumption = MEAN * shape(hour, weekend) * (1 + 0.02 * rng.standard_normal(t.size))
    consumption += np.where(t >= leak_at, leak, 0.0)
    level, pump, rows = 3.0, 0.0, []
    for c in consumption:
        pump = 45.0 if level < 2.0 else 0.0 if level > 3.5 else pump
        on = timed is not None and 0.0 <= (hour[len(rows)] - timed) % 24 < 1.0
        into = pump + (30.0 if on else 0.0)
        rows.append((into + rng.normal(0, 0.1), level + rng.normal(0, 0.003)))
        level += (into - c) / 1000 / 150.0 * step
    rows = np.array(rows)
    values = np.column_stack([np.round(rows[:, 0], 2), np.round(rows[:, 1], 3)])
    return ((T0 + t) * S).astype(np.int64), values


def tank_engine(points: list[PointInfo] = TANK_POINTS) -> Engine:
    settings = EngineSettings(interval=900.0, lateness=0.0)
    return Engine(points, settings, detectors=[Leak(PointTable(points), settings)])


def learned_tank_engine() -> Engine:
    """Zone t's engine without the tank's area: it is learned from the pump's steps."""
    return tank_engine([dataclasses.replace(p, area=None) for p in TANK_POINTS])


@pytest.mark.parametrize(("recording", "engine", "leak_at", "within_h"), [
    pytest.param(lambda: site(5, leak=1.6, leak_at=3 * DAY + 14 * HOUR), make_engine,
                 3 * DAY + 14 * HOUR, 12, id="8 % from Thursday 14:00"),
    pytest.param(lambda: tank_site(5, leak=1.6, leak_at=3 * DAY + 14 * HOUR), tank_engine,
                 3 * DAY + 14 * HOUR, 12, id="8 % from 14:00 in a zone whose tank is pumped"),
    pytest.param(lambda: tank_site(7), tank_engine, None, None,
                 id="no leak: the pump filling the tank day and night"),
    # what the zone's profile learned before its tank's area was known is kept, taken to the
    # area (anomaly/water/tank_profile.py): no days of learning anew that would take the leak in
    pytest.param(lambda: tank_site(6, leak=1.6, leak_at=2 * DAY + 14 * HOUR),
                 learned_tank_engine, 2 * DAY + 14 * HOUR, 18,
                 id="8 % from 14:00 on day 2, the tank's area learned"),
    pytest.param(lambda: tank_site(7), learned_tank_engine, None, None,
                 id="no leak: the tank's area learned"),
])
def test_a_large_leak_is_found_by_the_night_and_pumping_is_no_leak(
        recording: Callable[[], tuple[np.ndarray, np.ndarray]], engine: Callable[[], Engine],
        leak_at: float | None, within_h: float | None) -> None:
    raised, _ = run(*recording(), engine=engine())
    if leak_at is None:
        assert raised == []
        return
    assert len(raised) == 1
    assert 0 <= hours_after(raised[0].start_ns, leak_at) <= within_h
    assert raised[0].details["size_lps"] == pytest.approx(1.6, rel=0.5)  # the excess, 8 %


# A pump switched by a timer at the same hour every day: the bins around its switching are
# skipped every day (`_inflow_step`), which kept the night's (MNF) test off until one of them
# was learned (a week on tuning ky4, its pump at midnight): a 10 % leak there from Friday
# 17:00 waited for Monday's night, 58 h (the weekend's first nights add no CUSUM evidence: the
# weekend has no night of its own yet). Red before: neither leak row found in the 8 days.
@pytest.mark.parametrize(("what", "timed", "leak"), [
    ("12 % from Friday 17:00, a timed pump at midnight", 0.0, 2.4),
    ("12 % from Friday 17:00, a timed pump at 23:00", 23.0, 2.4),
    ("no leak, a timed pump at midnight", 0.0, 0.0),
])
def test_a_pump_switched_at_the_same_hour_daily_leaves_the_night_judged(
        what: str, timed: float, leak: float) -> None:
    leak_at = 4 * DAY + 17 * HOUR
    raised, _ = run(*tank_site(8, leak=leak, leak_at=leak_at, timed=timed),
                    engine=tank_engine())
    if not leak:
        assert raised == []
        return
    assert len(raised) == 1
    assert 0 <= hours_after(raised[0].start_ns, leak_at) <= 14


# Zone z with its tank's level point too: the tank's main (z.tank.flow, role outflow) is
# metered, so the balance holds its filling already and the zone is judged without a learned
# area. Its tank moves all day and seldom steps the inflow, as the water simulator's tank 2
# (never judged before: it waited for steps that would identify its area).
TANK_AREA = 300.0  # m2


def metered_tank_site(days: float, **kwargs: float) -> tuple[np.ndarray, np.ndarray]:
    """`site` with the tank filling by night and draining by day at up to 8 L/s through its
    metered main, and its level (m, 1 cm resolution) as a last column."""
    times, values = site(days, tank_swing=8.0, **kwargs)
    step = (times[1] - times[0]) / S
    level = 3.0 + np.cumsum(values[:, 3]) * step / 1000 / TANK_AREA
    return times, np.column_stack([values, np.round(level, 2)])


def metered_tank_engine() -> Engine:
    points = [*POINTS, PointInfo("z.tank.level", "level", "m", zone="z")]
    settings = EngineSettings(interval=300.0, lateness=0.0)
    return Engine(points, settings, detectors=[Leak(PointTable(points), settings)])


@pytest.mark.parametrize(("what", "kwargs", "within_h"), [
    ("5 % abrupt at night", {"leak": 1.0, "leak_at": 3 * DAY + 1 * HOUR}, 12),
    ("8 % opening over 12 h", {"leak": 1.6, "leak_at": 3 * DAY + 8 * HOUR, "ramp": 12 * HOUR},
     24),
    ("no leak in a week", {"days": 7}, None),
])
def test_a_zone_whose_tank_has_its_own_metered_main_is_judged(what: str, kwargs: dict,
                                                              within_h: float | None) -> None:
    days = kwargs.pop("days", 5)
    raised, _ = run(*metered_tank_site(days, **kwargs), engine=metered_tank_engine())
    if within_h is None:
        assert raised == [], what
        return
    assert [a.zone for a in raised] == ["z"], what
    assert 0 <= hours_after(raised[0].start_ns, kwargs["leak_at"]) <= within_h, what
    assert raised[0].details["size_lps"] == pytest.approx(kwargs["leak"], rel=0.5), what
