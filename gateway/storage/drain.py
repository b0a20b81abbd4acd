"""Draining the spool into a sink: each sink reads after its own cursor, stores, then acks.

A sink is anything with a `name`, a `cursor()` (the last spool sequence number it has stored)
and a `store(entries, points)` that stores `(seq, batch)` entries whose point indices refer to
`points` (the spool's point list of those records). A sink that stores its cursor with the
data (the embedded historian) gets every reading exactly once across crashes; the others at
least once.

`keep_stepping` is the loop every drain runs: one step at a time in a thread, retried with
backoff while it fails, finished (and acknowledged) before a cancellation takes effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from anomaly.core.batch import Batch
from gateway.failures import cause_of
from gateway.memory import release_free_memory
from gateway.status import SinkStatus
from gateway.storage.spool import PointList, Record, Spool

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0  # seconds between retries of a failing sink
# Seconds between looks at the spool until a drain's first readings are stored: a gateway just
# started shows its first poll at once, not after the historian's `flush_interval` (10 s).
FIRST_IDLE = 0.05
WOKEN_IDLE = 0.05  # seconds between steps once the gateway stops (`wake` set)


R = TypeVar("R", bound=Batch | Record)  # what a sink stores: batches, or records by reference
R_contra = TypeVar("R_contra", bound=Batch | Record, contravariant=True)


class Sink(Protocol[R_contra]):
    name: str

    def cursor(self) -> int: ...

    def store(self, entries: Sequence[tuple[int, R_contra]], points: PointList | None) -> None: ...


async def drain(spool: Spool, sink: Sink[R], status: SinkStatus,
                read: Callable[[int, int], Sequence[tuple[int, R]]], *, max_rows: int = 100_000,
                idle: float = 0.05, backoff: float = BACKOFF_MIN,
                wake: asyncio.Event | None = None, release: bool = False) -> None:
    """Store what the spool holds beyond the sink's cursor, forever, in up to `max_rows`
    readings per store read by `read` (the spool's `read_after`, or `read_records_after`
    for a sink that reads the columns itself, a part at a time); wait `idle` seconds
    whenever it has caught up (less once `wake` is set: a gateway stopping wants what is
    spooled stored now), and at most FIRST_IDLE until the first readings since start are
    stored.

    A failing sink is retried from its own cursor after `backoff` seconds, doubling up to
    BACKOFF_MAX; nothing is skipped. When cancelled, the store in progress finishes and is
    acknowledged first. `release`: hand the heap's free pages back once its stores have caught
    up, before it waits (a sink that stores a `flush_interval` of readings at once: its
    transients, left in the heap, stayed resident until the next periodic hand-back,
    gateway/memory.py); not between the stores of one catch-up, each of which would fault the
    pages back in (at 50,000 tags a flush is five stores).
    """
    position: int | None = None
    stored = False
    unreleased = False  # stored since the heap's free pages were last handed back

    def step() -> bool:
        nonlocal position, stored, unreleased
        if position is None:
            position = sink.cursor()
            # Known to the spool from now on, so it keeps what this sink still needs.
            spool.ack(sink.name, position)
        entries = read(position, max_rows)
        rows = sum(len(b) for _, b in entries)
        if entries:
            sink.store(entries, spool.points_for(entries[0][0]))
            position = entries[-1][0]
            spool.ack(sink.name, position)
            status.readings_total += rows
            stored = True
            unreleased = release
        status.backlog_readings, status.backlog_age_seconds = spool.backlog(position)
        return rows >= max_rows

    def failed() -> None:
        nonlocal position
        position = None  # resume from what the sink really stored
        status.backlog_readings, status.backlog_age_seconds = spool.backlog(
            spool.acked(sink.name))

    def due() -> bool:
        return position is None or spool.last_seq > position

    def pause() -> float:
        nonlocal unreleased
        if unreleased:  # caught up: the stores' transients are done with
            release_free_memory()
            unreleased = False
        return idle if stored else min(idle, FIRST_IDLE)

    await keep_stepping(sink.name, step, failed, status, idle=pause, backoff=backoff, wake=wake,
                        due=due)


async def keep_stepping(name: str, step: Callable[[], bool], failed: Callable[[], None],
                        status: SinkStatus, *, idle: float | Callable[[], float], backoff: float,
                        wake: asyncio.Event | None = None,
                        due: Callable[[], bool] | None = None) -> None:
    """Run `step()` in a thread, forever; it returns True while more work is waiting, else
    the next step comes after `idle` seconds (a callable: as many as it says then). A step
    that raises is counted, logged and retried after `backoff` seconds, doubling up to
    BACKOFF_MAX, `failed()` called first (the backlog grows while the sink fails: health and
    metrics must show it). A cancellation waits for the step in progress, so what it stored
    gets acknowledged. `due()`, when given, says whether a step has anything to do: if not,
    the thread hop is saved (a sink of a site polled every second would otherwise step 20
    times a second for nothing)."""
    first_backoff = backoff
    while True:
        if due is not None and not due():
            await _pause(idle() if callable(idle) else idle, wake)
            continue
        task = asyncio.ensure_future(asyncio.to_thread(step))
        try:
            more = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.wait([task])
                if not task.cancelled() and task.exception() is not None:
                    log.warning("event=sink_error sink=%s error=%r while=stopping",
                                name, repr(task.exception()))
            raise
        except Exception as e:
            status.errors_total += 1
            status.last_error = f"{type(e).__name__}: {e}"
            status.cause = cause_of(e)
            failed()
            log.warning("event=sink_error sink=%s cause=%s error=%r retry_in=%g",
                        name, status.cause, status.last_error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, BACKOFF_MAX)
            continue
        if status.cause is not None:
            log.info("event=sink_resumed sink=%s was=%s", name, status.cause)
            status.cause = None
        backoff = first_backoff
        if not more:
            await _pause(idle() if callable(idle) else idle, wake)


async def _pause(idle: float, wake: asyncio.Event | None) -> None:
    """`idle` seconds, cut short once `wake` is set (then steps come every 50 ms)."""
    # A pause no longer than a woken one's is a plain sleep: the anomaly drain pauses 20
    # times a second, and a waiter task each time cost more than the rest of its loop.
    if wake is not None and not wake.is_set() and idle > WOKEN_IDLE:
        # Not wait_for: Python 3.11's loses a cancellation that lands as the event
        # is set (a stopping gateway does both), and this loop would never end.
        waiter = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait([waiter], timeout=idle)
        finally:
            waiter.cancel()
    else:
        await asyncio.sleep(idle if wake is None else min(idle, WOKEN_IDLE))
