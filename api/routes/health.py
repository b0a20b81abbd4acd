"""`/health`: is the gateway running, and how are its devices, sinks, spool and tasks doing.

Public, it says `ok`, `degraded` or `down` and nothing else: no addresses, no error text. With a
token of the viewer role or above (`Authorization: Bearer`), the reasons and every detail.

Health and metrics routes are `async`: they read the gateway's status on the event loop, the
one thread that mutates it in the all-in-one process (its counters take no locks).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import TypeAdapter, ValidationError

from api.context import ApiContext, Ctx
from api.models import (
    DeviceHealth,
    GatewayHealth,
    Health,
    HealthSummary,
    Overall,
    SinkHealth,
    SpoolHealth,
    TaskHealth,
)
from api.security.auth import Guard, GuardedRoute, bearer
from api.times import iso_seconds
from gateway.status import DeviceStatus, GatewayStatus

SINK_LAG_LIMIT = 60.0  # seconds a sink may be behind the spool before health says degraded

_STATUS = TypeAdapter(GatewayStatus)
_STATE_TEXT = {"degraded": "degraded", "down": "down", "unknown": "not polled yet"}

router = APIRouter(route_class=GuardedRoute)


@dataclass(frozen=True)
class StatusView:
    """The gateway's last status snapshot, with its age and whether the gateway runs."""

    status: GatewayStatus | None  # the last snapshot, even a stale one
    updated: float | None  # Unix seconds of the snapshot
    age: float | None  # seconds
    problem: str | None  # why the gateway counts as not running; None when it runs

    @property
    def running(self) -> bool:
        return self.problem is None


def read_status(ctx: ApiContext, now: float) -> StatusView:
    raw = ctx.status()
    if raw is None:
        return StatusView(None, None, None, "no gateway status: the gateway is not running")
    try:
        status = _STATUS.validate_python(raw)
        updated = float(raw["updated"])
    except (ValidationError, KeyError, TypeError, ValueError) as e:
        reason = e.errors()[0] if isinstance(e, ValidationError) else repr(e)
        return StatusView(None, None, None, f"gateway status unreadable: {reason}")
    age = max(0.0, now - updated)  # an in-process snapshot is taken after `now`
    if age > ctx.status_stale_after:
        return StatusView(status, updated, age, f"gateway status is {age:.0f} s old: the "
                                                "gateway is not running")
    return StatusView(status, updated, age, None)


def device_rows(ctx: ApiContext, view: StatusView) -> list[DeviceStatus]:
    """Every device of the site in site order (blank when the status lacks it), then any the
    status has beyond the site's. A device its driver last called ok or degraded but without
    a successful poll for its stale window (a poller that stopped says nothing) is down."""
    known = dict(view.status.devices) if view.status else {}
    rows = [known.pop(d.name) if d.name in known
            else DeviceStatus(name=d.name, protocol=d.protocol, bus=d.bus)
            for d in ctx.site.devices]
    return [_unless_stale(d, view.updated) for d in rows + list(known.values())]


def _unless_stale(d: DeviceStatus, at: float | None) -> DeviceStatus:
    window = d.stale_after_seconds
    if (d.state in ("ok", "degraded") and window is not None and at is not None
            and d.last_success is not None and at - d.last_success > window):
        return replace(d, state="down", last_error=f"no successful poll for "
                       f"{at - d.last_success:.0f} s (stale after {window:.3g} s)")
    return d


def overall(view: StatusView, devices: list[DeviceStatus]) -> tuple[Overall, list[str]]:
    if view.problem is not None:
        return "down", [view.problem]
    assert view.status is not None
    reasons = [f"device {d.name} is {_STATE_TEXT[d.state]}"
               + (f": {d.last_error}" if d.last_error and d.state != "unknown" else "")
               for d in devices if d.state != "ok"]
    st = view.status
    if st.spool.cause is not None:
        lost = st.spool.readings_lost_total
        reasons.append(f"{st.spool.cause}: the spool {st.spool.last_error}; "
                       f"{st.spool.held_readings} readings held in memory"
                       + (f", {lost} lost" if lost else ""))
    reasons += [f"{s.cause}: sink {s.name} cannot store: {s.last_error}"
                for s in st.sinks.values() if s.cause is not None]
    reasons += [f"sink {s.name} is {s.backlog_age_seconds:.0f} s behind the spool"
                for s in st.sinks.values() if s.backlog_age_seconds > SINK_LAG_LIMIT]
    reasons += [f"{t.cause}: task {t.name} failed ({t.last_error}); restarting"
                for t in st.tasks.values() if t.state == "restarting"]
    if devices and all(d.state == "down" for d in devices):
        return "down", reasons
    return ("degraded" if reasons else "ok"), reasons


@router.get(
    "/health",
    response_model=Health | HealthSummary,
    summary="Gateway health; with a viewer token, its devices, sinks, spool and tasks",
    responses={503: {"model": Health | HealthSummary,
                     "description": "the gateway is not running: its status is absent, "
                                    "unreadable or stale"}},
    openapi_extra={"security": [{}]},  # beside the bearer scheme: a token is optional here
)
async def health(request: Request, response: Response, ctx: Ctx, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Health | HealthSummary:
    """Overall `status`: `ok`; `degraded` (a device not ok, a sink failing or behind the
    spool, the spool unable to write, a task restarting); `down` (the gateway is not
    running, or every device is down). Without a token that is all; with a token of the
    viewer role or above, `reasons` says why (led by the cause: `disk_full: ...`), with
    every device, sink, the spool and the tasks.

    HTTP 200 whenever the gateway runs, whatever its devices do (the body reports them);
    503 when the gateway is not running, so that an orchestrator's health check restarts
    the process that can be fixed by a restart and not the one reporting a broken PLC.
    """
    now = time.time()
    view = read_status(ctx, now)
    devices = device_rows(ctx, view)
    status, reasons = overall(view, devices)
    st = view.status
    if not view.running:
        response.status_code = 503
    guard: Guard = request.app.state.guard
    if not guard.admits(credentials.credentials if credentials else None, "viewer"):
        return HealthSummary(status=status)
    return Health(
        status=status,
        reasons=reasons,
        site=ctx.site.site.name,
        time=iso_seconds(now),
        gateway=GatewayHealth(
            running=view.running,
            started=iso_seconds(st.started) if st else None,
            uptime_seconds=round(now - st.started, 3) if st and view.running else None,
            status_updated=iso_seconds(view.updated),
            status_age_seconds=None if view.age is None else round(view.age, 3),
        ),
        devices=[DeviceHealth(**{
            **asdict(d),
            "state": d.state if view.running else "unknown",
            "last_success": iso_seconds(d.last_success),
        }) for d in devices],
        sinks=[SinkHealth(**asdict(s)) for s in st.sinks.values()] if st else [],
        spool=SpoolHealth(**asdict(st.spool)) if st else None,
        tasks=[TaskHealth(**asdict(t)) for t in st.tasks.values()] if st else [],
    )
