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
from typing import TYPE_CHECKING

from anomaly.batch import Batch
from gateway.config import Site
from gateway.historian import EmbeddedHistorian
from gateway.influx import InfluxError, InfluxSink
from gateway.modbus import ModbusBus, build_buses
from gateway.sinks import drain
from gateway.spool import Spool
from gateway.status import GatewayStatus, SinkStatus

if TYPE_CHECKING:
    from gateway.opcua import OpcUaSession

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
        # InfluxDB drains the same spool beside the embedded historian, which stays the
        # local store (and what an outage of InfluxDB leaves the control room).
        self.influx: InfluxSink | None = None
        if site.historian.kind == "influxdb":
            status = self.status.sinks[InfluxSink.name] = SinkStatus(name=InfluxSink.name)
            self.influx = InfluxSink(site, self.spool, status)
        self.buses: list[ModbusBus | OpcUaSession] = [*build_buses(site, self.status, self._emit)]
        if any(d.protocol == "opcua" for d in site.devices):
            # asyncua and cryptography cost a second of start-up: only for sites that use them
            from gateway.opcua import build_sessions

            self.buses += build_sessions(site, self.status, self._emit, data_dir=data_dir)

    async def _emit(self, batch: Batch) -> None:
        # The poll counts as done once its batch is in the spool (survives a crash).
        self.spool.append(batch)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("event=gateway_started site=%s devices=%d points=%d buses=%d",
                 self.site.site.name, len(self.site.devices), len(self.site.points),
                 len(self.buses))
        pollers = [asyncio.create_task(bus.run(), name=f"bus:{i}")
                   for i, bus in enumerate(self.buses)]
        sinks = [asyncio.create_task(
            drain(self.spool, self.historian, self.status.sinks["historian"]), name="sink")]
        if self.influx is not None:
            sinks.append(asyncio.create_task(self._feed_influx(self.influx),
                                             name="sink:influxdb"))
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
            for task in (*sinks, publisher):
                task.cancel()
            await asyncio.gather(*sinks, publisher, return_exceptions=True)
            self.status.write(status_path(self.site))
            self.spool.close()
            self.historian.close()
            if self.influx is not None:
                self.influx.close()
            log.info("event=gateway_stopped site=%s", self.site.site.name)

    async def _feed_influx(self, sink: InfluxSink) -> None:
        """Probe InfluxDB, then drain the spool into it.

        The probe says at start-up, loudly, when InfluxDB cannot take writes (wrong
        credentials, unknown database or bucket, unreachable); health shows it as the sink's
        last error. The drain keeps retrying meanwhile, and the spool keeps the readings."""
        status = self.status.sinks[sink.name]
        try:
            await asyncio.to_thread(sink.probe)
        except InfluxError as e:
            status.errors_total += 1
            status.last_error = str(e)
            log.error("event=influxdb_unusable error=%r", str(e))
        else:
            log.info("event=influxdb_ready url=%s", self.site.historian.url)
        await drain(self.spool, sink, status, idle=self.site.historian.flush_interval)

    async def _flush(self) -> None:
        """Give the sinks time to store what is spooled; the spool keeps the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        sinks = [s for s in (self.historian, self.influx) if s is not None]
        while (any(s.cursor() < self.spool.last_seq for s in sinks)
               and loop.time() < deadline):
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
