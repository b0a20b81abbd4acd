"""`/history`: one tag's readings over a time range, raw or in time buckets, as columns."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Response

from anomaly.core.batch import Quality
from api.context import ApiContext, Ctx, bad_param
from api.encode import Column, columns_csv, columns_json
from api.models import AGGREGATES, QUALITY_NAMES, Aggregate, History
from api.security.auth import GuardedRoute
from api.times import DURATION_HELP, TIME_HELP, parse_time
from timegrammar import MAX_NS, NS, now_ns, parse_duration
from timegrammar.iso import iso, iso_column

MAX_LIMIT = 1_000_000
MAX_BUCKETS = 100_000

router = APIRouter(route_class=GuardedRoute)

DESCRIPTION = f"""
Readings of one tag in `[start, end)`.

- **Raw** (no `bucket`): every reading ordered by source time, at most `limit`; when more
  match, `truncated` is true and `next_start` is the `start` of the next page.
- **Bucketed** (`bucket=1min`): one row per time bucket, with the aggregates `agg` asks for
  (`mean` by default) over the good and uncertain readings; `ts` is the bucket's start.
  Buckets are aligned to multiples of the width since the Unix epoch (so the first may start
  before `start`, holding only readings from `start` on); buckets without such a reading are
  left out.

Rows come as **columns**: `ts[i]`, `value[i]`, `quality[i]` (or `mean[i]`, `max[i]`...) are
row i. Measured on 100k rows, this is half the time to encode and to parse, and a third
smaller, than an object per row. `format=csv` gives one row per line instead, with tag and
unit on each line (`timestamp,tag,unit,value,quality`), an empty cell for a bad value.

Limits: `limit` ≤ {MAX_LIMIT:,}; at most {MAX_BUCKETS:,} buckets per query.
"""


def _time(param: str, text: str, now_ns: int) -> int:
    try:
        return parse_time(text, now_ns)
    except ValueError as e:
        raise bad_param(param, str(e)) from None


def _width(text: str) -> int:
    try:
        width = parse_duration(text)
    except ValueError as e:
        raise bad_param("bucket", str(e)) from None
    if not 0 < width <= MAX_NS:
        raise bad_param("bucket", f"{text!r} must be a positive duration; use {DURATION_HELP}")
    return width


def _aggregates(values: list[str] | None) -> list[Aggregate]:
    names = [a.strip() for v in values or [] for a in v.split(",") if a.strip()] or ["mean"]
    for name in names:
        if name not in AGGREGATES:
            raise bad_param("agg", f"{name!r} is not an aggregate; use {', '.join(AGGREGATES)}")
    return list(dict.fromkeys(names))  # type: ignore[arg-type]


@router.get("/history", response_model=History,
            summary="One tag's history, raw or bucketed", description=DESCRIPTION,
            responses={200: {"content": {"text/csv": {}}}})
def history(
    ctx: Ctx,
    tag: Annotated[str, Query(description="the point's tag")],
    start: Annotated[str, Query(description=f"inclusive; {TIME_HELP}")] = "-1h",
    end: Annotated[str, Query(description=f"exclusive; {TIME_HELP}")] = "now",
    bucket: Annotated[str | None, Query(description=f"bucket width, {DURATION_HELP}; "
                                                    "absent: raw readings")] = None,
    agg: Annotated[list[str] | None, Query(
        description=f"aggregates per bucket, repeated or comma-separated: "
                    f"{', '.join(AGGREGATES)} (default mean)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="raw only: most rows")] = 10_000,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    point = ctx.point(tag)
    # An empty parameter (as an HTML form sends it) means its default.
    start, end, bucket = start or "-1h", end or "now", bucket or None
    now = now_ns()
    start_ns, end_ns = _time("start", start, now), _time("end", end, now)
    if start_ns >= end_ns:
        raise bad_param("start", f"{start!r} ({iso(start_ns)}) is not before end {end!r} "
                                 f"({iso(end_ns)})")
    body: dict = {"tag": tag, "unit": point.unit, "start": iso(start_ns), "end": iso(end_ns),
                  "bucket": bucket}
    if bucket is None:
        if any(a.strip(", ") for a in agg or []):
            raise bad_param("agg", "aggregates need a bucket width, e.g. bucket=1min")
        columns, extra = _raw(ctx, tag, start_ns, end_ns, limit)
        body |= {"bucket_seconds": None, **extra}
    else:
        width = _width(bucket)
        buckets = -(-(end_ns - start_ns) // width)
        if buckets > MAX_BUCKETS:
            raise bad_param("bucket", f"{bucket!r} over {iso(start_ns)}..{iso(end_ns)} makes "
                                      f"{buckets:,} buckets, more than {MAX_BUCKETS:,}; use a "
                                      "wider bucket or a shorter range")
        columns = _bucketed(ctx, tag, start_ns, end_ns, width, _aggregates(agg))
        body |= {"bucket_seconds": width / NS, "truncated": False, "next_start": None}
    body["rows"] = len(columns["ts"][0])
    if format == "csv":
        return columns_csv({"tag": tag, "unit": point.unit}, columns, f"{tag}.csv")
    return columns_json(body, columns)


def _tolist(a: np.ndarray) -> list:
    return a.tolist()


def _iso_ms(ns: np.ndarray) -> list[str]:
    """Readings' times to the millisecond, as a Modbus poll or an OPC UA DateTime gives them."""
    return iso_column(ns, "ms")


def _quality_names(q: np.ndarray) -> list[str]:
    return QUALITY_NAMES[np.minimum(q, Quality.BAD)].tolist()


def _raw(ctx: ApiContext, tag: str, start_ns: int, end_ns: int,
         limit: int) -> tuple[dict[str, Column], dict]:
    batch = ctx.historian.history(tag, start_ns, end_ns, limit=limit + 1)
    truncated = len(batch) > limit
    if truncated:
        batch = batch.take(np.arange(limit))
    columns = {
        "ts": (batch.source_ts, _iso_ms),
        "value": (np.where(batch.quality >= Quality.BAD, np.nan, batch.value), _tolist),
        "quality": (batch.quality, _quality_names),
    }
    next_start = iso(int(batch.source_ts[-1]) + 1) if truncated else None
    return columns, {"truncated": truncated, "next_start": next_start}


def _bucketed(ctx: ApiContext, tag: str, start_ns: int, end_ns: int, width: int,
              aggs: list[Aggregate]) -> dict[str, Column]:
    b = ctx.historian.buckets(tag, start_ns, end_ns, width)
    return {"ts": (b.start, _iso_ms), **{a: (getattr(b, a), _tolist) for a in aggs}}
