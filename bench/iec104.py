"""IEC 60870-5-104 readings/s with spontaneous reports: the gateway beside c104's bare client.

Station: c104's server (lib60870-C; GPLv3, a test/bench dependency only) in a separate
process with `--points` M_ME_TF_1 points (short float with CP56Time2a) at common address 1.
It reports every point `--cycles` times spontaneously, 16 objects to an ASDU (as many as
one APDU holds), each with a new value and time tag, as an RTU reports a burst of changes:
in bursts of BURST ASDUs, the next once the client has the last (lib60870's station drops
the oldest of a longer queue). The same station serves each phase of a run:

1. c104: c104's own client (lib60870-C in C++), a Python `on_receive` callback per point
   that only counts: what a Python application on c104 gets.
2. driver: `Iec104Session` alone, its batches counted (decode, point look-up, quality).
3. gateway: `gateway.runtime.Gateway` with the IEC 104 driver: ASDUs -> batches -> on-disk
   spool -> embedded historian (committing when caught up: `flush_interval` 0.05 s) and
   anomaly engine (both spool sinks, as `scadawatch run` has them); bursts paced by what the
   driver has, counted as readings the slower of the two sinks has taken.

Each phase connects (general interrogation first), waits for every point's value (or, as
lib60870's station drops part of a 10,000-point interrogation, until none came for QUIET s;
the gateway: until its sinks have taken them all), starts the reports and counts until
points x cycles readings arrived or `--timeout` passed;
rate = readings / (last arrival - start of the reports); lost = expected - counted.
CPU = process time of this (client) process per reading (c104's own threads included).

    python -m bench.iec104 [--points 1000 10000] [--cycles 5] [--timeout 120]
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

from bench import station
from bench.opcua import Counter
from bench.station import Result, phases, until
from bench.table import Row
from gateway.inputs.iec104.client import build_sessions
from gateway.runtime import Gateway
from gateway.site.model import Device, HistorianSection, Point, Site, SiteSection
from gateway.status import GatewayStatus

CA = 1
PER_ASDU = 16  # M_ME_TF_1 objects (15 octets) one APDU holds
# ASDUs reported before waiting for them: lib60870's station drops its oldest queued ASDU
# beyond ~100 unsent (found here: 189 queued at once lost 63), so a burst stays below that.
BURST = 64
QUIET = 2.0  # seconds without an interrogated value: the station has sent what it will


def _serve(conn: Connection, points: int) -> None:
    import c104

    server = c104.Server(ip="127.0.0.1", port=_port(), tick_rate_ms=50)
    station = server.add_station(common_address=CA)
    # IOA 1 up: c104's client drops objects at IOA 0 ("unknown point")
    made = [station.add_point(io_address=i, type=c104.Type.M_ME_TF_1)
            for i in range(1, points + 1)]
    stamp = datetime.now(UTC)
    for p in made:
        p.info = c104.ShortInfo(0.0, recorded_at=stamp)
    server.start()
    conn.send(server.port)
    value, at = 0.0, 0
    while (asdus := conn.recv()) is not None:
        sent = 0
        for _ in range(asdus):
            if at == 0:
                value += 1.0
            chunk = made[at:at + PER_ASDU]
            at = (at + PER_ASDU) % len(made) if at + PER_ASDU < len(made) else 0
            stamp = max(datetime.now(UTC), stamp + timedelta(milliseconds=1))
            for p in chunk:
                p.info = c104.ShortInfo(value, recorded_at=stamp)
            server.transmit_batch(c104.Batch(c104.Cot.SPONTANEOUS, chunk))
            sent += len(chunk)
        conn.send(sent)
    server.stop()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _interrogated(pace: Counter, points: int, deadline: float) -> None:
    """Until the general interrogation's values have arrived: all `points`, or as many as
    came once QUIET s pass without one (lib60870's station drops part of a 10,000-point
    interrogation from its queue); the first may take until `deadline`."""
    seen = 0
    while not await until(pace, points, min(deadline, time.perf_counter() + QUIET)):
        if time.perf_counter() >= deadline or seen == pace.count > 0:
            return
        seen = pace.count


async def _measure(conn: Connection, counter: Counter, cycles: int, timeout: float,
                   arrival: Counter | None = None) -> Result:
    """Start the reports once the interrogated values are in and counted (the gateway's
    sinks have taken every one that arrived, so none is counted as a report); bursts are
    paced by `arrival` (default: `counter`), the readings counted by `counter`."""
    points, pace = counter.expected, arrival or counter
    deadline = time.perf_counter() + timeout
    await _interrogated(pace, points, deadline)
    if not pace.count:
        raise SystemExit(f"no interrogated value arrived within {timeout} s")
    if not await until(counter, pace.count, deadline):
        raise SystemExit(f"{counter.count} of the {pace.count} interrogated values were "
                         f"counted within {timeout} s")
    counter.count = pace.count = 0
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + timeout
    asdus = -(-points // PER_ASDU) * cycles
    while asdus > 0 and time.perf_counter() < deadline:
        # A burst the station's queue holds; the next once it has arrived (or was lost).
        burst = min(asdus, BURST)
        asdus -= burst
        conn.send(burst)
        await until(pace, pace.count + conn.recv(), deadline)
    if pace is not counter:
        await until(counter, points * cycles, deadline)
    used = time.process_time() - cpu
    return (counter.count / max(counter.last - start, 1e-9), counter.count,
            used / max(counter.count, 1) * 1e6)


async def bare(conn: Connection, port: int, points: int, cycles: int, timeout: float
               ) -> Result:
    import c104

    counter = Counter(points)
    loop = asyncio.get_running_loop()
    pending = 0

    def received(point: c104.Point, previous_info: c104.Information,
                 message: c104.IncomingMessage) -> c104.ResponseState:
        nonlocal pending  # called on c104's thread: hand counts to the loop in bunches
        pending += 1
        if pending >= 64:
            n, pending = pending, 0
            loop.call_soon_threadsafe(counter.add, n)
        return c104.ResponseState.NONE

    # c104 compares the annotations as objects; this module's are text (PEP 563).
    received.__annotations__ = {"point": c104.Point, "previous_info": c104.Information,
                                "message": c104.IncomingMessage, "return": c104.ResponseState}

    async def flush() -> None:
        nonlocal pending
        while True:
            await asyncio.sleep(0.01)
            if pending:
                n, pending = pending, 0
                counter.add(n)

    client = c104.Client(tick_rate_ms=50)
    connection = client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.MUTED)
    station = connection.add_station(common_address=CA)
    # Held here: c104 forgets a point's callback once its Python object is collected.
    made = [station.add_point(io_address=i, type=c104.Type.M_ME_TF_1)
            for i in range(1, points + 1)]
    for point in made:
        point.on_receive(callable=received)
    client.start()
    # c104's own start-up (init=INTERROGATION) stays muted with 1,000 points here: unmute
    # and interrogate by hand once connected.
    deadline = time.perf_counter() + timeout
    while not connection.is_connected:
        if time.perf_counter() > deadline:
            client.stop()
            raise SystemExit(f"c104's client did not connect within {timeout} s")
        await asyncio.sleep(0.01)
    await asyncio.to_thread(connection.unmute)
    await asyncio.to_thread(connection.interrogation, common_address=CA,
                            cause=c104.Cot.ACTIVATION, qualifier=c104.Qoi.STATION,
                            wait_for_response=False)
    flusher = asyncio.create_task(flush())
    try:
        return await _measure(conn, counter, cycles, timeout)
    finally:
        flusher.cancel()
        client.stop()


def _site(port: int, points: int, data_dir: Path) -> Site:
    device = Device(name="rtu", protocol="iec104", host="127.0.0.1", port=port,
                    common_address=CA, poll_interval=0.05)
    # The historian commits at once when caught up: its default 10 s gathering would be the
    # figure (SD-card wear is not what this bench measures).
    return Site(site=SiteSection(name="bench", data_dir=data_dir),
                historian=HistorianSection(flush_interval=0.05), devices=[device],
                points=[Point(tag=f"p{i}", device="rtu", ioa=i) for i in range(1, points + 1)])


async def driver(conn: Connection, port: int, points: int, cycles: int, timeout: float,
                 data_dir: Path) -> Result:
    counter = Counter(points)

    async def emit(batch: object) -> None:
        counter.add(len(batch))  # type: ignore[arg-type]

    (session,) = build_sessions(_site(port, points, data_dir), GatewayStatus(site="b"), emit)
    task = asyncio.create_task(session.run())
    try:
        return await _measure(conn, counter, cycles, timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()


async def gateway(conn: Connection, port: int, points: int, cycles: int, timeout: float,
                  data_dir: Path) -> Result:
    gw = Gateway(_site(port, points, data_dir))
    sinks = [gw.status.sinks[name] for name in ("historian", "anomaly")]
    counter, arrival = Counter(points), Counter(points)
    stop = asyncio.Event()
    run = asyncio.create_task(gw.run(stop))

    async def watch() -> None:
        seen = came = 0
        while True:
            taken = min(s.readings_total for s in sinks)
            if taken != seen:
                counter.add(taken - seen)
                seen = taken
            if (device := gw.status.devices.get("rtu")) and device.readings_total != came:
                arrival.add(device.readings_total - came)
                came = device.readings_total
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        return await _measure(conn, counter, cycles, timeout, arrival)
    finally:
        watcher.cancel()
        stop.set()
        await run


def measure(points: int, cycles: int, timeout: float) -> dict[str, Result]:
    """Each phase against one station of `points` points."""
    return phases(_serve, "IEC 104 station", points, cycles, timeout, ("c104", bare),
                  {"driver": driver, "gateway": gateway})


def run(quick: bool) -> list[Row]:
    """The gateway's readings/s beside c104's client, per point count."""
    return station.rows(measure, "c104", quick,
                        "IEC 104 spontaneous reports into the historian and the anomaly engine",
                        "c104's client (lib60870-C)", "bench.iec104")


if __name__ == "__main__":
    station.main(__doc__ or "", measure, "c104", "spontaneous readings")
