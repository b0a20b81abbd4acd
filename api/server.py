"""Serve the API inside a running event loop (the gateway's, in the all-in-one process)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)

GRACE = 5.0  # seconds requests in flight (and, later, event streams) get to finish on shutdown


class _EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: asyncio.Future[int] | None,
                 port: int) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._port = port

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would take over SIGINT/SIGTERM and re-raise them after its own shutdown;
        # the embedding process owns the signals and stops us by cancelling `serve`.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None and not self._on_started.done():
            self._on_started.set_result(self._port)


class ListenError(OSError):
    """The API's port cannot be had (in use, not permitted): the message names host and port."""

    def __str__(self) -> str:
        return str(self.strerror)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; a ListenError naming host and port when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise ListenError(e.errno, f"API cannot listen on {host}:{port}: {reason}") from None


async def serve(app: FastAPI, host: str, port: int,
                ready: asyncio.Future[int] | None = None, *,
                tls: tuple[Path, Path] | None = None) -> None:
    """Serve `app` on host:port (0: any free port) until cancelled; HTTPS with `tls`
    (certificate file, key file: PEM), through uvicorn's own TLS.

    `ready` gets the bound port once the server accepts connections; it is cancelled if
    `serve` ends before (an OSError naming host and port when it cannot listen). On
    cancellation the listener closes, requests in flight get up to GRACE seconds, then
    CancelledError propagates.
    """
    if (stopping := getattr(app.state, "stopping", None)) is not None:
        stopping.clear()  # an app served again after a stop
    try:
        sock = listen(host, port)
        bound = sock.getsockname()[1]
        # uvicorn's info lines are free text, not key=value events; serve logs its own.
        # No access log: a URL may carry a token (`?access_token=` on an event stream).
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="on", timeout_graceful_shutdown=GRACE,
                                ssl_certfile=tls and tls[0], ssl_keyfile=tls and tls[1])
        server = _EmbeddedServer(config, ready, bound)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        scheme = "https" if tls else "http"
        log.info("event=api_listening url=%s://%s:%d", scheme, host, bound)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Event streams end at once (clients reconnect and resume) instead of holding
            # the shutdown for its whole grace time.
            if stopping is not None:
                stopping.set()
            server.should_exit = True
            await task
            raise
        finally:
            sock.close()
            log.info("event=api_stopped url=%s://%s:%d", scheme, host, bound)
    finally:
        if ready is not None and not ready.done():
            ready.cancel()
