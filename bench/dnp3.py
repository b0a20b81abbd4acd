"""DNP3 readings/s with event reporting: the gateway's master beside a bare dnp3py master.

Outstation: opendnp3 (through yadnp3, Apache-2.0; a test/bench dependency only) in a
separate process with `--points` analog inputs, all in class 1, its event buffer holding one
change of every point. A cycle changes every point at once (a new float value and the
outstation's time: an event each, as an RTU reports a burst of changes); the next cycle
starts once the master has them all. Each phase reads the events as g32v7 (float with
time) by event polls every POLL s (unsolicited responses off: opendnp3 would send them as
32-bit integers):

1. dnp3py: a bare `MasterTcpRunner`, an SOE handler that only counts values: what a Python
   application on dnp3py gets.
2. driver: `Dnp3Session` alone, its batches counted (flags, time, point look-up, columns).
3. gateway: `gateway.runtime.Gateway` with the DNP3 driver: responses -> batches -> on-disk
   spool -> embedded historian (committing when caught up: `flush_interval` 0.05 s) and
   anomaly engine; cycles paced by what the driver has, counted as readings the slower of
   the two sinks has taken.

Each phase connects (the driver's integrity poll first), then runs `--cycles` cycles and
counts until points x cycles readings arrived or `--timeout` passed; rate = readings / (last
arrival - start of the first cycle); lost = expected - counted. CPU = process time of this
(master) process per reading.

    python -m bench.dnp3 [--points 1000 10000] [--cycles 5] [--timeout 120]
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench import station
from bench.opcua import Counter
from bench.station import Result, phases, until
from bench.table import Row
from gateway.inputs.dnp3 import requests
from gateway.inputs.dnp3.master import build_sessions, honour_cancel
from gateway.runtime import Gateway
from gateway.site.model import Device, HistorianSection, Point, Site, SiteSection
from gateway.status import GatewayStatus

POLL = 0.02  # seconds between event polls, every phase
MASTER, OUTSTATION = 1, 10
EVENTS = ((32, 7),)  # analog events read as float with time


def _serve(conn: Connection, points: int) -> None:
    import opendnp3 as o

    class Listener(o.IChannelListener):
        def OnStateChange(self, state: o.ChannelState) -> None:
            pass

    class Commands(o.ICommandHandler):
        def Begin(self) -> None:
            pass

        def End(self) -> None:
            pass

    class Application(o.IOutstationApplication):
        pass

    port = _port()
    manager = o.DNP3Manager(1)
    channel = manager.AddTCPServer("server", o.levels.NOTHING, o.ServerAcceptMode.CloseExisting,
                                   o.IPEndpoint("127.0.0.1", port), Listener())
    config = o.OutstationStackConfig(o.DatabaseConfig(points))
    config.outstation.eventBufferConfig = o.EventBufferConfig.AllTypes(points)
    config.outstation.params.allowUnsolicited = False
    config.link.LocalAddr, config.link.RemoteAddr = OUTSTATION, MASTER
    held = Listener(), Commands(), Application()  # alive as long as the outstation
    outstation = channel.AddOutstation("outstation", held[1], held[2], config)
    outstation.Enable()
    conn.send(port)
    value = 0.5
    while conn.recv() is not None:
        value += 1.0
        builder = o.UpdateBuilder()
        now = o.DNPTime(time.time_ns() // 1_000_000, o.TimestampQuality.SYNCHRONIZED)
        for i in range(points):
            builder.Update(o.Analog(value + i, o.Flags(1), now), i, o.EventMode.Force)
        outstation.Apply(builder.Build())
        conn.send(points)
    manager.Shutdown()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _measure(conn: Connection, counter: Counter, points: int, cycles: int,
                   timeout: float, arrival: Counter | None = None) -> Result:
    """Cycle by cycle, each once the last has arrived (by `arrival`, default `counter`) or
    the deadline passed; then until `counter` has every reading."""
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + timeout
    pace = arrival or counter
    counter.count = pace.count = 0
    for cycle in range(1, cycles + 1):
        conn.send(True)
        conn.recv()
        await until(pace, points * cycle, deadline)
    if pace is not counter:
        await until(counter, points * cycles, deadline)
    used = time.process_time() - cpu
    return (counter.count / max(counter.last - start, 1e-9), counter.count,
            used / max(counter.count, 1) * 1e6)


async def bare(conn: Connection, port: int, points: int, cycles: int, timeout: float
               ) -> Result:
    from dnp3.master.config import MasterConfig
    from dnp3.master.handler import DefaultSOEHandler
    from dnp3.master.master import Master
    from dnp3.master.tcp_runner import MasterTcpRunner

    counter = Counter(points)

    class Counting(DefaultSOEHandler):
        def on_analog_input(self, values: list, info: object) -> None:
            counter.add(len(values))

    master = Master(config=MasterConfig(address=MASTER, outstation_address=OUTSTATION),
                    handler=Counting())
    runner = MasterTcpRunner(master=master, port=port, response_timeout=timeout)

    async def poll() -> None:
        while True:
            await runner.request(requests.read(master.next_request_sequence(), EVENTS,
                                               requests.CLASS_EVENTS))
            honour_cancel()  # as the driver does: dnp3py can lose a cancel (Python 3.11)
            await asyncio.sleep(POLL)

    await runner.open()
    poller = asyncio.create_task(poll())
    try:
        return await _measure(conn, counter, points, cycles, timeout)
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await runner.close()


def _site(port: int, points: int, data_dir: Path) -> Site:
    device = Device(name="rtu", protocol="dnp3", host="127.0.0.1", port=port,
                    poll_interval=POLL, timeout=10.0, unsolicited=False,
                    master_address=MASTER, outstation_address=OUTSTATION)
    # The historian commits at once when caught up: its default 10 s gathering would be the
    # figure (SD-card wear is not what this bench measures).
    return Site(site=SiteSection(name="bench", data_dir=data_dir),
                historian=HistorianSection(flush_interval=0.05), devices=[device],
                points=[Point(tag=f"p{i}", device="rtu", group=30, index=i, variation=5,
                              event_variation=7) for i in range(points)])


async def _connected(status: GatewayStatus, timeout: float) -> None:
    """Until the integrity poll is in: the cycles count events only."""
    deadline = time.perf_counter() + timeout
    while (d := status.devices.get("rtu")) is None or d.state != "ok":
        if time.perf_counter() > deadline:
            raise SystemExit(f"the master did not connect within {timeout} s")
        await asyncio.sleep(0.01)


async def driver(conn: Connection, port: int, points: int, cycles: int, timeout: float,
                 data_dir: Path) -> Result:
    counter = Counter(points)
    status = GatewayStatus(site="b")

    async def emit(batch: object) -> None:
        counter.add(len(batch))  # type: ignore[arg-type]

    (session,) = build_sessions(_site(port, points, data_dir), status, emit)
    task = asyncio.create_task(session.run())
    try:
        await _connected(status, timeout)
        return await _measure(conn, counter, points, cycles, timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def gateway(conn: Connection, port: int, points: int, cycles: int, timeout: float,
                  data_dir: Path) -> Result:
    gw = Gateway(_site(port, points, data_dir))
    sinks = [gw.status.sinks[name] for name in ("historian", "anomaly")]
    counter, arrival = Counter(points), Counter(points)
    stop = asyncio.Event()
    run = asyncio.create_task(gw.run(stop))

    async def watch(taken: int, came: int) -> None:
        device = gw.status.devices["rtu"]
        while True:
            if (now := min(s.readings_total for s in sinks)) != taken:
                counter.add(now - taken)
                taken = now
            if device.readings_total != came:
                arrival.add(device.readings_total - came)
                came = device.readings_total
            await asyncio.sleep(0.005)

    try:
        await _connected(gw.status, timeout)
        while min(s.readings_total for s in sinks) < points:  # the integrity poll's values
            await asyncio.sleep(0.01)
        watcher = asyncio.create_task(watch(min(s.readings_total for s in sinks),
                                            gw.status.devices["rtu"].readings_total))
        try:
            return await _measure(conn, counter, points, cycles, timeout, arrival)
        finally:
            watcher.cancel()
    finally:
        stop.set()
        await run


def measure(points: int, cycles: int, timeout: float) -> dict[str, Result]:
    """Each phase against one outstation of `points` points."""
    return phases(_serve, "DNP3 outstation", points, cycles, timeout, ("dnp3py", bare),
                  {"driver": driver, "gateway": gateway})


def run(quick: bool) -> list[Row]:
    """The gateway's readings/s beside a bare dnp3py master, per point count."""
    return station.rows(measure, "dnp3py", quick,
                        "DNP3 events (g32v7) into the historian and the anomaly engine",
                        "bare dnp3py master", "bench.dnp3")


if __name__ == "__main__":
    station.main(__doc__ or "", measure, "dnp3py", "events")
