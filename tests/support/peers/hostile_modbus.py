"""A Modbus TCP device that answers with malformed frames: a raw asyncio socket server, written
apart from pymodbus so that it can send what no conforming stack would.

Each request is answered by a burst of `BURST` frames of the next kind in `KINDS` (in turn;
a trickled frame comes alone, a byte at a time), then an exception answer; after `budget`
frames in all (shared by every server of a `Flood`), it answers correctly, so that a test
can see the gateway recover.
Unsolicited bursts come in between, every `FLOOD_GAP` s, and the server closes the connection
after `CLOSE_EVERY` of them.

`liar_server(kind)` is quieter: it answers every request with one frame of `LIES[kind]`, a
well-formed frame that is not the answer (another transaction id, unit or function code).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

KINDS = ("random", "truncated", "wrong_tid", "wrong_fc", "exception", "oversized",
         "short_count", "trickle")
BURST = 50  # frames a request gets back at most ...
BURST_BYTES = 500  # ... in this many bytes: pymodbus drops a receive buffer beyond 516
CLOSE_EVERY = 300  # unsolicited bursts a connection gets before the server closes it
FLOOD_GAP = 0.002  # seconds between unsolicited bursts
DEVICE_FAILURE = 4  # the exception code of the answer after a burst
TRICKLE_EVERY = 5  # one trickled frame in this many trickle turns: they are slow on purpose
TRICKLE_GAP = 0.002  # seconds between the bytes of a trickled frame


def register_value(address: int) -> int:
    """What a correct answer holds at `address`."""
    return (address * 7 + 1) & 0xFFFF


def _frame(tid: int, unit: int, pdu: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if length is None else length,
                       unit) + pdu


def _registers(fc: int, address: int, count: int) -> bytes:
    data = b"".join(struct.pack(">H", register_value(address + i)) for i in range(count))
    return bytes([fc, len(data)]) + data


@dataclass
class Flood:
    """The frame budget the servers share, and what they sent."""

    budget: int
    sent: Counter[str] = field(default_factory=Counter)  # frames per kind
    bursts: int = 0
    connections: int = 0

    @property
    def frames(self) -> int:
        return sum(v for k, v in self.sent.items() if k != "valid")

    @property
    def done(self) -> bool:
        return self.frames >= self.budget

    def answer(self, tid: int, unit: int, fc: int, address: int, count: int,
               rng: random.Random) -> tuple[str, bytes]:
        """The next burst: (its kind, its bytes)."""
        if self.done:
            return "valid", _frame(tid, unit, _registers(fc, address, count))
        kind = KINDS[self.bursts % len(KINDS)]
        self.bursts += 1
        if kind == "trickle" and rng.randrange(TRICKLE_EVERY):
            kind = "wrong_tid"
        burst = self._malformed(kind, tid, unit, fc, address, count, rng)
        n = 1
        while kind != "trickle" and n < BURST:
            frame = self._malformed(kind, tid, unit, fc, address, count, rng)
            if len(burst) + len(frame) > BURST_BYTES:
                break
            burst += frame
            n += 1
        self.sent[kind] += n
        # Then the answer, if the gateway can still find it: a device-failure exception (a
        # bad reading), so that a gateway that reads it keeps its circuit closed and asks on.
        return kind, burst + _frame(tid, unit, bytes([fc | 0x80, DEVICE_FAILURE]))

    @staticmethod
    def _malformed(kind: str, tid: int, unit: int, fc: int, address: int, count: int,
                   rng: random.Random) -> bytes:
        good = _registers(fc, address, count)
        return {
            "random": lambda: os.urandom(rng.randint(1, 300)),
            "truncated": lambda: _frame(tid, unit, good)[:rng.randint(1, 6 + len(good))],
            "wrong_tid": lambda: _frame((tid + rng.randint(1, 0xFFFE)) & 0xFFFF, unit,
                                        _registers(fc, address, count)),
            "wrong_fc": lambda: _frame(tid, unit, bytes([rng.choice([f for f in range(1, 25)
                                                                     if f != fc])]) + good[1:]),
            "exception": lambda: _frame(tid, unit, bytes([fc | 0x80, rng.randint(0, 255)])),
            "oversized": lambda: _frame(tid, unit, good, length=rng.randint(260, 0xFFFF)),
            "short_count": lambda: _frame(tid, unit, bytes([fc, rng.randint(0, 255)])
                                          + good[2:2 + 2 * rng.randint(0, count)]),
            "trickle": lambda: _frame(tid, unit, _registers(fc, address, max(count - 1, 0))),
        }[kind]()


# One frame per request, from (transaction id, unit, function code, address, count) of the
# request: each is well formed, with the registers asked for, and none of them is the answer.
LIES: dict[str, Callable[[int, int, int, int, int], bytes]] = {
    "tid_zero": lambda tid, unit, fc, a, n: _frame(0, unit, _registers(fc, a, n)),
    "tid_other": lambda tid, unit, fc, a, n: _frame(tid ^ 0x5A5A, unit, _registers(fc, a, n)),
    "unit_other": lambda tid, unit, fc, a, n: _frame(tid, unit ^ 0x40, _registers(fc, a, n)),
    "fc_other": lambda tid, unit, fc, a, n: _frame(tid, unit, _registers(fc ^ 7, a, n)),
    "exception_0": lambda tid, unit, fc, a, n: _frame(tid, unit, bytes([fc | 0x80, 0])),
}


@contextlib.asynccontextmanager
async def liar_server(kind: str) -> AsyncIterator[int]:
    """A server on 127.0.0.1 answering each request with one frame of `LIES[kind]`; yields
    its port."""
    lie = LIES[kind]

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                fc, address, count = struct.unpack(">BHH", await reader.readexactly(length - 1))
                writer.write(lie(tid, unit, fc, address, count))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def hostile_server(flood: Flood, seed: int) -> AsyncIterator[int]:
    """A server on 127.0.0.1 answering Modbus requests per `flood`; yields its port."""
    rng = random.Random(seed)

    async def send(writer: asyncio.StreamWriter, kind: str, frame: bytes) -> None:
        if kind != "trickle":
            writer.write(frame)
        for b in frame if kind == "trickle" else b"":
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(TRICKLE_GAP)
        await writer.drain()

    async def unsolicited(writer: asyncio.StreamWriter, last: list[int]) -> None:
        """Bursts between the answers too: far more frames than requests."""
        for n in itertools.count(1):
            if flood.done:
                return
            await send(writer, *flood.answer(*last, rng))
            if n % CLOSE_EVERY == 0:
                writer.close()
                return
            await asyncio.sleep(FLOOD_GAP)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flood.connections += 1
        last = [0, 1, 3, 0, 1]  # the last request: tid, unit, function code, address, count
        flooder = asyncio.create_task(unsolicited(writer, last))
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                last[:] = [tid, unit, *struct.unpack(">BHH", pdu[:5])]
                await send(writer, *flood.answer(*last, rng))
        except (asyncio.IncompleteReadError, ConnectionError, struct.error):
            pass
        finally:
            flooder.cancel()
            await asyncio.gather(flooder, return_exceptions=True)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    sessions: set[asyncio.Task] = set()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(session(reader, writer))
        sessions.add(task)
        task.add_done_callback(sessions.discard)

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(sessions):
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        await server.wait_closed()
