"""Catch-up with a live lane, for a sink where a re-send overwrites itself (InfluxDB).

Behind by more than one turn of backlog, the sink writes the newest records at once (the live
lane) and drains the backlog oldest first, paced to `max_rate` (the backlog lane), a turn of
each in alternation: live readings wait about one turn (TURN seconds of backlog, at
`max_rate` or at the rate InfluxDB took the last turn) however big the backlog is. Less than a
turn behind, only the backlog lane runs: one cursor, as any sink.

Progress is the set of spool sequence numbers stored: everything up to a low-water mark, plus
ranges above it (the live lane's). It is persisted after every step that stored something (a
JSON file replaced atomically), and the spool is acked up to the low-water mark only, so its
retention keeps the backlog. After a crash (kill -9) the sink resumes from the persisted set;
what it stored but had not yet recorded is sent again and overwrites itself (deterministic
series keys and timestamps), so nothing is lost and nothing doubles.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Protocol

from anomaly.core.batch import Batch
from gateway.data_dir import write_atomically
from gateway.status import SinkStatus
from gateway.storage.drain import BACKOFF_MIN, keep_stepping
from gateway.storage.spool import PointList, Spool

log = logging.getLogger(__name__)

TURN = 1.0  # seconds of backlog (at max_rate) written between two turns of the live lane
JUMP_TURNS = 10  # a live lane this many turns behind starts again at the newest record


class LaneSink(Protocol):
    name: str

    def store(self, entries: list[tuple[int, Batch]], points: PointList | None, *,
              paced: bool) -> None: ...


class Progress:
    """The spool sequence numbers a sink has stored: all up to `low`, and `ranges` above
    (sorted, disjoint, inclusive `[first, last]`, each starting above `low + 1`)."""

    def __init__(self, path: Path, low: int = 0) -> None:
        self.path = path
        self.low = low
        self.ranges: list[list[int]] = []

    @classmethod
    def load(cls, path: Path, acked: int) -> Progress:
        """The persisted progress, never below `acked` (the spool's record of the mark)."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(path, acked)
        return cls.of_text(path, text, acked)

    @classmethod
    def of_text(cls, path: Path, text: str | None, acked: int) -> Progress:
        """The progress `text()` wrote, never below `acked`."""
        progress = cls(path, acked)
        if text is None:
            return progress
        try:
            raw = json.loads(text)
            low, ranges = int(raw["low"]), [(int(a), int(b)) for a, b in raw["ranges"]]
        except (ValueError, KeyError, TypeError) as e:
            # Only a disk fault can do this (the file is replaced atomically); forgetting the
            # ranges costs a re-send, never a loss.
            log.warning("event=sink_progress_unreadable path=%s error=%r", path, str(e))
            return progress
        progress.add(progress.low + 1, max(low, progress.low))
        for a, b in ranges:
            progress.add(a, b)
        return progress

    def copy(self) -> Progress:
        progress = Progress(self.path, self.low)
        progress.ranges = [list(r) for r in self.ranges]
        return progress

    def has(self, seq: int) -> bool:
        return seq <= self.low or any(a <= seq <= b for a, b in self.ranges)

    def add(self, first: int, last: int) -> None:
        """Record `first`..`last` as stored."""
        if last < first:
            return
        merged: list[list[int]] = []
        for a, b in sorted([*self.ranges, [first, last]]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        while merged and merged[0][0] <= self.low + 1:
            self.low = max(self.low, merged.pop(0)[1])
        self.ranges = merged

    def text(self) -> str:
        return json.dumps({"low": self.low, "ranges": self.ranges})

    def save(self) -> None:
        write_atomically(self.path, self.text().encode(), durable=False)


class LiveFirst:
    """The two lanes over one spool and one sink; `step()` is one turn (blocking)."""

    def __init__(self, spool: Spool, sink: LaneSink, status: SinkStatus, progress: Path,
                 max_rate: float, max_rows: int = 100_000) -> None:
        self.spool = spool
        self.sink = sink
        self.status = status
        self.path = progress
        self.max_rate = max_rate
        self.turn_rows = max(1, int(max_rate * TURN))
        # Readings of the next backlog turn: TURN seconds at the rate the last one achieved
        # (at most max_rate), so a slow server does not make live readings wait longer.
        self._next_turn = self.turn_rows
        self._full = False
        self.max_rows = max_rows
        self.progress: Progress | None = None

    def step(self) -> bool:
        """Store a turn of each lane; True if more is waiting."""
        if self.progress is None:
            self.progress = Progress.load(self.path, self.spool.acked(self.sink.name))
            # Known to the spool from now on, so it keeps what this sink still needs.
            self.spool.ack(self.sink.name, self.progress.low)
        live = self._live()
        backlog = self._backlog()
        if live or backlog:
            self.progress.save()
            self.spool.ack(self.sink.name, self.progress.low)
            self.status.readings_total += live + backlog
        self.report()
        return bool(self.progress.ranges) or self._full or live >= self.max_rows

    def _live(self) -> int:
        p, spool = self.progress, self.spool
        assert p is not None
        if not p.ranges and spool.backlog(p.low)[0] <= self.turn_rows:
            return 0  # one backlog turn catches up: no second lane
        after = p.ranges[-1][1] if p.ranges else None
        if after is None or spool.backlog(after)[0] > JUMP_TURNS * self.turn_rows:
            after = max(p.low, spool.last_seq - 1)  # from the newest record on
        entries = spool.read_after(after, self.max_rows)
        if not entries:
            return 0
        self.sink.store(entries, spool.points_for(entries[0][0]), paced=False)
        p.add(after + 1, entries[-1][0])
        return sum(len(b) for _, b in entries)

    def _backlog(self) -> int:
        p, spool = self.progress, self.spool
        assert p is not None
        entries = spool.read_after(p.low, self._next_turn)
        self._full = sum(len(b) for _, b in entries) >= self._next_turn  # more is waiting
        if p.ranges:
            limit = p.ranges[0][0] - 1
            entries = [(s, b) for s, b in entries if s <= limit]
            if not entries:  # nothing held below the live lane's range (dropped by bounds)
                p.add(p.low + 1, limit)
                return 0
        if not entries:
            return 0
        rows = sum(len(b) for _, b in entries)
        started = time.monotonic()
        self.sink.store(entries, spool.points_for(entries[0][0]), paced=True)
        rate = rows / max(time.monotonic() - started, 1e-6)
        self._next_turn = max(1, int(min(rate, self.max_rate) * TURN))
        p.add(p.low + 1, entries[-1][0])
        return rows

    def report(self) -> None:
        """Backlog size (readings not stored, the live lane's excluded) and age for health
        and metrics."""
        p, spool = self.progress, self.spool
        low = spool.acked(self.sink.name) if p is None else p.low
        readings, age = spool.backlog(low)
        for a, b in p.ranges if p is not None else []:
            readings -= spool.backlog(a - 1)[0] - spool.backlog(b)[0]
        self.status.backlog_readings, self.status.backlog_age_seconds = max(readings, 0), age


async def drain_live_first(spool: Spool, sink: LaneSink, status: SinkStatus, progress: Path,
                           *, max_rate: float, idle: float,
                           backoff: float = BACKOFF_MIN,
                           wake: asyncio.Event | None = None) -> None:
    """Drain the spool into `sink` forever, live lane first when behind; retried with backoff
    (`sinks.keep_stepping`) while the sink fails, the spool keeping every reading. Once
    `wake` is set (a gateway stopping), the `idle` waits shrink to 50 ms."""
    lanes = LiveFirst(spool, sink, status, progress, max_rate)
    lanes.report()
    await keep_stepping(sink.name, lanes.step, lanes.report, status, idle=idle,
                        backoff=backoff, wake=wake)
