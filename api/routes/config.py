"""`/config`: the site file the gateway runs, a new one applied live (gateway.reload), and the
audit journal of those changes (gateway.config_audit).

`POST /config` takes the whole site file (TOML) as the body, as `scadawatch check-config` would
read it from disk: an invalid file is a 422 listing check-config's problems (file, key,
reason), a change only a restart can make too; either way nothing changes. A valid one replaces
the site file and is applied device by device. Only the gateway's own process can apply it:
beside a separate gateway (`scadawatch api`) the answer is 409 (change the file there and send
the gateway SIGHUP).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.context import Ctx
from api.encode import json_response
from api.models import Problem
from api.security.auth import Caller, GuardedRoute
from gateway import config_audit
from gateway.config_audit import Who
from gateway.reload import Result
from gateway.site.loader import ConfigProblem

router = APIRouter(route_class=GuardedRoute)

TOML = "application/toml"
NO_GATEWAY = "no gateway in this process (a separate `scadawatch api`)"


class SiteControl(Protocol):
    """The running gateway's side of these routes (gateway.reload.Reloader)."""

    def current_text(self) -> bytes: ...

    async def apply_text(self, text: bytes, who: Who) -> Result: ...


class Applied(BaseModel):
    """A change applied (or found to change nothing), by name: devices and points (tags)
    added, removed or changed, and the other sections that changed."""

    outcome: Literal["applied", "unchanged"]
    changes: dict[str, list[str]]


class Refused(BaseModel):
    """A site file refused: `detail` as check-config prints it, `problems` one by one."""

    detail: str
    problems: list[ConfigProblem]


class AuditEntry(BaseModel):
    at: str
    who: str
    role: str | None
    via: Literal["sighup", "api"]
    outcome: Literal["applied", "refused", "unchanged"]
    sha256: str
    changes: dict[str, list[str]]
    errors: list[str]


class Audit(BaseModel):
    count: int
    entries: list[AuditEntry]  # oldest first


def _control(request: Request) -> SiteControl:
    control: SiteControl | None = request.app.state.config
    if control is None:
        raise HTTPException(409, "this API runs without its gateway (or the gateway without a "
                                 "site file): change the site file on the gateway's machine "
                                 "and send the gateway SIGHUP")
    return control


@router.get("/config", response_class=Response, summary="The site file the gateway runs",
            responses={200: {"content": {TOML: {}}, "description": "the site file (TOML)"},
                       409: {"model": Problem, "description": NO_GATEWAY}})
def current(request: Request) -> Response:
    """The site file as it is on disk (its `points_csv`, if any, is not included)."""
    return Response(_control(request).current_text(), media_type=TOML)


@router.post("/config", response_model=Applied, summary="Apply a new site file live",
             responses={409: {"model": Problem, "description": NO_GATEWAY},
                        422: {"model": Refused, "description": "the file is refused: "
                              "check-config's problems, or a change only a restart can make"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 media: {"schema": {"type": "string"}} for media in (TOML, "text/plain")}}})
async def apply(request: Request, caller: Caller) -> Response:
    """The body is the whole new site file (TOML). Validated as `check-config` validates it,
    then applied device by device: unchanged devices keep polling without a gap, added ones
    start, removed ones stop, changed points become a new point-list generation. Recorded in
    the audit journal either way."""
    control = _control(request)
    result = await control.apply_text(await request.body(),
                                      Who(name=caller.name, role=caller.role))
    if result.outcome == "refused":
        body = Refused(detail="invalid site file\n" + "\n".join(map(str, result.problems)),
                       problems=result.problems)
        return JSONResponse(body.model_dump(), status_code=422)
    return json_response({"outcome": result.outcome, "changes": result.change})


@router.get("/config/audit", response_model=Audit, summary="Changes of the site file")
def audit(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=10_000, description=(
        "the last this many entries"))] = 100) -> Response:
    """Every change of the site file applied, found unchanged or refused while the gateway ran
    (SIGHUP or this API): when, who (token name and role, or SIGHUP), what changed, why a
    refusal was refused; oldest first."""
    entries, _ = config_audit.read(ctx.site.site.data_dir, limit)
    return json_response({"count": len(entries),
                          "entries": [asdict(e) for e in entries]})
