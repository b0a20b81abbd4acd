"""Running scadawatch's own parts for tests: the API on a real uvicorn server in a thread,
the water simulator in its own process, gateway site files on it, and what a gateway spooled
and stored, read back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import tomli_w
from fastapi import FastAPI

from anomaly.core.batch import Batch
from api.server import serve
from api.tokens import Role, TokenStore
from gateway.site.model import Site
from gateway.status import SpoolStatus
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.spool import Spool
from scadawatch.commands.serve import serve as run_gateway
from scadawatch.ports import free_port

T = TypeVar("T")

RUN_LIMIT = 60.0  # seconds any wait for a process or server may take before a test fails


def auth_headers(data_dir: Path, role: Role = "admin") -> dict[str, str]:
    """The header of a new token of `role` in the token store of `data_dir` (a site's)."""
    _, secret = TokenStore(data_dir).create(role)
    return {"Authorization": f"Bearer {secret}"}


async def api_until(site: Site, answer: Callable[[httpx.AsyncClient], Awaitable[T | None]],
                    role: Role = "admin") -> T:
    """Run the gateway and the API in this event loop (as `scadawatch run` does) and call
    `answer(http)` every 0.1 s until it returns something; then stop, flushing. `http` sends
    a token of `role`."""
    port = free_port()
    stop = asyncio.Event()
    headers = auth_headers(site.site.data_dir, role)
    gateway = asyncio.create_task(run_gateway(site, gateway=True, api=True, port=port,
                                              stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers=headers) as http:
            deadline = time.monotonic() + RUN_LIMIT
            while time.monotonic() < deadline and not gateway.done():
                with contextlib.suppress(httpx.TransportError):  # the API is still starting
                    if (result := await answer(http)) is not None:
                        return result
                await asyncio.sleep(0.1)
            raise AssertionError(f"no answer within {RUN_LIMIT} s: {gateway}")
    finally:
        stop.set()
        await gateway


@contextlib.contextmanager
def running(app: FastAPI, port: int = 0, tls: tuple[Path, Path] | None = None
            ) -> Iterator[tuple[str, concurrent.futures.Future]]:
    """`api.server.serve` in its own event loop thread (HTTPS with `tls`: certificate and key
    files); yields (base URL, its outcome)."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[int] = concurrent.futures.Future()
    outcome: concurrent.futures.Future[None] = concurrent.futures.Future()
    task: list[asyncio.Task] = []

    async def main() -> None:
        ready = loop.create_future()
        task.append(asyncio.create_task(serve(app, "127.0.0.1", port, ready, tls=tls)))
        with contextlib.suppress(asyncio.CancelledError):  # cancelled: serve failed, see below
            started.set_result(await ready)
        await task[0]

    def thread() -> None:
        try:
            loop.run_until_complete(main())
            outcome.set_result(None)
        except BaseException as e:  # the test asserts what ended the server
            outcome.set_exception(e)
            if not started.done():
                started.set_exception(e)
        finally:
            loop.close()

    t = threading.Thread(target=thread, daemon=True)
    t.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{started.result(timeout=10)}", outcome
    finally:
        if task:
            with contextlib.suppress(RuntimeError):  # the loop is closed if serve failed
                loop.call_soon_threadsafe(task[0].cancel)
        t.join(timeout=15)
        assert not t.is_alive(), "the server did not stop"


def start_simulator(tmp_path: Path, *, scenario: str | Path = "normal",
                    speed: float = 60.0) -> tuple[subprocess.Popen, Path]:
    """The water simulator in its own process: a Modbus device the gateway cannot tell from
    a real one. Its log (comms states, physics lag) goes to `tmp_path/simulator.log`."""
    site_file = tmp_path / "sim.toml"
    with (tmp_path / "simulator.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scadawatch", "simulate", "water", "--speed", str(speed),
             "--scenario", str(scenario), "--modbus-port", str(free_port()),
             "--opcua-port", str(free_port()), "--iec104-port", str(free_port()),
             "--write-site", str(site_file)],
            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + RUN_LIMIT
    while not site_file.exists():
        assert proc.poll() is None, "the simulator exited"
        assert time.monotonic() < deadline, "the simulator did not start"
        time.sleep(0.1)
    return proc, site_file


def gateway_site(sim_site: Path, tmp_path: Path) -> Path:
    """The simulator's site file, polled fast, with one spool segment that is never deleted,
    so that at the end the spool still holds every reading it ever acknowledged."""
    raw = tomllib.loads(sim_site.read_text())
    raw["site"]["data_dir"] = str(tmp_path / "data")
    raw["spool"] = {"segment_bytes": 1 << 30, "fsync_interval": 0.0}
    for device in raw["devices"]:
        device["poll_interval"] = 0.05
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def spooled(site: Site) -> Counter[tuple[int, int]]:
    status = SpoolStatus()
    spool = Spool(site.site.data_dir / "spool", site.spool, status)
    try:
        batches = [b for _, b in spool.read_after(0, max_rows=10**9)]
    finally:
        spool.close()
    all_ = Batch.concat(batches)
    return Counter(zip(all_.point.tolist(), all_.source_ts.tolist(), strict=True))


def stored(site: Site) -> Counter[tuple[int, int]]:
    tags = [p.tag for p in site.points]
    historian = EmbeddedHistorian(site.site.data_dir / "historian.sqlite", tags, readonly=True)
    try:
        out: Counter[tuple[int, int]] = Counter()
        for i, tag in enumerate(tags):
            rows = historian.history(tag, 0, 2**62)
            out.update((i, ts) for ts in rows.source_ts.tolist())
        return out
    finally:
        historian.close()


# Point lists a site went through, the current one last; readings were spooled under each
# earlier one and not yet stored when the gateway stopped.
POINT_LIST_CHANGES = {
    "added": [["a", "b", "c"], ["a", "b", "c", "d"]],
    "removed": [["a", "b", "c"], ["a", "c"]],
    "reordered": [["a", "b", "c"], ["c", "a", "b"]],
    "changed_thrice": [["a", "b", "c"], ["c", "d", "a"], ["d", "b"], ["b", "a", "c", "d"]],
}


def spool_under_each(lists: list[list[str]], site_of: Callable[[list[str]], Site]
                     ) -> dict[str, list[tuple[int, float]]]:
    """Spool one reading per point under each list but the last (a second apart per list,
    value: a code of the tag), each by a gateway that stops before any sink stores it.
    Returns what every tag must end up with: [(time, value)]."""
    from gateway.runtime import Gateway

    expected: dict[str, list[tuple[int, float]]] = {t: [] for ts in lists for t in ts}
    start = time.time_ns() // 10**9 * 10**9 - 60 * 10**9  # recent, as the detector expects
    for n, tags in enumerate(lists[:-1], start=1):
        gateway = Gateway(site_of(tags))
        values = [float(ord(t[0])) for t in tags]
        ts = start + n * 10**9
        gateway.spool.append(Batch.of(source_ts=[ts] * len(tags), point=range(len(tags)),
                                      value=values, quality=0))
        for t, v in zip(tags, values, strict=True):
            expected[t].append((ts, v))
        gateway.spool.close()
        gateway.historian.close()
        if gateway.influx is not None:
            gateway.influx.close()
    return expected


def historian_readings(site: Site, tags: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Every tag's [(time, value)] in the embedded historian."""
    historian = EmbeddedHistorian(site.site.data_dir / "historian.sqlite", tags, readonly=True)
    try:
        out = {}
        for t in tags:
            rows = historian.history(t, 0, 2**62)
            out[t] = list(zip(rows.source_ts.tolist(), rows.value.tolist(), strict=True))
        return out
    finally:
        historian.close()


def start_and_stop(site: Site) -> None:
    """Run a gateway on `site` and stop it at once: stopping, it lets its sinks store what the
    spool holds."""
    from gateway.runtime import Gateway

    async def main() -> None:
        stop = asyncio.Event()
        stop.set()
        await Gateway(site).run(stop)

    asyncio.run(main())


async def comms_alarm_round_trip(site: Site, device: str,
                                 peer: Callable[[], contextlib.AbstractContextManager[object]],
                                 limit: float) -> tuple[list[dict], list[dict]]:
    """A whole gateway on `site` whose `device` is served by `peer()`: up until every point
    of the device has a reading, down until a `comms` alarm is active, up again until it
    clears. The active comms alarms when raised, and every comms alarm at the end."""
    from gateway.alarms.store import Filter
    from gateway.runtime import Gateway

    gw = Gateway(site)
    status = gw.status.devices[device]
    points = sum(p.device == device for p in site.points)
    active = Filter(kind="comms", states=("active",), shelved=None, suppressed=None)

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, "not within the limit"
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    run = asyncio.create_task(gw.run(stop))
    try:
        with peer():
            await until(lambda: status.state == "ok" and status.readings_total >= points)
        await until(lambda: bool(gw.alarms.alarms(active)[0]))
        raised = gw.alarms.alarms(active)[0]
        with peer():
            await until(lambda: not gw.alarms.alarms(active)[0])
        return raised, gw.alarms.alarms(Filter(kind="comms", shelved=None,
                                                suppressed=None))[0]
    finally:
        stop.set()
        await run
