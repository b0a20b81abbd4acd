"""OPC UA client driver (asyncua): subscriptions, or polled reads, into columnar batches.

One `OpcUaSession` per device owns one asyncua `Client` for the life of a connection; after any
loss the whole client is dropped and rebuilt (new session, namespace table, subscription and
monitored items), with exponential, jittered backoff between attempts.

Notification path. asyncua's `Subscription` hands data changes out one item at a time: its
callback mode starts a task per notification, its iterator mode queues them in a bounded queue
that silently drops the oldest. Neither fits a hot path that must lose nothing, so the session
registers its own publish callback with the session layer
(`client.uaclient.create_subscription(params, callback)`). asyncua's publish loop awaits that
callback with the whole `PublishResult` and acknowledges its sequence number only in the next
Publish request, after the callback returned. The callback turns each `DataChangeNotification`
into one `Batch` (client handle = the point's index in `site.points`) and awaits `emit`, so a
notification message is acknowledged once it is in the spool; a slow spool slows publishing
rather than dropping (the server holds the rest in its item queues and retransmission queue).

Readings:
- quality from the status code's top two bits (good/uncertain/bad); `cause` = the raw 32-bit
  code when not good. A bad reading's value is NaN; a good one whose value is not a number
  (text, array, null) is bad with cause BadTypeMismatch. Booleans are 0/1.
- source_ts = SourceTimestamp (the server's when absent), server_ts = ServerTimestamp (the
  source's when absent), gateway_ts = receipt time.
- A reading equal to the last one stored for its point (same source timestamp and cause) is
  dropped: the initial values a server sends after a reconnect are not stored twice.
- Outage (connection lost, bad subscription status, failed reconnect, no Publish response,
  not even a keep-alive, for three keep-alive periods and PUBLISH_GRACE: asyncua stops
  publishing without a word once the server has dropped the subscription): every point of the
  device gets one bad reading (BadCommunicationError, or the server's status code) at the
  start of the outage, not one per retry; the API turns them stale afterwards.

Settings: the subscription publishes every `publishing_interval` (default `poll_interval`);
each item samples at its `sampling_interval` (default: the publishing interval) and queues
`queue_size` samples (default: samples per publishing interval, so the server discards none
between two publishes). A dead link is noticed by asyncua's watchdog, which probes the server
every `timeout` seconds (at least 1).

Node ids: `nsu=<uri>;<id>` is resolved against the server's NamespaceArray on every connect;
`ns=<n>;<id>` is taken as is. An unknown namespace or node, and a monitored item the server
refuses, fail that point only (bad rows, one log line naming device, tag and node). Items the
server will not monitor for another reason (filter, sampling) are polled instead, as is every
point of a device in `mode = "poll"` or of a server without subscriptions. Reads, registrations
and monitored-item creation are split to the server's OperationLimits (0: no limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from asyncua import Client, ua

from anomaly.core.batch import Batch, Quality
from gateway.inputs.backoff import backoff
from gateway.inputs.devices import device_status, points_by_device
from gateway.inputs.opcua.security import OpcUaSecurityError, apply_security
from gateway.inputs.quality import cause_name
from gateway.site.model import Device, Point, Site
from gateway.status import DeviceStatus, GatewayStatus

log = logging.getLogger(__name__)

Emit = Callable[[Batch], Awaitable[None]]

COMMS = ua.StatusCodes.BadCommunicationError
NODE_UNKNOWN = ua.StatusCodes.BadNodeIdUnknown
TYPE_MISMATCH = ua.StatusCodes.BadTypeMismatch
NO_SUBSCRIPTION = ua.StatusCodes.BadNoSubscription
# Monitored-item results that mean the node itself is wrong: polling it would fail too.
_NODE_FAULTS = frozenset({ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid,
                          ua.StatusCodes.BadAttributeIdInvalid, ua.StatusCodes.BadNotReadable,
                          ua.StatusCodes.BadUserAccessDenied})
# A server without (enough) subscriptions: the device is polled instead.
_NO_SUBSCRIPTIONS = frozenset({ua.StatusCodes.BadServiceUnsupported,
                               ua.StatusCodes.BadTooManySubscriptions,
                               ua.StatusCodes.BadNotSupported})
_LIMIT_NODES = (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRegisterNodes,
                ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)
_DEADBANDS = {"none": ua.DeadbandType.None_, "absolute": ua.DeadbandType.Absolute,
              "percent": ua.DeadbandType.Percent}
KEEPALIVE_COUNT = 10  # publishing intervals without data before the server sends a keep-alive
SESSION_TIMEOUT = 60.0  # seconds the server keeps an abandoned session (and its subscription)
PUBLISH_GRACE = 30.0  # seconds of a loaded machine's stalls before a silent subscription is lost
_NO_TS = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A point's node id as configured: namespace by URI (`uri`) or by index (`ns`)."""

    uri: str | None
    ns: int
    identifier: str  # "s=...", "i=...", "g=...", "b=..."

    @classmethod
    def parse(cls, text: str) -> NodeRef:
        """`nsu=<uri>;s=x`, `ns=2;i=5` or `i=2255` (namespace 0); check-config rejects others."""
        head, sep, rest = text.partition(";")
        if sep and head.startswith("nsu="):
            return cls(head[4:], 0, rest)
        if sep and head.startswith("ns="):
            return cls(None, int(head[3:]), rest)
        return cls(None, 0, text)

    def resolve(self, namespaces: Sequence[str]) -> ua.NodeId | None:
        """The node id on a server with this namespace table; None for an unknown URI."""
        ns = self.ns
        if self.uri is not None:
            if self.uri not in namespaces:
                return None
            ns = namespaces.index(self.uri)
        return ua.NodeId.from_string(f"ns={ns};{self.identifier}")


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """The server's OperationLimits the driver splits its calls by (0: no limit)."""

    read: int = 0
    register: int = 0
    monitored: int = 0

    @staticmethod
    def chunks(n: int, limit: int) -> list[slice]:
        step = limit or max(n, 1)
        return [slice(i, i + step) for i in range(0, n, step)]


