"""Fixtures shared by the test files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import tomli_w
from support.ingest_faults import PASSWORD, USER
from support.peers.influx_servers import Influxd, influxd
from support.small_fs import SmallFs, small_filesystem

from scadawatch.cli import main as cli_main

if TYPE_CHECKING:
    from simulators.serve import SiteServer
    from simulators.site import SimulatedSite

T = TypeVar("T")

CliRun = Callable[..., tuple[int, str, str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a `slow` test run first, the slowest-marked first: with the workers of
    tests/run.sh (pytest-xdist, whole files to a worker) the soak's minutes then overlap the
    rest of the suite instead of trailing it on one worker."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRun:
    """Run `scadawatch ARGS...` in this process: (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli_main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[[dict | str], Path]:
    """Write a scenario (a dict, or TOML text as is) to a file and return its path."""

    def write(doc: dict | str, name: str = "scenario.toml") -> Path:
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else tomli_w.dumps(doc), encoding="utf-8")
        return path

    return write


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    """A 20 MiB tmpfs of the test's own, to fill up (tests/support/small_fs.py)."""
    with small_filesystem(tmp_path / "small") as fs:
        yield fs


# --- Simulated sites served over Modbus TCP, OPC UA and IEC 104 (simulators.serve) ----------

SIM_START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)  # not the CLI's default: start is settable


@dataclass
class ServedSite:
    """A `SiteServer` running on its own event loop thread, on free loopback ports."""

    server: SiteServer
    loop: asyncio.AbstractEventLoop

    @property
    def site(self) -> SimulatedSite:
        return self.server.site

    @property
    def modbus_port(self) -> int:
        return self.server.modbus.port

    @property
    def opcua_endpoint(self) -> str:
        return self.server.opcua.endpoint

    @property
    def iec104_port(self) -> int:
        return self.server.iec104.port

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server's loop, e.g. `server.publish(t)`; only while the clock is
        frozen (speed 0), or it would race the physics step running in a worker thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


@contextlib.contextmanager
def _serving(server: SiteServer) -> Iterator[ServedSite]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    entered: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def hold() -> None:
        try:
            async with server:
                entered.set_result(None)
                run = asyncio.create_task(server.run())
                await stop.wait()
                run.cancel()
                (outcome,) = await asyncio.gather(run, return_exceptions=True)
                if not isinstance(outcome, asyncio.CancelledError | None):
                    raise outcome
        except BaseException as e:
            if not entered.done():
                entered.set_exception(e)
            raise

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sim-serve")
    done = pool.submit(loop.run_until_complete, hold())
    try:
        entered.result(timeout=120)
        yield ServedSite(server, loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        try:
            done.result(timeout=30)  # surfaces an error of the clock loop in the test
        finally:
            pool.shutdown()
            loop.close()


@pytest.fixture(scope="module")
def serve_site() -> Iterator[Callable[..., ServedSite]]:
    """Start serving a simulated site: `serve_site("water", scenario, speed=0.0)`.

    Speed 0 (the default) freezes simulated time at SIM_START, so every client reads the same
    sample. Sites stop when the test module ends.
    """
    from simulators.serve import SiteServer
    from simulators.site import build_site

    with contextlib.ExitStack() as stack:

        def start(name: str, scenario: str | Path = "normal", *, speed: float = 0.0,
                  seed: int = 1, update_interval: float = 0.2) -> ServedSite:
            site = build_site(name, scenario, seed=seed, start=SIM_START, step=60.0)  # type: ignore[arg-type]
            server = SiteServer(site, modbus_port=0, opcua_port=0, iec104_port=0, speed=speed,
                                update_interval=update_interval)
            return stack.enter_context(_serving(server))

        yield start


# --- InfluxDB servers (tests/support/peers/influx_servers.py) -------------------------------------

@pytest.fixture
def database(influx: Influxd, request: pytest.FixtureRequest) -> str:
    """A database of the test's own on the module's `influx` server."""
    name = "db_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    influx.create_database(name)
    return name


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[Influxd]:
    """An influxd of the test's own (auth on), to stop and start."""
    server = influxd(tmp_path / "influxd", user=USER, password=PASSWORD)
    yield server
    server.stop()

