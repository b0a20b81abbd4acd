"""A protocol peer (an IEC 104 station, a DNP3 outstation) in a process of its own for the
phases of one bench run, and the per-phase table its `main` prints.

The peer is `serve(conn, points)`: it sends its port on `conn`, then answers each message
until it receives None."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.opcua import Counter

Result = tuple[float, int, float]  # readings/s, counted, CPU seconds per million readings
Bare = Callable[[Connection, int, int, int, float], Coroutine[Any, Any, Result]]
# (pipe, port, points, cycles, timeout, data dir) -> its result
Ours = Callable[[Connection, int, int, int, float, Path], Coroutine[Any, Any, Result]]


@contextlib.contextmanager
def station(serve: Callable[[Connection, int], None], points: int, timeout: float,
            what: str) -> Iterator[tuple[Connection, int]]:
    """The started peer's pipe and port; stopped (killed if it hangs) on leaving."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child, points), daemon=True)
    proc.start()
    if not parent.poll(timeout):
        proc.kill()
        raise RuntimeError(f"the {what} of {points} points did not start in {timeout} s")
    port = parent.recv()
    try:
        yield parent, port
    finally:
        parent.send(None)
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def phases(serve: Callable[[Connection, int], None], what: str, points: int, cycles: int,
           timeout: float, bare: tuple[str, Bare], ours: dict[str, Ours]) -> dict[str, Result]:
    """The bare peer library's phase, then each of ours (a data dir each), against one
    peer process of `points` points."""
    with station(serve, points, timeout, what) as (parent, port):
        results = {bare[0]: asyncio.run(bare[1](parent, port, points, cycles, timeout))}
        for name, phase in ours.items():
            with tempfile.TemporaryDirectory() as tmp:
                results[name] = asyncio.run(phase(parent, port, points, cycles, timeout,
                                                  Path(tmp)))
    return results


async def until(counter: Counter, expected: int, deadline: float) -> bool:
    """Wait until `counter` has `expected` readings or the `time.perf_counter()` deadline has
    passed; whether it has them. asyncio.timeout, not wait_for: 3.11's wait_for can swallow
    the cancel of a phase stopping (cpython gh-86296)."""
    counter.expected = expected
    counter.done.clear()
    if counter.count >= expected:
        counter.done.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(deadline - time.perf_counter(), 0)):
            await counter.done.wait()
    return counter.count >= expected


def print_phases(results: dict[str, Result], ceiling: str, expected: int) -> None:
    """One line per phase: rate, ratio to the `ceiling` phase, lost, CPU per reading."""
    peak = results[ceiling][0]
    for name, (rate, count, cpu) in results.items():
        print(f"  {name:8s} {rate:10,.0f} readings/s  ratio {rate / peak:5.2f}  "
              f"lost {expected - count:6d}  CPU {cpu:6.2f} s per million readings")
