"""The InfluxDB sink: spooled readings written as line protocol, batched, gzipped, paced.

Schema, lean: InfluxDB's work per reading grows with the fields written (a field series per
point each) and with the bytes of the series key (parsed, hashed and logged with every value),
so a good reading is one field under a key as short as the peer's (Node-RED's flow):

- measurement: the point's kind (`pressure`, `flow`, `level`, `status`, `voltage`, `current`,
  `frequency`, `power`, `temperature`, `other`; `KINDS`);
- tag keys `device`, `tag`, `zone` (an absent one is left out: line protocol has no empty tag
  value); unit and description stay in the site file (the API's `/points`), and a database
  or bucket holds one site;
- timestamp: the source time. Fields:

- `value` (float): the reading, when it has a finite one and is not bad (never a made-up number);
- `quality` (integer: 1 uncertain, 2 bad; 0 for a good reading without a finite value) and
  `cause` (integer, the raw cause): only when the reading is not plainly good, so a good
  reading is one field, and a reading without `quality` is good;
- `server_ts` and `gateway_ts` (integer ns): only when `[historian] timestamp_fields` asks.

Each request is written at the coarsest precision (s, ms, us, ns) that holds every timestamp in
it exactly: never finer than the source stamped (Modbus readings are stamped to the ms), never
rounding one. A point's series key is fixed by the site file and its timestamp by the device, so
a batch re-sent after a crash overwrites itself: at-least-once delivery from the spool is
exactly-once in InfluxDB (in VictoriaMetrics only with `-dedup.minScrapeInterval=1ms`).

Two write APIs (`[historian] api`): `v2` posts to `/api/v2/write` through influxdb-client
(token, org, bucket); `v1` posts to `/write` (database, retention policy, user/password).

Errors: an unreachable server or a 5xx raises `InfluxUnavailable`, and the drain retries from
the spool cursor with backoff. 401/403/404 raise `InfluxRejected` with a message saying what
to fix (`probe()` reports it at start-up). Any other 4xx means some line was refused: the
batch is split in halves and re-sent until the refused lines stand alone; those are
quarantined (logged, counted, appended to a file) and the rest flows.
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, get_args
from urllib.parse import urlencode, urlsplit

import numpy as np
import urllib3

from anomaly.core.batch import Batch, Quality
from gateway.data_dir import INFLUX_QUARANTINE
from gateway.site.model import HistorianSection, Point, PointKind, Site
from gateway.status import SinkStatus
from gateway.storage.spool import PointList, Spool

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = get_args(PointKind)  # a measurement each
READINGS = "/^(" + "|".join(KINDS) + ")$/"  # InfluxQL: every measurement of readings
IN_FLIGHT = 2  # write requests at once: InfluxDB works on one while it syncs the other
# Sorted, as InfluxDB keys them; `site` only where one database holds many sites (the
# central's), left out of a gateway's lines.
TAG_KEYS = ("device", "site", "tag", "zone")
# A backslash before anything else is taken as is: it needs no escape.
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


class InfluxError(Exception):
    """InfluxDB cannot take the writes; the message says why and what to check."""


class InfluxUnavailable(InfluxError):
    """Unreachable, timed out, or a server error (5xx): worth retrying as is."""


class InfluxRejected(InfluxError):
    """Credentials, permissions, or database/bucket refused (401/403/404)."""


class _LinesRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.reason = reason


def escape_tag(text: str) -> str:
    return text.translate(_TAG_ESCAPES)


@dataclass(frozen=True)
class SeriesKeys:
    """Per point, its series key written as `head + tag + tail`: `<kind>,<tag keys before
    tag>,tag=`, the escaped tag, `<tag keys after it> ` (object arrays indexed like a batch's
    `point`). Heads and tails are shared by the points that have them alike (a device's
    points, a zone's), so 50,000 points cost ~1 MB, where whole keys cost 5 MB."""

    head: np.ndarray
    tag: np.ndarray
    tail: np.ndarray

    @classmethod
    def of(cls, site: Site, points: Sequence[Point] | None = None,
           site_tag: str | None = None) -> SeriesKeys:
        """The keys of `points` (default: the site's), with `site=<site_tag>` if given."""
        shared: dict[str, str] = {}
        head, tag, tail = [], [], []
        for p in site.points if points is None else points:
            labels = {"zone": p.zone, "device": p.device, "site": site_tag}
            parts = [f",{k}={escape_tag(v)}" if (v := labels.get(k)) else "" for k in TAG_KEYS]
            cut = TAG_KEYS.index("tag")
            text = p.kind + "".join(parts[:cut]) + ",tag="
            head.append(shared.setdefault(text, text))
            escaped = escape_tag(p.tag)
            tag.append(p.tag if escaped == p.tag else escaped)
            text = "".join(parts[cut + 1:]) + " "
            tail.append(shared.setdefault(text, text))
        return cls(*(np.array(column, dtype=object) for column in (head, tag, tail)))


class Precision(NamedTuple):
    """A timestamp precision of line protocol, as each write API names it."""

    v2: str
    v1: str
    ns: int  # nanoseconds per unit


PRECISIONS = (Precision("s", "s", 10**9), Precision("ms", "ms", 10**6),
              Precision("us", "u", 10**3), Precision("ns", "n", 1))  # coarsest first
NS = PRECISIONS[-1]


def precision_of(ts: np.ndarray) -> Precision:
    """The coarsest precision that holds every timestamp of `ts` exactly."""
    for precision in PRECISIONS[:-1]:
        # The first stamp rules most out at the cost of one division, not one per stamp.
        if len(ts) and not ts[0] % precision.ns and not (ts % precision.ns).any():
            return precision
    return NS


def line_protocol(keys: SeriesKeys, batch: Batch, unit: int = 1,
                  timestamp_fields: Sequence[str] = ()) -> list[str]:
    """The lines of `batch`, in batch order, timestamps in `unit` ns (they must be whole
    multiples of it); `timestamp_fields`: "server", "gateway" (written as `<name>_ts`).

    One f-string per reading over columns turned into lists; influxdb-client's `Point` costs
    ~10x more. A good reading is `value=` alone.
    """
    head, tag, tail = (column[batch.point].tolist() for column in (keys.head, keys.tag, keys.tail))
    ts = (batch.source_ts // unit if unit > 1 else batch.source_ts).tolist()
    has_value = np.isfinite(batch.value) & (batch.quality < Quality.BAD)
    flagged = (batch.quality != Quality.GOOD) | ~has_value
    if not timestamp_fields and not flagged.any():
        return [f"{h}{g}{e}value={v!r} {t}" for h, g, e, v, t in zip(
            head, tag, tail, batch.value.tolist(), ts, strict=True)]
    columns = [
        [f"value={v!r}" if ok else "" for v, ok in zip(batch.value.tolist(), has_value.tolist(),
                                                        strict=True)],
        [f"quality={q}i,cause={c}i" if f else "" for q, c, f in zip(
            batch.quality.tolist(), batch.cause.tolist(), flagged.tolist(), strict=True)],
        *([f"{name}_ts={s}i" for s in getattr(batch, f"{name}_ts").tolist()]
          for name in timestamp_fields)]
    return [f"{h}{g}{e}{','.join(f for f in fields if f)} {t}"
            for h, g, e, t, *fields in zip(head, tag, tail, ts, *columns, strict=True)]


class _Writer:
    """POSTs a body of line protocol; raises InfluxUnavailable, InfluxRejected, _LinesRefused."""

    def __init__(self, h: HistorianSection) -> None:
        self.h = h
        self.where = (f"InfluxDB at {h.url} (api {h.api}, "
                      + (f"bucket {h.bucket!r}, org {h.org!r})" if h.api == "v2"
                         else f"database {h.database!r})"))

    def post(self, body: bytes, precision: Precision) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def fail(self, status: int, reason: str) -> Exception:
        reason = reason.strip()[:300]
        if status in (401, 403):
            credentials = (f"the token in ${self.h.token_env}" if self.h.api == "v2"
                           else f"user {self.h.username!r} and the password in "
                                f"${self.h.password_env}")
            return InfluxRejected(f"{self.where}: HTTP {status}, credentials refused: check "
                                  f"{credentials} ({reason})")
        if status == 404:
            what = "bucket/org" if self.h.api == "v2" else "database"
            return InfluxRejected(f"{self.where}: HTTP 404, {what} not found: create it or fix "
                                  f"[historian] ({reason})")
        if status >= 500 or status in (408, 429):
            return InfluxUnavailable(f"{self.where}: HTTP {status}: {reason}")
        return _LinesRefused(status, reason)


class _V1Writer(_Writer):
    def __init__(self, h: HistorianSection) -> None:
        super().__init__(h)
        self.http = urllib3.PoolManager(retries=False, timeout=h.timeout, maxsize=IN_FLIGHT)
        fields = {"db": h.database}
        if h.retention_policy:
            fields["rp"] = h.retention_policy
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if h.username:
            self.headers |= urllib3.make_headers(
                basic_auth=f"{h.username}:{os.environ.get(h.password_env, '')}")
        if compresses(h):
            self.headers["Content-Encoding"] = "gzip"
        self.urls = {p: h.url.rstrip("/") + "/write?" + urlencode(fields | {"precision": p.v1})
                     for p in PRECISIONS}

    def post(self, body: bytes, precision: Precision) -> None:
        try:
            r = self.http.request("POST", self.urls[precision], body=body, headers=self.headers)
        except urllib3.exceptions.HTTPError as e:
            raise InfluxUnavailable(f"{self.where}: unreachable: {e}") from None
        if r.status >= 300:
            raise self.fail(r.status, r.data.decode(errors="replace"))

    def close(self) -> None:
        self.http.clear()


class _V2Writer(_Writer):
    def __init__(self, h: HistorianSection) -> None:
        super().__init__(h)
        from influxdb_client import InfluxDBClient
        from influxdb_client.service.write_service import WriteService

        # A body to compress is gzipped here at level 1, as for v1: the client's own gzip uses
        # level 9, several times the CPU for a few percent fewer bytes.
        self.client = InfluxDBClient(url=h.url, token=os.environ.get(h.token_env, ""),
                                     org=h.org, timeout=int(h.timeout * 1000), retries=False)
        self.service = WriteService(self.client.api_client)
        self.headers = {"Content-Encoding": "gzip"} if compresses(h) else {}

    def post(self, body: bytes, precision: Precision) -> None:
        from influxdb_client.rest import ApiException

        try:
            self.service.post_write(
                org=self.h.org, bucket=self.h.bucket, body=body, precision=precision.v2,
                content_encoding=self.headers.get("Content-Encoding", "identity"),
                content_type="text/plain; charset=utf-8", async_req=False)
        except ApiException as e:
            raise self.fail(e.status or 0, (e.body or e.reason or "").__str__()) from None
        except urllib3.exceptions.HTTPError as e:
            raise InfluxUnavailable(f"{self.where}: unreachable: {e}") from None

    def close(self) -> None:
        self.client.close()


def compresses(h: HistorianSection) -> bool:
    """Whether write bodies are gzipped: `[historian] gzip`, by default when they cross a
    network. On the same host, compressing costs the gateway and InfluxDB CPU (~0.4 us a
    line each side, as much as building it) and saves nothing; over a link, it cuts the
    bytes ~7x (100k readings/s: 90 Mbit/s -> 13)."""
    if h.gzip is not None:
        return h.gzip
    host = urlsplit(h.url).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: assume it is another machine
        return True


def writer(h: HistorianSection) -> _Writer:
    return _V2Writer(h) if h.api == "v2" else _V1Writer(h)


class LineWriter:
    """Writes lines of protocol to InfluxDB (gzipped: `compresses()`); what InfluxDB
    refuses (another 4xx) is isolated by halving and quarantined to `quarantine` (logged,
    counted in `status`) while the rest is written. Raises InfluxUnavailable or
    InfluxRejected: the caller retries from its own cursor. Shared by the readings sink and
    the alarms writer (gateway.alarms.annotations)."""

    def __init__(self, h: HistorianSection, status: SinkStatus, quarantine: Path) -> None:
        self.settings = h
        self.status = status
        self.quarantine = quarantine
        self.writer = writer(h)
        self.gzip = compresses(h)

    def probe(self) -> None:
        """Write nothing, which checks reachability, credentials and the database/bucket."""
        try:
            self.writer.post(self.encode([]), NS)
        except _LinesRefused as e:
            # An empty body is refused by some servers; what matters is it got past auth.
            log.debug("event=influx_probe status=%s", e)

    def encode(self, lines: list[str]) -> bytes:
        body = "\n".join(lines).encode()
        return gzip.compress(body, 1) if self.gzip else body

    def send(self, lines: list[str], precision: Precision = NS,
             body: bytes | None = None) -> None:
        """Write `lines`, their timestamps in `precision` (`body`: already encoded)."""
        try:
            self.writer.post(self.encode(lines) if body is None else body, precision)
        except _LinesRefused as e:
            if len(lines) == 1:
                self._quarantine(lines, f"{e.reason} (precision {precision.v2})")
                return
            half = len(lines) // 2
            self.send(lines[:half], precision)
            self.send(lines[half:], precision)

    def _quarantine(self, lines: list[str], reason: str) -> None:
        self.status.quarantined_total += len(lines)
        log.error("event=influx_quarantined sink=%s lines=%d reason=%r file=%s first=%r",
                  self.status.name, len(lines), reason, self.quarantine, lines[0][:200])
        self.quarantine.parent.mkdir(parents=True, exist_ok=True)
        with self.quarantine.open("a", encoding="utf-8") as f:
            f.write(f"# {reason}\n" + "\n".join(lines) + "\n")

    def close(self) -> None:
        self.writer.close()


class InfluxSink:
    """A spool sink (`name`, `cursor`, `store`) writing to InfluxDB, drained by
    `gateway.storage.influxdb.catchup` (live lane first when behind, backlog paced to `max_rate`).

    Its cursor is its spool ack, the low-water mark of what InfluxDB holds; records stored
    above it (by the live lane) are re-sent after a crash and overwrite themselves. The pace
    keeps a catch-up from flooding InfluxDB (which serves the control room too) and from
    taking the gateway's CPU: polling runs on the event loop and never waits for this sink.
    """

    name = "influxdb"

    def __init__(self, site: Site, spool: Spool, status: SinkStatus) -> None:
        self.settings = site.historian
        self.spool = spool
        self.status = status
        self.site = site
        # Per point list (PointList.first_seq; -1: the site's), built on first use.
        self._keys: dict[int, SeriesKeys] = {}
        self.lines = LineWriter(self.settings, status,
                                site.site.data_dir / INFLUX_QUARANTINE)
        self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="influx-write")
        self._next_slot = time.monotonic()

    def cursor(self) -> int:
        return self.spool.acked(self.name)

    def probe(self) -> None:
        self.lines.probe()

    def store(self, entries: list[tuple[int, Batch]], points: PointList | None = None, *,
              paced: bool = True) -> None:
        """Write the entries' readings in requests of `batch_size` lines; each request's
        lines are built and gzipped while the previous one is in flight (InfluxDB works on
        another core meanwhile). Returns once all are written; raises if any failed.

        `points`: the list the batches' point indices refer to (None: the site's). `paced`
        holds the writes to `max_rate` readings/s."""
        batch = Batch.concat([b for _, b in entries])
        keys = self._keys_of(points)
        size = self.settings.batch_size
        extra = self.settings.timestamp_fields
        pending: deque[Future[None]] = deque()
        try:
            for a in range(0, len(batch), size):
                part = batch.take(slice(a, a + size))
                precision = precision_of(part.source_ts)
                lines = line_protocol(keys, part, precision.ns, extra)
                body = self.lines.encode(lines)
                if paced:
                    self._pace(len(lines))
                if len(pending) == IN_FLIGHT:
                    pending.popleft().result()
                pending.append(self._pool.submit(self.lines.send, lines, precision, body))
            while pending:
                pending.popleft().result()
        except BaseException:
            wait(pending)  # no write may outlive the store that failed
            raise

    def _keys_of(self, points: PointList | None) -> SeriesKeys:
        generation = -1 if points is None else points.first_seq
        keys = self._keys.get(generation)
        if keys is None:
            keys = self._keys[generation] = SeriesKeys.of(
                self.site, None if points is None else points.points)
        return keys

    def _pace(self, n: int) -> None:
        """Hold each write until its slot: at most `max_rate` readings per second on average."""
        now = time.monotonic()
        wait = self._next_slot - now
        self._next_slot = max(self._next_slot, now) + n / self.settings.max_rate
        if wait > 0:
            time.sleep(wait)

    def close(self) -> None:
        self._pool.shutdown()
        self.lines.close()