def decode(points: np.ndarray, values: Sequence[ua.DataValue], now_ns: int) -> Batch:
    """One batch from DataValues (one per entry of `points`), see the module docstring."""
    n = len(values)
    status = np.fromiter((0 if dv.StatusCode is None else dv.StatusCode.value for dv in values),
                         np.uint32, n)
    src = _seconds_to_ns([dv.SourceTimestamp for dv in values], n)
    srv = _seconds_to_ns([dv.ServerTimestamp for dv in values], n)
    src = np.where(src == _NO_TS, srv, src)
    srv = np.where(srv == _NO_TS, src, srv)
    src[src == _NO_TS] = now_ns
    srv[srv == _NO_TS] = now_ns
    value, numeric = _numbers([None if dv.Value is None else dv.Value.Value for dv in values])
    severity = status >> 30  # 0 good, 1 uncertain, 2 and 3 bad
    status = np.where((severity < 2) & ~numeric, np.uint32(TYPE_MISMATCH), status)
    severity = status >> 30
    quality = np.where(severity == 0, Quality.GOOD,
                       np.where(severity == 1, Quality.UNCERTAIN, Quality.BAD)).astype(np.uint8)
    value[quality == Quality.BAD] = np.nan
    return Batch(source_ts=src, server_ts=srv, gateway_ts=np.full(n, now_ns, np.int64),
                 point=points.astype(np.int32), value=value, quality=quality,
                 cause=np.where(quality == Quality.GOOD, 0, status).astype(np.uint32))


def _seconds_to_ns(stamps: list, n: int) -> np.ndarray:
    # asyncua decodes timestamps to aware UTC datetimes with microsecond resolution.
    secs = np.fromiter((np.nan if t is None else t.timestamp() for t in stamps), np.float64, n)
    out = np.full(n, _NO_TS, np.int64)
    ok = ~np.isnan(secs)
    out[ok] = np.rint(secs[ok] * 1e6).astype(np.int64) * 1000
    return out


