"""OPC UA notifications/s: the gateway driver into the historian, beside asyncua's bare ceiling.

Server: one asyncua server in a separate process with `--items` Double variables. On command
it writes every variable `--cycles` times, each write with a new source timestamp, yielding to
its publisher every 64 writes. The same server serves each phase of a run:

1. bare: an asyncua client whose publish callback only counts the items of each
   DataChangeNotification (no decoding into batches): the ceiling of the transport.
2. handler: asyncua's own `Subscription` in callback mode (a `datachange_notification` per
   item, one task each), as an application would write it.
3. gateway: `gateway.runtime.Gateway` with the OPC UA driver: notifications -> batches ->
   on-disk spool -> embedded historian and anomaly engine (both spool sinks, as `scadawatch
   run` has them); counted as readings the slower of the two has taken.

Each phase subscribes every variable (queue size = cycles + 1, so the server discards
nothing), waits for the initial values, starts the writes, and counts until all
items x cycles notifications arrived or `--timeout` passed; rate = notifications / (last
arrival - start of the writes). Lost = expected - counted. The server's write loop (~70 us a
write once monitored) bounds every phase alike, so the ratio says what the driver costs on top.

    python -m bench.opcua [--items 1000 10000] [--cycles 5] [--timeout 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

from asyncua import Client, Server, ua

from bench.table import Row
from gateway.runtime import Gateway
from gateway.site.model import Device, Point, Site, SiteSection

URI = "urn:scadawatch:bench"
FOLDER_SIZE = 100


def _serve(conn: Connection, items: int) -> None:
    asyncio.run(_serve_async(conn, items))


async def _serve_async(conn: Connection, items: int) -> None:
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/bench")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(URI)
    nodes = [ua.NodeId(f"v{i}", ns) for i in range(items)]
    folders = []
    for i, node in enumerate(nodes):
        # asyncua adds a child in time linear in its parent's children: 100 per folder.
        if i % FOLDER_SIZE == 0:
            folders.append(await server.nodes.objects.add_folder(
                ua.NodeId(f"f{len(folders)}", ns), f"f{len(folders)}"))
        await folders[-1].add_variable(node, node.Identifier, 0.0, ua.VariantType.Double)
    await server.start()
    conn.send(server.bserver.port)
    loop = asyncio.get_running_loop()
    stamp = 0
    source = datetime.now(UTC)
    async with server:
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command is None:
                return
            for _ in range(command):
                stamp += 1
                # Stamped at the write, as a device does, so the anomaly engine judges every
                # reading: times counted from the server's start fall into a tick the engine's
                # clock may have closed by the gateway phase (late: left out, not judged).
                source = max(datetime.now(UTC), source + timedelta(milliseconds=1))
                for i, node in enumerate(nodes):
                    await server.write_attribute_value(node, ua.DataValue(
                        ua.Variant(float(stamp), ua.VariantType.Double),
                        SourceTimestamp=source, ServerTimestamp=datetime.now(UTC)))
                    if i % 64 == 63:
                        await asyncio.sleep(0)
            conn.send("written")


class Counter:
    def __init__(self, expected: int) -> None:
        self.count = 0
        self.last = 0.0
        self.expected = expected
        self.done = asyncio.Event()

    def add(self, n: int) -> None:
        self.count += n
        self.last = time.perf_counter()
        if self.count >= self.expected:
            self.done.set()


def _items(ns: int, items: int, queue: int) -> list[ua.MonitoredItemCreateRequest]:
    return [ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=ua.NodeId(f"v{i}", ns),
                                     AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=ua.MonitoringParameters(ClientHandle=i, SamplingInterval=0,
                                                    QueueSize=queue, DiscardOldest=True))
        for i in range(items)]


async def _measure(conn: Connection, counter: Counter, cycles: int, timeout: float
                   ) -> tuple[float, int]:
    """Start the writes once the initial values are in; (notifications/s, counted)."""
    try:
        async with asyncio.timeout(timeout):
            await counter.done.wait()
    except TimeoutError:
        raise SystemExit(f"only {counter.count} of {counter.expected} initial values arrived "
                         f"within {timeout} s") from None
    counter.count, counter.expected = 0, counter.expected * cycles
    counter.done.clear()
    start = time.perf_counter()
    conn.send(cycles)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await counter.done.wait()
    if await asyncio.get_running_loop().run_in_executor(None, conn.poll, timeout):
        conn.recv()  # "written"
    return counter.count / max(counter.last - start, 1e-9), counter.count


async def bare(conn: Connection, endpoint: str, items: int, cycles: int, timeout: float
               ) -> tuple[float, int]:
    counter = Counter(items)

    def on_publish(result: ua.PublishResult) -> None:
        for n in result.NotificationMessage.NotificationData or ():
            if isinstance(n, ua.DataChangeNotification):
                counter.add(len(n.MonitoredItems))

    client = Client(endpoint, timeout=30, watchdog_intervall=30)
    await client.connect()
    try:
        ns = (await client.get_namespace_array()).index(URI)
        sub = await client.uaclient.create_subscription(ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=50, RequestedLifetimeCount=300,
            RequestedMaxKeepAliveCount=10, MaxNotificationsPerPublish=0,
            PublishingEnabled=True), on_publish)
        await client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
            SubscriptionId=sub.SubscriptionId, ItemsToCreate=_items(ns, items, cycles + 1),
            TimestampsToReturn=ua.TimestampsToReturn.Both))
        return await _measure(conn, counter, cycles, timeout)
    finally:
        await client.disconnect()


async def handler(conn: Connection, endpoint: str, items: int, cycles: int, timeout: float
                  ) -> tuple[float, int]:
    counter = Counter(items)

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            counter.add(1)

    client = Client(endpoint, timeout=30, watchdog_intervall=30)
    await client.connect()
    try:
        ns = (await client.get_namespace_array()).index(URI)
        sub = await client.create_subscription(50, Handler())
        await sub.create_monitored_items(_items(ns, items, cycles + 1))
        return await _measure(conn, counter, cycles, timeout)
    finally:
        await client.disconnect()


async def gateway(conn: Connection, endpoint: str, items: int, cycles: int, timeout: float,
                  data_dir: Path) -> tuple[float, int]:
    device = Device(name="ua", protocol="opcua", endpoint=endpoint, poll_interval=0.05,
                    timeout=30.0, queue_size=cycles + 1, sampling_interval=0.0)
    site = Site(site=SiteSection(name="bench", data_dir=data_dir), devices=[device],
                points=[Point(tag=f"v{i}", device="ua", node=f"nsu={URI};s=v{i}")
                        for i in range(items)])
    gw = Gateway(site)
    sinks = [gw.status.sinks[name] for name in ("historian", "anomaly")]
    counter = Counter(items)
    stop = asyncio.Event()
    run = asyncio.create_task(gw.run(stop))

    async def watch() -> None:
        seen = 0
        while True:
            taken = min(s.readings_total for s in sinks)
            if taken != seen:
                counter.add(taken - seen)
                seen = taken
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        return await _measure(conn, counter, cycles, timeout)
    finally:
        watcher.cancel()
        stop.set()
        await run


def measure(items: int, cycles: int, timeout: float) -> dict[str, tuple[float, int]]:
    """(notifications/s, counted) of each phase against one server of `items` variables."""
    # spawn: a forked child would inherit whatever loops and threads earlier parts left
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, items), daemon=True)
    proc.start()
    if not parent.poll(timeout):
        proc.kill()
        raise RuntimeError(f"the OPC UA server of {items} items did not start in {timeout} s")
    endpoint = f"opc.tcp://127.0.0.1:{parent.recv()}/bench"
    try:
        results = {
            "bare": asyncio.run(bare(parent, endpoint, items, cycles, timeout)),
            "handler": asyncio.run(handler(parent, endpoint, items, cycles, timeout)),
        }
        with tempfile.TemporaryDirectory() as tmp:
            results["gateway"] = asyncio.run(gateway(parent, endpoint, items, cycles, timeout,
                                                     Path(tmp)))
    finally:
        parent.send(None)
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    return results


def run(quick: bool) -> list[Row]:
    """The gateway's notifications/s beside the bare subscription, per item count."""
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    sizes, cycles = ([1000], 3) if quick else ([1000, 10000], 5)
    rows = []
    for items in sizes:
        # Each size in a fresh process, so that one size's threads and memory cannot slow
        # the next.
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            r = pool.submit(measure, items, cycles, 120.0).result()
        (ours, got), (peer, _) = r["gateway"], r["bare"]
        rows.append(Row(f"OPC UA notifications into the historian and the anomaly engine, "
                        f"{items:,} monitored items",
                        f"{ours:,.0f}/s, {items * cycles - got:,} lost",
                        f"bare asyncua subscription: {peer:,.0f}/s", ours / peer,
                        f"python -m bench.opcua --items {items} --cycles {cycles}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # a client leaving is no news
    for items in args.items:
        expected = items * args.cycles
        results = measure(items, args.cycles, args.timeout)
        ceiling = results["bare"][0]
        print(f"{items} monitored items, {args.cycles} cycles ({expected} notifications):")
        for name, (rate, count) in results.items():
            print(f"  {name:8s} {rate:10,.0f} notifications/s  ratio {rate / ceiling:5.2f}  "
                  f"lost {expected - count}")

if __name__ == "__main__":
    main()
