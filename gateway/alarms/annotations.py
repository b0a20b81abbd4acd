"""Alarm transitions into InfluxDB (measurement `alarms`), for analysis beside the readings.

The writer follows the alarm journal (gateway.alarms.store) from a cursor kept in the alarm
store itself, next to the webhooks' cursors: the cursor and the event ids it counts live and
die with the same file, and moving it is one small transaction. It moves only once InfluxDB
has taken the lines, so while InfluxDB is down nothing moves and nothing is lost; a crash
between the write and the cursor update re-sends those lines, which overwrite themselves
(series key and timestamp are fixed per journal entry). A new writer starts at the journal's
beginning: the whole alarm history goes to InfluxDB once.

Schema: tags `site`, `kind`, `priority`, `zone`, `tag`, `device`, `transition` (an empty or
absent one is left out); fields `id` (the alarm id), `event_id` (integer), `message`, `state`,
`value` (float, when the alarm has a finite one), `who`, `comment` (when given); timestamp =
the transition's time to the millisecond plus the event id modulo 10^6 in nanoseconds, so two
transitions of one series in the same millisecond (an ack of many) are two points. Journal
entries of out-of-service rules themselves (no alarm) are skipped: the `suppress` and
`unsuppress` transitions of the alarms they cover are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time

from gateway.alarms.store import AlarmStore, JournalEntry
from gateway.data_dir import ALARMS_QUARANTINE
from gateway.site.model import Site
from gateway.status import SinkStatus
from gateway.storage.drain import BACKOFF_MIN, keep_stepping
from gateway.storage.influxdb.sink import LineWriter, escape_tag

log = logging.getLogger(__name__)

MEASUREMENT = "alarms"
NAME = "influxdb-alarms"  # its SinkStatus, and its cursor in the alarm store
TAG_KEYS = ("device", "kind", "priority", "site", "tag", "transition", "zone")  # sorted
IDLE = 0.5  # seconds between looks at the journal when caught up
_FIELD_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": " ", "\r": " "})


def field_string(text: str) -> str:
    """A string field value. Line breaks become spaces: InfluxDB 2 and 3 refuse them in line
    protocol (the alarm store keeps the original)."""
    return '"' + text.translate(_FIELD_ESCAPES) + '"'


def timestamp(entry: JournalEntry) -> int:
    """Fixed per entry (a re-send overwrites) and unique within a millisecond's entries."""
    return entry.ts_ns - entry.ts_ns % 1_000_000 + entry.seq % 1_000_000


def alarm_line(site: str, entry: JournalEntry) -> str:
    """The line of one journal entry of an alarm."""
    a = entry.data
    tags = {"site": site, "kind": a.get("kind"), "priority": a.get("priority"),
            "zone": a.get("zone"), "tag": a.get("tag"), "device": a.get("device"),
            "transition": entry.transition}
    fields = [f"id={field_string(str(a['id']))}", f"event_id={entry.seq}i",
              f"message={field_string(str(a.get('message') or ''))}",
              f"state={field_string(str(a.get('state') or ''))}"]
    value = a.get("value")
    if isinstance(value, int | float) and math.isfinite(value):
        fields.append(f"value={float(value)!r}")
    fields.append(f"who={field_string(entry.who)}")
    if entry.comment is not None:
        fields.append(f"comment={field_string(entry.comment)}")
    return (MEASUREMENT + "".join(f",{k}={escape_tag(str(tags[k]))}" for k in TAG_KEYS
                                  if tags[k])
            + " " + ",".join(fields) + f" {timestamp(entry)}")


class AlarmWriter:
    """Writes the alarm journal after its cursor to InfluxDB, `batch_size` entries a step."""

    name = NAME

    def __init__(self, site: Site, store: AlarmStore, status: SinkStatus) -> None:
        self.site, self.store, self.status = site, store, status
        self.lines = LineWriter(site.historian, status,
                                site.site.data_dir / ALARMS_QUARANTINE)
        self.batch = site.historian.batch_size

    def cursor(self) -> int:
        """The last journal event id InfluxDB holds (with those before it)."""
        return self.store.cursor(NAME) or 0

    def step(self) -> bool:
        """Write the next entries and move the cursor past them; True while more wait.
        Raises (and moves nothing) when InfluxDB cannot take them."""
        cursor = self.cursor()
        entries = self.store.events_after(cursor, self.batch)
        lines = [alarm_line(self.site.site.name, e) for e in entries if e.alarm_id is not None]
        if lines:
            self.lines.send(lines)
            self.status.readings_total += len(lines)
        if entries:
            cursor = entries[-1].seq
            self.store.set_cursor(NAME, cursor)
        self.report(cursor)
        return len(entries) == self.batch

    def report(self, cursor: int | None = None) -> None:
        """Backlog (journal entries not yet written) and its age, for health and metrics."""
        cursor = self.cursor() if cursor is None else cursor
        oldest = self.store.events_after(cursor, 1)
        self.status.backlog_readings = max(self.store.last_event_id() - cursor, 0)
        self.status.backlog_age_seconds = (
            max(time.time() - oldest[0].ts_ns / 1e9, 0.0) if oldest else 0.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Write until `stop` is set; a failure is logged, shown in the status and retried
        with backoff (gateway.storage.drain.keep_stepping, as for readings)."""
        log.info("event=influxdb_alarms_started after_event_id=%d",
                 await asyncio.to_thread(self.cursor))
        task = asyncio.create_task(keep_stepping(NAME, self.step, self._failed, self.status,
                                                 idle=IDLE, backoff=BACKOFF_MIN))
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _failed(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # the store failed: the step's error says so
            self.report()

    def close(self) -> None:
        self.lines.close()
