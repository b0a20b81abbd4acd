"""IEC 60870-5-104 controlling station for one device (an RTU or a station gateway): its
monitored information into columnar batches.

Connection: TCP (TLS when `tls_ca` is set: IEC 62351-3) within t0; STARTDT; then a general
interrogation (C_IC_NA_1, QOI 20) and a
counter interrogation (C_CI_NA_1, QCC 5) per common address of the device's points, again
every `interrogation_interval` / `counter_interval` (0: on connect only), and after an RTU
says it has (re)initialised (M_EI_NA_1). Spontaneous, periodic, background and interrogated
reports all become readings. On stop: STOPDT (confirmed within t1), then close.

Batches: received ASDUs are gathered as raw records per (common address, type) and decoded a
column at a time (`asdu.decode`) every `poll_interval`, or sooner when the receive window
asks for an acknowledgement. What an S frame acknowledges is in the spool first, so what the
station drops from its event buffer on our acknowledgement survives a crash of the gateway;
what was received but not acknowledged, the station sends again after a reconnect.

Readings: value x `scale` + `offset` of the point (a normalised value is first divided by
32768); quality bad if IV, uncertain if NT, SB, BL, OV, a counter's CY or CA, or its time
tag is marked invalid or substituted; `cause` = `quality.iec104(flags)` holding those raw
bits. A bad reading's value is NaN. source_ts = the CP56Time2a tag in the device's
`time_zone` (the receipt time for types without a tag, or a tag marked invalid);
server_ts = source_ts; gateway_ts = receipt time (ms). A time-tagged reading equal to the
last stored for its point (same tag) is dropped: events a station repeats after a
reconnect are not stored twice.

Outage: a link that fails (refused, closed, t0 or t1 expired, a protocol error) gives every
point of the device one bad reading with its cause (timeout, connection, invalid_response)
at the start of the outage, not one per retry; status `down` with the detail as last_error.
Reconnects back off exponentially (base `poll_interval`, cap 60 s), each followed by a fresh
interrogation. ASDUs that cannot be decoded (an unknown type id, a length that does not fit
its objects) are skipped and counted, the link kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from anomaly.core.batch import Batch, Quality
from gateway.inputs import quality
from gateway.inputs.backoff import backoff
from gateway.inputs.devices import device_status, points_by_device, unreachable
from gateway.inputs.iec104 import asdu as codec
from gateway.inputs.iec104.link import Link, LinkError, Timers
from gateway.inputs.iec104.points import PointMap
from gateway.site.model import Device, Point, Site
from gateway.status import DeviceStatus, GatewayStatus
from timegrammar import now_ns

log = logging.getLogger(__name__)

Emit = Callable[[Batch], Awaitable[None]]

# Readings gathered unflushed beyond which the socket stops reading until they are stored.
PAUSE_READINGS = 200_000
_DATA_COTS = frozenset({codec.COT_PERIODIC, codec.COT_BACKGROUND, codec.COT_SPONTANEOUS,
                        codec.COT_REQUEST, *range(20, 42)})  # 20-36 interrogated, 37-41 counters


@dataclass(eq=False)
class _Group:
    """Records of one (common address, type id) since the last flush, with receipt stamps."""

    kind: codec.Kind
    data: bytearray = field(default_factory=bytearray)
    stamps: list[int] = field(default_factory=list)  # per ASDU
    counts: list[int] = field(default_factory=list)  # its objects


class Iec104Session:
    """One device's connection, held (reconnected) until cancelled."""

    def __init__(self, cfg: Device, points: Sequence[tuple[int, Point]], n_points: int,
                 status: DeviceStatus, emit: Emit) -> None:
        self.cfg = cfg
        self.name = f"iec104:{cfg.name}"
        self.status = status
        self.emit = emit
        self.map = PointMap(cfg, points)
        self.timers = Timers(cfg.t0, cfg.t1, cfg.t2, cfg.t3, cfg.k, cfg.w)
        self.zone = None if cfg.time_zone == "UTC" else ZoneInfo(cfg.time_zone)
        self.scale = np.ones(n_points)
        self.offset = np.zeros(n_points)
        for index, p in points:
            self.scale[index], self.offset[index] = p.scale, p.offset
        self.last_event = np.full(n_points, -1, np.int64)  # last stored time tag per point
        self.link: Link | None = None
        self._groups: dict[tuple[int, int], _Group] = {}
        self._pending = 0
        self._due = asyncio.Event()
        self._failures = 0
        self._down_reported = False
        self._unknown_types: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            error = await self._connection()
            await self._fault(error)
            self._failures += 1
            await asyncio.sleep(backoff(self._failures, self.cfg.poll_interval))

    async def close(self) -> None:
        """Stop data transfer if a link is still up (a cancelled `run` has done so)."""
        if self.link is not None:
            await self._stop(self.link)

    async def _stop(self, link: Link) -> None:
        """Store and acknowledge what arrived, STOPDT (confirmed within t1), close."""
        if link.transport is None or link.transport.is_closing():
            return
        with contextlib.suppress(LinkError, TimeoutError):
            await self._flush(link)
            link.stop()
            async with asyncio.timeout(self.timers.t1):
                await asyncio.shield(link.stopped)
        link.transport.close()

    async def _connection(self) -> LinkError:
        """Connect, start data transfer and take in data until the link fails: why it did."""
        loop = asyncio.get_running_loop()
        self._groups, self._pending = {}, 0
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that comes as
            # the connection completes (cpython gh-86296), and the session then never stops.
            async with asyncio.timeout(self.timers.t0):
                _, link = await loop.create_connection(
                    lambda: Link(self.timers, self._on_asdu, self._on_frame, self._due.set),
                    self.cfg.host, self.cfg.port, ssl=self._tls())
        except TimeoutError:
            return LinkError(quality.TIMEOUT, f"t0 ({self.timers.t0:g} s) expired connecting "
                             f"to {self.cfg.host}:{self.cfg.port}")
        except ssl.SSLError as e:
            return LinkError(quality.CONNECTION, f"TLS with {self.cfg.host}:{self.cfg.port} "
                             f"failed: {e.reason or e}")
        except OSError as e:
            return LinkError(quality.CONNECTION, f"cannot connect to {self.cfg.host}:"
                             f"{self.cfg.port}: {e.strerror or e}")
        self.link = link
        link.closed.add_done_callback(lambda _: self._due.set())
        try:
            return await self._transfer(link)
        except asyncio.CancelledError:
            await self._stop(link)
            raise
        finally:
            if link.transport is not None:
                link.transport.abort()
            if self.link is link:
                self.link = None

    async def _transfer(self, link: Link) -> LinkError:
        loop = asyncio.get_running_loop()
        link.start()
        either: set[asyncio.Future[Any]] = {link.started, link.closed}  # of unlike results
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if link.closed.done():
            return link.closed.result()
        if self.status.state != "unknown" or self._failures:
            self.status.reconnects_total += 1
        log.info("event=iec104_started device=%s host=%s port=%d failures=%d", self.cfg.name,
                 self.cfg.host, self.cfg.port, self._failures)
        self._failures, self._down_reported = 0, False
        self.status.state = "ok"
        self.status.last_success = time.time()
        now = loop.time()
        gi_due = ci_due = now
        while not link.closed.done():
            if now >= gi_due:
                self._interrogate(link, codec.C_IC_NA_1, codec.QOI_STATION)
                gi_due = now + self.cfg.interrogation_interval if (
                    self.cfg.interrogation_interval) else float("inf")
            if now >= ci_due:
                self._interrogate(link, codec.C_CI_NA_1, codec.QCC_GENERAL)
                ci_due = now + self.cfg.counter_interval if (
                    self.cfg.counter_interval) else float("inf")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(
                        self.cfg.poll_interval, gi_due - now, ci_due - now)):
                    await self._due.wait()
            self._due.clear()
            await self._flush(link)
            now = loop.time()
        await self._flush(link)  # what arrived before the failure is stored, unacknowledged
        return link.closed.result()

    def _tls(self) -> ssl.SSLContext | None:
        """IEC 62351-3: TLS 1.2 or later, the station's certificate checked against
        `tls_ca` and its address, ours offered for the station to check."""
        if self.cfg.tls_ca is None:
            return None
        ctx = ssl.create_default_context(cafile=self.cfg.tls_ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cfg.tls_cert is not None:
            ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        return ctx

    def _interrogate(self, link: Link, type_id: int, qualifier: int) -> None:
        for ca in self.map.common_addresses:
            link.send(codec.command(type_id, codec.COT_ACT, ca, qualifier))

    # -- receiving -------------------------------------------------------------------------

    def _on_frame(self) -> None:
        self.status.last_success = time.time()

    def _on_asdu(self, data: memoryview) -> None:
        try:
            h = codec.header(data)
        except codec.AsduError as e:
            self._skip(str(e))
            return
        kind = codec.TYPES.get(h.type_id)
        if kind is not None and h.cot in _DATA_COTS and not h.test:
            try:
                records = codec.records(h, kind, data)
            except codec.AsduError as e:
                self._skip(str(e))
                return
            group = self._groups.get((h.common_address, h.type_id))
            if group is None:
                group = self._groups[(h.common_address, h.type_id)] = _Group(kind)
            group.data += records
            group.stamps.append(now_ns())
            group.counts.append(h.count)
            self._pending += h.count
            if self._pending >= PAUSE_READINGS and self.link is not None:
                self.link.pause_reading()
                self._due.set()
        elif h.type_id in (codec.C_IC_NA_1, codec.C_CI_NA_1):
            self._command_answer(h)
        elif h.type_id == codec.M_EI_NA_1:
            log.info("event=iec104_station_initialised device=%s common_address=%d",
                     self.cfg.name, h.common_address)
            if self.link is not None:
                self._interrogate(self.link, codec.C_IC_NA_1, codec.QOI_STATION)
        elif kind is None:
            self._skip(f"unknown type id {h.type_id} (common address {h.common_address})",
                       h.type_id)

    def _command_answer(self, h: codec.Header) -> None:
        what = "interrogation" if h.type_id == codec.C_IC_NA_1 else "counter interrogation"
        if h.cot in codec.COT_UNKNOWN or (h.cot == codec.COT_ACTCON and h.negative):
            why = codec.COT_UNKNOWN.get(h.cot, "negative confirmation")
            self.status.last_error = f"{what} of common address {h.common_address}: {why}"
            self.status.count_error("command_refused")
            log.warning("event=iec104_command_refused device=%s command=%s common_address=%d "
                        "cause=%r", self.cfg.name, what.replace(" ", "_"), h.common_address, why)
        elif h.cot == codec.COT_ACTTERM:
            log.debug("event=iec104_interrogation_done device=%s common_address=%d",
                      self.cfg.name, h.common_address)

    def _skip(self, why: str, type_id: int | None = None) -> None:
        self.status.count_error("invalid_asdu")
        self.status.last_error = f"ASDU skipped: {why}"
        if type_id is None or type_id not in self._unknown_types:
            log.warning("event=iec104_asdu_skipped device=%s reason=%r", self.cfg.name, why)
        if type_id is not None:
            self._unknown_types.add(type_id)

    # -- batches ---------------------------------------------------------------------------

    async def _flush(self, link: Link) -> None:
        """Store what arrived, then acknowledge it."""
        received = link.received
        groups, self._groups, self._pending = self._groups, {}, 0
        parts = [b for (ca, _), g in groups.items() if len(b := self._batch(ca, g))]
        if parts:
            batch = Batch.concat(parts)
            await self.emit(batch)
            self.status.readings_total += len(batch)
            self.status.polls_total += 1
        link.acknowledge(received)
        link.resume_reading()

    def _batch(self, ca: int, group: _Group) -> Batch:
        cols = codec.decode(group.kind, bytes(group.data), self.zone)
        index = self.map.locate(ca, group.kind.family, cols.ioa)
        stamps = np.repeat(np.array(group.stamps, np.int64), group.counts)
        keep = index >= 0
        source = stamps
        if cols.time_ns is not None:
            source = np.where(cols.flags & codec.TIME_IV, stamps, cols.time_ns)
            seen = keep.copy()
            seen[keep] = self.last_event[index[keep]] == source[keep]
            keep &= ~seen
            self.last_event[index[keep]] = source[keep]
        if not keep.all():
            index, source, stamps = index[keep], source[keep], stamps[keep]
            cols = codec.Columns(cols.ioa[keep], cols.value[keep], cols.flags[keep], None)
        flags = cols.flags
        value = (cols.value * self.scale[index] + self.offset[index])
        bad = (flags & codec.IV) != 0
        value[bad] = np.nan
        q = np.where(bad, Quality.BAD, np.where(flags != 0, Quality.UNCERTAIN, Quality.GOOD))
        cause = np.where(flags != 0, quality.IEC104_BASE | flags, 0)
        return Batch(source_ts=source, server_ts=source, gateway_ts=stamps, point=index,
                     value=value, quality=q.astype(np.uint8), cause=cause.astype(np.uint32))

    async def _fault(self, error: LinkError) -> None:
        """One bad reading per point at the start of an outage; the status says why."""
        name = quality.cause_name(error.cause)
        self.status.last_error = f"{name}: {error}"
        self.status.count_error(name)
        self.status.poll_errors_total += 1
        if self._down_reported:
            log.debug("event=iec104_retry_failed device=%s cause=%s reason=%r", self.cfg.name,
                      name, str(error))
            return
        log.warning("event=device_down device=%s bus=%s cause=%s reason=%r", self.cfg.name,
                    self.cfg.bus, name, str(error))
        self._down_reported = True
        self.status.state = "down"
        await self.emit(unreachable(self.map.indices, error.cause))
        self.status.readings_total += len(self.map.indices)


def build_sessions(site: Site, status: GatewayStatus, emit: Emit) -> list[Iec104Session]:
    """One session per IEC 104 device that has points; registers each one's DeviceStatus."""
    points = points_by_device(site)
    sessions = []
    for d in site.devices:
        if d.protocol != "iec104" or not points.get(d.name):
            continue
        dev_status = device_status(status, d)
        # Quiet is normal (reports on change): the link's own keep-alive says it is alive.
        dev_status.stale_after_seconds = d.t3 + d.t1 + d.poll_interval
        sessions.append(Iec104Session(d, points[d.name], len(site.points), dev_status, emit))
    return sessions
