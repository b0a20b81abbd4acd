"""A protocol peer (an IEC 104 station, a DNP3 outstation) in a process of its own for the
phases of one bench run, and the per-phase table its `main` prints.

The peer is `serve(conn, points)`: it sends its port on `conn`, then answers each message
until it receives None."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.table import Row

if TYPE_CHECKING:
    from bench.opcua import Counter

Result = tuple[float, int, float]  # readings/s, counted, CPU seconds per million readings
Bare = Callable[[Connection, int, int, int, float], Coroutine[Any, Any, Result]]
# (pipe, port, points, cycles, timeout, data dir) -> its result
Ours = Callable[[Connection, int, int, int, float, Path], Coroutine[Any, Any, Result]]
Measure = Callable[[int, int, float], dict[str, Result]]  # (points, cycles, timeout) -> phases


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


def rows(measure: Measure, peer: str, quick: bool, what: str, peer_says: str,
         module: str) -> list[Row]:
    """The gateway's readings/s beside the bare `peer` client, per point count, each in a
    fresh process (`measure` is a module-level function, so a spawned pool can run it)."""
    sizes, cycles = ([1000], 3) if quick else ([1000, 10000], 5)
    out = []
    for points in sizes:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            r = pool.submit(measure, points, cycles, 120.0).result()
        (ours, got, _), (theirs, _, _) = r["gateway"], r[peer]
        out.append(Row(f"{what}, {points:,} points",
                       f"{ours:,.0f}/s, {points * cycles - got:,} lost",
                       f"{peer_says}: {theirs:,.0f}/s", ours / theirs,
                       f"python -m {module} --points {points} --cycles {cycles}"))
    return out


def main(doc: str, measure: Measure, peer: str, readings: str) -> None:
    """A bench module's command line: `--points`, `--cycles`, `--timeout`, a table per size."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for points in args.points:
        expected = points * args.cycles
        results = measure(points, args.cycles, args.timeout)
        print(f"{points} points, {args.cycles} cycles ({expected} {readings}):")
        print_phases(results, peer, expected)
