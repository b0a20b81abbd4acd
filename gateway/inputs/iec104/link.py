"""One IEC 60870-5-104 connection (clause 5): framing, sequence numbers, k/w windows and the
t1-t3 timers, as an asyncio protocol that hands each received ASDU to its owner.

- k: at most k I frames sent and not yet acknowledged; more wait in a queue.
- w: received I frames are acknowledged at the latest after w of them, or t2 after the
  first unacknowledged one. The owner acknowledges (`acknowledge(n)`, an S frame) once what
  they carried is stored: `on_ack_due` tells it when the window or t2 asks for it, so what
  the station deletes from its event buffer on our acknowledgement is already spooled.
- t1: a sent I frame or U act unanswered for t1 closes the connection (`LinkError` with
  cause timeout): the device is down within t1 of going quiet mid-exchange.
- t3: after t3 without a frame received, TESTFR act (answered within t1, or closed).
- STARTDT act opens data transfer; STOPDT act ends it (`stop()`).

Anything the peer sends that breaks the protocol (a start byte other than 0x68, a length out
of 4..253, an N(S) other than the one expected, an N(R) acknowledging frames never sent)
closes the connection with cause `invalid_response` and a message naming the fault: after a
framing or sequence error no later octet can be trusted.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass

from gateway.inputs import quality
from gateway.inputs.iec104 import apci

TICK = 0.05  # seconds between looks at the timers


@dataclass(frozen=True, slots=True)
class Timers:
    """Timeouts (seconds) and windows, with the standard's defaults (clause 9.6)."""

    t0: float = 30.0
    t1: float = 15.0
    t2: float = 10.0
    t3: float = 20.0
    k: int = 12
    w: int = 8


class LinkError(Exception):
    """Why a connection ended: `cause` a `gateway.inputs.quality` code, the message the detail."""

    def __init__(self, cause: int, message: str) -> None:
        super().__init__(message)
        self.cause = cause


