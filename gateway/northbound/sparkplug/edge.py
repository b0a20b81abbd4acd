"""A site as a Sparkplug B edge node: one MQTT session at a time, births, data from the spool.

The edge node is a spool sink (`name`, `cursor`, `store`) drained by `gateway.sinks.drain`
from its own cursor: a DDATA is acknowledged to the spool only once the broker has taken it
(MQTT QoS 1 PUBACK), so a broker outage or a kill -9 of the gateway loses nothing; what was
taken but not yet acknowledged is sent again, and the host stores it once by the
`scadawatch/record` number every DDATA carries (payloads.RECORD).

Session: bdSeq (0-255) rises with every connection and is kept in `<data_dir>/<name>.bdseq`,
so a host never mistakes a restarted gateway's death for the new session's; NDEATH with that
bdSeq is the connection's MQTT will; NBIRTH (seq 0) and a DBIRTH per device follow every
connect and every Rebirth command; `seq` counts every message of the session modulo 256. A
backlog (what the spool held when the session was born) goes out as historical. With
`primary_host` set, nothing is published while that host's STATE is not online.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time

import aiomqtt
import numpy as np

from anomaly.batch import Batch
from gateway.alarms.store import AlarmStore
from gateway.data_dir import write_atomically
from gateway.northbound.sparkplug import payloads as sp
from gateway.northbound.sparkplug.reconnect import keep_connected
from gateway.site.model import Site
from gateway.site.northbound import Northbound
from gateway.status import SinkStatus
from gateway.storage.drain import drain
from gateway.storage.spool import PointList, Spool

log = logging.getLogger(__name__)

ONLINE_WAIT = 5.0  # seconds a store waits for a born session before it fails (and backs off)
PUBLISH_TIMEOUT = 30.0  # seconds for the broker's PUBACK
ALARM_INTERVAL = 0.5  # seconds between looks at the alarm journal
ALARM_BATCH = 200  # journal entries per NDATA
# Alarm journal transitions that travel: the condition's; acknowledging and shelving belong
# to whoever watches the alarm list (the central one, for a site that reports to it).
TRAVELLING = ("raise", "clear")


class NotOnline(Exception):
    """No born Sparkplug session to publish in (broker unreachable, host offline)."""


def sink_name(index: int) -> str:
    """The spool sink (and status) name of the site's `index`-th `[[northbound]]`."""
    return "sparkplug" if index == 0 else f"sparkplug.{index}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class EdgeNode:
    """Publishes a site's readings (a spool sink) and alarm transitions as a Sparkplug B
    edge node with a device per scadawatch device."""

    def __init__(self, site: Site, settings: Northbound, index: int, spool: Spool,
                 alarms: AlarmStore, status: SinkStatus) -> None:
        self.name = sink_name(index)
        self.settings = settings
        self.group = settings.group
        self.node = settings.node or site.site.name
        self.spool, self.alarms, self.status = spool, alarms, status
        self.devices = [d.name for d in site.devices]
        self.points = site.points
        if len(self.devices) > sp.MAX_DEVICES:
            raise ValueError(f"northbound: at most {sp.MAX_DEVICES} devices per edge node")
        device_of = {d: i for i, d in enumerate(self.devices)}
        # Aliases: a point's position in the site's list, plus one (0 would read as unset).
        self.alias_of = {p.tag: i + 1 for i, p in enumerate(site.points)}
        self.born = [[(self.alias_of[p.tag], p) for p in site.points if p.device == d]
                     for d in self.devices]
        self._device_of = device_of
        self._maps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._bd_path = site.site.data_dir / f"{self.name}.bdseq"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aiomqtt.Client | None = None
        self._online = threading.Event()  # a born session (and its host online) to publish in
        self._lock: asyncio.Lock | None = None  # one message at a time gets its seq
        self._seq = 0
        self._live_after = 0  # spool records up to this one are the backlog: historical
        self._born_ms = 0
        self._host_online = settings.primary_host is None

    # --- spool sink ----------------------------------------------------------------------

    def cursor(self) -> int:
        return self.spool.acked(self.name)

    def store(self, entries: list[tuple[int, Batch]], points: PointList | None) -> None:
        """Publish `entries` as DDATA (one per device and record) and wait for the broker to
        take them all; raise (the drain retries from the cursor) if it does not."""
        if not self._online.wait(ONLINE_WAIT) or self._loop is None:
            raise NotOnline(f"no Sparkplug session on {self.settings.url}")
        device, alias, boolean = self._map(points)
        now = _now_ms()
        messages = []
        for seq, batch in entries:
            historical = seq <= self._live_after
            order = np.argsort(device[batch.point], kind="stable")
            devs = device[batch.point][order]
            starts = (np.flatnonzero(np.r_[True, devs[1:] != devs[:-1]]) if len(devs)
                      else np.empty(0, np.intp))
            for a, b in zip(starts, [*list(starts[1:]), len(devs)], strict=True):
                d = int(devs[a])
                if d < 0:
                    continue  # points no device polls (or gone from the site file)
                rows = batch.take(order[a:b])
                body = sp.device_data(seq * sp.MAX_DEVICES + d, rows, alias[rows.point],
                                      boolean[rows.point], now, historical)
                messages.append((sp.topic(self.group, "DDATA", self.node, self.devices[d]),
                                 body))
        asyncio.run_coroutine_threadsafe(self._publish(messages), self._loop).result()

    def _map(self, points: PointList | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per spool point index: device index (-1: none), alias, is-bool."""
        key = -1 if points is None else points.first_seq
        if key not in self._maps:
            listed = points.points if points is not None else self.points
            self._maps[key] = (
                np.array([self._device_of.get(p.device or "", -1) if p.tag in self.alias_of
                          else -1 for p in listed], np.int64),
                np.array([self.alias_of.get(p.tag, 0) for p in listed], np.int64),
                np.array([sp.datatype_of(p) == sp.BOOLEAN for p in listed], bool))
        return self._maps[key]

    async def _publish(self, messages: list[tuple[str, bytes]]) -> None:
        assert self._lock is not None
        async with self._lock:
            client = self._client
            if client is None or not self._online.is_set():
                raise NotOnline("the Sparkplug session ended")
            await asyncio.gather(*[
                client.publish(topic, sp.with_seq(self._next_seq(), body), qos=1,
                               timeout=PUBLISH_TIMEOUT)
                for topic, body in messages])

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    # --- session -------------------------------------------------------------------------

    async def run(self, flush: asyncio.Event) -> None:
        """The MQTT session (reconnecting), the spool drain and the alarm feed, until
        cancelled; a clean stop publishes NDEATH first."""
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        sessions = keep_connected(self._session, self.status, self._ended,
                                  "sparkplug_disconnected", node=self.node,
                                  url=self.settings.url)
        await asyncio.gather(sessions, self._alarm_feed(),
                             drain(self.spool, self, self.status, wake=flush))

    def _next_bd_seq(self) -> int:
        """This connection's bdSeq; the next one is on disk before the will names this one."""
        try:
            bd = int(self._bd_path.read_text()) % 256
        except (FileNotFoundError, ValueError):
            bd = 0
        write_atomically(self._bd_path, f"{(bd + 1) % 256}\n".encode(), durable=True)
        return bd

    def _ended(self) -> None:
        self._online.clear()
        self._client = None

    async def _session(self) -> None:
        ep = self.settings.endpoint()
        bd = self._next_bd_seq()
        will = aiomqtt.Will(sp.topic(self.group, "NDEATH", self.node),
                            sp.node_death(bd, _now_ms()), qos=1)
        client = aiomqtt.Client(ep.host, ep.port, username=ep.username, password=ep.password,
                                identifier=f"scadawatch:{self.group}:{self.node}",
                                keepalive=ep.keepalive, tls_context=ep.tls, will=will,
                                clean_session=True, timeout=10)
        async with client:
            self._client = client
            await client.subscribe(sp.topic(self.group, "NCMD", self.node), qos=1)
            await client.subscribe(sp.topic(self.group, "DCMD", self.node, "+"), qos=1)
            if self.settings.primary_host is not None:
                self._host_online = False  # until its retained STATE says otherwise
                await client.subscribe(sp.state_topic(self.settings.primary_host), qos=1)
            else:
                await self._birth(bd)
            log.info("event=sparkplug_connected node=%s url=%s bdseq=%d",
                     self.node, self.settings.url, bd)
            try:
                async for message in client.messages:
                    await self._command(message, bd)
            except asyncio.CancelledError:
                if self._online.is_set():  # a clean stop: say so before the will would
                    self._online.clear()
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        await client.publish(sp.topic(self.group, "NDEATH", self.node),
                                             sp.node_death(bd, _now_ms()), qos=1, timeout=2)
                raise

    async def _birth(self, bd: int) -> None:
        """NBIRTH and every DBIRTH, seq from 0; the session is then open for data."""
        assert self._lock is not None and self._client is not None
        async with self._lock:
            self._online.clear()
            self._seq = 0
            now = _now_ms()
            self._live_after = self.spool.last_seq
            self._born_ms = now
            client = self._client
            await client.publish(sp.topic(self.group, "NBIRTH", self.node),
                                 sp.with_seq(self._next_seq(), sp.node_birth(bd, now)), qos=1,
                                 timeout=PUBLISH_TIMEOUT)
            for device, points in zip(self.devices, self.born, strict=True):
                await client.publish(sp.topic(self.group, "DBIRTH", self.node, device),
                                     sp.with_seq(self._next_seq(), sp.device_birth(points, now)),
                                     qos=1, timeout=PUBLISH_TIMEOUT)
            self._online.set()
        if self.status.cause == "broker":
            log.info("event=sparkplug_born node=%s bdseq=%d", self.node, bd)

    async def _command(self, message: aiomqtt.Message, bd: int) -> None:
        topic = str(message.topic)
        raw = message.payload if isinstance(message.payload, bytes) else b""
        if topic == sp.state_topic(self.settings.primary_host or ""):
            online = _state_online(raw)
            if online and not self._host_online:
                self._host_online = True
                await self._birth(bd)
            elif not online:
                self._host_online = False
                self._online.clear()  # the spool keeps what comes meanwhile
                log.warning("event=sparkplug_host_offline node=%s host=%s", self.node,
                            self.settings.primary_host)
            return
        try:
            command = sp.parse(raw)
        except Exception:
            log.warning("event=sparkplug_bad_command topic=%s bytes=%d", topic, len(raw))
            return
        if topic.startswith(sp.topic(self.group, "NCMD", self.node)):
            if any(m.name == sp.REBIRTH and m.boolean_value for m in command.metrics):
                log.info("event=sparkplug_rebirth node=%s", self.node)
                if self._host_online:
                    await self._birth(bd)
            return
        # DCMD: the gateway is read-only towards its devices; writes are not taken this way.
        log.warning("event=sparkplug_command_refused topic=%s reason=read_only", topic)

    # --- alarms --------------------------------------------------------------------------

    async def _alarm_feed(self) -> None:
        """Alarm raise/clear transitions from the journal, in order, as NDATA metrics; the
        journal position sent is kept in the alarm store (as webhooks keep theirs)."""
        name = f"northbound:{self.name}"
        while True:
            await asyncio.sleep(ALARM_INTERVAL)
            if not self._online.is_set():
                continue
            try:
                cursor = await asyncio.to_thread(self.alarms.cursor, name) or 0
                entries = await asyncio.to_thread(self.alarms.events_after, cursor, ALARM_BATCH)
                if not entries:
                    continue
                transitions = [_transition(e.seq, e.ts_ns, e.transition, e.data)
                               for e in entries if e.transition in TRAVELLING]
                if transitions:
                    historical = entries[-1].ts_ns // 1_000_000 < self._born_ms
                    await self._publish([(sp.topic(self.group, "NDATA", self.node),
                                          sp.alarm_data(transitions, _now_ms(), historical))])
                await asyncio.to_thread(self.alarms.set_cursor, name, entries[-1].seq)
            except (NotOnline, aiomqtt.MqttError, TimeoutError) as e:
                log.info("event=sparkplug_alarms_waiting node=%s error=%r", self.node, str(e))


ALARM_FIELDS = ("id", "kind", "tag", "zone", "start", "end", "priority", "message", "tags",
                "device", "value", "limit", "details")


def _transition(event: int, ts_ns: int, transition: str, alarm: dict) -> dict:
    return {"event": event, "transition": transition, "time_ms": ts_ns // 1_000_000,
            "alarm": {k: alarm.get(k) for k in ALARM_FIELDS}}


def _state_online(raw: bytes) -> bool:
    """Sparkplug 3.0 STATE is JSON `{"online": true, ...}`; 2.x sent `ONLINE`/`OFFLINE`."""
    try:
        return bool(json.loads(raw).get("online"))
    except (ValueError, AttributeError):
        return raw.strip() == b"ONLINE"
