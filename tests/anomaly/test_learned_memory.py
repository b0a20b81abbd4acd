"""Issue 17, a gateway that has learned its week: the detectors hold per-point tables only for
the points they judge, and per-slot counts only where the tags' counts differ; a learned
engine stopped and started again raises what it would have raised without the stop."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.alarms import AlarmEvent
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo, PointTable
from anomaly.core.ticks import Tick
from anomaly.engine import Engine, EngineSettings
from anomaly.grid import Grid
from anomaly.tags.drift import Drift
from anomaly.tags.limits import Limits
from anomaly.tags.tag_anomaly import TagAnomaly
from gateway.engine_state import load_state, save_state

S = 10**9
DAY = 86400 * S


def _arrays(obj: object, seen: set[int] | None = None) -> Iterator[np.ndarray]:
    """Every array `obj` holds, in its attributes, dicts, lists and the anomaly objects it
    holds (the site's point table, shared by every detector, aside)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, PointTable):
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays(v, seen)
    elif type(obj).__module__.startswith("anomaly."):
        for v in vars(obj).values():
            yield from _arrays(v, seen)


@pytest.mark.parametrize(("detector", "most"), [
    # a bool per point (its condition, and whether it has read) and its column (int32)
    (lambda t: Limits(t), 6),
    # its findings' masks when the site has no grid points (a bool each), a few numbers
    (lambda t: Grid(t), 3),
    # nothing per point: it judges levels (pressures, voltages, ...), reads states and tanks
    (lambda t: Drift(t), 1),
], ids=["limits", "grid", "drift"])
def test_a_detector_holds_no_table_for_points_it_does_not_judge(
        detector: Callable[[PointTable], object], most: int) -> None:
    """10,000 flow meters without limits, of no feeder: neither the limit detector nor the
    grid detector judges them, nor drift, and each may hold only a few bytes per point (before:
    9, 3 and ~16 vectors of 8 bytes a point, 3.2, 1.2 and 4 MB at 50,000 points)."""
    n = 10_000
    table = PointTable([PointInfo(f"plc.f{k}", "flow", "L/s", device="plc") for k in range(n)])
    held = sum(a.nbytes for a in _arrays(detector(table)))
    assert held <= most * n, f"{held / n:.1f} bytes a point"


def _tick(i: int, x: np.ndarray, interval: int) -> Tick:
    count = np.isfinite(x).astype(np.int64)
    return Tick(i * interval, (i + 1) * interval, count, x, x, x, x,
                np.where(count > 0, i * interval, -1), 0 * count)


def test_the_profiles_counts_cost_no_memory_per_tag_while_every_tag_is_read() -> None:
    """Every tag of a polled site reads on every tick: what each slot of its daily profile
    has learned is the same count for all, held once per slot; a tag that missed ticks has its
    own counts (the ones a count per tag gives), until all reach the count where they stop."""
    n, interval = 50, 1800 * S
    d = TagAnomaly(PointTable([PointInfo(f"t{k}", "pressure", "m") for k in range(n)]),
                   interval=1800.0)
    rng = np.random.default_rng(3)
    counts = np.zeros((2 * d.slots, n), dtype=np.int64)  # per tag, as a table would hold them
    held = []
    for i in range(30 * 48):  # 30 days of 30-minute ticks (from a Thursday)
        x = 40.0 + np.sin(i / 7.6) + rng.normal(0, 0.1, n)
        if 3 * 48 <= i < 4 * 48:  # the fourth day (a Sunday), tag 0 is silent
            x[0] = np.nan
        d.update(_tick(i, x, interval))
        weekend = (i * interval // DAY + 3) % 7 // 5
        row = weekend * d.slots + i % 48
        counts[row] = np.minimum(counts[row] + np.isfinite(x), d.count_cap)
        held.append(d.shape_n.held())
    assert np.array_equal(d.shape_n.full(), counts)
    assert max(held[:3 * 48]) == 0  # all read: one count a slot
    assert max(held[4 * 48:9 * 48]) > 0  # tag 0 is behind on its weekend slots ...
    assert held[-1] == 0  # ... until every tag's count reached the cap


def _week(points: list[PointInfo], days: int) -> Batch:
    """Every point every 5 minutes for `days`: a daily wave and noise; point 1 misses a
    day (its counts then differ from the others'), point 0 passes its limit and point 2
    shifts its level on the last day."""
    rng = np.random.default_rng(11)
    ts = np.repeat(np.arange(0, days * DAY, 300 * S), len(points))
    point = np.tile(np.arange(len(points)), len(ts) // len(points))
    hours = ts / (3600 * S)
    value = 50.0 + point + 5 * np.sin(2 * np.pi * (hours - 3 * point) / 24)
    value += rng.normal(0, 0.3, len(ts))
    last = ts >= (days - 1) * DAY
    value = np.where((point == 0) & last & (hours % 24 > 10) & (hours % 24 < 11), 90.0, value)
    value = np.where((point == 2) & last & (hours % 24 > 14), value + 6.0, value)
    keep = ~((point == 1) & (ts >= 2 * DAY) & (ts < 3 * DAY))
    return Batch.of(source_ts=ts[keep], point=point[keep], value=value[keep],
                    quality=Quality.GOOD)


def _summary(events: list[AlarmEvent]) -> list[tuple]:
    return [(e.action, e.alarm.id, e.alarm.kind, e.alarm.tag, e.alarm.start_ns,
             e.alarm.end_ns, e.alarm.message) for e in events]


def test_an_engine_that_learned_its_week_raises_the_same_after_a_restart(
        tmp_path: Path) -> None:
    """Nine days at 5-minute ticks (every slot of both day types learned, a tag's counts
    behind the others'), stopped and started again from its saved state on the eighth day:
    the same alarms, to the message, as an engine that never stopped."""
    points = [PointInfo(f"z.p{k}", "pressure", "m", zone="z", device="rtu",
                        **({"lo": 0.0, "hi": 80.0} if k == 0 else {})) for k in range(6)]
    settings = EngineSettings(interval=300.0)
    data = _week(points, 9)
    whole = Engine(points, settings)
    expected = _summary(whole.process(data) + whole.finish())
    assert {"limit", "anomaly"} <= {kind for _, _, kind, *_ in expected}
    cut = int(np.searchsorted(data.source_ts, 7 * DAY + 3 * 3600 * S))
    before = Engine(points, settings)
    events = before.process(data.take(slice(0, cut)))
    # as the gateway's clock does before it saves: the ticks before the stop closed (a save
    # drops the readings of a tick still open)
    events += before.advance(int(data.source_ts[cut]) + int(settings.lateness * S))
    save_state(before, tmp_path / "state.npz")
    after = Engine(points, settings)
    load_state(after, tmp_path / "state.npz")
    events += after.process(data.take(slice(cut, len(data)))) + after.finish()
    assert _summary(events) == expected


def test_tag_anomalys_tick_holds_few_vectors_at_once() -> None:
    """A tick of 20,000 warm flow meters (one peer group, ten readings a tick): what tag
    anomaly's judging and learning allocate on top of its tables at their peak, per tag (the
    engine tick's largest transient, RSS's high point once a minute). Before: 327 bytes a
    tag (~41 vectors of 8 bytes), every (3, n) statistic and threshold held to the judging's
    end beside the next, the residuals through it, and the nearest regime found on a (4, n)
    copy; now 262."""
    n, interval = 20_000, 60 * S
    d = TagAnomaly(PointTable([PointInfo(f"plc.f{k}", "flow", "L/s") for k in range(n)]),
                   interval=60.0)
    rng = np.random.default_rng(5)
    level = rng.uniform(10.0, 100.0, n)
    peaks = []
    for i in range(40):  # 25 ticks to warm up (200 readings), then judged and learning
        x = level * (1 + 0.01 * rng.standard_normal((10, n)))
        tick = Tick(i * interval, (i + 1) * interval, np.full(n, 10), x.mean(axis=0),
                    x.min(axis=0), x.max(axis=0), x[-1], np.full(n, i * interval),
                    np.zeros(n, dtype=np.int64))
        del x
        tracemalloc.start()
        try:
            d.update(tick)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert max(peaks[30:]) / n <= 290, f"{max(peaks[30:]) / n:.0f} bytes a tag"
