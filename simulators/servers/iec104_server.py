"""A simulated site's IEC 60870-5-104 face: a controlled station per Modbus unit, all behind
one TCP server per site (as a substation's station gateway serves its bay RTUs), on asyncio.

Addresses (`addresses`): a unit's common address is its Modbus unit id; in it, status signals
at IOA 1001, 1002, ... and measurands at IOA 4001, 4002, ..., in signal order. Types:

| signal                          | interrogated (COT 20) | spontaneous (COT 3), CP56Time2a |
|---------------------------------|-----------------------|---------------------------------|
| breaker state (the grid's)      | M_DP_NA_1             | M_DP_TB_1: DPI 2 closed, 1 open |
| pump state (the water site's)   | M_SP_NA_1             | M_SP_TB_1                       |
| every measurand                 | M_ME_NC_1             | M_ME_TF_1 (short float)         |

Reports: every publish sends, to each connection in data transfer, the points whose value (as
a short float) or quality changed since the last publish, tagged with the sample's time in
UTC. A general interrogation (C_IC_NA_1, QOI 20) of a station's common address, or of all
(0xFFFF), is confirmed (COT 7), answered with every point of the station (COT 20, no time tag)
and terminated (COT 10); a group interrogation is refused (negative COT 7). A counter
interrogation is confirmed and terminated: the simulators have no integrated totals. Any other
command is refused with COT 44 (unknown type): the face is read-only. An unknown common address
gets COT 46.

Quality, as the OPC UA face's status codes (a client tells a dead sensor from a dead link):

- IV and NT: the unit is in comms fault (silent or exception): the station cannot refresh its
  points, which hold their last value, invalid and not topical.
- IV: dropout, the sensor gives no reading; the last value is held.
- IV and NT with value 0 before the first publish.

Link (clause 5), the standard's defaults: t1 15 s for our I frames and TESTFR act to be
confirmed (else the connection is closed), t2 10 s / w 8 to acknowledge the client's I frames,
t3 20 s idle before a TESTFR act, at most k 12 I frames unacknowledged (more wait, up to
`MAX_QUEUE` ASDUs; past that the oldest are dropped, logged once per connection, as an RTU's
event buffer overflows: a general interrogation restores the image). Nothing is sent before
STARTDT act, nor after STOPDT act. A frame that breaks the protocol (start byte, length,
N(S) out of sequence, N(R) of frames never sent) closes the connection with a log line.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from simulators.servers import iec104_frames as f
from simulators.signals import Signal

log = logging.getLogger(__name__)

STATUS_IOA, MEASURAND_IOA = 1001, 4001
# The grid's status signals are switchgear, reported as double points (both auxiliary
# contacts, as protection and SCADA read breakers); the water site's are pump run signals.
DOUBLE_POINT_SITES = frozenset({"grid"})
MAX_QUEUE = 4096  # ASDUs waiting for the k window, per connection
TICK = 0.1  # seconds between looks at the timers


@dataclass(frozen=True, slots=True)
class Timers:
    """Timeouts (seconds) and windows, with the standard's defaults (clause 9.6)."""

    t1: float = 15.0
    t2: float = 10.0
    t3: float = 20.0
    k: int = 12
    w: int = 8


@dataclass(frozen=True, slots=True)
class Address:
    common_address: int
    ioa: int
    typeid: str  # the untimed type: the point arrives as it or as its time-tagged type


def addresses(site: str, signals: Sequence[Signal]) -> list[Address]:
    """Where each signal is served over IEC 104 (module docstring).

    >>> from simulators.signals import Signal
    >>> [(a.common_address, a.ioa, a.typeid) for a in addresses("grid", [
    ...     Signal("p", "power", "MW", unit_id=2), Signal("b", "status", "", unit_id=2)])]
    [(2, 4001, 'M_ME_NC_1'), (2, 1001, 'M_DP_NA_1')]
    """
    status = f.M_DP_NA_1 if site in DOUBLE_POINT_SITES else f.M_SP_NA_1
    taken: collections.Counter[tuple[int, bool]] = collections.Counter()
    out = []
    for s in signals:
        is_status = s.kind == "status"
        n = taken[s.unit_id, is_status]
        taken[s.unit_id, is_status] += 1
        if is_status and n >= MEASURAND_IOA - STATUS_IOA:
            raise ValueError(f"unit {s.unit_id}: more than {n} status signals")
        out.append(Address(s.unit_id, (STATUS_IOA if is_status else MEASURAND_IOA) + n,
                           f.TYPE_NAMES[status if is_status else f.M_ME_NC_1]))
    return out


