"""The anomaly engine run live: a spool sink that feeds every stored batch to the engine.

The engine reads the spool like any other sink, so it sees exactly the readings the gateway
acknowledged, in spool order, whatever the historians are doing. A value beyond its limits and
a device whose reads fail are judged reading by reading as the batches come; the live clock
(`advance`, every 0.25 s) raises what time alone brings, such as a down device's stale window
(`stale_windows`) ending. Its learned state is saved
with the spool position it covers (data_dir/anomaly-state.npz) after every tick that changed
an alarm and every `save_interval`; after a crash it resumes there and re-reads the spool from
that point, regenerating the same events (same alarm ids), which the alarm store takes once.
Every second (with the clock) it applies the operators' releases of chattering alarms from
the alarm store's journal.

A device whose clock runs ahead would push the engine's ticks into its own future: the engine
closes a tick once readings go `lateness` past its end, so every other device's readings would
come "late" and be left out. A reading stamped more than `lateness` ahead of the time the
gateway received it is therefore judged at that receipt time (the spool and the historians keep
the device's own stamp), counted in the status (`scadawatch_anomaly_clock_ahead_readings_total`
in /metrics), and logged once per device.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from anomaly.core.alarms import AlarmEvent
from anomaly.core.batch import Batch
from anomaly.core.points import PointInfo
from anomaly.engine import Engine, EngineSettings, StateError
from gateway.data_dir import state_path
from gateway.engine_carry import carry_over
from gateway.engine_state import load_state, save_state
from gateway.memory import release_free_memory
from gateway.site.model import AnomalySection, Site
from gateway.site.tag_index import PointTags
from gateway.status import AnomalyStatus
from gateway.storage.spool import PointList

log = logging.getLogger(__name__)

EventSink = Callable[[list[AlarmEvent]], None]
Releases = Callable[[int], list[tuple[int, str]]]  # (event id, alarm id) after an event id


def engine_settings(section: AnomalySection, interval: float | None = None) -> EngineSettings:
    """The site file's `[anomaly]` section as the engine takes it (live and in replay);
    `interval` overrides the tick length."""
    defaults = EngineSettings()
    return EngineSettings(
        interval=interval or section.interval, lateness=section.lateness,
        disable=frozenset(section.disable),
        on_delay=_overridden(defaults.on_delay, section.on_delay),
        off_delay=_overridden(defaults.off_delay, section.off_delay),
        priority=_overridden(defaults.priority, section.priority), zone_model=section.zone_model,
        chattering=tuple((int(n), seconds) for n, seconds in section.chattering),
        time_zone=section.time_zone)


_K = TypeVar("_K", bound=str)
_V = TypeVar("_V")


def _overridden(defaults: Mapping[str, _V], overrides: Mapping[_K, _V]) -> dict[str, _V]:
    """The engine's defaults, with the site file's values where it sets them."""
    merged = dict(defaults)
    merged.update(overrides.items())
    return merged


def stale_windows(site: Site) -> dict[str, float]:
    """Seconds per device: `stale_after` of its poll intervals (an OPC UA subscription's:
    its publishing interval)."""
    return {d.name: d.stale_after * (d.publishing_interval or d.poll_interval)
            if d.protocol == "opcua" and d.mode == "subscribe"
            else d.stale_after * d.poll_interval for d in site.devices}


def build_engine(site: Site, interval: float | None = None) -> Engine:
    settings = dataclasses.replace(engine_settings(site.anomaly, interval),
                                   comms_window=stale_windows(site))
    return Engine([PointInfo.of(p) for p in site.points], settings)


class Detection:
    """Spool sink named `anomaly`: runs the engine on each batch, hands events to `emit`."""

    name = "anomaly"

    def __init__(self, site: Site, emit: EventSink, releases: Releases | None = None,
                 status: AnomalyStatus | None = None) -> None:
        self.site = site
        self.engine: Engine | None = None  # built by the first cursor(), in the drain's thread
        self._site_list: PointList | None = None  # the last point list found to be the site's
        self.path = state_path(site)
        self.save_interval = site.anomaly.save_interval
        self.emit = emit
        self._tolerance_ns = int(site.anomaly.lateness * 1e9)
        self._clock_warned: set[str | None] = set()
        self._lock = threading.Lock()  # the drain thread and the live clock share the engine
        self._position = 0  # spool sequence number the engine has seen up to
        # Operators' releases of chattering alarms (the alarm store's journal), applied up to
        # this event id; saved with the state, so a restart applies the later ones again.
        self.releases = releases
        self._released = 0
        self._saved_at = time.monotonic()
        self.status = AnomalyStatus() if status is None else status

    def _build(self) -> Engine:
        """The engine and its saved state, in the drain's thread, never before the first
        poll."""
        site = self.site
        self.engine = build_engine(site)
        if self.path.exists():
            try:
                extra = load_state(self.engine, self.path)
                self._position = int(extra["cursor"][0])
                self._released = int(extra["released"][0]) if "released" in extra else 0
                log.info("event=anomaly_state_loaded path=%s cursor=%d open_alarms=%d",
                         self.path, self._position, len(self.engine.active))
            except (StateError, KeyError) as e:
                # Points or settings changed: learning restarts, and says so.
                self.engine = build_engine(site)
                log.warning("event=anomaly_state_discarded path=%s reason=%r", self.path, str(e))
            release_free_memory()  # the file's arrays, read part by part, go back at once
        return self.engine

    def use_site(self, site: Site) -> None:
        """Follow a change of the site file (gateway.reload): an engine over its points that
        keeps what this one learned of every point, device and zone that did not change
        (gateway.engine_carry), saved at once."""
        with self._lock:
            before, old = self.site, self.engine
            self.site = site
            self._site_list = None
            self.save_interval = site.anomaly.save_interval
            self._tolerance_ns = int(site.anomaly.lateness * 1e9)
            if old is None:
                return  # not built yet: the first cursor() builds it over `site`
            self.engine = build_engine(site)
            try:
                kept = carry_over(old, [PointInfo.of(p) for p in before.points], self.engine,
                                  [PointInfo.of(p) for p in site.points])
            except StateError as e:
                self.engine, kept = build_engine(site), 0
                log.warning("event=anomaly_state_not_carried reason=%r", str(e))
            log.info("event=anomaly_site_changed points=%d carried=%d", len(site.points), kept)
            self._save()

    def cursor(self) -> int:
        with self._lock:
            if self.engine is None:
                self._build()
            return self._position

    def store(self, entries: Sequence[tuple[int, Batch]], points: PointList | None = None) -> None:
        """Feed spooled batches to the engine; `points`: the list their indices refer to
        (None: the site's), re-indexed to the site's current list."""
        if points is not None and self._is_site_list(points):
            points = None
        with self._lock:
            engine = self.engine or self._build()
            tick = engine.ticks.current
            changed = False
            for seq, batch in entries:
                if points is not None:
                    batch = points.reindex(batch, PointTags(self.site.points))
                changed |= self._emit(engine.process(self._at_receipt_if_ahead(batch)))
                self._position = seq
            self.status.late_readings_total = engine.ticks.late_total
            self._save_if(changed, tick)

    def _is_site_list(self, points: PointList) -> bool:
        """Compared once per generation: 10,000 tags take ~0.2 ms, more than the engine's
        work on most polls."""
        if points is not self._site_list and points.tags == [p.tag for p in self.site.points]:
            self._site_list = points
        return points is self._site_list

    def _at_receipt_if_ahead(self, batch: Batch) -> Batch:
        """`batch` with the readings stamped beyond receipt + `lateness` moved to their
        receipt time. Decided from the batch alone, so a re-read spool is judged the same."""
        ahead = batch.source_ts > batch.gateway_ts + self._tolerance_ns
        if not ahead.any():
            return batch
        self.status.clock_ahead_readings_total += int(np.count_nonzero(ahead))
        lead = batch.source_ts - batch.gateway_ts
        for point in np.unique(batch.point[ahead]).tolist():
            device = self.site.points[point].device
            if device in self._clock_warned:
                continue
            self._clock_warned.add(device)
            seconds = int(lead[ahead & (batch.point == point)].max()) / 1e9
            log.warning("event=device_clock_ahead device=%s ahead_s=%.1f tolerance_s=%g "
                        "message=%r", device, seconds, self._tolerance_ns / 1e9,
                        f"device {device}'s clock is {seconds:.1f} s ahead of the gateway's: "
                        "the anomaly engine judges its readings at the time they arrive "
                        "(stored with the device's timestamps); set the device's clock")
        return dataclasses.replace(
            batch, source_ts=np.where(ahead, batch.gateway_ts, batch.source_ts))

    def advance(self, now_ns: int | None = None) -> None:
        """Close the ticks the clock has passed: a silent device is judged without readings;
        and apply the operators' releases of chattering alarms."""
        with self._lock:
            if self.engine is not None:
                tick = self.engine.ticks.current
                events = self.engine.advance(now_ns or time.time_ns())
                if self.releases is not None:
                    for seq, alarm_id in self.releases(self._released):
                        events += self.engine.release(alarm_id)
                        self._released = seq
                self._save_if(self._emit(events), tick)

    def _emit(self, events: list[AlarmEvent]) -> bool:
        if not events:
            return False
        self.emit(events)
        self.status.events_total += len(events)
        for e in events:
            log.info("event=alarm_%s id=%s kind=%s priority=%s message=%r", e.action,
                     e.alarm.id, e.alarm.kind, e.alarm.priority, e.alarm.message)
        return True

    def _save_if(self, changed: bool, tick: int | None) -> None:
        """Save when due or when alarms changed; `tick`: the engine's oldest open tick before
        the readings or the clock just taken (None: none yet)."""
        if changed or time.monotonic() - self._saved_at >= self.save_interval:
            self._save()
        elif tick is None or self.engine is None or self.engine.ticks.current == tick:
            return
        # A save or a tick closed: the biggest transients (a tick's per-tag vectors, ~3 MB
        # at 10,000 tags, in the heap below its mmap threshold). Their free pages go back
        # now, so that RSS shows what the gateway holds rather than them until the next
        # periodic hand-back (gateway/memory.py; once a tick: trimming costs a few ms).
        release_free_memory()

    def save(self) -> None:
        with self._lock:
            if self.engine is not None:
                self._save()

    def _save(self) -> None:
        assert self.engine is not None
        save_state(self.engine, self.path, extra={"cursor": np.array([self._position]),
                                                  "released": np.array([self._released])})
        self._saved_at = time.monotonic()
