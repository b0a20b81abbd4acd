"""The gateway process: drivers poll into the spool, sinks drain it, status is published.

`Gateway.run()` is the whole lifecycle; `scadawatch run|gateway|demo` only wrap it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path

from anomaly.batch import Batch
from gateway.config import Site
from gateway.historian import EmbeddedHistorian
from gateway.modbus import build_buses
from gateway.sinks import drain
from gateway.spool import Spool
from gateway.status import GatewayStatus, SinkStatus

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0  # seconds between status.json snapshots
FLUSH_TIMEOUT = 10.0  # seconds a shutdown waits for sinks to catch up with the spool


def historian_path(site: Site) -> Path:
    return site.site.data_dir / "historian.sqlite"


def status_path(site: Site) -> Path:
    return site.site.data_dir / "status.json"


def tags_path(site: Site) -> Path:
    """The tag list the spooled batches' point indices refer to."""
    return site.site.data_dir / "spool-tags.json"


def catch_up_with_old_tags(site: Site, spool: Spool) -> None:
    """Store a backlog spooled under an earlier point list before the new one takes over.

    Batches carry point indices, not tags: after the point list changed (points added,
    removed or reordered in the site file), readings still in the spool must be filed
    under the tags they were polled for, or they would land on the wrong tags.
    """
    path = tags_path(site)
    tags = [p.tag for p in site.points]
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        old = tags
    if old != tags:
        historian = EmbeddedHistorian(historian_path(site), old)
        try:
            stored = 0
            while entries := spool.read_after(historian.cursor(), 100_000):
                historian.store(entries)
                spool.ack(historian.name, entries[-1][0])
                stored += sum(len(b) for _, b in entries)
        finally:
            historian.close()
        log.info("event=point_list_changed backlog_stored=%d old_points=%d new_points=%d",
                 stored, len(old), len(tags))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(tags))
    os.replace(tmp, path)


class Gateway:
    """Polls every device of a site, spools each batch, and drains the spool into the historian."""

    def __init__(self, site: Site) -> None:
        self.site = site
        data_dir = site.site.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.status = GatewayStatus(site=site.site.name)
        self.spool = Spool(data_dir / "spool", site.spool, self.status.spool)
        catch_up_with_old_tags(site, self.spool)
        self.historian = EmbeddedHistorian(historian_path(site), [p.tag for p in site.points])
        self.status.sinks["historian"] = SinkStatus(name="historian")
        self.buses = build_buses(site, self.status, self._emit)
        unsupported = sorted({d.protocol for d in site.devices} - {"modbus-tcp", "modbus-rtu"})
        for protocol in unsupported:
            log.warning("event=protocol_not_polled protocol=%s reason=not_yet_supported", protocol)

    async def _emit(self, batch: Batch) -> None:
        # The poll counts as done once its batch is in the spool (survives a crash).
        self.spool.append(batch)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("event=gateway_started site=%s devices=%d points=%d buses=%d",
                 self.site.site.name, len(self.site.devices), len(self.site.points),
                 len(self.buses))
        pollers = [asyncio.create_task(bus.run(), name=f"bus:{i}")
                   for i, bus in enumerate(self.buses)]
        sink = asyncio.create_task(
            drain(self.spool, self.historian, self.status.sinks["historian"]), name="sink")
        publisher = asyncio.create_task(self._publish_status(), name="status")
        try:
            await stop.wait()
        finally:
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            for bus in self.buses:
                await bus.close()
            await self._flush()
            for task in (sink, publisher):
                task.cancel()
            await asyncio.gather(sink, publisher, return_exceptions=True)
            self.status.write(status_path(self.site))
            self.spool.close()
            self.historian.close()
            log.info("event=gateway_stopped site=%s", self.site.site.name)

    async def _flush(self) -> None:
        """Give the historian sink time to store what is spooled; the spool keeps the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        while self.historian.cursor() < self.spool.last_seq and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def _publish_status(self) -> None:
        path = status_path(self.site)
        while True:
            self.status.write(path)
            await asyncio.sleep(STATUS_INTERVAL)


def install_stop_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM set `stop`, so every part shuts down cleanly and flushes."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
