"""Reading history back from InfluxDB with InfluxQL over `/query`: a `HistorianReader`.

`/query` is InfluxDB 1.x's API, 2.x's v1 compatibility endpoint (database = bucket mapped by
a DBRP, token auth) and 3.x's InfluxQL endpoint. Results come chunked (one JSON document per
chunk), so a long range never needs one huge response.

The schema is gateway.storage.influxdb.sink's: a point's readings are in the measurement of its
kind, under its tag; a reading without `quality` is good, without `cause` has none, and without
`server_ts`/`gateway_ts` was stamped only at the source. (Readings written before, in
measurement `readings`, are read once copied over: docs/gateway.md, "Migrating".)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from urllib.parse import urlencode

import numpy as np
import urllib3

from anomaly.core.batch import Batch, Quality
from gateway.site.model import Site
from gateway.site.tag_index import TagIndex
from gateway.storage.historian import Buckets
from gateway.storage.influxdb.sink import READINGS, InfluxError, InfluxUnavailable

CHUNK_ROWS = 10_000
FIELDS = ("value", "quality", "cause", "server_ts", "gateway_ts")
AGGREGATES = ("count", "mean", "min", "max", "first", "last")


def quote_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxReader:
    """Latest, raw history and buckets of the site's points, as the embedded historian gives
    them: `point` in the returned batches is the tag's position in `tags`. `site_tag`: only
    the readings written with that `site` tag (the central's database holds many sites)."""

    def __init__(self, site: Site, site_tag: str | None = None) -> None:
        h = site.historian
        self._site = "" if site_tag is None else f'"site" = {quote_string(site_tag)}'
        self._points = site.points
        self.tags = [p.tag for p in site.points]
        self._position = TagIndex(self.tags)
        self.url = h.url.rstrip("/") + "/query"
        self.params = {"db": h.database if h.api == "v1" else h.bucket, "epoch": "ns",
                       "chunked": "true", "chunk_size": str(CHUNK_ROWS)}
        if h.api == "v1" and h.retention_policy:
            self.params["rp"] = h.retention_policy
        self.headers = {"Accept-Encoding": "gzip"}
        if h.api == "v2":
            self.headers["Authorization"] = f"Token {os.environ.get(h.token_env, '')}"
        elif h.username:
            self.headers |= urllib3.make_headers(
                basic_auth=f"{h.username}:{os.environ.get(h.password_env, '')}")
        self.http = urllib3.PoolManager(retries=False, timeout=h.timeout)

    def _query(self, q: str) -> list[dict]:
        """The series of `q`'s result (all chunks)."""
        try:
            r = self.http.request("GET", self.url + "?" + urlencode({**self.params, "q": q}),
                                  headers=self.headers)
        except urllib3.exceptions.HTTPError as e:
            raise InfluxUnavailable(f"InfluxDB at {self.url}: unreachable: {e}") from None
        if r.status != 200:
            raise InfluxError(f"InfluxDB at {self.url}: HTTP {r.status}: "
                              f"{r.data.decode(errors='replace')[:300]}")
        series: list[dict] = []
        for line in r.data.splitlines():
            if not line.strip():
                continue
            for result in json.loads(line).get("results", []):
                if "error" in result:
                    raise InfluxError(f"InfluxDB at {self.url}: {result['error']} (query {q})")
                series += result.get("series", [])
        return series

    def _from(self, tag: str | None = None) -> str:
        """The measurements of `tag`'s readings (all the site's if None)."""
        if tag is None:
            return ",".join(f'"{k}"' for k in sorted({p.kind for p in self._points})) or READINGS
        i = self._position.get(tag)
        return READINGS if i is None else f'"{self._points[i].kind}"'

    def _where(self, tag: str) -> str:
        return f'"tag" = {quote_string(tag)}' + (f" AND {self._site}" if self._site else "")

    def _rows(self, series: list[dict], columns: Sequence[str]) -> dict[str, list]:
        """Columns of the rows of every series in `series`, by name, None where null."""
        out: dict[str, list] = {c: [] for c in columns}
        for s in series:
            index = [s["columns"].index(c) for c in columns]
            for row in s.get("values", []):
                for c, i in zip(columns, index, strict=True):
                    out[c].append(row[i])
        return out

    def _batch(self, rows: dict[str, list], point: np.ndarray) -> Batch:
        value = np.array([np.nan if v is None else v for v in rows["value"]], np.float64)

        def stamps(name: str) -> np.ndarray:  # the source time where a writer left it out
            return np.array([t if s is None else s for t, s in
                             zip(rows["time"], rows[name], strict=True)], np.int64)

        return Batch(source_ts=np.array(rows["time"], np.int64), server_ts=stamps("server_ts"),
                     gateway_ts=stamps("gateway_ts"), point=point.astype(np.int32),
                     value=value,
                     quality=np.array([Quality.GOOD if q is None else q
                                       for q in rows["quality"]], np.uint8),
                     cause=np.array([c or 0 for c in rows["cause"]], np.uint32))

    def latest(self, tags: Sequence[str] | None = None) -> Batch:
        """The newest reading of each tag (all if None) that has one."""
        if tags is not None:
            unknown = [t for t in tags if t not in self._position]
            if unknown:
                raise KeyError(f"unknown tag {unknown[0]!r}")
            if not tags:
                return Batch.empty()
        where = f"WHERE {self._site}" if self._site else ""
        if tags is not None and len(tags) < len(self.tags):
            where = "WHERE " + " OR ".join(f"({self._where(t)})" for t in tags)
        series = self._query(
            f'SELECT {", ".join(FIELDS)} FROM {self._from()} {where} '
            'GROUP BY "tag" ORDER BY time DESC LIMIT 1')
        # A tag's readings are those under its kind (a kind changed in the site file starts
        # a new series).
        series = [s for s in series if (i := self._position.get(s["tags"]["tag"])) is not None
                  and s["name"] == self._points[i].kind]
        rows = self._rows(series, ("time", *FIELDS))
        point = np.array([self._position[s["tags"]["tag"]] for s in series
                          for _ in s.get("values", [])], np.int64)
        return self._batch(rows, point)

    def history(self, tag: str, start_ns: int, end_ns: int, limit: int | None = None) -> Batch:
        """`tag`'s raw readings in [start_ns, end_ns), oldest first, at most `limit`."""
        q = (f'SELECT {", ".join(FIELDS)} FROM {self._from(tag)} WHERE {self._where(tag)} '
             f"AND time >= {int(start_ns)} AND time < {int(end_ns)} ORDER BY time ASC")
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        rows = self._rows(self._query(q), ("time", *FIELDS))
        return self._batch(rows, np.full(len(rows["time"]), self._position.get(tag, -1)))

    def buckets(self, tag: str, start_ns: int, end_ns: int, width_ns: int) -> Buckets:
        """`tag`'s good and uncertain readings in [start_ns, end_ns), aggregated per bucket
        (a bad reading has no value field, so the aggregates leave it out)."""
        if width_ns <= 0:
            raise ValueError(f"bucket width must be positive, got {width_ns} ns")
        q = (f'SELECT {", ".join(f"{a}(value)" for a in AGGREGATES)} FROM {self._from(tag)} '
             f"WHERE {self._where(tag)} AND time >= {int(start_ns)} AND time < {int(end_ns)} "
             f"GROUP BY time({int(width_ns)}ns) fill(none)")
        rows = self._rows(self._query(q), ("time", *AGGREGATES))
        return Buckets(start=np.array(rows["time"], np.int64),
                       count=np.array(rows["count"], np.int64),
                       **{a: np.array(rows[a], np.float64) for a in AGGREGATES[1:]})

    def close(self) -> None:
        self.http.clear()
