"""Supervision of the gateway's long-lived tasks: pollers, sinks, the clock, the status
publisher, the alarm tasks.

A task that fails is logged with its cause and traceback, shown in health (its TaskStatus:
`restarting`, the cause, the error) and started again after a backoff that doubles from
BACKOFF_MIN up to BACKOFF_MAX (reset once it has run that long without failing). A task that
ends by itself while the gateway runs is a fault too, unless `stop` is set. Without this, an
exception ended the task, and the gateway ran on without it, saying nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.failures import cause_of
from gateway.status import TaskStatus

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0  # seconds before a failed task starts again


async def supervise(run: Callable[[], Awaitable[None]], status: TaskStatus,
                    stop: asyncio.Event | None = None) -> None:
    """Run `run()` until cancelled (or, if it returns, until `stop` is set), restarting it
    after each failure."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    assert me is not None
    failures = 0
    trace: BaseException | None
    while True:
        started = loop.time()
        status.state = "running"
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if me.cancelling():  # stopped: whatever the part made of its cancellation
                raise asyncio.CancelledError from e
            error, cause, trace = f"{type(e).__name__}: {e}", cause_of(e), e
        else:
            if me.cancelling():
                raise asyncio.CancelledError
            if stop is not None and stop.is_set():
                return
            error, cause, trace = "ended by itself", "ended", None
        if loop.time() - started >= BACKOFF_MAX:
            failures = 0
        failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1))
        status.state, status.cause, status.last_error = "restarting", cause, error
        status.restarts_total += 1
        log.error("event=task_failed task=%s cause=%s error=%r restart_in=%g", status.name,
                  cause, error, delay, exc_info=trace)
        await asyncio.sleep(delay)
