"""The InfluxDB sink: spooled readings written as line protocol, batched, gzipped, paced.

Schema: measurement `readings`; tag keys `site`, `zone`, `device`, `tag`, `kind`, `unit` (an
empty one is left out: line protocol has no empty tag value); fields `value` (float, absent
when the quality is bad or the value not finite), `quality` (integer 0 good, 1 uncertain,
2 bad), `cause` (integer, 0 when good), `server_ts` and `gateway_ts` (integer ns); timestamp =
source time in ns. A point's series key
is fixed by the site file and its timestamp by the device, so a batch re-sent after a crash
overwrites itself: at-least-once delivery from the spool is exactly-once in InfluxDB.

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
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import urllib3

from anomaly.batch import Batch, Quality
from gateway.config import HistorianSection, Point, Site
from gateway.spool import PointList, Spool
from gateway.status import SinkStatus

log = logging.getLogger(__name__)

MEASUREMENT = "readings"
TAG_KEYS = ("device", "kind", "site", "tag", "unit", "zone")  # sorted, as InfluxDB keys them
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


def series_prefixes(site: Site, points: Sequence[Point] | None = None) -> np.ndarray:
    """Per point of `points` (default: the site's), `readings,<tag set> ` (object array
    indexed like the batch's `point`)."""
    out = []
    for p in site.points if points is None else points:
        tags = {"site": site.site.name, "zone": p.zone or "", "device": p.device or "",
                "tag": p.tag, "kind": p.kind, "unit": p.unit}
        out.append(MEASUREMENT + "".join(f",{k}={escape_tag(tags[k])}"
                                          for k in TAG_KEYS if tags[k]) + " ")
    return np.array(out, dtype=object)


def line_protocol(prefixes: np.ndarray, batch: Batch) -> list[str]:
    """The lines of `batch`, in batch order. A reading without a finite value (bad, or NaN
    from the device) gets no `value` field: never a made-up number.

    One f-string per reading over columns turned into lists (~0.5 us a line); influxdb-client's
    `Point` costs ~6 us.
    """
    rows = zip(prefixes[batch.point].tolist(), batch.value.tolist(), batch.quality.tolist(),
               batch.cause.tolist(), batch.server_ts.tolist(), batch.gateway_ts.tolist(),
               batch.source_ts.tolist(), strict=True)
    if np.isfinite(batch.value).all() and not (batch.quality >= Quality.BAD).any():
        return [f"{p}value={v!r},quality={q}i,cause={c}i,server_ts={s}i,gateway_ts={g}i {t}"
                for p, v, q, c, s, g, t in rows]
    no_value = ((batch.quality >= Quality.BAD) | ~np.isfinite(batch.value)).tolist()
    return [f"{p}quality={q}i,cause={c}i,server_ts={s}i,gateway_ts={g}i {t}" if skip
            else f"{p}value={v!r},quality={q}i,cause={c}i,server_ts={s}i,gateway_ts={g}i {t}"
            for (p, v, q, c, s, g, t), skip in zip(rows, no_value, strict=True)]


class _Writer:
    """POSTs a body of line protocol; raises InfluxUnavailable, InfluxRejected, _LinesRefused."""

    def __init__(self, h: HistorianSection) -> None:
        self.h = h
        self.where = (f"InfluxDB at {h.url} (api {h.api}, "
                      + (f"bucket {h.bucket!r}, org {h.org!r})" if h.api == "v2"
                         else f"database {h.database!r})"))

    def post(self, body: bytes) -> None:
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
        self.http = urllib3.PoolManager(retries=False, timeout=h.timeout)
        self.fields = {"db": h.database, "precision": "ns"}
        if h.retention_policy:
            self.fields["rp"] = h.retention_policy
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if h.username:
            self.headers |= urllib3.make_headers(
                basic_auth=f"{h.username}:{os.environ.get(h.password_env, '')}")
        if h.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.url = h.url.rstrip("/") + "/write?" + urlencode(self.fields)

    def post(self, body: bytes) -> None:
        try:
            r = self.http.request("POST", self.url, body=body, headers=self.headers)
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

        # The body is gzipped here at level 1, as for v1: the client's own gzip uses level 9,
        # several times the CPU for a few percent fewer bytes.
        self.client = InfluxDBClient(url=h.url, token=os.environ.get(h.token_env, ""),
                                     org=h.org, timeout=int(h.timeout * 1000), retries=False)
        self.service = WriteService(self.client.api_client)
        self.headers = {"Content-Encoding": "gzip"} if h.gzip else {}

    def post(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException

        try:
            self.service.post_write(
                org=self.h.org, bucket=self.h.bucket, body=body, precision="ns",
                content_encoding=self.headers.get("Content-Encoding", "identity"),
                content_type="text/plain; charset=utf-8", async_req=False)
        except ApiException as e:
            raise self.fail(e.status or 0, (e.body or e.reason or "").__str__()) from None
        except urllib3.exceptions.HTTPError as e:
            raise InfluxUnavailable(f"{self.where}: unreachable: {e}") from None

    def close(self) -> None:
        self.client.close()


def writer(h: HistorianSection) -> _Writer:
    return _V2Writer(h) if h.api == "v2" else _V1Writer(h)


class LineWriter:
    """Writes lines of protocol to InfluxDB (gzipped when `[historian] gzip`); what InfluxDB
    refuses (another 4xx) is isolated by halving and quarantined to `quarantine` (logged,
    counted in `status`) while the rest is written. Raises InfluxUnavailable or
    InfluxRejected: the caller retries from its own cursor. Shared by the readings sink and
    the alarms writer (gateway.influx_alarms)."""

    def __init__(self, h: HistorianSection, status: SinkStatus, quarantine: Path) -> None:
        self.settings = h
        self.status = status
        self.quarantine = quarantine
        self.writer = writer(h)

    def probe(self) -> None:
        """Write nothing, which checks reachability, credentials and the database/bucket."""
        try:
            self.writer.post(gzip.compress(b"", 1) if self.settings.gzip else b"")
        except _LinesRefused as e:
            # An empty body is refused by some servers; what matters is it got past auth.
            log.debug("event=influx_probe status=%s", e)

    def encode(self, lines: list[str]) -> bytes:
        body = "\n".join(lines).encode()
        return gzip.compress(body, 1) if self.settings.gzip else body

    def send(self, lines: list[str], body: bytes | None = None) -> None:
        """Write `lines` (`body`: already encoded)."""
        try:
            self.writer.post(self.encode(lines) if body is None else body)
        except _LinesRefused as e:
            if len(lines) == 1:
                self._quarantine(lines, e.reason)
                return
            half = len(lines) // 2
            self.send(lines[:half])
            self.send(lines[half:])

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
    `gateway.catchup` (live lane first when behind, backlog paced to `max_rate`).

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
        self.prefixes = series_prefixes(site)
        self._generation_prefixes: dict[int, np.ndarray] = {}  # PointList.first_seq -> ...
        self.lines = LineWriter(self.settings, status,
                                site.site.data_dir / "influxdb-quarantine.lp")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="influx-write")
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
        prefixes = self._prefixes_of(points)
        size = self.settings.batch_size
        pending: Future[None] | None = None
        try:
            for a in range(0, len(batch), size):
                lines = line_protocol(prefixes, batch.take(slice(a, a + size)))
                body = self.lines.encode(lines)
                if paced:
                    self._pace(len(lines))
                if pending is not None:
                    pending.result()
                pending = self._pool.submit(self.lines.send, lines, body)
        except BaseException:
            if pending is not None:  # no write may outlive the store that failed
                wait([pending])
            raise
        if pending is not None:
            pending.result()

    def _prefixes_of(self, points: PointList | None) -> np.ndarray:
        if points is None:
            return self.prefixes
        prefixes = self._generation_prefixes.get(points.first_seq)
        if prefixes is None:
            prefixes = self._generation_prefixes[points.first_seq] = series_prefixes(
                self.site, points.points)
        return prefixes

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
