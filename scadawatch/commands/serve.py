"""`scadawatch run | gateway | api`: the gateway and the API, together or apart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.logs import setup_logging
from gateway.memory import tune_allocator
from gateway.site.loader import ConfigError, load_site
from gateway.site.model import Site
from gateway.site.rules import clear_text_logins, old_key_names
from scadawatch.cli import EXIT_FAILURE, EXIT_OK, UsageError

if TYPE_CHECKING:
    from gateway.alarms.store import AlarmStore
    from gateway.runtime import Gateway
    from gateway.storage.historian import EmbeddedHistorian
    from gateway.storage.influxdb.reader import InfluxReader

log = logging.getLogger("scadawatch")

READER_GRACE = 30.0  # seconds a replaced historian reader stays open for requests in flight


def load(config: str) -> Site:
    try:
        return load_site(config)
    except ConfigError as e:
        raise UsageError(f"invalid site file\n{e}") from None


def unwritable(folder: Path) -> str | None:
    """Why this process cannot keep files in `folder` (creating it if need be), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:
        return f"{folder}: cannot write there: {e.strerror or e}"


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv): a Modbus request costs the gateway ~75 us of CPU against
    asyncio's ~100, and every timer and wake-up less too (docs/performance.md, footprint)."""
    import uvloop

    return uvloop.new_event_loop()


def main(args: argparse.Namespace) -> int:
    from api.server import ListenError

    setup_logging()
    site = load(args.config)
    # Every part keeps files there (the API too: operator actions, tokens' state).
    if (why := unwritable(site.site.data_dir)) is not None:
        raise UsageError(f"{args.config}: site.data_dir: {why}")
    try:
        with asyncio.Runner(loop_factory=event_loop) as runner:
            runner.run(serve(site, gateway=args.command in ("run", "gateway"),
                             api=args.command in ("run", "api"), config=Path(args.config)))
    except ListenError as e:
        # Without its API the process is no use: exit 1, so that systemd restarts it.
        log.error("event=api_unavailable error=%r", str(e))
        print(f"scadawatch {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def serve(site: Site, *, gateway: bool, api: bool, port: int | None = None,
                stop: asyncio.Event | None = None, config: Path | None = None) -> None:
    """Run the gateway and/or the API until `stop` is set (or Ctrl-C / SIGTERM); if one
    of them fails, the other stops too (the gateway flushing), and the failure is raised.
    `config`: the site file `site` came from, which the gateway re-reads on SIGHUP and
    `POST /api/v1/config` replaces (None: the site does not change while running)."""
    from gateway.runtime import (
        STATUS_INTERVAL,
        STATUS_INTERVAL_API_IN_PROCESS,
        Gateway,
        install_stop_signals,
        status_path,
    )
    from gateway.status import read_snapshot

    tune_allocator()  # before the first thread and state save (see gateway/memory.py)
    if gateway:
        for _, d in clear_text_logins(site.devices):
            log.warning("event=opcua_password_in_clear device=%s user=%s endpoint=%s "
                        "reason=security_policy_none_allowed_by_allow_plaintext_password",
                        d.name, d.username, d.endpoint)
    for old, new in old_key_names(site.alarms):
        log.warning("event=site_key_deprecated key=%s use=%s", old, new)
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    tasks = []
    alarms = None
    gw: Gateway | None = None
    if gateway:
        gw = Gateway(site, status_interval=STATUS_INTERVAL_API_IN_PROCESS if api
                     else STATUS_INTERVAL, config_path=config)
        alarms = gw.alarms
        tasks.append(asyncio.create_task(gw.run(stop)))
        status: Callable[[], dict | None] = gw.status.snapshot
    else:
        snapshot = status_path(site)

        def status() -> dict | None:
            return read_snapshot(snapshot)

    if api:
        tasks.append(asyncio.create_task(_serve_api(site, status, port or site.api.port, stop,
                                                    alarms, gw, None if gw else config)))
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _reader(site: Site) -> EmbeddedHistorian | InfluxReader:
    """The API's reader of the site's historian, with the site's tags in point order."""
    if site.historian.kind == "influxdb":
        from gateway.storage.influxdb.reader import InfluxReader

        return InfluxReader(site)
    from gateway.data_dir import historian_path
    from gateway.storage.historian import EmbeddedHistorian

    return EmbeddedHistorian(historian_path(site), [p.tag for p in site.points], readonly=True)


def _follow_on_sighup(config: Path, follow: Callable[[Site], None]) -> None:
    """SIGHUP re-reads `config` and hands a valid site to `follow` (a separate API process:
    the gateway's, signalled too, applies it); an invalid one is logged and changes nothing."""
    import signal
    import threading

    def reread() -> None:
        try:
            site = load_site(config)
        except ConfigError as e:
            log.error("event=config_refused who=SIGHUP problems=%d first=%r", len(e.problems),
                      str(e.problems[0]))
            return
        follow(site)
        log.info("event=config_followed path=%s points=%d", config, len(site.points))

    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reread)


async def _serve_api(site: Site, status: Callable[[], dict | None], port: int,
                     stop: asyncio.Event, alarms: AlarmStore | None,
                     gw: Gateway | None = None, config: Path | None = None) -> None:
    """The API over the site's historian; `status` gives the gateway's live snapshot (its
    own in one process, `status.json` in another); `alarms` the gateway's alarm store in one
    process (None: the API opens the site's); `gw` the gateway in this process, whose site
    changes the API follows; else `config`, the site file it re-reads on SIGHUP (as the
    gateway's process does)."""
    from api.app import create_app, follow_site
    from api.server import serve as serve_http
    from gateway.data_dir import historian_path

    if site.historian.kind != "influxdb":
        path = historian_path(site)
        while not path.exists():  # a separate API may start before its gateway's first write
            log.info("event=waiting_for_historian path=%s", path)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await stop.wait()
            if stop.is_set():
                return
    reader = _reader(site)
    app = create_app(site, reader, status, alarm_store=alarms,
                     site_control=None if gw is None else gw.reloader)

    def follow(new: Site) -> None:
        nonlocal reader
        old, reader = reader, _reader(new)
        follow_site(app, new, reader)
        # Requests in flight may still read the old one.
        asyncio.get_running_loop().call_later(READER_GRACE, old.close)

    if gw is not None:
        gw.site_listeners.append(follow)
    elif config is not None:
        _follow_on_sighup(config, follow)
    tls = (site.api.tls_cert, site.api.tls_key) if site.api.tls_cert and site.api.tls_key else None
    server = asyncio.create_task(serve_http(app, site.api.host, port, tls=tls))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([server, stopping], return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()  # it could not listen: raised here
    finally:
        for task in (server, stopping):
            task.cancel()
        await asyncio.gather(server, stopping, return_exceptions=True)
        reader.close()
