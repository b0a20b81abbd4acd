"""Serve the API inside a running event loop (the gateway's, in the all-in-one process)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.logs import RateLimit, rate_limit

log = logging.getLogger(__name__)

GRACE = 5  # seconds requests in flight (and, later, event streams) get to finish on shutdown
# Clients that connect and send nothing (or a byte a minute) must not take the process's file
# descriptors: the spool, the historian and the devices' sockets need them too.
MAX_CONNECTIONS = 256  # open at once; beyond, a connection is closed as soon as accepted
HEAD_TIMEOUT = 10.0  # seconds a connection has to send a request's head (after connecting or
KEEP_ALIVE = 5  # a response); and an idle keep-alive connection lives this long
ACCEPT_BURST = 64  # connections asyncio accepts per loop turn (the listen backlog)
FD_RESERVE = 128  # descriptors kept for the gateway beyond those open when the API starts


def connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer where the descriptor limit (RLIMIT_NOFILE) leaves less room
    beside the descriptors open now, FD_RESERVE and a burst of accepts."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: count as if the gateway had its reserve in use already
        in_use = FD_RESERVE
    room = soft - in_use - FD_RESERVE - ACCEPT_BURST
    return max(8, min(MAX_CONNECTIONS, room))


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with what it lacks against idle or slow clients: a connection
    beyond `max_connections` is closed as soon as it is accepted, and one that has not sent a
    request's head within HEAD_TIMEOUT of connecting, or of its last response, is closed
    (uvicorn times out only an idle keep-alive connection, and only after a response)."""

    max_connections = MAX_CONNECTIONS
    refusals = RateLimit()  # a line per kind per minute, whatever the clients do

    # override: uvicorn narrows asyncio.Protocol's BaseTransport to the Transport it is given
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            if (held := self.refusals.admit("limit")) is not None:
                log.warning("event=api_connection_refused reason=limit connections=%d%s",
                            len(self.connections), f" suppressed={held}" if held else "")
            transport.abort()  # the descriptor goes now, not after a flush
            return
        self._await_head()

    def _await_head(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_late, self.scope)

    def _head_late(self, scope: object) -> None:
        if self.scope is scope and not self.transport.is_closing():  # no new request since
            if (held := self.refusals.admit("head_timeout")) is not None:
                log.info("event=api_connection_closed reason=head_timeout timeout=%g%s",
                         HEAD_TIMEOUT, f" suppressed={held}" if held else "")
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._head_timer.cancel()
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if (timer := getattr(self, "_head_timer", None)) is not None:
            timer.cancel()
        super().connection_lost(exc)


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
        rate_limit("asyncio", "uvicorn.error")  # also where setup_logging did not run
        limit = connection_limit()
        protocol = type("BoundedH11", (BoundedH11,), {"max_connections": limit})
        # uvicorn's info lines are free text, not key=value events; serve logs its own.
        # No access log: a URL may carry a token (`?access_token=` on an event stream).
        # limit_concurrency: over it, requests are answered 503 rather than queued.
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="on", timeout_graceful_shutdown=GRACE,
                                ssl_certfile=tls and tls[0], ssl_keyfile=tls and tls[1],
                                http=protocol, limit_concurrency=limit,
                                timeout_keep_alive=KEEP_ALIVE, backlog=ACCEPT_BURST)
        server = _EmbeddedServer(config, ready, bound)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        scheme = "https" if tls else "http"
        log.info("event=api_listening url=%s://%s:%d max_connections=%d", scheme, host, bound,
                 limit)
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