class StationImage:
    """The served value and quality of every signal, and the ASDUs that report them."""

    def __init__(self, site: str, signals: Sequence[Signal]) -> None:
        found = addresses(site, signals)
        type_ids = {v: k for k, v in f.TYPE_NAMES.items()}
        self.common_address = np.array([a.common_address for a in found], np.int64)
        self.ioa = np.array([a.ioa for a in found], np.uint32)
        self.values = np.zeros(len(found))
        self.quality = np.full(len(found), f.IV | f.NT, np.uint8)
        self.stations = sorted(set(self.common_address.tolist()))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(found):
            groups.setdefault((a.common_address, type_ids[a.typeid]), []).append(i)
        self._groups = {key: np.array(rows) for key, rows in groups.items()}

    def update(self, values: np.ndarray, comms_fault: np.ndarray) -> np.ndarray:
        """Take a sample (NaN: no reading); which signals changed, as short floats or quality."""
        held = comms_fault | np.isnan(values)
        quality = np.where(comms_fault, f.IV | f.NT, np.where(held, f.IV, 0)).astype(np.uint8)
        served = np.where(held, self.values, values)
        changed = ((served.astype(np.float32) != self.values.astype(np.float32))
                   | (quality != self.quality))
        self.values, self.quality = served, quality
        return changed

    def reports(self, selected: np.ndarray, cot: int, moment: datetime | None) -> list[bytes]:
        """ASDUs of the `selected` signals (bool mask): time-tagged types when `moment`."""
        tag = None if moment is None else f.cp56(moment)
        out: list[bytes] = []
        for (ca, type_id), rows in self._groups.items():
            rows = rows[selected[rows]]
            if rows.size:
                out += f.asdus(f.TIMED[type_id] if tag else type_id, cot, ca, self.ioa[rows],
                               f.elements(type_id, self.values[rows], self.quality[rows]), tag)
        return out

    def interrogated(self, common_address: int) -> list[bytes]:
        return self.reports(self.common_address == common_address, f.COT_INROGEN, None)


class ProtocolError(Exception):
    """A frame from the controlling station that breaks the protocol."""


