"""The anomaly engine run live: a spool sink that feeds every stored batch to the engine.

The engine reads the spool like any other sink, so it sees exactly the readings the gateway
acknowledged, in spool order, whatever the historians are doing. Its learned state is saved
with the spool position it covers (data_dir/anomaly-state.npz) after every tick that changed
an alarm and every `save_interval`; after a crash it resumes there and re-reads the spool from
that point, regenerating the same events (same alarm ids), which the alarm store takes once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anomaly.alarms import AlarmEvent
from anomaly.batch import Batch
from anomaly.engine import Engine, EngineSettings, StateError
from anomaly.points import PointInfo
from gateway.config import AnomalySection, Site
from gateway.spool import PointList

log = logging.getLogger(__name__)

EventSink = Callable[[list[AlarmEvent]], None]


def engine_settings(section: AnomalySection, interval: float | None = None) -> EngineSettings:
    """The site file's `[anomaly]` section as the engine takes it (live and in replay);
    `interval` overrides the tick length."""
    defaults = EngineSettings()
    return EngineSettings(
        interval=interval or section.interval, lateness=section.lateness,
        disable=frozenset(section.disable),
        on_delay={**defaults.on_delay, **section.on_delay},
        off_delay={**defaults.off_delay, **section.off_delay},
        priority={**defaults.priority, **section.priority}, river=section.river)


def build_engine(site: Site, interval: float | None = None) -> Engine:
    return Engine([PointInfo.of(p) for p in site.points],
                  engine_settings(site.anomaly, interval))


def state_path(site: Site) -> Path:
    return site.site.data_dir / "anomaly-state.npz"


class Detection:
    """Spool sink named `anomaly`: runs the engine on each batch, hands events to `emit`."""

    name = "anomaly"

    def __init__(self, site: Site, emit: EventSink) -> None:
        self.site = site
        self.engine: Engine | None = None  # built by the first cursor(), in the drain's thread
        self.tags = [p.tag for p in site.points]
        self.path = state_path(site)
        self.save_interval = site.anomaly.save_interval
        self.emit = emit
        self._lock = threading.Lock()  # the drain thread and the live clock share the engine
        self._position = 0  # spool sequence number the engine has seen up to
        self._saved_at = time.monotonic()
        self.events_total = 0

    def _build(self) -> Engine:
        """The engine and its saved state. Slow (river imports scipy: seconds), so it runs
        in the drain's thread, never before the first poll."""
        site = self.site
        self.engine = build_engine(site)
        if self.path.exists():
            try:
                extra = self.engine.load(self.path)
                self._position = int(extra["cursor"][0])
                log.info("event=anomaly_state_loaded path=%s cursor=%d open_alarms=%d",
                         self.path, self._position, len(self.engine.active))
            except (StateError, KeyError) as e:
                # Points or settings changed: learning restarts, and says so.
                self.engine = build_engine(site)
                log.warning("event=anomaly_state_discarded path=%s reason=%r", self.path, str(e))
        return self.engine

    def cursor(self) -> int:
        with self._lock:
            if self.engine is None:
                self._build()
            return self._position

    def store(self, entries: list[tuple[int, Batch]], points: PointList | None = None) -> None:
        """Feed spooled batches to the engine; `points`: the list their indices refer to
        (None: the site's), re-indexed to the site's current list."""
        if points is not None and points.tags == self.tags:
            points = None
        with self._lock:
            engine = self.engine or self._build()
            changed = False
            for seq, batch in entries:
                if points is not None:
                    batch = points.reindex(batch, self.tags)
                changed |= self._emit(engine.process(batch))
                self._position = seq
            self._save_if(changed)

    def advance(self, now_ns: int | None = None) -> None:
        """Close the ticks the clock has passed: a silent device is judged without readings."""
        with self._lock:
            if self.engine is not None:
                self._save_if(self._emit(self.engine.advance(now_ns or time.time_ns())))

    def _emit(self, events: list[AlarmEvent]) -> bool:
        if not events:
            return False
        self.emit(events)
        self.events_total += len(events)
        for e in events:
            log.info("event=alarm_%s id=%s kind=%s priority=%s message=%r", e.action,
                     e.alarm.id, e.alarm.kind, e.alarm.priority, e.alarm.message)
        return True

    def _save_if(self, changed: bool) -> None:
        if changed or time.monotonic() - self._saved_at >= self.save_interval:
            self._save()

    def save(self) -> None:
        with self._lock:
            if self.engine is not None:
                self._save()

    def _save(self) -> None:
        assert self.engine is not None
        self.engine.save(self.path, extra={"cursor": np.array([self._position])})
        self._saved_at = time.monotonic()
