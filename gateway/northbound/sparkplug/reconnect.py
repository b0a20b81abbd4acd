"""Keeping an MQTT session up: the edge node's and the central host's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiomqtt

from gateway.status import SinkStatus

log = logging.getLogger(__name__)

RECONNECT_MIN, RECONNECT_MAX = 0.5, 5.0  # seconds between connection attempts, doubling


async def keep_connected(session: Callable[[], Awaitable[None]], status: SinkStatus,
                         ended: Callable[[], None], event: str, **fields: object) -> None:
    """Run `session()` again whenever it ends with an MQTT error (broker gone, refused),
    `ended()` after each; the error is logged once per outage (`event=<event>`) and kept in
    `status`. The pause grows from RECONNECT_MIN to RECONNECT_MAX, back to the minimum after
    a session that lasted longer than that."""
    wait = RECONNECT_MIN
    while True:
        began = time.monotonic()
        try:
            await session()
        except aiomqtt.MqttError as e:
            if status.cause != "broker":
                log.warning("event=%s %s error=%r", event,
                            " ".join(f"{k}={v}" for k, v in fields.items()), str(e))
            status.cause, status.last_error = "broker", f"MQTT: {e}"
        finally:
            ended()
        if time.monotonic() - began > 2 * RECONNECT_MAX:
            wait = RECONNECT_MIN
        await asyncio.sleep(wait)
        wait = min(2 * wait, RECONNECT_MAX)