class _Connection(asyncio.Protocol):
    """One controlling station's connection: the link layer, its commands and reports."""

    def __init__(self, image: StationImage, timers: Timers,
                 connections: set[_Connection]) -> None:
        self.image = image
        self.timers = timers
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.started = False  # data transfer (STARTDT) on
        self._buffer = bytearray()
        self._vs = 0  # N(S) of our next I frame
        self._vr = 0  # N(S) expected of the client's next I frame
        self._acked = 0  # our oldest I frame not yet acknowledged
        self._sent: collections.deque[float] = collections.deque()  # when each was sent
        self._queue: collections.deque[bytes] = collections.deque()
        self._unacked = 0  # client I frames received and not acknowledged
        self._rx_since: float | None = None  # when the oldest of those arrived
        self._last_rx = 0.0
        self._testfr_since: float | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._dropped = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._last_rx = self._now()
        self._ticker = asyncio.get_running_loop().call_later(TICK, self._tick)
        self.connections.add(self)
        log.info("event=iec104_connection_opened peer=%s", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.connections.discard(self)
        log.info("event=iec104_connection_closed peer=%s reason=%r dropped_asdus=%d",
                 self.peer, str(exc) if exc else "closed", self._dropped)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._now()
        buf = self._buffer
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= 2:
                if buf[pos] != f.START:
                    raise ProtocolError(f"frame starts with 0x{buf[pos]:02X}, not 0x68")
                length = buf[pos + 1]
                if not 4 <= length <= f.MAX_LENGTH:
                    raise ProtocolError(f"APDU length {length}, outside 4..{f.MAX_LENGTH}")
                end = pos + 2 + length
                if end > len(buf):
                    break
                self._frame(bytes(buf[pos + 2:end]))
                pos = end
        except ProtocolError as e:
            self.close(str(e))
        finally:
            del buf[:pos]

    # -- frames received -------------------------------------------------------------------

    def _frame(self, frame: bytes) -> None:
        kind, a, b = f.control(frame[:4])
        if kind == "I":
            if len(frame) == 4:
                raise ProtocolError("I frame without an ASDU")
            if a != self._vr:
                raise ProtocolError(f"sequence error: I frame N(S)={a}, expected {self._vr}")
            self._vr = (self._vr + 1) % f.SEQ_MOD
            self._acknowledged(b)
            self._unacked += 1
            if self._rx_since is None:
                self._rx_since = self._now()
            self._asdu(frame[4:])
            if self._unacked >= self.timers.w:
                self._acknowledge()
        elif len(frame) != 4:
            raise ProtocolError(f"{kind} frame of length {len(frame)}, not 4")
        elif kind == "S":
            self._acknowledged(b)
        elif a == f.STARTDT_ACT:
            self.started = True
            self._write(f.u_frame(f.STARTDT_CON))
            self._flush()
        elif a == f.STOPDT_ACT:
            # What waits for the window is not sent in the stopped state.
            self.started = False
            self._queue.clear()
            self._write(f.u_frame(f.STOPDT_CON))
        elif a == f.TESTFR_ACT:
            self._write(f.u_frame(f.TESTFR_CON))
        elif a == f.TESTFR_CON:
            self._testfr_since = None
        else:
            raise ProtocolError(f"U frame 0x{a | 3:02X} from the controlling station")

    def _acknowledged(self, nr: int) -> None:
        """The client acknowledges our I frames up to N(R) - 1."""
        done = (nr - self._acked) % f.SEQ_MOD
        if done > len(self._sent):
            raise ProtocolError(f"sequence error: N(R)={nr} acknowledges I frames never sent "
                                f"(next N(S) is {self._vs})")
        for _ in range(done):
            self._sent.popleft()
        self._acked = nr
        self._flush()

    def _asdu(self, asdu: bytes) -> None:
        cmd = f.command(asdu)
        if cmd is None:
            raise ProtocolError(f"ASDU of {len(asdu)} octets, shorter than its header")
        if not self.started:
            log.debug("event=iec104_command_ignored peer=%s reason=stopped", self.peer)
            return
        if cmd.type_id not in (f.C_IC_NA_1, f.C_CI_NA_1):
            self.send(f.mirror(asdu, f.COT_UNKNOWN_TYPE, negative=True))
            return
        if cmd.cot not in (f.COT_ACT, f.COT_DEACT):
            self.send(f.mirror(asdu, f.COT_UNKNOWN_COT, negative=True))
            return
        if cmd.common_address == f.BROADCAST:
            stations = self.image.stations
        elif cmd.common_address in self.image.stations:
            stations = [cmd.common_address]
        else:
            self.send(f.mirror(asdu, f.COT_UNKNOWN_CA, negative=True))
            return
        for ca in stations:
            if cmd.cot == f.COT_DEACT:  # answered at once: nothing left to stop
                self.send(f.mirror(asdu, f.COT_DEACTCON, ca))
            elif cmd.type_id == f.C_IC_NA_1 and cmd.qualifier != f.QOI_STATION:
                self.send(f.mirror(asdu, f.COT_ACTCON, ca, negative=True))
            else:
                self.send(f.mirror(asdu, f.COT_ACTCON, ca))
                if cmd.type_id == f.C_IC_NA_1:
                    for report in self.image.interrogated(ca):
                        self.send(report)
                self.send(f.mirror(asdu, f.COT_ACTTERM, ca))

    # -- sending ---------------------------------------------------------------------------

    def send(self, asdu: bytes) -> None:
        """Send an ASDU in an I frame as soon as the k window allows (in data transfer)."""
        if not self.started:
            return
        if len(self._queue) >= MAX_QUEUE:
            self._queue.popleft()
            if not self._dropped:
                log.warning("event=iec104_buffer_overflow peer=%s queued=%d reason=the client "
                            "does not acknowledge; oldest reports dropped", self.peer, MAX_QUEUE)
            self._dropped += 1
        self._queue.append(asdu)
        self._flush()

    def _flush(self) -> None:
        while self._queue and len(self._sent) < self.timers.k:
            self._write(f.i_frame(self._vs, self._vr, self._queue.popleft()))
            self._sent.append(self._now())
            self._vs = (self._vs + 1) % f.SEQ_MOD
            self._unacked, self._rx_since = 0, None  # our N(R) acknowledged them

    def _acknowledge(self) -> None:
        self._write(f.s_frame(self._vr))
        self._unacked, self._rx_since = 0, None

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self, reason: str) -> None:
        log.warning("event=iec104_connection_dropped peer=%s reason=%r", self.peer, reason)
        if self.transport is not None:
            self.transport.abort()

    # -- timers ----------------------------------------------------------------------------

    def _tick(self) -> None:
        now, t = self._now(), self.timers
        if self._sent and now - self._sent[0] > t.t1:
            self.close(f"t1 ({t.t1:g} s) expired: I frame N(S)={self._acked} not acknowledged")
            return
        if self._testfr_since is not None and now - self._testfr_since > t.t1:
            self.close(f"t1 ({t.t1:g} s) expired: TESTFR act not confirmed")
            return
        if self._rx_since is not None and now - self._rx_since >= t.t2:
            self._acknowledge()
        if now - self._last_rx > t.t3 and self._testfr_since is None:
            self._testfr_since = now
            self._write(f.u_frame(f.TESTFR_ACT))
        self._ticker = asyncio.get_running_loop().call_later(TICK, self._tick)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


class Iec104SiteServer:
    """IEC 104 server of one site's signals, updated a whole sample at a time."""

    def __init__(self, site: str, signals: Sequence[Signal], *, host: str = "127.0.0.1",
                 port: int = 2404, timers: Timers | None = None) -> None:
        self.image = StationImage(site, signals)
        self.host = host
        self._port = port
        self.timers = timers or Timers()
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self.image, self.timers, self.connections), self.host,
            self._port)

    @property
    def port(self) -> int:
        """The port listened on (the one the OS picked when asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        await self._server.wait_closed()
        self._server = None

    def publish(self, values: np.ndarray, comms_fault: np.ndarray, source_time: datetime) -> None:
        """Take one sample (`values`, `comms_fault`: one entry per signal) and report what
        changed to every connection in data transfer, time-tagged `source_time`."""
        changed = self.image.update(values, comms_fault)
        if not changed.any():
            return
        reports = self.image.reports(changed, f.COT_SPONTANEOUS, source_time)
        for conn in self.connections:
            for report in reports:
                conn.send(report)
