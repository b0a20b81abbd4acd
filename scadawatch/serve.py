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

log = logging.getLogger("scadawatch")


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


def main(args: argparse.Namespace) -> int:
    from api.server import ListenError

    setup_logging()
    site = load(args.config)
    # Every part keeps files there (the API too: operator actions, tokens' state).
    if (why := unwritable(site.site.data_dir)) is not None:
        raise UsageError(f"{args.config}: site.data_dir: {why}")
    try:
        asyncio.run(serve(site, gateway=args.command in ("run", "gateway"),
                          api=args.command in ("run", "api")))
    except ListenError as e:
        # Without its API the process is no use: exit 1, so that systemd restarts it.
        log.error("event=api_unavailable error=%r", str(e))
        print(f"scadawatch {args.command}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def serve(site: Site, *, gateway: bool, api: bool, port: int | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the gateway and/or the API until `stop` is set (or Ctrl-C / SIGTERM); if one
    of them fails, the other stops too (the gateway flushing), and the failure is raised."""
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
    if gateway:
        gw = Gateway(site, status_interval=STATUS_INTERVAL_API_IN_PROCESS if api
                     else STATUS_INTERVAL)
        alarms = gw.alarms
        tasks.append(asyncio.create_task(gw.run(stop)))
        status: Callable[[], dict | None] = gw.status.snapshot
    else:
        snapshot = status_path(site)

        def status() -> dict | None:
            return read_snapshot(snapshot)

    if api:
        tasks.append(asyncio.create_task(_serve_api(site, status, port or site.api.port, stop,
                                                    alarms)))
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _serve_api(site: Site, status: Callable[[], dict | None], port: int,
                     stop: asyncio.Event, alarms: AlarmStore | None) -> None:
    """The API over the site's historian; `status` gives the gateway's live snapshot (its
    own in one process, `status.json` in another); `alarms` the gateway's alarm store in one
    process (None: the API opens the site's)."""
    from api.app import create_app
    from api.server import serve as serve_http
    from gateway.data_dir import historian_path
    from gateway.storage.historian import EmbeddedHistorian

    if site.historian.kind == "influxdb":
        from gateway.storage.influxdb.reader import InfluxReader

        reader: EmbeddedHistorian | InfluxReader = InfluxReader(site)
    else:
        path = historian_path(site)
        while not path.exists():  # a separate API may start before its gateway's first write
            log.info("event=waiting_for_historian path=%s", path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
            if stop.is_set():
                return
        reader = EmbeddedHistorian(path, [p.tag for p in site.points], readonly=True)
    app = create_app(site, reader, status, alarm_store=alarms)
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
