"""The anomaly engine: batches in, alarm events out; the same object live and in replay.

>>> from anomaly.batch import Batch, Quality
>>> from anomaly.points import PointInfo
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
import importlib.util
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from anomaly.alarms import OFF_DELAY, ON_DELAY, PRIORITY, Alarm, AlarmEvent, AlarmGate, Finding
from anomaly.batch import Batch
from anomaly.points import PointInfo, PointTable
from anomaly.ticks import Tick, TickAccumulator

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: leak profiles are (day type, bin, zone)


class StateError(Exception):
    """A saved engine state cannot be used (unreadable, or for other points or settings)."""


class Detector(Protocol):
    """One family of conditions. Built from the point table and the settings; sees every
    tick in order; returns a `Finding` per alarm kind it judges; saves and restores its
    learned state as named numpy arrays."""

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
    river: bool = True  # the zone-level multivariate detector (needs the `ml` extra)


def default_detectors(table: PointTable, settings: EngineSettings) -> list[Detector]:
    """Every detector family; imported here so that `anomaly.engine` loads only what runs."""
    from anomaly.comms import Comms
    from anomaly.drift import Drift
    from anomaly.grid import Grid, claims
    from anomaly.leak import Leak
    from anomaly.limits import Limits
    from anomaly.sensor import SensorFaults
    from anomaly.tag_anomaly import TagAnomaly

    grid = claims(table)
    # A zone balance's meters (a flow with a role) are the leak detector's: their daily and
    # weekly pattern is the zone's demand, which it learns by day type.
    balance = (table.sign != 0) & (table.zone_of >= 0) & table.of_kind("flow")
    return [
        Limits(table, skip=grid),  # grid points: `Grid` judges their bands
        Grid(table, settings),
        SensorFaults(table),
        Drift(table),
        Comms(table),
        Leak(table, settings),
        TagAnomaly(table, settings, skip=grid | balance),
        *_zone_score(table, settings),  # last: `anomaly` defers to the specific kinds
    ]


def _zone_score(table: PointTable, settings: EngineSettings) -> list[Detector]:
    """The river detector, when wanted and installed (river is the optional `ml` extra)."""
    if not settings.river or importlib.util.find_spec("river") is None:
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
                              off_delay=settings.off_delay, priority=settings.priority)
        self.ticks_total = 0
        # Zones and tags whose anomaly condition a more specific alarm explained (see
        # _unexplained and _unexplained_tags).
        self._explained = np.zeros(len(self.table.zones), dtype=bool)
        self._tag_explained = np.zeros(len(self.table), dtype=bool)

    def process(self, batch: Batch) -> list[AlarmEvent]:
        return self._run(self.ticks.add(batch))

    def advance(self, now_ns: int) -> list[AlarmEvent]:
        """Close the ticks the live clock has passed, so that silence is judged too."""
        return self._run(self.ticks.advance(now_ns))

    def finish(self) -> list[AlarmEvent]:
        """End of input: judge the ticks still open."""
        return self._run(self.ticks.finish())

    @property
    def active(self) -> list[Alarm]:
        return sorted(self.gate.open.values(), key=lambda a: (a.start_ns, a.id))

    def _run(self, ticks: list[Tick]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        disabled = self.settings.disable
        for tick in ticks:
            findings = [f for d in self.detectors for f in d.update(tick)
                        if f.kind not in disabled]
            events += self.gate.update(tick.end_ns,
                                       self._unexplained_tags(self._unexplained(findings)))
        self.ticks_total += len(ticks)
        return events

    def _unexplained(self, findings: list[Finding]) -> list[Finding]:
        """`anomaly` is the catch-all kind: a zone's anomaly condition does not hold while
        another kind's condition or alarm is active in that zone (that one explains it), nor
        after, until the anomaly condition itself has ended."""
        catchall = [i for i, f in enumerate(findings) if f.kind == "anomaly"
                    and f.scope == "zone"]
        active = np.zeros(len(self.table.zones), dtype=bool)
        for i in catchall:
            active |= findings[i].active
        self._explained &= active
        if not active.any():
            return findings
        index = {z: i for i, z in enumerate(self.table.zones)}
        for a in self.gate.open.values():
            if a.kind != "anomaly" and a.zone in index:
                self._explained[index[a.zone]] = True
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

    def save(self, path: Path, extra: Mapping[str, np.ndarray] | None = None) -> None:
        """Write what the engine has learned and its open alarms (atomically), with the
        caller's `extra` arrays (such as how far into its input it got)."""
        arrays: dict[str, np.ndarray] = {
            **{f"extra/{k}": v for k, v in (extra or {}).items()},
            "engine/meta": np.array([json.dumps(self._meta())]),
            "engine/explained": self._explained,
            "engine/tag_explained": self._tag_explained,
            **{f"ticks/{k}": v for k, v in self.ticks.state().items()},
            **{f"gate/{k}": v for k, v in self.gate.state().items()},
        }
        for d in self.detectors:
            arrays |= {f"{d.name}/{k}": v for k, v in d.state().items()}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: Path) -> dict[str, np.ndarray]:
        """Resume from `save()` and return its `extra` arrays; StateError when the state
        belongs to other points or settings (then nothing is loaded: the engine learns from
        scratch)."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise StateError(f"{path}: not an engine state file ({e})") from e
        try:
            meta = json.loads(str(arrays["engine/meta"][0]))
        except (KeyError, ValueError) as e:
            raise StateError(f"{path}: no engine metadata ({e})") from e
        if meta != self._meta():
            diff = sorted(k for k in meta.keys() | self._meta().keys()
                          if meta.get(k) != self._meta().get(k))
            raise StateError(f"{path}: saved for other {', '.join(diff)}")

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k.removeprefix(prefix): v for k, v in arrays.items()
                    if k.startswith(prefix)}

        self.ticks.load_state(part("ticks/"))
        self.gate.load_state(part("gate/"))
        if "engine/explained" in arrays:
            self._explained = arrays["engine/explained"].copy()
        if "engine/tag_explained" in arrays:
            self._tag_explained = arrays["engine/tag_explained"].copy()
        for d in self.detectors:
            d.load_state(part(f"{d.name}/"))
        return part("extra/")

    def _meta(self) -> dict:
        return {"version": STATE_VERSION, "tags": self.table.tags,
                "kinds": [p.kind for p in self.table.points],
                "interval": self.settings.interval,
                "detectors": [d.name for d in self.detectors]}
