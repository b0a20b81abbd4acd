"""`comms` per device and `dropout` per point: a silent or failing device gives one comms alarm
listing its tags and no dropouts; a single silent or failing point gives a dropout; sparse
recordings, short gaps and slow points give nothing; and a real simulator export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support.export_helpers import matched, replayed_export

from anomaly.core.alarms import OFF_DELAY, Alarm
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo, PointTable
from anomaly.engine import Engine, EngineSettings
from anomaly.tags.comms import Comms

S = 10**9
MIN = 60 * S
COMMS_KINDS = {"comms", "dropout"}

POINTS = [
    PointInfo("rtu1.flow", "flow", device="rtu1"),
    PointInfo("rtu1.pressure", "pressure", device="rtu1"),
    PointInfo("rtu1.level", "level", device="rtu1"),
    PointInfo("rtu2.flow", "flow", device="rtu2"),
    PointInfo("rtu2.pressure", "pressure", device="rtu2"),
    PointInfo("manual.level", "level"),  # no device: read from a recording only
]
RTU1 = ("rtu1.flow", "rtu1.pressure", "rtu1.level")


Fault = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]


def replay(every: np.ndarray, fault: Fault, *, minutes: int) -> list[Alarm]:
    """Raised alarms when point i is due every `every[i]` minutes and `fault(minute, due)`
    says which points send and with what quality."""
    table = PointTable(POINTS)
    engine = Engine(POINTS, EngineSettings(interval=60.0, lateness=0.0),
                    detectors=[Comms(table)])
    raised = []
    for m in range(minutes):
        points, quality = fault(m, np.flatnonzero(m % every == 0))
        if len(points):
            good = quality == Quality.GOOD
            events = engine.process(Batch.of(source_ts=m * MIN, point=points,
                                             value=np.where(good, 1.0, np.nan), quality=quality))
        else:
            events = engine.advance((m + 1) * MIN)  # the live clock judges silence too
        raised += [e.alarm for e in events if e.action == "raise"]
    return raised


def window(tags: tuple[str, ...], start: int, end: int, quality: int | None) -> Fault:
    """Between minutes start and end, `tags` send `quality` (None: nothing at all)."""
    chosen = np.isin(PointTable(POINTS).tags, tags)

    def fault(minute: int, due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.zeros(len(due), dtype=np.uint8)
        hit = chosen[due] & (start <= minute < end)
        if quality is None:
            return due[~hit], q[~hit]
        q[hit] = quality
        return due, q

    return fault


EVERY_MINUTE = np.ones(len(POINTS), dtype=np.int64)
SPARSE = np.array([5, 5, 5, 10, 10, 5])  # recordings at 5 and 10 minutes in 1-minute ticks


def alarms_set(alarms: list[Alarm]) -> set[tuple[str, str | None, tuple[str, ...]]]:
    return {(a.kind, a.device if a.kind == "comms" else a.tag, a.tags) for a in alarms}


@pytest.mark.parametrize(("every", "fault", "expected"), [
    (EVERY_MINUTE, window((), 0, 0, None), set()),
    (SPARSE, window((), 0, 0, None), set()),
    # a device silent for 30 min: one comms alarm for the device, no dropouts
    (EVERY_MINUTE, window(RTU1, 60, 90, None), {("comms", "rtu1", RTU1)}),
    (SPARSE, window(RTU1, 60, 90, None), {("comms", "rtu1", RTU1)}),
    # a device answering with exceptions (bad readings) is as good as silent
    (EVERY_MINUTE, window(RTU1, 60, 90, Quality.BAD), {("comms", "rtu1", RTU1)}),
    # one point lost while its device reports: a dropout on it
    (EVERY_MINUTE, window(("rtu1.level",), 60, 90, None),
     {("dropout", "rtu1.level", ("rtu1.level",))}),
    (EVERY_MINUTE, window(("rtu1.level",), 60, 90, Quality.BAD),
     {("dropout", "rtu1.level", ("rtu1.level",))}),
    (SPARSE, window(("rtu2.flow",), 60, 120, None), {("dropout", "rtu2.flow", ("rtu2.flow",))}),
    # a point of no device: dropout only
    (EVERY_MINUTE, window(("manual.level",), 60, 90, None),
     {("dropout", "manual.level", ("manual.level",))}),
    # a reading or two missed is no fault
    (EVERY_MINUTE, window(("rtu1.level",), 60, 62, None), set()),
    (SPARSE, window(("rtu1.flow", "rtu1.pressure", "rtu1.level"), 60, 61, None), set()),
    # uncertain readings are not values either
    (EVERY_MINUTE, window(("rtu2.pressure",), 60, 90, Quality.UNCERTAIN),
     {("dropout", "rtu2.pressure", ("rtu2.pressure",))}),
], ids=["clean", "clean-sparse", "silent-device", "silent-device-sparse", "bad-device",
        "silent-point", "bad-point", "silent-point-sparse", "no-device", "short-gap",
        "short-gap-sparse", "uncertain-point"])
def test_comms_and_dropout(every: np.ndarray, fault: Fault, expected: set) -> None:
    assert alarms_set(replay(every, fault, minutes=240)) == expected


def test_points_that_report_on_change_are_not_silent() -> None:
    """An OPC UA subscription sends a value when it changes: gaps of any length."""
    rng = np.random.default_rng(4)
    changes = set(np.cumsum(rng.integers(1, 90, 40)).tolist())
    every = EVERY_MINUTE.copy()
    every[2] = 10**9  # rtu1.level: only at its changes

    def on_change(minute: int, due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.append(due, 2) if minute in changes else due
        return points, np.zeros(len(points), dtype=np.uint8)

    assert alarms_set(replay(every, on_change, minutes=600)) == set()


def test_an_outage_reported_once_holds_until_values_return() -> None:
    """OPC UA marks an outage with one bad reading per point, then sends nothing."""
    chosen = np.isin(PointTable(POINTS).tags, RTU1)

    def outage(minute: int, due: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.zeros(len(due), dtype=np.uint8)
        if minute == 60:
            q[chosen[due]] = Quality.BAD
        elif 60 < minute < 120:
            return due[~chosen[due]], q[~chosen[due]]
        return due, q

    (alarm,) = replay(EVERY_MINUTE, outage, minutes=180)
    assert (alarm.kind, alarm.device, alarm.tags) == ("comms", "rtu1", RTU1)


def test_a_comms_alarm_comes_within_minutes_and_says_so() -> None:
    (alarm,) = replay(EVERY_MINUTE, window(RTU1, 60, 90, None), minutes=120)
    assert 61 * MIN <= alarm.start_ns <= 64 * MIN
    assert alarm.message.startswith("rtu1: no good reading from any of its points for ")
    assert alarm.priority == "medium"


def test_a_real_export_finds_its_comms_faults(tmp_path: Path) -> None:
    export = replayed_export(tmp_path, "water", "comms-faults")
    wanted, found, unexplained = matched(export, COMMS_KINDS)
    assert found == wanted and wanted
    assert unexplained == []


# --- from the device's failed reads, reading by reading (devices with a stale window) ------

WINDOW = 3.0  # seconds: the site's stale_after (3) x poll_interval (1 s)
DEVICE_POINTS = np.array([0, 1, 2])  # rtu1's


def polls(plan: Callable[[int], str | None], seconds: int,
          offset: int = 123_456) -> list[Batch]:
    """A poll of rtu1 (and rtu2) each second, answered `offset` ns after it (by default
    between whole seconds); `plan(second)` says how rtu1 answers: "good", "bad" (every point:
    an exception, a refused connection, a timeout recorded), or None (nothing: the gateway's
    breaker holds it back). rtu2 always answers."""
    out = []
    for k in range(seconds):
        t = k * S + offset
        answer = plan(k)
        points = np.array([3, 4]) if answer is None else np.array([0, 1, 2, 3, 4])
        bad = np.isin(points, DEVICE_POINTS) & (answer == "bad")
        out.append(Batch.of(source_ts=t, point=points, value=np.where(bad, np.nan, 1.0),
                            quality=np.where(bad, Quality.BAD, Quality.GOOD)))
    return out


def live(batches: list[Batch], interval: float = 60.0, *, lateness: float = 2.0,
         window: float = WINDOW, off_delay: float = 0.0) -> list[Alarm]:
    """Alarms of the engine as the gateway runs it: each batch, then the clock every 0.25 s
    until the next one."""
    engine = Engine(POINTS, EngineSettings(interval=interval, lateness=lateness,
                                           zone_model=False,
                                           off_delay={**OFF_DELAY, "comms": off_delay},
                                           comms_window={"rtu1": window, "rtu2": window}))
    alarms: dict[str, Alarm] = {}
    for b in batches:
        t = int(b.source_ts.max())
        events = engine.process(b)
        for k in range(1, 4):
            events += engine.advance(t + k * S // 4)
        alarms |= {e.alarm.id: e.alarm for e in events}
    return list(alarms.values())


def spans(alarms: list[Alarm]) -> list[tuple]:
    return sorted((a.kind, a.device or a.tag, a.start_ns / S,
                   None if a.end_ns is None else a.end_ns / S) for a in alarms)


ANSWER = 123_456 / S  # the offset of every answer within its second


@pytest.mark.parametrize(("plan", "expected"), [
    # exceptions from second 10 to 39: raised 3 s after the last answer, cleared by the next
    (lambda k: "bad" if 10 <= k < 40 else "good",
     [("comms", "rtu1", 12 + ANSWER, 40 + ANSWER)]),
    # a timeout recorded at 12, then the breaker holds the device back until a probe at 20:
    # the clock raises it when the window has passed, 3 s after its last answer at 9
    (lambda k: "bad" if k in (12, 20) else None if 10 <= k < 30 else "good",
     [("comms", "rtu1", 12 + ANSWER, 30 + ANSWER)]),
    (lambda k: None if 10 <= k < 30 else "bad" if k == 30 else "good",  # the record comes late
     [("comms", "rtu1", 30 + ANSWER, 31 + ANSWER)]),
    # a blip shorter than the window: nothing
    (lambda k: "bad" if k in (10, 11) else "good", []),
    # never answered: the window counts from the first failed read
    (lambda k: "bad" if k < 20 else "good", [("comms", "rtu1", 3 + ANSWER, 20 + ANSWER)]),
], ids=["exceptions", "timeout-then-breaker", "late-record", "blip", "never-answered"])
def test_a_device_whose_reads_fail_raises_comms_after_its_window(plan: Callable[[int], str | None],
                                                                  expected: list) -> None:
    assert spans(live(polls(plan, 60))) == expected


@pytest.mark.parametrize("interval", [1.0, 60.0])
def test_a_long_outage_is_one_comms_alarm_and_no_dropouts(interval: float) -> None:
    """Ten minutes of failed reads: the ticks' learned comms and dropouts stay quiet beside
    the alarm the readings raised, whatever the tick."""
    got = live(polls(lambda k: "bad" if 60 <= k < 660 else "good", 900), interval)
    assert spans(got) == [("comms", "rtu1", 62 + ANSWER, 660 + ANSWER)]
    (alarm,) = got
    assert alarm.tags == RTU1 and alarm.priority == "medium"
    assert alarm.message == "rtu1: every read failing, no good reading for 3 s"


OUTAGE = (58, 121)  # seconds rtu1's reads fail: across the ends of 1 s and 60 s ticks


@pytest.mark.parametrize(("window", "lateness", "interval", "off_delay", "offset", "span"), [
    # the stale window longer than the lateness: ticks close before the window ends
    (3.0, 2.0, 1.0, 0.0, 123_456, (60, 121)),
    (3.0, 2.0, 60.0, 0.0, 123_456, (60, 121)),
    # the window shorter than the lateness (the parity site: 0.2 s polls x 3, lateness 5 s):
    # the alarm raises before the ticks of the last answers close
    (0.6, 5.0, 1.0, 2.0, 123_456, (58, 123)),
    (0.6, 0.5, 1.0, 2.0, 123_456, (58, 123)),
    (1.0, 10.0, 1.0, 0.0, 123_456, (58, 121)),
    (0.6, 5.0, 60.0, 2.0, 123_456, (58, 123)),
    # answers stamped on the tick ends (a recording's whole seconds)
    (0.6, 5.0, 1.0, 2.0, 0, (58, 123)),
    (3.0, 0.0, 1.0, 0.0, 0, (60, 121)),
    (3.0, 2.0, 60.0, 0.0, 0, (60, 121)),
], ids=["window>lateness", "window>lateness-60s-ticks", "parity-site", "lateness<off-delay",
        "long-lateness", "parity-site-60s-ticks", "on-tick-ends", "on-tick-ends-no-lateness",
        "on-tick-ends-60s-ticks"])
def test_one_comms_alarm_spans_the_failed_reads_and_never_ends_before_it_starts(
        window: float, lateness: float, interval: float, off_delay: float, offset: int,
        span: tuple[int, int]) -> None:
    """Whatever the order in which rows and ticks are judged (the ticks lag the rows by up to
    the lateness): one alarm from the window after the last answer (or the first failed read,
    if later) to the next answer plus the off-delay; the ticks, older than what the rows last
    said of the device, neither clear it early (once at a time before it began) nor raise a
    second one."""
    got = live(polls(lambda k: "bad" if OUTAGE[0] <= k < OUTAGE[1] else "good", 200, offset),
               interval, lateness=lateness, window=window, off_delay=off_delay)
    assert all(a.end_ns is None or a.end_ns >= a.start_ns for a in got), spans(got)
    assert spans(got) == [("comms", "rtu1", span[0] + offset / S, span[1] + offset / S)]


def test_a_device_whose_failed_reads_were_judged_raises_the_same_in_a_replay() -> None:
    """The same readings in one batch (a recording's chunk) give the alarm the live run gave,
    to the nanosecond: it is judged on the readings' times, not on when they came."""
    batches = polls(lambda k: "bad" if 10 <= k < 40 or k in (70, 80) else
                    None if 71 <= k < 80 else "good", 120)
    engine = Engine(POINTS, EngineSettings(lateness=2.0, zone_model=False,
                                           comms_window={"rtu1": WINDOW, "rtu2": WINDOW}))
    events = engine.process(Batch.concat(batches)) + engine.finish()
    replayed = list({e.alarm.id: e.alarm for e in events}.values())
    assert spans(replayed) == spans(live(batches))
    assert len(replayed) == 2


def test_values_unchanged_since_before_an_outage_end_it_when_they_arrive() -> None:
    """An OPC UA session lost at 10 s (one bad reading per point), back at 30 s: the server's
    initial values carry their old source times (unchanged since 5 s); the device answers at
    their receipt, so its comms alarm clears then, not when a value next changes."""
    engine = Engine(POINTS, EngineSettings(lateness=2.0, zone_model=False,
                                           comms_window={"rtu1": WINDOW, "rtu2": WINDOW}))
    rtu1 = list(DEVICE_POINTS)
    events = engine.process(Batch.of(source_ts=5 * S, point=rtu1, value=1.0, quality=0))
    events += engine.process(Batch.of(source_ts=10 * S, point=rtu1, value=np.nan,
                                      quality=Quality.BAD))
    events += engine.advance(20 * S)
    events += engine.process(Batch.of(source_ts=5 * S, gateway_ts=30 * S, point=rtu1,
                                      value=1.0, quality=0))
    assert [(e.action, e.alarm.kind, e.alarm.start_ns / S, (e.alarm.end_ns or 0) / S)
            for e in events] == [("raise", "comms", 10.0, 0.0), ("clear", "comms", 10.0, 30.0)]
