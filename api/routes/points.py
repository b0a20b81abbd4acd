"""`/points` (the site's point table) and `/latest` (each point's last reading)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Response

from anomaly.core.batch import Batch, Quality
from api.context import Ctx
from api.encode import json_response
from api.models import QUALITY_NAMES, Latest, PointListing, Points
from api.security.auth import GuardedRoute
from gateway.inputs.quality import cause_name
from gateway.site.model import PointKind, fields_of
from timegrammar import now_ns
from timegrammar.iso import iso, iso_column

_POINT_FIELDS = set(PointListing.model_fields)

router = APIRouter(route_class=GuardedRoute)

Zone = Annotated[str | None, Query(description="only points of this zone (DMA or feeder)")]
Kind = Annotated[PointKind | None, Query(description="only points of this kind")]
DeviceName = Annotated[str | None, Query(description="only points this device serves")]


@router.get("/points", response_model=Points, summary="The site's points")
def points(ctx: Ctx, zone: Zone = None, kind: Kind = None,
           device: DeviceName = None) -> Response:
    """Tag, device, kind, unit, zone, role, physical limits and description of each point,
    in site-file order. An unknown zone or device is a 404 naming it."""
    rows = [fields_of(ctx.site.points[i], _POINT_FIELDS)
            for i in ctx.select(zone=zone, kind=kind, device=device)]
    return json_response({"count": len(rows), "points": rows})


@router.get("/latest", response_model=Latest, summary="Each point's last reading")
def latest(
    ctx: Ctx,
    tag: Annotated[list[str] | None, Query(description="only these tags (repeat the "
                                                       "parameter for several)")] = None,
    zone: Zone = None,
    kind: Kind = None,
    device: DeviceName = None,
) -> Response:
    """One row per point, with its unit, quality, cause and its timestamps. A bad reading
    has `value` null; a point with no reading yet has every reading field null and
    `stale` true. `stale`: neither a reading nor an answer of its device for the device's
    `stale_after` × `poll_interval`, plus the historian's `flush_interval` (a polled OPC UA
    device answers with the same value and source time while nothing changes, which the
    gateway does not store again); never for an OPC UA subscription or an IEC 104 station,
    which report changes only."""
    chosen = np.asarray(ctx.select(tags=tag, zone=zone, kind=kind, device=device),
                        dtype=np.int64)
    now = now_ns()
    batch = (ctx.historian.latest([ctx.site.points[i].tag for i in chosen]) if len(chosen)
             else Batch.empty())
    row = np.full(len(ctx.site.points), -1, dtype=np.int64)
    row[batch.point] = np.arange(len(batch))
    sel = row[chosen]
    has = sel >= 0
    r = sel[has]
    value = np.where(batch.quality[r] >= Quality.BAD, np.nan, batch.value[r])
    stale = np.ones(len(chosen), dtype=bool)
    seen = np.maximum(batch.gateway_ts[r], ctx.confirmed_ns(now / 1e9)[chosen[has]])
    stale[has] = (now - seen) > ctx.stale_ns[chosen[has]]
    readings = iter(zip(
        value.tolist(), QUALITY_NAMES[np.minimum(batch.quality[r], Quality.BAD)].tolist(),
        batch.cause[r].tolist(), iso_column(batch.source_ts[r], "ms"),
        iso_column(batch.server_ts[r], "ms"), iso_column(batch.gateway_ts[r], "ms"), strict=True))
    out = []
    for i, found, is_stale in zip(chosen.tolist(), has.tolist(), stale.tolist(), strict=True):
        p = ctx.site.points[i]
        v, q, c, src, srv, gw = next(readings) if found else (None, None, 0, None, None, None)
        out.append({"tag": p.tag, "value": v, "unit": p.unit, "quality": q,
                    "cause": cause_name(c) if c else None, "source_ts": src,
                    "server_ts": srv, "gateway_ts": gw, "stale": is_stale})
    return json_response({"time": iso(now), "count": len(out), "readings": out})
