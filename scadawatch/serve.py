"""`scadawatch run | gateway | api`: the gateway and the API, together or apart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config import ConfigError, Site, load_site
from gateway.logs import setup_logging
from gateway.memory import tune_allocator
from scadawatch.cli import UsageError

if TYPE_CHECKING:
    from gateway.alarm_store import AlarmStore

log = logging.getLogger("scadawatch")


def load(config: str) -> Site:
    try:
        return load_site(config)
    except ConfigError as e:
        raise UsageError(f"invalid site file\n{e}") from None


def main(args: argparse.Namespace) -> int:
    setup_logging()
    site = load(args.config)
    asyncio.run(serve(site, gateway=args.command in ("run", "gateway"),
                      api=args.command in ("run", "api")))
    return 0


async def serve(site: Site, *, gateway: bool, api: bool, port: int | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the gateway and/or the API until `stop` is set (or Ctrl-C / SIGTERM)."""
    from gateway.runtime import Gateway, install_stop_signals, status_path
    from gateway.status import read_snapshot

    tune_allocator()  # before the first thread and state save (see gateway/memory.py)
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    tasks = []
    alarms = None
    if gateway:
        gw = Gateway(site)
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
    await asyncio.gather(*tasks)


async def _serve_api(site: Site, status: Callable[[], dict | None], port: int,
                     stop: asyncio.Event, alarms: AlarmStore | None) -> None:
    """The API over the site's historian; `status` gives the gateway's live snapshot (its
    own in one process, `status.json` in another); `alarms` the gateway's alarm store in one
    process (None: the API opens the site's)."""
    from api.app import create_app
    from api.server import serve as serve_http
    from gateway.historian import EmbeddedHistorian
    from gateway.runtime import historian_path

    if site.historian.kind == "influxdb":
        from gateway.influx_reader import InfluxReader

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
    log.info("event=api_started url=%s://%s:%d/docs", "https" if tls else "http", site.api.host,
             port)
    await stop.wait()
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    reader.close()
