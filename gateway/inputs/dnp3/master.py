"""DNP3 master for one outstation over TCP (dnp3py, MIT): its binary, double-bit, analog and
counter inputs into columnar batches.

Connection: TCP (no link reset), then the startup of IEEE 1815-2012 5.1.7: unsolicited
responses disabled, an integrity poll, the outstation's restart indication cleared (IIN1.7)
and its clock set when it asks (IIN1.4, LAN procedure: RECORD_CURRENT_TIME then g50v3),
unsolicited responses enabled (`unsolicited`). Then an event poll (classes 1-3) every
`poll_interval`, an integrity poll every `integrity_interval` (0: on connect only) and again
when the outstation says it restarted or lost events (IIN2.3), unsolicited responses taken in
between; an event poll at once when a response says events are left (IIN1.1-1.3).
Link addresses: `master_address`, `outstation_address`.

Integrity poll: the events of classes 1-3, then each configured group's static data in the
variation its points name (class 0 by group: `requests`). The event poll reads each group's
`event_variation` (if named) ahead of the class reads. Unsolicited events come in the
outstation's configured variation.

Readings: value x `scale` + `offset`; a binary 0/1, a double-bit 0 intermediate, 1 off,
2 on, 3 indeterminate; quality bad when ONLINE is clear or RESTART or COMM_LOST is set,
uncertain when forced, chattering, over range, a reference error or a counter's rollover or
discontinuity; `cause` = `quality.dnp3(kind, flags)`, the raw flags. A bad reading's value is
NaN. source_ts = the event's time from the outstation (receipt time for static data and events
without time); server_ts = source_ts; gateway_ts = receipt time. An event equal in time to
the last stored for its point is dropped: what an outstation repeats after a reconnect (its
confirm lost with the link) is not stored twice.

Outage: a link that fails (refused, closed, no response within `timeout`, a response that
breaks the protocol) gives every point one bad reading with its cause (timeout, connection,
invalid_response) at the start of the outage, after what the failed exchange delivered;
status `down`, the detail in last_error.
Reconnects back off exponentially (base `poll_interval`, cap 60 s), each followed by a fresh
integrity poll. Objects dnp3py cannot decode end the fragment's values there (counted as
`unknown_object`, the link kept); a READ the outstation refuses (IIN2.0-2.2) is counted as
`request_refused` with the variation named.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import numpy as np
from dnp3.application.fragment import RequestFragment
from dnp3.core.flags import IIN
from dnp3.master.config import MasterConfig
from dnp3.master.handler import AnalogValue, BinaryValue, CounterValue, ResponseInfo
from dnp3.master.master import Master
from dnp3.master.tcp_runner import (
    LinkError,
    LinkResetPolicy,
    MasterRunnerError,
    MasterTcpRunner,
    ResponseTimeoutError,
)
from dnp3.transport_io.channel import ChannelError, TcpConfig
from dnp3.transport_io.tcp_client import TcpClientChannel

from anomaly.core.batch import Batch, Quality
from gateway.inputs import quality
from gateway.inputs.backoff import backoff
from gateway.inputs.devices import device_status, points_by_device, unreachable
from gateway.inputs.dnp3 import requests
from gateway.site.model import DNP3_GROUPS, Device, Point, Site
from gateway.status import DeviceStatus, GatewayStatus
from timegrammar import now_ns

log = logging.getLogger(__name__)

Emit = Callable[[Batch], Awaitable[None]]

_KIND = {1: quality.DNP3_BINARY, 3: quality.DNP3_DOUBLE_BIT, 20: quality.DNP3_COUNTER,
         30: quality.DNP3_ANALOG}
ONLINE, RESTART, COMM_LOST = 0x01, 0x02, 0x04
_BAD = RESTART | COMM_LOST
_UNCERTAIN = 0x08 | 0x10 | 0x20 | 0x40  # forced (remote, local), 0x20/0x40 by kind
_REFUSED = {IIN.NO_FUNC_CODE_SUPPORT: "function code not supported (IIN2.0)",
            IIN.OBJECT_UNKNOWN: "object unknown (IIN2.1)",
            IIN.PARAMETER_ERROR: "parameter error (IIN2.2)"}
_EVENTS_PENDING = IIN.CLASS_1_EVENTS | IIN.CLASS_2_EVENTS | IIN.CLASS_3_EVENTS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def honour_cancel() -> None:
    """Raise CancelledError if the running task was cancelled meanwhile. dnp3py awaits
    through `asyncio.wait_for`, which on Python 3.11 returns the result of an inner await
    that completed as the task was cancelled (cpython gh-86296): the cancel is lost but stays
    counted, and a poll loop would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True)
