"""The anomaly engine: batches in, alarm events out; the same object live and in replay.

>>> from anomaly.core.batch import Batch, Quality
>>> from anomaly.core.points import PointInfo
>>> engine = Engine([PointInfo("tank.level", "level", "m", lo=0.0, hi=5.0)])
>>> s = 60 * 10**9
>>> events = engine.process(Batch.of(source_ts=[0, s, 2 * s], point=[0, 0, 0],
...                                  value=[4.0, 6.0, 6.5], quality=[Quality.GOOD] * 3))
>>> events += engine.finish()
>>> [(e.action, e.alarm.kind, e.alarm.tag) for e in events]
[('raise', 'limit', 'tank.level')]
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from anomaly.core.alarms import (
    CHATTERING,
    OFF_DELAY,
    ON_DELAY,
    PRIORITY,
    Alarm,
    AlarmEvent,
    AlarmGate,
    Finding,
)
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo, PointTable
from anomaly.core.ticks import Tick, TickAccumulator
from anomaly.tables.state_part import StatePart, restored

# 2: leak profiles are (day type, bin, zone); 3: the zone model is T-squared (no river trees),
# the gate holds chattering alarms; 4: leak storage (tank areas); 5: per-tag anomaly, stuck
# run lengths; 6: sensor extremes (a tank's floor and overflow rest), tag-anomaly warm-up;
# 7: drift's excursion onset; 8: counts in small integers (tag-anomaly slots, sensor hours),
# drift's hourly profile of its judged points only; 10: tag anomaly's tank ends (a zone's
# tanks at their floor or top, as states beside its status points); 11: leak storage's
# held-out fits (tank areas enter a balance once identifiable); 12: leak's tank mains (a
# balance meter carrying only a tank's flow); 13: tag anomaly's daily profile in 16 bits per
# tag (anomaly/tables/quantised_rows.py), its pooled counts summed; 14: leak's MNF window by bin
# (its median until a day type has nights of its own); 15: leak's tank profile (the
# learned tanks' level-rate profile and hours' moments, anomaly/water/tank_profile.py); 16: drift's
# fit takes the zone's tanks at their floor or top as columns (its sums widen), and keeps
# its own tank ends; 17: limits keeps the points with a limit only, and which points have read
# (`seen`); 18: narrower per-tag tables (drift's hourly profile float32, sensor's hourly scales
# float16 on a per-tag grid and run histograms uint16, tag anomaly's extremes float32 and its
# all-days profile derived from the day types', small counts in small ints); 19: leak keeps
# the first bin of the night window in progress (`night_first`); 20: storage keeps its own
# tank ends (a tank held at one leaves the area fit), each level's resolution and each tank's
# steps; the tank profile keeps the MNF's nights per learned tank; 21: drift keeps the least
# of an excursion's onsets across its CUSUM's restarts (`least`); 22: drift's grouped
# loggers' hourly profile is their group's columns' hourly means through the fit (`hour_w`,
# `hour_s1`, `hour_level`; `profile` holds the ungrouped points only). (The metadata's
# `time_zone`, the clock the state was learned on, changes no array: a state without it is UTC.)
STATE_VERSION = 22
GOOD = int(Quality.GOOD)


class StateError(Exception):
    """A saved engine state cannot be used (unreadable, or for other points or settings)."""


@runtime_checkable
class ReadingJudge(Protocol):
    """A detector that also judges readings as they come, one time at a time, for what needs
    no statistics (a value beyond its limits, a device whose reads fail): alarms within a poll
    rather than a tick. Each row's readings share one source time; rows come in time order,
    interleaved with the ticks they close, the same live and in a replay."""

    def wants(self, point: np.ndarray, value: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Readings that may change a condition (a superset is fine): judged row by row."""
        ...

    def restamp(self, batch: Batch) -> Batch:
        """The batch with the readings this judge takes at another time than their own."""
        ...

    def observe(self, ts: np.ndarray, point: np.ndarray, good: np.ndarray) -> None:
        """The other readings, in bulk."""
        ...

    def judge(self, ts: int, point: np.ndarray, value: np.ndarray,
              good: np.ndarray) -> list[Finding]:
        """One row: findings whose `known` marks the subjects whose condition it changed."""
        ...

    def next_due(self) -> int | None:
        """When a condition begins by time alone (None: none waits)."""
        ...

    def fire(self, at: int) -> list[Finding]:
        """The conditions that begin at `at`."""
        ...