class Link(asyncio.Protocol):
    """The protocol side of one TCP connection; `on_asdu(asdu, receipt)` gets each ASDU's
    octets, in order, as they arrive."""

    def __init__(self, timers: Timers, on_asdu: Callable[[memoryview], None],
                 on_frame: Callable[[], None], on_ack_due: Callable[[], None]) -> None:
        self.timers = timers
        self.on_asdu = on_asdu
        self.on_frame = on_frame  # any frame received (the peer is alive)
        self.on_ack_due = on_ack_due
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[LinkError] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._vs = 0  # send sequence number of the next I frame
        self._vr = 0  # receive sequence number expected next
        self._acked = 0  # oldest of our I frames not yet acknowledged by the peer
        self._sent: collections.deque[tuple[int, float]] = collections.deque()  # (N(S), t)
        self._queue: collections.deque[bytes] = collections.deque()  # ASDUs waiting for k
        self._nr_sent = 0  # the N(R) we last sent: received I frames stored up to it
        self._rx_since: float | None = None  # first received I frame not yet acknowledged
        self._last_rx = 0.0
        self._u_pending: dict[int, float] = {}  # con bit awaited -> when its act was sent
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ticker: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._last_rx = self._now()
        self._ticker = asyncio.get_running_loop().call_later(TICK, self._tick)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "the peer closed the connection"
        self._end(LinkError(quality.CONNECTION, reason))

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._now()
        buf = self._buffer
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= 2:
                if buf[pos] != apci.START:
                    raise LinkError(quality.INVALID_RESPONSE,
                                    f"frame starts with 0x{buf[pos]:02X}, not 0x68")
                length = buf[pos + 1]
                if not apci.MIN_APDU_LENGTH <= length <= apci.MAX_APDU_LENGTH:
                    raise LinkError(quality.INVALID_RESPONSE, f"APDU length {length}, "
                                    f"outside {apci.MIN_APDU_LENGTH}..{apci.MAX_APDU_LENGTH}")
                end = pos + 2 + length
                if end > len(buf):
                    break
                self._frame(memoryview(buf)[pos + 2:end], length)
                pos = end
        except LinkError as e:
            self._fail(e)
            return
        finally:
            del buf[:pos]
        self.on_frame()

    # -- frames ----------------------------------------------------------------------------

    def _frame(self, frame: memoryview, length: int) -> None:
        kind, a, b = apci.parse_control(frame[:4])
        if kind == "I":
            if length == apci.MIN_APDU_LENGTH:
                raise LinkError(quality.INVALID_RESPONSE, "I frame without an ASDU")
            if a != self._vr:
                raise LinkError(quality.INVALID_RESPONSE, f"sequence error: I frame N(S)={a}, "
                                f"expected {self._vr}")
            self._vr = (self._vr + 1) % apci.SEQ_MOD
            self._ack_sent(b)
            if self._rx_since is None:
                self._rx_since = self._now()
            self.on_asdu(frame[4:])
            if apci.seq_distance(self._nr_sent, self._vr) >= self.timers.w:
                self.on_ack_due()
        elif length != apci.MIN_APDU_LENGTH:
            raise LinkError(quality.INVALID_RESPONSE, f"{kind} frame of length {length}, not 4")
        elif kind == "S":
            self._ack_sent(b)
        else:
            self._u_frame(a)

    def _u_frame(self, function: int) -> None:
        if function == apci.TESTFR_ACT_BIT:
            self._write(apci.TESTFR_CON)
        elif function in (apci.TESTFR_CON_BIT, apci.STARTDT_CON_BIT, apci.STOPDT_CON_BIT):
            if self._u_pending.pop(function, None) is None:
                raise LinkError(quality.INVALID_RESPONSE,
                                f"{apci.U_NAMES[function]} without an act")
            done = {apci.STARTDT_CON_BIT: self.started, apci.STOPDT_CON_BIT: self.stopped}
            if function in done and not done[function].done():
                done[function].set_result(None)
        else:
            name = apci.U_NAMES.get(function, f"U frame 0x{function | 3:02X}")
            raise LinkError(quality.INVALID_RESPONSE, f"{name} from the controlled station")

    def _ack_sent(self, nr: int) -> None:
        """The peer acknowledges our I frames up to N(R) - 1."""
        if apci.seq_distance(self._acked, nr) > apci.seq_distance(self._acked, self._vs):
            raise LinkError(quality.INVALID_RESPONSE, f"sequence error: N(R)={nr} acknowledges "
                            f"I frames never sent (next N(S) is {self._vs})")
        for _ in range(apci.seq_distance(self._acked, nr)):  # _sent holds _acked.._vs-1
            self._sent.popleft()
        self._acked = nr
        self._flush_queue()

    # -- sending ---------------------------------------------------------------------------

    def start(self) -> None:
        self._u_act(apci.STARTDT_ACT_BIT, apci.STARTDT_CON_BIT)

    @property
    def received(self) -> int:
        """V(R): the N(R) that acknowledges every I frame received so far."""
        return self._vr

    def acknowledge(self, nr: int) -> None:
        """Acknowledge received I frames up to `nr` - 1 (an earlier `received`)."""
        if nr != self._nr_sent:
            self._write(apci.s_frame(nr))
            self._nr_sent = nr
            self._rx_since = None if nr == self._vr else self._now()

    def stop(self) -> None:
        self._u_act(apci.STOPDT_ACT_BIT, apci.STOPDT_CON_BIT)

    def send(self, asdu: bytes) -> None:
        """Send an ASDU in an I frame as soon as the k window allows."""
        self._queue.append(asdu)
        self._flush_queue()

    def _u_act(self, act: int, con: int) -> None:
        self._u_pending[con] = self._now()
        self._write(apci.u_frame(act))

    def _flush_queue(self) -> None:
        while self._queue and len(self._sent) < self.timers.k:
            asdu = self._queue.popleft()
            self._sent.append((self._vs, self._now()))
            self._write(apci.i_frame(self._vs, self._nr_sent, asdu))
            self._vs = (self._vs + 1) % apci.SEQ_MOD

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    # -- timers ----------------------------------------------------------------------------

    def _tick(self) -> None:
        now, t = self._now(), self.timers
        if self._sent and now - self._sent[0][1] > t.t1:
            self._fail(LinkError(quality.TIMEOUT, f"t1 ({t.t1:g} s) expired: I frame "
                                 f"N(S)={self._sent[0][0]} not acknowledged"))
            return
        for con, sent in self._u_pending.items():
            if now - sent > t.t1:
                act = apci.U_NAMES[con].replace("con", "act")
                self._fail(LinkError(quality.TIMEOUT, f"t1 ({t.t1:g} s) expired: {act} "
                                     "not confirmed"))
                return
        if self._rx_since is not None and now - self._rx_since >= t.t2:
            self.on_ack_due()
        if now - self._last_rx > t.t3 and apci.TESTFR_CON_BIT not in self._u_pending:
            self._u_act(apci.TESTFR_ACT_BIT, apci.TESTFR_CON_BIT)
        self._ticker = asyncio.get_running_loop().call_later(TICK, self._tick)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # -- ending ----------------------------------------------------------------------------

    def _fail(self, error: LinkError) -> None:
        self._end(error)
        if self.transport is not None:
            self.transport.abort()

    def _end(self, error: LinkError) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for f in (self.started, self.stopped):
            if not f.done():
                f.set_exception(error)
                f.exception()  # retrieved: whoever waits on `closed` hears of it
        if not self.closed.done():
            self.closed.set_result(error)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
