"""The gateway process: drivers poll into the spool, sinks drain it, status is published.

`Gateway.run()` is the whole lifecycle; `scadawatch run|gateway|demo` only wrap it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from anomaly.core.alarms import AlarmEvent
from anomaly.core.batch import Batch
from gateway.alarms.store import AlarmStore, run_unshelve_timer
from gateway.data_dir import historian_path, progress_path, spool_dir, status_path, store_path
from gateway.detection import Detection
from gateway.failures import cause_of
from gateway.inputs.modbus.bus import Emit, ModbusBus, build_buses
from gateway.reload import Inputs, Reloader, install_reload_signal
from gateway.site.model import Site
from gateway.status import GatewayStatus, SinkStatus, TaskStatus
from gateway.storage.drain import drain
from gateway.storage.historian import EmbeddedHistorian, store_readings
from gateway.storage.spool import Spool
from gateway.supervise import supervise

if TYPE_CHECKING:
    from gateway.alarms.annotations import AlarmWriter
    from gateway.inputs.dnp3.master import Dnp3Session
    from gateway.inputs.iec104.client import Iec104Session
    from gateway.inputs.opcua.session import OpcUaSession
    from gateway.northbound.sparkplug.edge import EdgeNode
    from gateway.storage.influxdb.sink import InfluxSink

    AnyInput: TypeAlias = ModbusBus | OpcUaSession | Iec104Session | Dnp3Session

log = logging.getLogger(__name__)

# Seconds between status.json snapshots: what a separate API process reads (it calls the
# gateway down when the file is 10 s old). An API in the same process reads the live status,
# so the file is then only for people and scripts, and each rewrite is a page on the disk.
STATUS_INTERVAL = 1.0
STATUS_INTERVAL_API_IN_PROCESS = 30.0
FLUSH_TIMEOUT = 10.0  # seconds a shutdown waits for sinks to catch up with the spool
CLOCK_INTERVAL = 0.25  # seconds between the anomaly engine's looks at the clock


class Gateway:
    """Polls every device of a site, spools each batch, and drains the spool into the historian."""

    def __init__(self, site: Site, *, status_interval: float = STATUS_INTERVAL,
                 config_path: Path | None = None) -> None:
        """`config_path`: the site file `site` was read from, which SIGHUP re-reads (None:
        no live changes)."""
        self.site = site
        self.status_interval = status_interval
        self._status_failing = False
        data_dir = site.site.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.status = GatewayStatus(site=site.site.name)
        self.spool = Spool(spool_dir(site), site.spool, self.status.spool)
        self.spool.use_points(site.points)
        self.historian = EmbeddedHistorian(historian_path(site), [p.tag for p in site.points])
        self.status.sinks["historian"] = SinkStatus(name="historian")
        # InfluxDB drains the same spool beside the embedded historian, which stays the
        # local store (and what an outage of InfluxDB leaves the control room).
        self.influx: InfluxSink | None = None
        if site.historian.kind == "influxdb":  # urllib3 and the line writers: only for it
            from gateway.storage.influxdb.sink import InfluxSink

            status = self.status.sinks[InfluxSink.name] = SinkStatus(name=InfluxSink.name)
            self.influx = InfluxSink(site, self.spool, status)
        # Alarm events go to every listener (the alarm store, an in-process API's stream).
        self.alarms = AlarmStore(store_path(data_dir))
        self.alarm_listeners: list[Callable[[list[AlarmEvent]], object]] = [self.alarms.apply]
        self.alarm_writer: AlarmWriter | None = None  # the alarm journal into InfluxDB too
        if self.influx is not None:
            from gateway.alarms.annotations import AlarmWriter

            status = self.status.sinks[AlarmWriter.name] = SinkStatus(name=AlarmWriter.name)
            self.alarm_writer = AlarmWriter(site, self.alarms, status)
        self.detection: Detection | None = None
        if site.anomaly.enabled:
            self.status.sinks[Detection.name] = SinkStatus(name=Detection.name)
            self.detection = Detection(site, self._alarm_events,
                                       releases=self.alarms.releases_after,
                                       status=self.status.anomaly)
        self.northbound: list[EdgeNode] = []
        if site.northbound:  # aiomqtt and protobuf: only for sites that publish upstream
            from gateway.northbound.sparkplug.edge import EdgeNode, sink_name

            for i, nb in enumerate(site.northbound):
                status = self.status.sinks[sink_name(i)] = SinkStatus(name=sink_name(i))
                self.northbound.append(EdgeNode(site, nb, i, self.spool, self.alarms, status))
        # In groups that a change of the site file starts and stops one by one (gateway.reload).
        self.inputs = Inputs(site, functools.partial(build_inputs, status=self.status,
                                                     data_dir=data_dir), self._emit)
        self.reloader = None if config_path is None else Reloader(self, config_path)
        self.site_listeners: list[Callable[[Site], object]] = []  # an in-process API

    def _alarm_events(self, events: list[AlarmEvent]) -> None:
        for listener in self.alarm_listeners:
            listener(events)

    async def _emit(self, batch: Batch) -> None:
        # The poll counts as done once its batch is in the spool (survives a crash).
        self.spool.append(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every part, each under supervision (gateway.supervise), until `stop` is set;
        then stop polling, let the sinks store what is spooled, and close."""
        log.info("event=gateway_started site=%s devices=%d points=%d buses=%d",
                 self.site.site.name, len(self.site.devices), len(self.site.points),
                 len(self.inputs))
        self.inputs.start(self._task)
        if self.reloader is not None:
            install_reload_signal(self.reloader)
        flush = asyncio.Event()  # set at stop: the sinks store what is spooled at once
        # Caught up, the historian gathers readings for `flush_interval` before it commits:
        # each commit rewrites a few pages whatever it holds (SD cards wear by the page).
        sinks = [self._task("sink:historian", lambda: drain(
            self.spool, self.historian, self.status.sinks["historian"],
            self.spool.read_records_after, max_rows=store_readings(len(self.site.points)),
            idle=self.site.historian.flush_interval, wake=flush, release=True))]
        if self.influx is not None:
            influx = self.influx
            sinks.append(self._task("sink:influxdb", lambda: self._feed_influx(influx, flush)))
        if self.detection is not None:
            detection = self.detection
            sinks += [self._task("sink:anomaly", lambda: drain(
                          self.spool, detection, self.status.sinks[Detection.name],
                          self.spool.read_after, wake=flush)),
                      self._task("anomaly:clock", lambda: self._clock(detection))]
        sinks += [self._task(f"sink:{edge.name}", functools.partial(edge.run, flush))
                  for edge in self.northbound]
        alarm_tasks = [self._task("alarms:unshelve",
                                  lambda: run_unshelve_timer(self.alarms, stop), stop)]
        if self.site.webhooks:
            from gateway.alarms.webhooks import run_webhooks

            alarm_tasks.append(self._task(
                "alarms:webhooks", lambda: run_webhooks(self.site, self.alarms, stop), stop))
        if self.alarm_writer is not None:
            writer = self.alarm_writer
            alarm_tasks.append(self._task("alarms:influxdb", lambda: writer.run(stop), stop))
        publisher = self._task("status", self._publish_status)
        try:
            await stop.wait()
        finally:
            if self.reloader is not None:
                await self.reloader.close()
            await self.inputs.stop()
            flush.set()
            await self._flush()
            for task in (*sinks, publisher):
                task.cancel()
            await asyncio.gather(*sinks, publisher, return_exceptions=True)
            self._write_status()
            if self.detection is not None:
                self.detection.save()
            await asyncio.gather(*alarm_tasks, return_exceptions=True)
            if self.alarm_writer is not None:
                self.alarm_writer.close()
            self.alarms.close()
            self.spool.close()
            self.historian.close()
            if self.influx is not None:
                self.influx.close()
            log.info("event=gateway_stopped site=%s", self.site.site.name)

    # --- hooks of a live change of the site file (gateway.reload) ---------------------------

    def switch_points(self, site: Site) -> None:
        self.spool.use_points(site.points)

    def forget(self, devices: Iterable[str], tasks: Iterable[str]) -> None:
        for name in devices:
            self.status.devices.pop(name, None)
        for name in tasks:
            self.status.tasks.pop(name, None)

    async def follow(self, site: Site) -> None:
        if self.detection is not None:
            await asyncio.to_thread(self.detection.use_site, site)
        for listener in self.site_listeners:
            listener(site)

    def _task(self, name: str, run: Callable[[], Awaitable[None]],
              stop: asyncio.Event | None = None) -> asyncio.Task:
        status = self.status.tasks[name] = TaskStatus(name=name)
        return asyncio.create_task(supervise(run, status, stop), name=name)

    async def _feed_influx(self, sink: InfluxSink, wake: asyncio.Event) -> None:
        """Probe InfluxDB, then drain the spool into it.

        Behind by more than a turn, new readings go first while the backlog drains oldest
        first at `max_rate` (gateway.storage.influxdb.catchup). The probe says at start-up, loudly,
        when InfluxDB cannot take writes (wrong credentials, unknown database or bucket,
        unreachable); health shows it as the sink's last error. The drain keeps retrying
        meanwhile, and the spool keeps the readings. `wake` is set when the gateway stops: what
        is spooled goes now, not after `flush_interval`."""
        from gateway.storage.influxdb.catchup import drain_live_first
        from gateway.storage.influxdb.sink import InfluxError

        status = self.status.sinks[sink.name]
        try:
            await asyncio.to_thread(sink.probe)
        except InfluxError as e:
            status.errors_total += 1
            status.last_error = str(e)
            log.error("event=influxdb_unusable error=%r", str(e))
        else:
            log.info("event=influxdb_ready url=%s", self.site.historian.url)
        await drain_live_first(self.spool, sink, status, progress_path(self.site),
                               max_rate=self.site.historian.max_rate,
                               idle=self.site.historian.flush_interval, wake=wake)

    async def _flush(self) -> None:
        """Give the sinks time to store what is spooled; the spool keeps the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        sinks = [s for s in (self.historian, self.influx, self.detection, *self.northbound)
                 if s is not None]

        def behind() -> bool:
            return any(self.spool.backlog(s.cursor())[0] for s in sinks)

        # In a thread: a sink's cursor may wait for the store it is doing (the engine's lock).
        while loop.time() < deadline and await asyncio.to_thread(behind):
            await asyncio.sleep(0.05)

    async def _clock(self, detection: Detection) -> None:
        """Judge ticks by the clock too, so that a site gone silent still raises `comms`,
        and a device down raises once its stale window has passed."""
        while True:
            await asyncio.sleep(CLOCK_INTERVAL)
            await asyncio.to_thread(detection.advance)

    async def _publish_status(self) -> None:
        while True:
            self._write_status()
            await asyncio.sleep(self.status_interval)

    def _write_status(self) -> None:
        """status.json, unless the disk refuses it: said once per episode (an API in this
        process reads the live status meanwhile; a separate one calls the gateway down)."""
        try:
            self.status.write(status_path(self.site))
        except OSError as e:
            if not self._status_failing:
                log.error("event=status_write_failed cause=%s error=%r", cause_of(e), str(e))
            self._status_failing = True
        else:
            if self._status_failing:
                log.warning("event=status_write_resumed path=%s", status_path(self.site))
            self._status_failing = False


def build_inputs(site: Site, emit: Emit, *, status: GatewayStatus,
                 data_dir: Path) -> list[AnyInput]:
    """The inputs that poll `site`'s devices: a Modbus bus per endpoint or serial port, an OPC
    UA, IEC 104 or DNP3 session per device."""
    inputs: list[AnyInput] = [*build_buses(site, status, emit)]
    if any(d.protocol == "opcua" for d in site.devices):
        # asyncua and cryptography cost a second of start-up: only for sites that use them
        from gateway.inputs.opcua.session import build_sessions

        inputs += build_sessions(site, status, emit, data_dir=data_dir)
    if any(d.protocol == "iec104" for d in site.devices):
        from gateway.inputs.iec104.client import build_sessions as build_iec104

        inputs += build_iec104(site, status, emit)
    if any(d.protocol == "dnp3" for d in site.devices):
        from gateway.inputs.dnp3.master import build_sessions as build_dnp3

        inputs += build_dnp3(site, status, emit)
    return inputs


def install_stop_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM set `stop`, so every part shuts down cleanly and flushes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only; an embedding program stops us itself
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
