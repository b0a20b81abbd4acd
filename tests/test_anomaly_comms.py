"""`comms` per device and `dropout` per point: a silent or failing device gives one comms alarm
listing its tags and no dropouts; a single silent or failing point gives a dropout; sparse
recordings, short gaps and slow points give nothing; and a real simulator export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from export_helpers import matched, replayed_export

from anomaly.alarms import Alarm
from anomaly.batch import Batch, Quality
from anomaly.comms import Comms
from anomaly.engine import Engine, EngineSettings
from anomaly.points import PointInfo, PointTable

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