# Kinds judged reading by reading: their gate keys get deadlines of their own (`_due`).
READING_KEYS = ("limit/tag", "comms/device")


class Detector(Protocol):
    """One family of conditions. Built from the point table and the settings; sees every
    tick in order; returns a `Finding` per alarm kind it judges; saves and restores its
    learned state as named numpy arrays of numbers, whose names, shapes and dtypes follow from
    the point table and settings alone (`Engine.load` refuses a state whose arrays differ
    from a fresh detector's)."""

    name: str

    def update(self, tick: Tick) -> list[Finding]: ...

    def state(self) -> dict[str, np.ndarray]: ...

    def load_state(self, state: Mapping[str, np.ndarray]) -> None: ...


@dataclass(frozen=True)
class EngineSettings:
    """The site file's `[anomaly]` section, as the engine takes it."""

    interval: float = 60.0  # seconds per tick
    lateness: float = 2.0  # seconds a tick waits for late readings after its end
    disable: frozenset[str] = frozenset()  # alarm kinds not raised
    on_delay: Mapping[str, float] = field(default_factory=lambda: dict(ON_DELAY))
    off_delay: Mapping[str, float] = field(default_factory=lambda: dict(OFF_DELAY))
    priority: Mapping[str, str] = field(default_factory=lambda: dict(PRIORITY))
    zone_model: bool = True  # the zone-level multivariate detector (anomaly/zone_score.py)
    # (raises, seconds): an alarm raised this often chatters and is held back
    chattering: tuple[tuple[int, float], ...] = CHATTERING
    # seconds per device: its stale window (the site's stale_after poll intervals); `comms`
    # judges the failed reads of these devices reading by reading
    comms_window: Mapping[str, float] = field(default_factory=dict)
    # the site's IANA time zone: daily profiles and day types are on its clock
    # (anomaly/core/clock.py); a state learned in another zone is refused
    time_zone: str = "UTC"


def default_detectors(table: PointTable, settings: EngineSettings) -> list[Detector]:
    """Every detector family; imported here so that `anomaly.engine` loads only what runs."""
    from anomaly.core.clock import Clock
    from anomaly.grid import Grid, claims
    from anomaly.tags.comms import Comms
    from anomaly.tags.drift import Drift
    from anomaly.tags.limits import Limits
    from anomaly.tags.sensor import SensorFaults
    from anomaly.tags.tag_anomaly import TagAnomaly
    from anomaly.water.leak import Leak

    windows = np.array([settings.comms_window.get(d, np.nan) * 1e9 for d in table.devices])
    grid = claims(table)
    # A zone balance's meters (a flow with a role) are the leak detector's: their daily and
    # weekly pattern is the zone's demand, which it learns by day type.
    balance = (table.sign != 0) & (table.zone_of >= 0) & table.of_kind("flow")
    clock = Clock(settings.time_zone)  # one for all: its offset is looked up once an hour
    return [
        # grid points: `Grid` judges their bands
        Limits(table, skip=grid, interval=settings.interval, lateness=settings.lateness),
        Grid(table, settings),
        SensorFaults(table, clock),
        Drift(table, clock),
        Comms(table, windows),
        Leak(table, settings, clock),
        TagAnomaly(table, settings, skip=grid | balance, clock=clock),
        *_zone_score(table, settings),  # last: `anomaly` defers to the specific kinds
    ]


def _zone_score(table: PointTable, settings: EngineSettings) -> list[Detector]:
    """The zone model, unless the site turned it off."""
    if not settings.zone_model:
        return []
    from anomaly.zone_score import ZoneScore

    return [ZoneScore(table, settings)]


