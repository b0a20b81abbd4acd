"""The Sparkplug B primary host application: STATE, births and deaths, data into per-site
historians, alarm transitions into one multi-site alarm list, a `comms` alarm per dead site.

Sites are edge nodes of the `[central] group`; the site dimension is a prefix: a site's tag
`t` is `<node>/t` at the centre (and so are zones and devices), its alarm ids `<node>:<id>`.
A DDATA is stored once by its `scadawatch/record` number: the numbers a site's historian holds
are kept as ranges (each DDATA's `scadawatch/after` says none lies between it and the one
before it in its lane), committed in the same transaction as the readings, so the re-sends a
gateway makes after a broker outage or a crash are dropped though its backlog arrives after
the live data that followed it. The historian files readings whatever their order (a query
answers in source-time order; `latest` is not moved back by a late one). The host's own MQTT
session is persistent (clean session off): what the sites publish while the host reconnects
waits at the broker for it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import aiomqtt

from anomaly.core.alarms import Alarm, AlarmEvent
from anomaly.core.batch import Batch
from central.config import CentralFile
from central.influx import CentralInflux
from central.links import SiteLink
from gateway.alarms.store import AlarmStore, Filter
from gateway.data_dir import INFLUX_QUARANTINE, store_path, write_atomically
from gateway.northbound.sparkplug import payloads as sp
from gateway.northbound.sparkplug.reconnect import keep_connected
from gateway.status import SinkStatus
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.influxdb.catchup import Progress
from gateway.storage.spool import PointList

log = logging.getLogger(__name__)

# A DDATA as the host keeps it until stored: record number, the one before it, readings, and
# the point list its indices refer to.
Received = tuple[int | None, int | None, Batch, PointList]
FLUSH_INTERVAL = 0.2  # seconds between stores of what came (one transaction per site)
REBIRTH_EVERY = 5.0  # seconds between two rebirth requests to one node
OPENERS = 4  # threads creating site historians


def historian_file(data_dir: Path, node: str) -> Path:
    return data_dir / "sites" / node / "historian.sqlite"


def progress_file(data_dir: Path, node: str) -> Path:
    """The record ranges stored of a site whose readings go to InfluxDB (central/influx.py)."""
    return data_dir / "sites" / node / "progress.json"


def births_file(data_dir: Path, node: str) -> Path:
    """A site's last NBIRTH and DBIRTHs as received, and whether it was online: what the centre
    decodes its data with after a restart, until the site is born again."""
    return data_dir / "sites" / node / "births.json"


def _ns(iso: str | None) -> int | None:
    if iso is None:
        return None
    return int(datetime.fromisoformat(iso).timestamp() * 1e9)


def _alarm(a: dict) -> Alarm:
    """An alarm as the API shows it (`Alarm.to_json` and more) back as an Alarm."""
    return Alarm(id=a["id"], kind=a["kind"], tag=a["tag"], zone=a["zone"],
                 start_ns=_ns(a["start"]) or 0, end_ns=_ns(a["end"]), priority=a["priority"],
                 message=a["message"], tags=tuple(a.get("tags") or ()), device=a.get("device"),
                 value=a.get("value"), limit=a.get("limit"), details=a.get("details") or {})


def prefixed(node: str, name: str | None) -> str | None:
    return None if name is None else f"{node}/{name}"


class Central:
    """The host: `run()` keeps the MQTT session and files what arrives until cancelled."""

    def __init__(self, config: CentralFile) -> None:
        self.config = config
        self.settings = config.central
        self.data_dir = config.site.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.alarms = AlarmStore(store_path(self.data_dir))
        self.links: dict[str, SiteLink] = {}
        self.historians: dict[str, EmbeddedHistorian] = {}
        self.status = SinkStatus(name="sparkplug")
        self.influx = (CentralInflux(config.historian, self.status,
                                     self.data_dir / INFLUX_QUARANTINE)
                       if config.historian.kind == "influxdb" else None)
        self.connected = False
        self.on_points: list[Callable[[], None]] = []  # told when a site's point list changes
        self._pending: dict[str, list[Received]] = defaultdict(list)
        self.stored: dict[str, Progress] = {}  # per site: the record numbers stored
        self._events: list[AlarmEvent] = []
        self._points_changed = False
        self.served: set[str] = set()  # sites whose historian has been stored to: the API's
        self._rebirth_asked: dict[str, float] = {}
        self._births: dict[str, dict[str, str]] = {}  # per site: "" NBIRTH, devices' DBIRTH
        self._unheard: set[str] = set()  # sites known from disk, not yet born to this run
        self._comms: dict[str, Alarm] = {}  # open comms alarm per site
        self._client: aiomqtt.Client | None = None
        self._opener = ThreadPoolExecutor(OPENERS, thread_name_prefix="historian-open")
        self._storer = ThreadPoolExecutor(1, thread_name_prefix="central-store")
        self._open_lock = threading.Lock()
        self._opened: dict[str, Future[EmbeddedHistorian | None]] = {}
        for path in sorted((self.data_dir / "sites").glob("*/*")):
            if path.name in ("historian.sqlite", "progress.json"):
                self._historian(path.parent.name)  # what is stored already
        for path in sorted((self.data_dir / "sites").glob("*/births.json")):
            self._restore(path.parent.name, path)
        # Comms alarms open when the centre last stopped: cleared by their site's next birth.
        for a in self.alarms.alarms(Filter(states=("active",), kind="comms",
                                           shelved=None, suppressed=None), limit=100_000)[0]:
            self._comms[a["device"]] = _alarm(a)

    def _opening(self, node: str) -> Future[EmbeddedHistorian | None]:
        """The site's historian, opened (created) in the opener's threads: creating a
        database file takes ~40 ms (its syncs), which neither the message loop nor the
        storing thread should wait for a thousand sites in turn."""
        with self._open_lock:
            if node not in self._opened:
                self._opened[node] = self._opener.submit(self._open, node)
            return self._opened[node]

    def _historian(self, node: str) -> EmbeddedHistorian | None:
        """The site's embedded historian (None: its readings go to InfluxDB)."""
        return self._opening(node).result()

    def _open(self, node: str) -> EmbeddedHistorian | None:
        path = historian_file(self.data_dir, node)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.influx is not None:
            self.stored[node] = Progress.load(progress_file(self.data_dir, node), 0)
            return None
        h = self.historians[node] = EmbeddedHistorian(path, [])
        sender = h.sender()
        # A historian filed before the ranges holds every record up to its cursor.
        self.stored[node] = Progress.of_text(path, sender, 0 if sender else h.cursor())
        return h

    def _restore(self, node: str, path: Path) -> None:
        """The births the site last sent, so that its data queued at the broker while the
        centre was down decode; the site is asked for a rebirth as soon as the centre is
        connected."""
        try:
            saved = json.loads(path.read_text())
            births = {k: base64.b64decode(v) for k, v in saved["births"].items()}
            link = self._link(node)
            link.node_birth(sp.parse(births.pop("")), int(saved["born_ns"]))
            for device, raw in births.items():
                link.device_birth(device, sp.parse(raw))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("event=central_births_unreadable site=%s path=%s error=%r", node, path,
                        str(e))
            self.links.pop(node, None)
            return
        link.online = bool(saved["online"])
        link.next_seq = None  # not this run's session: its first message asks for a rebirth
        self._births[node] = saved["births"]
        self._unheard.add(node)
        if node in self.stored:  # stored to before
            self.served.add(node)

    def _save_births(self, node: str, kind: str, raw: bytes, device: str = "") -> None:
        link = self.links[node]
        if kind == "NBIRTH":
            self._births[node] = {}
        if kind != "NDEATH":
            self._births[node][device] = base64.b64encode(raw).decode()
        if "" not in self._births.get(node, {}):
            return  # births of a session whose NBIRTH this run has not seen
        path = births_file(self.data_dir, node)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({"online": link.online, "born_ns": link.born_ns,
                                           "births": self._births[node]}).encode(),
                         durable=False)

    def _link(self, node: str) -> SiteLink:
        if node not in self.links:
            self.links[node] = SiteLink(node=node)
        return self.links[node]

    # --- MQTT ----------------------------------------------------------------------------

    async def run(self) -> None:
        flusher = asyncio.create_task(self._flush_forever())
        try:
            await keep_connected(self._session, self.status, self._ended,
                                 "central_disconnected", url=self.settings.url)
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await self._flush()

    def _ended(self) -> None:
        self.connected = False
        self._client = None

    async def _session(self) -> None:
        s = self.settings
        ep = s.endpoint()
        state = sp.state_topic(s.host_id)
        now = time.time_ns() // 1_000_000
        will = aiomqtt.Will(state, sp.state_payload(False, now), qos=1, retain=True)
        stopping = False
        async with aiomqtt.Client(ep.host, ep.port, username=ep.username, password=ep.password,
                                  identifier=f"scadawatch-central:{s.host_id}",
                                  keepalive=ep.keepalive, tls_context=ep.tls, will=will,
                                  clean_session=False, timeout=10) as client:
            self._client = client
            await client.subscribe(f"{sp.NAMESPACE}/{s.group}/#", qos=1)
            await client.publish(state, sp.state_payload(True, now), qos=1, retain=True)
            self.connected = True
            self.status.cause = None
            log.info("event=central_connected url=%s group=%s host_id=%s", s.url, s.group,
                     s.host_id)
            for node in sorted(self._unheard):  # known from before a restart: births again
                await self._ask_rebirth(node)
            try:
                async for message in client.messages:
                    await self._take(message)
            except asyncio.CancelledError:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    await client.publish(state, sp.state_payload(False, now), qos=1,
                                         retain=True, timeout=2)
                stopping = True
        if stopping:
            # What the client took from the broker before the disconnect (and acknowledged:
            # the broker will not send it again) is filed now, or it would be lost.
            while len(client.messages):
                await self._take(await anext(client.messages))
            raise asyncio.CancelledError

    async def _take(self, message: aiomqtt.Message) -> None:
        raw = message.payload if isinstance(message.payload, bytes) else b""
        try:
            await self.handle(str(message.topic), raw)
        except Exception:  # one site's odd message must not stop the others'
            log.exception("event=central_message_error topic=%s bytes=%d", message.topic,
                          len(raw))

    async def _ask_rebirth(self, node: str) -> None:
        now = time.monotonic()
        if self._client is None or now - self._rebirth_asked.get(node, -1e9) < REBIRTH_EVERY:
            return
        self._rebirth_asked[node] = now
        command = sp.Payload(timestamp=time.time_ns() // 1_000_000)
        command.metrics.add(name=sp.REBIRTH, datatype=sp.BOOLEAN, boolean_value=True)
        log.info("event=central_rebirth_request node=%s", node)
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await self._client.publish(sp.topic(self.settings.group, "NCMD", node),
                                       command.SerializeToString(), qos=1, timeout=5)

    # --- messages ------------------------------------------------------------------------

    async def handle(self, topic: str, raw: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != sp.NAMESPACE or parts[2] in ("NCMD", "DCMD"):
            return
        kind, node = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        try:
            payload = sp.parse(raw)
        except Exception:
            log.warning("event=central_bad_payload topic=%s bytes=%d", topic, len(raw))
            return
        now = time.time_ns()
        link = self._link(node)
        if kind == "NBIRTH":
            self._opening(node)
            link.node_birth(payload, now)
            self._unheard.discard(node)
            self._save_births(node, kind, raw)
            self._clear_comms(node, now)
            log.info("event=site_born site=%s bdseq=%s", node, link.bd_seq)
            return
        if kind == "NDEATH":
            if link.node_death(payload, now):
                log.warning("event=site_died site=%s bdseq=%s", node, link.bd_seq)
                self._save_births(node, kind, raw)
                self._raise_comms(link, now)
            return
        if not link.online:  # no births to decode it with
            await self._ask_rebirth(node)
            return
        if node in self._unheard:  # births from before the centre's restart: ask again
            await self._ask_rebirth(node)
        elif not link.in_sequence(payload):
            log.warning("event=site_seq_gap site=%s seq=%d", node, payload.seq)
            await self._ask_rebirth(node)
        if kind == "DBIRTH" and device is not None:
            link.device_birth(device, payload)
            self._save_births(node, kind, raw, device)
            self._points_changed = True
        elif kind == "DDATA" and device is not None:
            if device not in link.devices:
                await self._ask_rebirth(node)
                return
            self._pending[node].append((*link.device_data(device, payload, now),
                                        link.point_list))
        elif kind == "NDATA":
            self._alarm_metrics(node, payload)

    def _alarm_metrics(self, node: str, payload: sp.Payload) -> None:
        for m in payload.metrics:
            if m.name != sp.ALARM or m.is_null:
                continue
            try:
                t = json.loads(m.string_value)
                a = _alarm(t["alarm"])
                alarm = dataclasses.replace(
                    a, id=f"{node}:{a.id}", tag=prefixed(node, a.tag), zone=prefixed(node, a.zone),
                    device=prefixed(node, a.device), message=f"{node}: {a.message}",
                    tags=tuple(f"{node}/{x}" for x in a.tags))
                self._events.append(AlarmEvent(action=t["transition"], alarm=alarm))
            except (ValueError, KeyError, TypeError) as e:
                log.warning("event=central_bad_alarm site=%s error=%r", node, str(e))

    def _raise_comms(self, link: SiteLink, now: int) -> None:
        if link.node in self._comms:
            return
        alarm = Alarm(id=f"{link.node}:comms:{now}", kind="comms", tag=None, zone=None,
                      start_ns=now, end_ns=None, priority=self.settings.comms_priority,
                      device=link.node,
                      message=f"site {link.node} is cut off from the control room (its "
                      f"gateway or its link to the broker is down); its readings wait in its "
                      f"spool and arrive when it is back")
        self._comms[link.node] = alarm
        self._events.append(AlarmEvent(action="raise", alarm=alarm))

    def _clear_comms(self, node: str, now: int) -> None:
        alarm = self._comms.pop(node, None)
        if alarm is not None:
            self._events.append(AlarmEvent(action="clear",
                                           alarm=dataclasses.replace(alarm, end_ns=now)))

    # --- storing -------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._flush()

    async def _flush(self) -> None:
        """Store what came since the last flush, in a thread. Taken here, on the loop that
        appends: a swap in the thread could take a list while a message is appended to it."""
        pending, self._pending = self._pending, defaultdict(list)
        events, self._events = self._events, []
        try:
            await self._run_store(pending, events)
        except Exception as e:
            # Kept for the next flush, ahead of what comes meanwhile; what was stored is
            # skipped then by its record number (a full disk, a locked file: retried).
            for node, entries in pending.items():
                self._pending[node][:0] = entries
            self._events[:0] = events
            self.status.errors_total += 1
            self.status.last_error = f"{type(e).__name__}: {e}"
            log.exception("event=central_store_error")

    async def _run_store(self, pending: dict[str, list[Received]],
                         events: list[AlarmEvent]) -> None:
        # One storing thread: stores stay in order even when a cancelled flush leaves one
        # running (a later one must not store its records first: the earlier would look
        # like re-sends).
        await asyncio.get_running_loop().run_in_executor(self._storer, self._store, pending,
                                                         events)

    def _store(self, pending: dict[str, list[Received]], events: list[AlarmEvent]) -> None:
        """The alarm transitions, then each site's readings in one transaction (or InfluxDB
        write) per point list."""
        if events:
            # First, and taken from the list once applied: an historian failing (InfluxDB
            # down) neither holds the alarm list back nor has them applied twice.
            self.alarms.apply(events)
            events.clear()
        for node, received in pending.items():
            historian = self._historian(node)
            link = self.links[node]
            groups, dropped = _new_records(self.stored[node], received)
            for entries, points, stored in groups:
                if historian is not None:
                    # The historian's own cursor counts stores: the ranges say what is held.
                    historian.store([(historian.cursor() + 1, Batch.concat(entries))], points,
                                    sender=stored.text())
                else:
                    assert self.influx is not None
                    self.influx.store(node, Batch.concat(entries), points)
                    stored.save()
                self.stored[node] = stored
            link.duplicates_total += dropped
            if node not in self.served:
                self.served.add(node)
                self._points_changed = True
            rows = sum(len(b) for entries, _, _ in groups for b in entries)
            link.readings_total += rows
            self.status.readings_total += rows
        if self._points_changed:
            self._points_changed = False
            for listener in self.on_points:
                try:
                    listener()
                except Exception:  # the API keeps its points; storing goes on
                    log.exception("event=central_points_listener_error")

    def close(self) -> None:
        self._storer.shutdown(wait=True)
        self._opener.shutdown(wait=True)
        for h in self.historians.values():
            h.close()
        if self.influx is not None:
            self.influx.close()
        self.alarms.close()


def _new_records(stored: Progress, received: list[Received]
                 ) -> tuple[list[tuple[list[Batch], PointList, Progress]], int]:
    """What of `received` is not stored yet, in runs of one point list, each with the ranges
    stored once it is; and how many DDATA were dropped as stored already (re-sent)."""
    seen = stored.copy()
    groups: list[tuple[list[Batch], PointList, Progress]] = []
    dropped = 0
    for record, after, batch, points in received:
        high = seen.ranges[-1][1] if seen.ranges else seen.low
        if record is None:  # another make of edge node: its DDATA in order, stored as next
            record = high + 1
        if seen.has(record):
            dropped += 1
            continue
        if after is not None and after < record:
            seen.add(after + 1, record)
        else:  # no lane (another make): in order, or on its own
            seen.add(high + 1 if record > high else record, record)
        batches = groups.pop()[0] if groups and groups[-1][1] is points else []
        groups.append(([*batches, batch], points, seen.copy()))
    return groups, dropped
