"""Draining the spool into a sink: each sink reads after its own cursor, stores, then acks.

A sink is anything with a `name`, a `cursor()` (the last spool sequence number it has stored)
and a `store(entries)` that stores `(seq, batch)` entries. A sink that stores its cursor with
the data (the embedded historian) gets every reading exactly once across crashes; the others
at least once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from anomaly.batch import Batch
from gateway.spool import Spool
from gateway.status import SinkStatus

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0  # seconds between retries of a failing sink


class Sink(Protocol):
    name: str

    def cursor(self) -> int: ...

    def store(self, entries: list[tuple[int, Batch]]) -> None: ...


async def drain(spool: Spool, sink: Sink, status: SinkStatus, *, max_rows: int = 100_000,
                idle: float = 0.05, backoff: float = BACKOFF_MIN) -> None:
    """Store what the spool holds beyond the sink's cursor, forever, in up to `max_rows`
    readings per store; wait `idle` seconds whenever it has caught up.

    A failing sink is retried from its own cursor after `backoff` seconds, doubling up to
    BACKOFF_MAX; nothing is skipped. When cancelled, the store in progress finishes and is
    acknowledged first.
    """
    position: int | None = None
    first_backoff = backoff
    while True:
        try:
            if position is None:
                position = await asyncio.to_thread(sink.cursor)
                # Known to the spool from now on, so it keeps what this sink still needs.
                spool.ack(sink.name, position)
            entries = await asyncio.to_thread(spool.read_after, position, max_rows)
            rows = sum(len(b) for _, b in entries)
            if entries:
                cancelled = await _store(sink, entries)
                position = entries[-1][0]
                spool.ack(sink.name, position)
                status.readings_total += rows
                if cancelled:
                    raise asyncio.CancelledError
            status.backlog_readings, status.backlog_age_seconds = spool.backlog(position)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            status.errors_total += 1
            status.last_error = f"{type(e).__name__}: {e}"
            # The backlog grows while the sink fails: health and metrics must show it.
            status.backlog_readings, status.backlog_age_seconds = spool.backlog(
                spool.acked(sink.name))
            log.warning("event=sink_error sink=%s error=%r retry_in=%g",
                        sink.name, status.last_error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, BACKOFF_MAX)
            position = None  # resume from what the sink really stored
            continue
        backoff = first_backoff
        if rows < max_rows:
            await asyncio.sleep(idle)


async def _store(sink: Sink, entries: list[tuple[int, Batch]]) -> bool:
    """`sink.store(entries)` in a thread; True if the drain was cancelled meanwhile.

    A cancellation waits for the store to finish, so its readings get acknowledged.
    """
    task = asyncio.ensure_future(asyncio.to_thread(sink.store, entries))
    try:
        await asyncio.shield(task)
        return False
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if task.exception() is not None:
            log.warning("event=sink_error sink=%s error=%r while=stopping",
                        sink.name, repr(task.exception()))
            raise
        return True