class Engine:
    """Folds readings into ticks, runs every detector on each closed tick, gates the
    findings into alarms."""

    def __init__(self, points: Sequence[PointInfo], settings: EngineSettings | None = None,
                 detectors: list[Detector] | None = None) -> None:
        self.settings = settings = settings or EngineSettings()
        self.table = PointTable(points)
        self.ticks = TickAccumulator(len(self.table), interval_ns=int(settings.interval * 1e9),
                                     lateness_ns=int(settings.lateness * 1e9))
        self.detectors = (default_detectors(self.table, settings) if detectors is None
                          else detectors)
        self.gate = AlarmGate(self.table, on_delay=settings.on_delay,
                              off_delay=settings.off_delay, priority=settings.priority,
                              chattering=() if "chattering" in settings.disable
                              else settings.chattering)
        # Zones and tags whose anomaly condition a more specific alarm explained (see
        # _unexplained and _unexplained_tags).
        self._explained = np.zeros(len(self.table.zones), dtype=bool)
        self._tag_explained = np.zeros(len(self.table), dtype=bool)
        self.judges = [d for d in self.detectors if isinstance(d, ReadingJudge)]
        self._lateness = self.ticks.lateness
        # (zone, start, end) of alarms judged from readings that closed, for the ticks that
        # close after them live but before them in time (see _unexplained)
        self._closed: list[tuple[str, int, int]] = []

    def process(self, batch: Batch) -> list[AlarmEvent]:
        """Judge a batch: the readings that may change a condition one time at a time, in
        time order, each after the ticks and deadlines before it; the rest folded into
        ticks in bulk."""
        if not self.judges or len(batch) == 0:
            return self._run(self.ticks.add(batch))
        for j in self.judges:
            batch = j.restamp(batch)
        ts, point, value = batch.source_ts, batch.point, batch.value
        good = (batch.quality == GOOD) & np.isfinite(value)
        work = np.zeros(len(batch), dtype=bool)
        for j in self.judges:
            work |= j.wants(point, value, good)
        fresh = None
        if self.ticks.current is not None:
            # a reading whose tick has closed is left out of the ticks: of the rows too
            fresh = ts >= self.ticks.current * self.ticks.interval
            work &= fresh
        if not work.any():
            self._observe(ts, point, good if fresh is None else good & fresh)
            return self._run(self.ticks.add(batch)) + self._due(int(ts.max()))
        if np.any(np.diff(ts) < 0):
            order = np.argsort(ts, kind="stable")
            batch, work, good = batch.take(order), work[order], good[order]
            fresh = None if fresh is None else fresh[order]
            ts, point, value = batch.source_ts, batch.point, batch.value
        times = np.unique(ts[work])
        first, last = np.searchsorted(ts, times, "left"), np.searchsorted(ts, times, "right")
        events: list[AlarmEvent] = []
        done = 0
        for at, a, b in zip(times.tolist(), first.tolist(), last.tolist(), strict=True):
            if a > done:
                events += self._bulk(batch, good, fresh, done, a)
            # what falls due at `at` itself waits for this row: an answer in time holds it
            events += self._run(self.ticks.advance(at)) + self._due(at - 1)
            for j in self.judges:
                findings = self._enabled(j.judge(at, point[a:b], value[a:b], good[a:b]))
                events += self._noted(self.gate.update(at, findings))
            events += self._run(self.ticks.add(batch.take(slice(a, b))))
            done = b
        if done < len(ts):
            events += self._bulk(batch, good, fresh, done, len(ts))
        return events + self._due(int(ts[-1]))

    def _bulk(self, batch: Batch, good: np.ndarray, fresh: np.ndarray | None, a: int,
              b: int) -> list[AlarmEvent]:
        part = batch.take(slice(a, b))
        self._observe(part.source_ts, part.point,
                      good[a:b] if fresh is None else good[a:b] & fresh[a:b])
        return self._run(self.ticks.add(part))

    def _observe(self, ts: np.ndarray, point: np.ndarray, good: np.ndarray) -> None:
        for j in self.judges:
            j.observe(ts, point, good)

    def advance(self, now_ns: int) -> list[AlarmEvent]:
        """Close the ticks the live clock has passed, so that silence is judged too; raise
        what is due by now."""
        return self._run(self.ticks.advance(now_ns)) + self._due(now_ns)

    def finish(self) -> list[AlarmEvent]:
        """End of input: judge the ticks still open."""
        events = self._run(self.ticks.finish())
        if self.ticks.current is None or not self.judges:
            return events
        end = self.ticks.current * self.ticks.interval
        return events + self._due(end, end)

    def _due(self, until: int, clear_until: int | None = None) -> list[AlarmEvent]:
        """What time alone brings about, in time order, exactly when due: a down device's
        `comms` raises by `until`; an alarm judged from readings raises when its on-delay
        has passed and clears when its off-delay has, by `clear_until` (default: `until` less
        the lateness, so that a reading still on its way can hold it)."""
        if not self.judges:
            return []
        clear_until = until - self._lateness if clear_until is None else clear_until
        events: list[AlarmEvent] = []
        while True:
            fires = [(at, j) for j in self.judges
                     if (at := j.next_due()) is not None and at <= until]
            settles = self.gate.next_due(READING_KEYS, until, clear_until)
            at = min([t for t, _ in fires] + ([settles] if settles is not None else []),
                     default=None)
            if at is None:
                return events
            for t, j in fires:
                if t == at:
                    events += self._noted(self.gate.update(at, self._enabled(j.fire(at))))
            if settles == at:
                events += self._noted(self.gate.settle(READING_KEYS, at))

    def _enabled(self, findings: list[Finding]) -> list[Finding]:
        return [f for f in findings if f.kind not in self.settings.disable]

    def _noted(self, events: list[AlarmEvent]) -> list[AlarmEvent]:
        for e in events:
            a = e.alarm
            if e.action == "clear" and a.zone is not None and a.end_ns is not None:
                self._closed.append((a.zone, a.start_ns, a.end_ns))
        return events

    def release(self, alarm_id: str) -> list[AlarmEvent]:
        """An operator releases the alarm a `chattering` alarm holds back (by its id)."""
        return self.gate.release(alarm_id)

    @property
    def active(self) -> list[Alarm]:
        return sorted(self.gate.alarms, key=lambda a: (a.start_ns, a.id))

    def _run(self, ticks: list[Tick]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        for tick in ticks:
            events += self._due(tick.end_ns, tick.end_ns)
            findings = self._enabled([f for d in self.detectors for f in d.update(tick)])
            events += self.gate.update(
                tick.end_ns, self._unexplained_tags(self._unexplained(findings, tick.end_ns)))
        return events

    def _unexplained(self, findings: list[Finding], end_ns: int) -> list[Finding]:
        """`anomaly` is the catch-all kind: a zone's anomaly condition does not hold while
        another kind's condition or alarm is active in that zone (that one explains it), nor
        after, until the anomaly condition itself has ended. Alarms judged from readings count
        as they were at the tick's end, whether live judged them before or after it."""
        catchall = [i for i, f in enumerate(findings) if f.kind == "anomaly"
                    and f.scope == "zone"]
        active = np.zeros(len(self.table.zones), dtype=bool)
        for i in catchall:
            active |= findings[i].active
        self._explained &= active
        recent, self._closed = self._closed, [c for c in self._closed if c[2] > end_ns]
        if not active.any():
            return findings
        index = {z: i for i, z in enumerate(self.table.zones)}
        spans = [(a.zone, a.start_ns) for a in self.gate.alarms if a.kind != "anomaly"]
        spans += [(zone, start) for zone, start, end in recent if end > end_ns]
        for zone, start in spans:
            if zone in index and start <= end_ns:
                self._explained[index[zone]] = True
        for f in findings:
            if f.kind == "anomaly" or not f.active.any():
                continue
            hit = np.flatnonzero(f.active)
            if f.scope == "zone":
                self._explained[hit] = True
            else:
                of = self.table.zone_of if f.scope == "tag" else self._device_zone
                self._explained[of[hit][of[hit] >= 0]] = True
        out = list(findings)
        for i in catchall:
            out[i] = replace(out[i], active=out[i].active & ~self._explained)
        return out

    def _unexplained_tags(self, findings: list[Finding]) -> list[Finding]:
        """A tag's `anomaly` does not hold while another kind's condition or alarm is on
        that tag, its zone or its device (that one says more: a spike, a leak, a sag), nor
        after, until the anomaly condition itself has ended (a feeder's load still low as a
        line outage clears is the outage's)."""
        catchall = [i for i, f in enumerate(findings) if f.kind == "anomaly"
                    and f.scope == "tag"]
        if not catchall:
            return findings
        t = self.table
        active = np.zeros(len(t), dtype=bool)
        for i in catchall:
            active |= findings[i].active
        self._tag_explained &= active
        if not active.any():
            return findings
        tag = self._tag_explained
        # one more zone and device, never set: what index -1 (none) finds
        zone = np.zeros(len(t.zones) + 1, dtype=bool)
        device = np.zeros(len(t.devices) + 1, dtype=bool)
        for f in findings:
            if f.kind != "anomaly" and f.active.any():
                {"tag": tag, "zone": zone, "device": device}[f.scope][:len(f.active)] |= \
                    f.active
        for a in self.gate.open.values():
            if a.kind != "anomaly":
                tag[[self._tag_index[x] for x in a.tags if x in self._tag_index]] = True
                if a.tag is None and a.zone in self._zone_index:
                    zone[self._zone_index[a.zone]] = True
        tag |= zone[t.zone_of]
        tag |= device[t.device_of]
        tag &= active
        if not tag.any():
            return findings
        out = list(findings)
        for i in catchall:
            out[i] = replace(out[i], active=out[i].active & ~tag)
        return out

    @functools.cached_property
    def _tag_index(self) -> dict[str, int]:
        return {x: i for i, x in enumerate(self.table.tags)}

    @functools.cached_property
    def _zone_index(self) -> dict[str, int]:
        return {z: i for i, z in enumerate(self.table.zones)}

    @functools.cached_property
    def _device_zone(self) -> np.ndarray:
        """Each device's zone when all its zoned points share one, else -1."""
        out = np.full(len(self.table.devices), -1, dtype=np.int64)
        for d in range(len(out)):
            zones = set(self.table.zone_of[self.table.device_of == d].tolist()) - {-1}
            if len(zones) == 1:
                out[d] = zones.pop()
        return out

    def state(self) -> dict[str, np.ndarray]:
        """What the engine has learned and its open alarms, as named arrays of numbers and
        text (never objects), for `load_state` of an engine over the same points and settings.
        Writing them to a file is the caller's (the gateway's engine_state)."""
        arrays: dict[str, np.ndarray] = {
            "engine/meta": np.array([json.dumps(self._meta())]),
            "engine/explained": self._explained,
            "engine/tag_explained": self._tag_explained,
            **{f"ticks/{k}": v for k, v in self.ticks.state().items()},
            **{f"gate/{k}": v for k, v in self.gate.state().items()},
        }
        for d in self.detectors:
            arrays |= {f"{d.name}/{k}": v for k, v in d.state().items()}
        return arrays

    def load_state(self, arrays: Mapping[str, np.ndarray], source: str = "state") -> None:
        """Resume from `state()`; StateError, naming `source` (the file), when the arrays are
        not a state this engine wrote for these points and settings (then build a new engine,
        which learns from scratch: this one may be half loaded). Each part must have the
        arrays a fresh engine's has, so a crafted or damaged state is refused, naming why."""
        try:
            meta = json.loads(str(arrays["engine/meta"][0]))
        except (KeyError, IndexError, ValueError) as e:
            raise StateError(f"{source}: no engine metadata ({e})") from e
        mine = self._meta()
        if not isinstance(meta, dict):
            raise StateError(f"{source}: no engine metadata")
        # a state from before the key was learned in UTC
        zone = meta.setdefault("time_zone", "UTC")
        if zone != mine["time_zone"]:
            raise StateError(f"{source}: learned in time zone {zone}, not the site's "
                             f"{mine['time_zone']} (its daily profiles are at other hours)")
        if meta != mine:
            diff = sorted(k for k in meta.keys() | mine.keys() if meta.get(k) != mine.get(k))
            raise StateError(f"{source}: saved for other {', '.join(diff)}")
        text = {"engine/meta", "gate/open", "gate/chattering"}
        for name, arr in arrays.items():
            if arr.dtype.kind not in ("U" if name in text else "biuf"):
                raise StateError(f"{source}: {name} holds {arr.dtype}, not numbers")

        def part(prefix: str) -> StatePart:
            return StatePart(arrays, prefix)

        def differ(saved: np.ndarray, fresh: np.ndarray) -> bool:
            return saved.shape != fresh.shape or saved.dtype.kind != fresh.dtype.kind

        expected = {"engine/": {"meta": arrays["engine/meta"], "explained": self._explained,
                                "tag_explained": self._tag_explained},
                    "ticks/": self.ticks.state(),
                    **{f"{d.name}/": d.state() for d in self.detectors}}
        for prefix, fresh in expected.items():
            saved = part(prefix)
            wrong = sorted(k for k in saved.keys() | fresh.keys()
                           if k not in saved or k not in fresh or differ(saved[k], fresh[k]))
            if wrong:
                raise StateError(f"{source}: {prefix}{wrong[0]} is not what this engine saves "
                                 f"({len(wrong)} array(s) differ)")
        try:
            self.ticks.load_state(dict(part("ticks/")))
            self.gate.load_state(part("gate/"))
            self._explained = restored(arrays["engine/explained"])
            self._tag_explained = restored(arrays["engine/tag_explained"])
            for d in self.detectors:
                d.load_state(part(f"{d.name}/"))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise StateError(f"{source}: unusable ({type(e).__name__}: {e})") from e

    def _meta(self) -> dict:
        return {"version": STATE_VERSION, "tags": self.table.tags,
                "kinds": self.table.kind.tolist(),
                "interval": self.settings.interval, "time_zone": self.settings.time_zone,
                "detectors": [d.name for d in self.detectors]}