class Fault:
    """Why the link to the outstation ended: a `quality` cause and the detail."""

    cause: int
    detail: str


class _Collector:
    """dnp3py's SOE handler: values of configured points gathered as columns until `take`."""

    def __init__(self, points: Sequence[tuple[int, Point]]) -> None:
        self.where = {(_KIND[p.group], p.index): i for i, p in points
                      if p.group in _KIND and p.index is not None}
        self.point: list[int] = []
        self.kind: list[int] = []
        self.value: list[float] = []
        self.flags: list[int] = []
        self.time: list[int] = []  # ms since the epoch, -1: none
        self.stamp: list[int] = []  # receipt, ns

    def _add(self, kind: int, index: int, value: float, flags: int,
             when: datetime | None) -> None:
        at = self.where.get((kind, index))
        if at is None:
            return
        self.point.append(at)
        self.kind.append(kind)
        self.value.append(value)
        self.flags.append(flags)
        self.time.append(-1 if when is None else (when - _EPOCH) // _MS)

    def _received(self) -> None:
        self.stamp.extend([now_ns()] * (len(self.point) - len(self.stamp)))

    def on_binary_input(self, values: list[BinaryValue], info: ResponseInfo) -> None:
        for v in values:
            self._add(quality.DNP3_BINARY, v.index, float(v.value), v.quality, v.timestamp)
        self._received()

    def on_double_bit_input(self, values: list, info: ResponseInfo) -> None:
        for v in values:
            self._add(quality.DNP3_DOUBLE_BIT, v.index, float(v.state), v.quality,
                      v.timestamp)
        self._received()

    def on_analog_input(self, values: list[AnalogValue], info: ResponseInfo) -> None:
        for v in values:
            self._add(quality.DNP3_ANALOG, v.index, v.value, v.quality, v.timestamp)
        self._received()

    def on_counter(self, values: list[CounterValue], info: ResponseInfo) -> None:
        for v in values:
            self._add(quality.DNP3_COUNTER, v.index, float(v.value), v.quality, v.timestamp)
        self._received()

    # Outputs and frozen counters are not read (read-only towards the outstation's outputs).
    def on_binary_output(self, values: list[BinaryValue], info: ResponseInfo) -> None:
        pass

    def on_analog_output(self, values: list[AnalogValue], info: ResponseInfo) -> None:
        pass

    def on_frozen_counter(self, values: list[CounterValue], info: ResponseInfo) -> None:
        pass

    def take(self) -> tuple[np.ndarray, ...]:
        cols = (np.array(self.point, np.int32), np.array(self.kind, np.uint32),
                np.array(self.value, np.float64), np.array(self.flags, np.uint32),
                np.array(self.time, np.int64), np.array(self.stamp, np.int64))
        for column in (self.point, self.kind, self.value, self.flags, self.time, self.stamp):
            column.clear()
        return cols


class Dnp3Session:
    """One outstation's link, held (reconnected) until cancelled."""

    def __init__(self, cfg: Device, points: Sequence[tuple[int, Point]], n_points: int,
                 status: DeviceStatus, emit: Emit) -> None:
        self.cfg = cfg
        self.name = f"dnp3:{cfg.name}"
        self.status = status
        self.emit = emit
        self.collector = _Collector(points)
        self.indices = np.array(sorted(i for i, _ in points), np.int32)
        self.scale = np.ones(n_points)
        self.offset = np.zeros(n_points)
        for index, p in points:
            self.scale[index], self.offset[index] = p.scale, p.offset
        self.last_event = np.full(n_points, -1, np.int64)  # last stored event time per point
        # One variation per group (the site checks): what each READ names.
        groups = {p.group: p for _, p in points if p.group in DNP3_GROUPS}
        self.static = [(g, p.variation or 0) for g, p in sorted(groups.items())]
        self.events = [(DNP3_GROUPS[g][0], p.event_variation)
                       for g, p in sorted(groups.items()) if p.event_variation is not None]
        self.iin = IIN(0)  # indications of the responses since they were last answered
        self._channel: TcpClientChannel | None = None  # the link's, while it is up
        self._heard = 0  # octets received from it when the last request went out
        self._failures = 0
        self._down_reported = False

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            fault = await self._connection()
            await self._fault(fault)
            self._failures += 1
            await asyncio.sleep(backoff(self._failures, self.cfg.poll_interval))

    async def close(self) -> None:
        """Nothing left to do: a cancelled `run` has closed its link (DNP3 has no
        stop-transfer handshake)."""

    async def _connection(self) -> Fault:
        """Connect, start up and poll until the link fails: why it did."""
        master = Master(config=MasterConfig(
            address=self.cfg.master_address, outstation_address=self.cfg.outstation_address,
            response_timeout=self.cfg.timeout), handler=self.collector)
        channel = TcpClientChannel(config=TcpConfig(host=self.cfg.host, port=self.cfg.port))
        # No link reset: the master sends unconfirmed user data only, which needs none
        # (IEEE 1815-2012 9.2.5), and its ACK would be the one reply not to a request.
        runner = MasterTcpRunner(master=master, host=self.cfg.host, port=self.cfg.port,
                                 response_timeout=self.cfg.timeout, channel=channel,
                                 link_reset=LinkResetPolicy.NEVER)
        self._channel, self.iin = channel, IIN(0)
        where = f"{self.cfg.host}:{self.cfg.port}"
        try:
            async with asyncio.timeout(self.cfg.timeout):
                await runner.open()
            honour_cancel()
        except TimeoutError:
            await channel.close()
            return Fault(quality.TIMEOUT, f"no connection to {where} within "
                         f"{self.cfg.timeout:g} s")
        except (ChannelError, MasterRunnerError, OSError) as e:
            await channel.close()
            return Fault(quality.CONNECTION, f"cannot connect to {where}: {e}")
        try:
            await self._transfer(runner, master)
        except ResponseTimeoutError as e:
            # dnp3py drops a frame with a bad CRC or length without a word: octets that came
            # and formed no response say the outstation answered, wrongly.
            if heard := channel.statistics.bytes_received - self._heard:
                return Fault(quality.INVALID_RESPONSE, f"{where}: {heard} octets received "
                             "formed no valid response to this master within "
                             f"{self.cfg.timeout:g} s (bad CRC or length, or other addresses)")
            return Fault(quality.TIMEOUT, f"{where}: no response within "
                         f"{self.cfg.timeout:g} s ({e})")
        except LinkError as e:
            cause = quality.INVALID_RESPONSE if "reassembly" in str(e) else quality.CONNECTION
            return Fault(cause, f"{where}: {e}")
        except MasterRunnerError as e:  # a response out of the protocol's sequence
            return Fault(quality.INVALID_RESPONSE, f"{where}: {e}")
        except (ValueError, IndexError, KeyError, TypeError) as e:
            # dnp3py lets a parser error other than its own ParseError out of a response
            # (master.process_response): a hostile fragment ends the link, not the gateway.
            log.warning("event=dnp3_undecodable device=%s error=%r", self.cfg.name, str(e))
            return Fault(quality.INVALID_RESPONSE, f"{where}: undecodable response: {e!r}")
        finally:
            await runner.close()
            await channel.close()

    async def _transfer(self, runner: MasterTcpRunner, master: Master) -> NoReturn:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        if cfg.unsolicited:
            await self._exchange(runner, master.build_disable_unsolicited())
        await self._integrity(runner, master)
        if self.status.state != "unknown" or self._failures:
            self.status.reconnects_total += 1
        log.info("event=dnp3_started device=%s host=%s port=%d failures=%d", cfg.name,
                 cfg.host, cfg.port, self._failures)
        self._failures, self._down_reported = 0, False
        self.status.state = "ok"
        await self._indications(runner, master)  # the poll just made is the one owed
        if cfg.unsolicited:
            await self._received(await self._exchange(
                runner, master.build_enable_unsolicited()))
        now = loop.time()
        integrity_due = now + cfg.integrity_interval if cfg.integrity_interval else float("inf")
        event_due = now + cfg.poll_interval
        while True:
            if self.iin & _EVENTS_PENDING:  # more than the last response held
                event_due = now
            if await self._indications(runner, master):
                integrity_due = now
            if now >= integrity_due:
                integrity_due = now + cfg.integrity_interval if (
                    cfg.integrity_interval) else float("inf")
                event_due = now + cfg.poll_interval
                await self._integrity(runner, master)
            elif now >= event_due:
                event_due = now + cfg.poll_interval
                await self._request(runner, requests.read(
                    master.next_request_sequence(), self.events, requests.CLASS_EVENTS))
            wait = min(integrity_due, event_due) - loop.time()
            if wait > 0:
                if cfg.unsolicited:
                    info = await runner.listen_unsolicited(timeout=wait)
                    honour_cancel()
                    if info is not None:
                        await self._received([info])
                else:
                    await asyncio.sleep(wait)
            now = loop.time()

    async def _integrity(self, runner: MasterTcpRunner, master: Master) -> None:
        await self._request(runner, requests.read(
            master.next_request_sequence(), self.events, requests.CLASS_EVENTS, self.static))

    async def _indications(self, runner: MasterTcpRunner, master: Master) -> bool:
        """Answer what the outstation's last indications ask of the master: whether it
        restarted or lost events (an integrity poll is owed)."""
        iin, self.iin = self.iin, IIN(0)
        if iin & IIN.DEVICE_RESTART:
            log.info("event=dnp3_outstation_restarted device=%s", self.cfg.name)
            await self._exchange(runner, requests.clear_restart(master.next_request_sequence()))
        if iin & IIN.NEED_TIME and self.cfg.time_sync:
            sent = time.time_ns() // 1_000_000
            await self._exchange(runner, requests.record_current_time(
                master.next_request_sequence()))
            await self._exchange(runner, requests.write_last_recorded_time(
                master.next_request_sequence(), sent))
            log.info("event=dnp3_time_set device=%s", self.cfg.name)
        return bool(iin & (IIN.DEVICE_RESTART | IIN.EVENT_BUFFER_OVERFLOW))

    async def _request(self, runner: MasterTcpRunner, request: RequestFragment) -> None:
        """Send a READ, store what it brought; a refusal is counted, the link kept."""
        infos = await self._exchange(runner, request)
        self.status.polls_total += 1
        why = {text for info in infos for bit, text in _REFUSED.items() if info.iin & bit}
        if why:
            asked = ", ".join(f"g{b.header.group}v{b.header.variation}"
                              for b in request.objects)
            self._error("request_refused", f"the outstation refused READ {asked}: "
                        f"{', '.join(sorted(why))} (a variation it does not support? name "
                        "another)")
        await self._received(infos)

    async def _received(self, infos: list[ResponseInfo]) -> None:
        """Note the responses' indications and gaps; store their values."""
        self.status.last_success = time.time()
        for info in infos:
            self.iin |= info.iin
            if (t := info.truncation) is not None:
                # dnp3py decodes no object it has no layout for (g50v4 among them) and drops
                # the rest of that fragment: say where, keep the link.
                self._error("unknown_object", f"response cut short at group {t.group} "
                            f"variation {t.variation} ({t.reason.value}): values from there "
                            "on not delivered")
        await self._flush()

    async def _exchange(self, runner: MasterTcpRunner,
                        request: RequestFragment) -> list[ResponseInfo]:
        if self._channel is not None:
            self._heard = self._channel.statistics.bytes_received
        infos = await runner.request(request)
        honour_cancel()
        return infos

    def _error(self, name: str, why: str) -> None:
        self.status.count_error(name)
        self.status.last_error = why
        log.warning("event=dnp3_%s device=%s reason=%r", name, self.cfg.name, why)

    # -- batches ---------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Store what arrived since the last flush."""
        point, kind, value, flags, when, stamps = self.collector.take()
        if len(point) == 0:
            return
        timed = when > 0  # an outstation whose clock was never set sends time 0
        source = np.where(timed, when * 1_000_000, stamps)
        keep = np.ones(len(point), bool)
        # Last event time per point, in arrival order: a repeat (same time) is dropped.
        for i in np.flatnonzero(timed):
            if self.last_event[point[i]] == source[i]:
                keep[i] = False
            else:
                self.last_event[point[i]] = source[i]
        if not keep.all():
            point, kind, value, flags = point[keep], kind[keep], value[keep], flags[keep]
            source, stamps = source[keep], stamps[keep]
        value = value * self.scale[point] + self.offset[point]
        bad = ((flags & ONLINE) == 0) | ((flags & _BAD) != 0)
        value[bad] = np.nan
        q = np.where(bad, Quality.BAD, np.where(flags & _UNCERTAIN, Quality.UNCERTAIN,
                                                Quality.GOOD))
        cause = np.where(q == Quality.GOOD, 0, quality.DNP3_BASE | kind << 8 | flags)
        batch = Batch(source_ts=source, server_ts=source, gateway_ts=stamps, point=point,
                      value=value, quality=q.astype(np.uint8), cause=cause.astype(np.uint32))
        await self.emit(batch)
        self.status.readings_total += len(batch)

    async def _fault(self, fault: Fault) -> None:
        """One bad reading per point at the start of an outage; the status says why."""
        # What a failed exchange delivered is stored: unsolicited values among it were
        # confirmed (the outstation dropped them); unconfirmed events come again, and a
        # repeat with the same time is dropped.
        await self._flush()
        name = quality.cause_name(fault.cause)
        self.status.last_error = f"{name}: {fault.detail}"
        self.status.count_error(name)
        self.status.poll_errors_total += 1
        if self._down_reported:
            log.debug("event=dnp3_retry_failed device=%s cause=%s reason=%r", self.cfg.name,
                      name, fault.detail)
            return
        log.warning("event=device_down device=%s bus=%s cause=%s reason=%r", self.cfg.name,
                    self.cfg.bus, name, fault.detail)
        self._down_reported = True
        self.status.state = "down"
        await self.emit(unreachable(self.indices, fault.cause))
        self.status.readings_total += len(self.indices)


def build_sessions(site: Site, status: GatewayStatus, emit: Emit) -> list[Dnp3Session]:
    """One session per DNP3 device that has points; registers each one's DeviceStatus."""
    points = points_by_device(site)
    sessions = []
    for d in site.devices:
        if d.protocol != "dnp3" or not points.get(d.name):
            continue
        dev_status = device_status(status, d)
        # Quiet is normal (events on change): each event poll says the link is alive.
        dev_status.stale_after_seconds = d.poll_interval * d.stale_after + d.timeout
        sessions.append(Dnp3Session(d, points[d.name], len(site.points), dev_status, emit))
    return sessions
