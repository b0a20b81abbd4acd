"""A site as a Sparkplug B edge node: one MQTT session at a time, births, data from the spool.

The edge node drains the spool in two lanes from its own progress (the spool records the
broker has taken, MQTT QoS 1 PUBACK: all up to a low-water mark, ranges above it, in
`<spool>/<name>.progress`; the spool is acknowledged up to the mark): when a session is born,
the newest record of each device (the current readings) and everything polled since go live,
and the backlog (what was not sent before the birth) follows oldest first, flagged
`is_historical`, a chunk between two turns of the live lane. A broker outage or a kill -9 of
the gateway loses nothing; what the broker took but the progress does not yet say is sent
again, and the host stores it once by the `scadawatch/record` number every DDATA carries
(payloads.RECORD), with `scadawatch/after`, the record before it in its lane, so a host can
keep the records it holds as ranges (payloads.AFTER).

Session: bdSeq (0-255) rises with every connection and is kept in `<data_dir>/<name>.bdseq`,
so a host never mistakes a restarted gateway's death for the new session's; NDEATH with that
bdSeq is the connection's MQTT will; NBIRTH (seq 0) and a DBIRTH per device follow every
connect and every Rebirth command; `seq` counts every message of the session modulo 256. With
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

from anomaly.core.batch import Batch
from gateway.alarms.store import AlarmStore
from gateway.data_dir import write_atomically
from gateway.northbound.sparkplug import payloads as sp
from gateway.northbound.sparkplug.reconnect import keep_connected
from gateway.site.model import Site
from gateway.site.northbound import Northbound
from gateway.status import SinkStatus
from gateway.storage.drain import BACKOFF_MIN, keep_stepping
from gateway.storage.influxdb.catchup import Progress
from gateway.storage.spool import PointList, Spool

log = logging.getLogger(__name__)

ONLINE_WAIT = 5.0  # seconds a store waits for a born session before it fails (and backs off)
PUBLISH_TIMEOUT = 30.0  # seconds for the broker's PUBACK
ALARM_INTERVAL = 0.5  # seconds between looks at the alarm journal
ALARM_BATCH = 200  # journal entries per NDATA
LIVE_ROWS = 100_000  # readings per turn of the live lane
# Readings of backlog per turn: what live readings wait behind after an outage (~0.1 s).
BACKLOG_ROWS = 5_000
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
        self._sending: asyncio.Future | None = None  # the DDATA the broker has yet to take
        self._seq = 0
        self._born_ms = 0
        self._births = 0  # sessions born so far: a new one restarts the live lane
        self._backlog_end = 0  # spool records up to this one, unsent at the birth: historical
        self._lanes_of = -1  # the birth the lanes below follow
        self._live = 0  # the live lane's position: the last spool record it sent
        self._progress: Progress | None = None
        self._reported = 0.0  # when the backlog was last reported (time.monotonic())
        self._progress_path = spool.directory / f"{self.name}.progress"
        self._host_online = settings.primary_host is None

    # --- spool sink ----------------------------------------------------------------------

    def cursor(self) -> int:
        """Every spool record up to this one has been taken by the broker."""
        return self.spool.acked(self.name)

    def _step(self) -> bool:
        """A turn of the live lane, then a chunk of the backlog; True if more is waiting."""
        if not self._online.wait(ONLINE_WAIT) or self._loop is None:
            raise NotOnline(f"no Sparkplug session on {self.settings.url}")
        if self._progress is None:
            self._progress = Progress.load(self._progress_path, self.spool.acked(self.name))
            # Known to the spool from now on, so it keeps what this lane still needs.
            self.spool.ack(self.name, self._progress.low)
        progress = self._progress
        births, backlog_end = self._births, self._backlog_end
        if self._lanes_of != births:
            self._lanes_of = births
            self._live = self._current(backlog_end) - 1
        before = progress.text()
        live = self._live_turn()
        rows = live + self._backlog_turn(backlog_end)
        if progress.text() != before:
            progress.save()
            self.spool.ack(self.name, progress.low)
        self.status.readings_total += rows
        self._report()
        return live >= LIVE_ROWS or progress.low < backlog_end

    def _due(self) -> bool:
        """A step when a session is born; meanwhile the backlog's figures, once a second."""
        if self._online.is_set():
            return True
        now = time.monotonic()
        if now - self._reported >= 1.0:
            self._reported = now
            self._report()
        return False

    def _failed(self) -> None:
        self._progress = None  # resume from what is saved
        self._lanes_of = -1
        self._report()

    def _report(self) -> None:
        """Backlog for health and metrics: readings not yet taken by the broker."""
        progress = self._progress
        low = self.spool.acked(self.name) if progress is None else progress.low
        readings, age = self.spool.backlog(low)
        for a, b in progress.ranges if progress is not None else []:
            readings -= self.spool.backlog(a - 1)[0] - self.spool.backlog(b)[0]
        self.status.backlog_readings, self.status.backlog_age_seconds = max(readings, 0), age

    def _current(self, backlog_end: int) -> int:
        """The first of the newest spool records (up to `backlog_end`) that together hold
        every device's last poll: the current readings, sent live at a birth."""
        assert self._progress is not None
        tail = [(seq, b) for seq, b in self.spool.read_after(
            max(backlog_end - 4 * len(self.devices) - 4, self._progress.low), LIVE_ROWS)
                if seq <= backlog_end]
        if not tail or tail[-1][0] != backlog_end:
            return backlog_end + 1  # none held (or not of one point list): live from now on
        device = self._map(self.spool.points_for(tail[0][0]))[0]
        every = set(np.unique(np.concatenate([device[b.point] for _, b in tail])).tolist())
        seen: set[int] = set()
        first = backlog_end + 1
        for seq, batch in reversed(tail):
            if seen >= every:
                break
            seen.update(np.unique(device[batch.point]).tolist())
            first = seq
        return first

    def _live_turn(self) -> int:
        """What came after the live lane's position (re-sent records of it left out)."""
        progress = self._progress
        assert progress is not None
        after = self._live
        entries = self.spool.read_after(after, LIVE_ROWS)
        if not entries:
            return 0
        unsent = [(q, b) for q, b in entries if not progress.has(q)]
        self._publish_entries(after, unsent, self.spool.points_for(entries[0][0]),
                              historical=False)
        progress.add(after + 1, entries[-1][0])
        self._live = entries[-1][0]
        return sum(len(b) for _, b in unsent)

    def _backlog_turn(self, backlog_end: int) -> int:
        """The oldest unsent records up to `backlog_end`, as historical."""
        progress = self._progress
        assert progress is not None
        after = progress.low
        if after >= backlog_end:
            return 0
        limit = min(backlog_end, progress.ranges[0][0] - 1 if progress.ranges else backlog_end)
        entries = [(q, b) for q, b in self.spool.read_after(after, BACKLOG_ROWS) if q <= limit]
        if entries:
            self._publish_entries(after, entries, self.spool.points_for(entries[0][0]),
                                  historical=True)
        # Up to `limit` when the read ended there or below it: records the spool dropped
        # (its bounds) are past sending.
        progress.add(after + 1, entries[-1][0] if entries else limit)
        return sum(len(b) for _, b in entries)

    def _publish_entries(self, after: int, entries: list[tuple[int, Batch]],
                         points: PointList | None, historical: bool) -> None:
        """Publish `entries` (spool records after `after`) as DDATA, one per device and
        record, and wait for the broker to take them all; raise if it does not (the lane
        starts again from what is saved).

        A record's DDATA are numbered record x MAX_DEVICES + device index, its last one
        MAX_DEVICES - 1 (a record with no readings of a device: one empty DDATA), so that
        each DDATA's (after, record] holds no record but its own, and a host can keep the
        numbers it has stored as ranges."""
        device, alias, boolean = self._map(points)
        now = _now_ms()
        messages = []
        previous = after * sp.MAX_DEVICES + sp.MAX_DEVICES - 1
        for seq, batch in entries:
            order = np.argsort(device[batch.point], kind="stable")
            devs = device[batch.point][order]
            starts = (np.flatnonzero(np.r_[True, devs[1:] != devs[:-1]]) if len(devs)
                      else np.empty(0, np.intp))
            parts = [(int(devs[a]), order[a:b])
                     for a, b in zip(starts, [*list(starts[1:]), len(devs)], strict=True)
                     if devs[a] >= 0]  # points no device polls (or gone from the site file)
            if not parts and self.devices:
                parts = [(0, np.empty(0, np.intp))]
            for i, (d, rows_of) in enumerate(parts):
                rows = batch.take(rows_of)
                slot = sp.MAX_DEVICES - 1 if i == len(parts) - 1 else d
                record = seq * sp.MAX_DEVICES + slot
                body = sp.device_data(record, rows, alias[rows.point], boolean[rows.point], now,
                                      historical, after=previous)
                previous = record
                messages.append((sp.topic(self.group, "DDATA", self.node, self.devices[d]),
                                 body))
        loop = self._loop
        assert loop is not None  # _step saw a session
        if messages:
            asyncio.run_coroutine_threadsafe(self._publish(messages), loop).result()

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
            sending = self._sending = asyncio.gather(*[
                client.publish(topic, sp.with_seq(self._next_seq(), body), qos=1,
                               timeout=PUBLISH_TIMEOUT)
                for topic, body in messages])
            try:
                await sending
            except asyncio.CancelledError:
                if self._client is not client:  # cancelled by the session's end
                    raise NotOnline("the Sparkplug session ended") from None
                raise
            finally:
                self._sending = None

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
                             keep_stepping(self.name, self._step, self._failed, self.status,
                                           idle=0.05, backoff=BACKOFF_MIN, wake=flush,
                                           due=self._due))

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
        if self._sending is not None:
            # What a dead connection was sending will not be taken: the next session's birth
            # (it waits for the lock) must not wait PUBLISH_TIMEOUT for it to fail.
            self._sending.cancel()

    async def _session(self) -> None:
        ep = self.settings.endpoint()
        bd = self._next_bd_seq()
        will = aiomqtt.Will(sp.topic(self.group, "NDEATH", self.node),
                            sp.node_death(bd, _now_ms()), qos=1)
        client = aiomqtt.Client(ep.host, ep.port, username=ep.username, password=ep.password,
                                identifier=f"scadawatch:{self.group}:{self.node}",
                                keepalive=ep.keepalive, tls_context=ep.tls, will=will,
                                clean_session=True, timeout=10)
        # A turn's DDATA go out at once (LIVE_ROWS readings at most): no warning for them.
        client.pending_calls_threshold = LIVE_ROWS
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
            self._backlog_end = self.spool.last_seq
            self._births += 1
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
