"""`/health`: is the gateway running, and how are its devices, sinks and spool doing.

Health and metrics routes are `async`: they read the gateway's status on the event loop, the
one thread that mutates it in the all-in-one process (its counters take no locks).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from fastapi import APIRouter, Response
from pydantic import TypeAdapter, ValidationError

from api.auth import GuardedRoute
from api.context import ApiContext, Ctx
from api.models import DeviceHealth, GatewayHealth, Health, Overall, SinkHealth, SpoolHealth
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
    status has beyond the site's."""
    known = dict(view.status.devices) if view.status else {}
    rows = [known.pop(d.name, None) or DeviceStatus(name=d.name, protocol=d.protocol, bus=d.bus)
            for d in ctx.site.devices]
    return rows + list(known.values())


def overall(view: StatusView, devices: list[DeviceStatus]) -> tuple[Overall, list[str]]:
    if view.problem is not None:
        return "down", [view.problem]
    assert view.status is not None
    reasons = [f"device {d.name} is {_STATE_TEXT[d.state]}"
               + (f": {d.last_error}" if d.last_error and d.state != "unknown" else "")
               for d in devices if d.state != "ok"]
    reasons += [f"sink {s.name} is {s.backlog_age_seconds:.0f} s behind the spool"
                for s in view.status.sinks.values() if s.backlog_age_seconds > SINK_LAG_LIMIT]
    if devices and all(d.state == "down" for d in devices):
        return "down", reasons
    return ("degraded" if reasons else "ok"), reasons


@router.get(
    "/health",
    response_model=Health,
    summary="Gateway, device, sink and spool health",
    responses={503: {"model": Health, "description": "the gateway is not running: its status "
                                                     "is absent, unreadable or stale"}},
)
async def health(response: Response, ctx: Ctx) -> Health:
    """Overall `status`: `ok`; `degraded` (a device not ok, a sink behind the spool); `down`
    (the gateway is not running, or every device is down). `reasons` says why.

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
    )