def _numbers(raw: list) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 and which of them were numbers (bool, int, float)."""
    if {type(v) for v in raw} <= {float, int, bool}:
        return np.array(raw, dtype=np.float64), np.ones(len(raw), dtype=bool)
    numeric = np.fromiter((isinstance(v, int | float) for v in raw), bool, len(raw))
    return np.array([float(v) if ok else np.nan for v, ok in zip(raw, numeric, strict=True)],
                    dtype=np.float64), numeric


class Lost(Exception):
    """The connection or the subscription is gone; `code` is the OPC UA status to record."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class OpcUaSession:
    """Reads one OPC UA device until cancelled, reconnecting after every loss."""

    def __init__(self, device: Device, points: list[tuple[int, Point]], n_points: int,
                 status: DeviceStatus, emit: Emit, data_dir: Path, site_name: str) -> None:
        self.device = device
        self.name = f"opcua:{device.name}"
        self.site_name = site_name
        self.points = [p for _, p in points]
        self.index = np.array([i for i, _ in points], dtype=np.int32)
        self.refs = [NodeRef.parse(p.node or "") for p in self.points]
        self.status = status
        self.emit = emit
        self.data_dir = data_dir
        self.publishing = device.publishing_interval or device.poll_interval
        self._last_src = np.full(n_points, _NO_TS, np.int64)
        self._last_cause = np.zeros(n_points, np.uint32)
        self._client: Client | None = None
        self._lost: asyncio.Future[Lost] | None = None
        self._down = False  # the current outage is already recorded
        self._quiet: float | None = None  # seconds without a Publish response that mean lost
        self._published = 0.0  # monotonic time of the last Publish response
        self._connects = 0

    async def run(self) -> None:
        """Connect, read, and reconnect with backoff after any loss, until cancelled."""
        failures = 0
        while True:
            loop = asyncio.get_running_loop()
            self._lost = loop.create_future()
            try:
                await self._connect()
                failures = 0
                await self._serve()
            except (Lost, OpcUaSecurityError) as e:
                code, reason = e.code, str(e)
            except ua.UaStatusCodeError as e:
                code, reason = e.code, str(e)
            except (OSError, TimeoutError, ConnectionError, ua.UaError) as e:
                code, reason = COMMS, f"{type(e).__name__}: {e}"
            finally:
                await self._disconnect()
            failures += 1
            await self._mark_down(code, reason)
            await asyncio.sleep(backoff(failures, self.device.timeout))

    async def close(self) -> None:
        await self._disconnect()

    # --- connection --------------------------------------------------------------------

    async def _connect(self) -> None:
        d = self.device
        client = self._client = Client(d.endpoint or "", timeout=d.timeout,
                                       watchdog_intervall=max(d.timeout, 1.0))
        client.session_timeout = int(SESSION_TIMEOUT * 1000)
        await apply_security(client, d, self.data_dir, self.site_name)
        client.connection_lost_callback = self._on_connection_lost
        await client.connect()
        if self._connects:
            self.status.reconnects_total += 1
        self._connects += 1

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lose(COMMS, f"connection lost: {exc!r}")

    def _lose(self, code: int, reason: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(Lost(code, reason))

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.device.timeout):
                    await client.disconnect()
            client.uaclient.disconnect_socket()

    # --- setup after each connect ----------------------------------------------------------

    async def _serve(self) -> None:
        client = self._client
        assert client is not None and self._lost is not None
        self._quiet = None
        d = self.device
        self.status.stale_after_seconds = d.stale_after * d.poll_interval + d.timeout
        namespaces = await client.get_namespace_array()
        nodes: list[ua.NodeId | None] = []
        bad: dict[int, int] = {}  # position in self.points -> status code
        for k, ref in enumerate(self.refs):
            node = ref.resolve(namespaces)
            nodes.append(node)
            if node is None:
                bad[k] = NODE_UNKNOWN
                self._log_point(k, NODE_UNKNOWN, f"namespace URI {ref.uri!r} is not on the "
                                "server")
        limits = await self._limits(client)
        live = [k for k, node in enumerate(nodes) if node is not None]
        polled = live if self.device.mode == "poll" else await self._subscribe(
            client, nodes, live, limits, bad)
        await self._emit_codes(list(bad), list(bad.values()))
        self._down = False
        self.status.state = "degraded" if bad else "ok"
        self.status.last_error = None if not bad else f"{len(bad)} point(s) unavailable"
        log.info("event=opcua_connected device=%s endpoint=%s subscribed=%d polled=%d bad=%d",
                 self.device.name, self.device.endpoint, len(live) - len(polled), len(polled),
                 len(bad))
        waiters: list[asyncio.Future] = [self._lost]
        if polled:
            waiters.append(asyncio.ensure_future(self._poll(client, polled, nodes, limits)))
        if self._quiet is not None:
            waiters.append(asyncio.ensure_future(self._watch_publishing(self._quiet)))
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters[1:]:
                w.cancel()
            await asyncio.gather(*waiters[1:], return_exceptions=True)
        outcome = next(iter(done)).result()  # a poll error raises here
        raise outcome if isinstance(outcome, Lost) else Lost(COMMS, "poll ended")

    async def _limits(self, client: Client) -> OperationLimits:
        params = ua.ReadParameters(NodesToRead=[
            ua.ReadValueId(NodeId=ua.NodeId(ua.Int32(i)), AttributeId=ua.AttributeIds.Value)
            for i in _LIMIT_NODES])
        found = []
        for dv in await client.uaclient.read(params):
            value = dv.Value.Value if dv.Value is not None else None
            ok = dv.StatusCode is None or dv.StatusCode.is_good()
            found.append(int(value) if ok and isinstance(value, int) and value > 0 else 0)
        return OperationLimits(*found)

    async def _subscribe(self, client: Client, nodes: list[ua.NodeId | None], live: list[int],
                         limits: OperationLimits, bad: dict[int, int]) -> list[int]:
        """Create the subscription and its items; return the positions to poll instead."""
        keepalive = KEEPALIVE_COUNT
        # The server drops a subscription after `lifetime` publishing intervals without a
        # Publish request from us. Three keep-alives (1.5 s at 50 ms) is the spec's floor, and
        # a server that blocks for longer (asyncua creating 10,000 monitored items: seconds)
        # then counts its missed intervals at once and drops it: no data ever after. The
        # session outlives a silent client for SESSION_TIMEOUT, so its subscription may too.
        lifetime = max(3 * keepalive, math.ceil(SESSION_TIMEOUT / self.publishing))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.publishing * 1000,
            RequestedLifetimeCount=lifetime, RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        try:
            sub = await client.uaclient.create_subscription(params, self._on_publish)
        except ua.UaStatusCodeError as e:
            if e.code not in _NO_SUBSCRIPTIONS:
                raise
            log.warning("event=opcua_polling device=%s reason=%s", self.device.name,
                        ua.StatusCode(e.code).name)
            return live
        self._quiet = (3 * sub.RevisedMaxKeepAliveCount * sub.RevisedPublishingInterval / 1000
                       + PUBLISH_GRACE)
        # A subscription answers at least every keep-alive: silent for longer, it is lost.
        self.status.stale_after_seconds = self._quiet
        requests = [self._item_request(k, nodes[k]) for k in live]
        polled = []
        for part in OperationLimits.chunks(len(requests), limits.monitored):
            chunk = requests[part]
            if not chunk:
                continue
            results = await self._timed(client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=sub.SubscriptionId, ItemsToCreate=chunk,
                    TimestampsToReturn=ua.TimestampsToReturn.Both)))
            for k, result in zip(live[part], results, strict=True):
                code = result.StatusCode.value
                if result.StatusCode.is_good():
                    continue
                if code in _NODE_FAULTS:
                    bad[k] = code
                    self._log_point(k, code, "the server refused to monitor it")
                else:
                    polled.append(k)
                    self._log_point(k, code, "not monitored, polled instead", logging.INFO)
        return polled

    def _item_request(self, k: int, node: ua.NodeId | None) -> ua.MonitoredItemCreateRequest:
        p, d = self.points[k], self.device
        sampling = next(s for s in (p.sampling_interval, d.sampling_interval, self.publishing)
                        if s is not None)
        queue = p.queue_size or d.queue_size or (
            max(1, math.ceil(self.publishing / sampling)) if sampling > 0 else 1)
        flt = None
        if p.deadband_type != "none":
            flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                      DeadbandType=_DEADBANDS[p.deadband_type],
                                      DeadbandValue=p.deadband)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(
                ClientHandle=int(self.index[k]), SamplingInterval=sampling * 1000,
                QueueSize=queue, DiscardOldest=True, Filter=flt))

    # --- data ----------------------------------------------------------------------------

    async def _on_publish(self, result: ua.PublishResult) -> None:
        """asyncua's publish loop awaits this per Publish response (see the module docstring)."""
        self._published = time.monotonic()
        self.status.polls_total += 1
        self.status.last_success = time.time()
        for notification in result.NotificationMessage.NotificationData or ():
            if isinstance(notification, ua.DataChangeNotification):
                items = notification.MonitoredItems
                if items:
                    handles = np.fromiter((it.ClientHandle for it in items), np.int64, len(items))
                    await self._store(handles, [it.Value for it in items])
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if status is not None and not status.is_good():
                    self._lose(status.value, f"subscription status {status.name}")

    async def _watch_publishing(self, quiet: float) -> Lost:
        """Returns once no Publish response has come for `quiet` seconds (see the module
        docstring): the subscription is gone, and only a new session brings the data back."""
        self._published = time.monotonic()
        while (left := self._published + quiet - time.monotonic()) > 0:
            await asyncio.sleep(left)
        return Lost(NO_SUBSCRIPTION, f"no Publish response, not even a keep-alive, for "
                    f"{quiet:g} s: the server no longer publishes the subscription")

    async def _poll(self, client: Client, polled: list[int], nodes: list[ua.NodeId | None],
                    limits: OperationLimits) -> None:
        targets = [n for k in polled if (n := nodes[k]) is not None]  # polled: resolved only
        registered: list[ua.NodeId] = []
        for part in OperationLimits.chunks(len(targets), limits.register):
            registered += await self._timed(client.uaclient.register_nodes(targets[part]))
        reads = [ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in registered]
        points = self.index[polled].astype(np.int64)
        loop = asyncio.get_running_loop()
        interval = self.device.poll_interval
        deadline = loop.time()
        first = True
        while True:
            values: list[ua.DataValue] = []
            for part in OperationLimits.chunks(len(reads), limits.read):
                values += await self._timed(client.uaclient.read(ua.ReadParameters(
                    MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Both,
                    NodesToRead=reads[part])))
            if first:  # name each wrong node once per connection, not once per poll
                first = False
                for k, dv in zip(polled, values, strict=True):
                    if dv.StatusCode is not None and dv.StatusCode.value in _NODE_FAULTS:
                        self._log_point(k, dv.StatusCode.value, "the server refused to read it")
                        self.status.state = "degraded"
            self.status.polls_total += 1
            self.status.last_success = time.time()
            await self._store(points, values)
            deadline += interval
            now = loop.time()
            if deadline < now:  # missed whole intervals are skipped, not bunched
                deadline += math.ceil((now - deadline) / interval) * interval
            await asyncio.sleep(deadline - now)

    async def _timed(self, call: Awaitable) -> list:
        start = time.perf_counter()
        try:
            return await call
        finally:
            self.status.observe_request(time.perf_counter() - start)

    async def _store(self, points: np.ndarray, values: Sequence[ua.DataValue]) -> None:
        batch = decode(points, values, time.time_ns())
        fresh = ((batch.source_ts != self._last_src[batch.point])
                 | (batch.cause != self._last_cause[batch.point]))
        if not fresh.all():
            batch = batch.take(fresh)
        if not len(batch):
            return
        self._last_src[batch.point] = batch.source_ts
        self._last_cause[batch.point] = batch.cause
        await self.emit(batch)
        self.status.readings_total += len(batch)

    async def _emit_codes(self, positions: list[int], codes: list[int]) -> None:
        """Bad readings, stamped now, for points at `positions` of this device."""
        if not positions:
            return
        now = time.time_ns()
        await self.emit(Batch.of(source_ts=now, point=self.index[positions], value=np.nan,
                                 quality=Quality.BAD, cause=codes))
        self.status.readings_total += len(positions)

    async def _mark_down(self, code: int, reason: str) -> None:
        self.status.state = "down"
        self.status.last_error = reason
        self.status.poll_errors_total += 1
        self.status.count_error(cause_name(code))
        if self._down:
            log.debug("event=opcua_retry_failed device=%s reason=%s", self.device.name, reason)
            return
        self._down = True
        log.warning("event=opcua_down device=%s endpoint=%s cause=%s reason=%r",
                    self.device.name, self.device.endpoint, cause_name(code), reason)
        await self._emit_codes(list(range(len(self.points))), [code] * len(self.points))

    def _log_point(self, k: int, code: int, reason: str, level: int = logging.WARNING) -> None:
        p = self.points[k]
        log.log(level, "event=opcua_point_unavailable device=%s tag=%s node=%s cause=%s "
                "reason=%r", self.device.name, p.tag, p.node, ua.StatusCode(ua.UInt32(code)).name,
                reason)


def build_sessions(site: Site, status: GatewayStatus, emit: Emit, *,
                   data_dir: Path) -> list[OpcUaSession]:
    """One session per OPC UA device that has points; registers each one's DeviceStatus."""
    points = points_by_device(site)
    sessions = []
    for d in site.devices:
        if d.protocol != "opcua" or not points.get(d.name):
            continue
        dev_status = device_status(status, d)
        sessions.append(OpcUaSession(d, points[d.name], len(site.points), dev_status, emit,
                                     data_dir, site.site.name))
    return sessions
