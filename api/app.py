"""The FastAPI application: `create_app(site, historian, status)`."""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from api.context import ApiContext, StatusSource
from api.models import Problem
from api.routes import alarms, config, health, history, metrics, points
from api.security import auth
from api.security.auth import AUTH_PROBLEMS, ENGINEER, OPERATOR, PUBLIC, VIEWER, Access, Guard
from api.security.middleware import BODY_LIMIT, BODY_LIMITS, BodyLimit, SecurityHeaders
from api.tokens import TokenStore
from gateway.site.model import Site

if TYPE_CHECKING:
    from gateway.alarms.store import AlarmStore
    from gateway.storage.historian import HistorianReader

PREFIX = "/api/v1"
STATIC = Path(__file__).parent / "static"
STATUS_STALE_AFTER = 10.0  # seconds; the gateway publishes its status every second

_LARGER = ", ".join(f"{n >> 10} KiB for {key.replace(PREFIX, '', 1)}"
                    for key, n in BODY_LIMITS.items())
BODY_LIMITS_TEXT = f"{BODY_LIMIT >> 10} KiB ({_LARGER})"

DESCRIPTION = f"""
Points, latest readings, history and health of a scadawatch site, its alarms (lifecycle,
KPIs, live stream), and Prometheus metrics.

Times in answers are UTC ISO 8601 with `Z`. Times in parameters may also carry an offset
(naive means UTC) or be relative to now: `now`, `-10m` (minutes), `-1h30m`, `-2d`, `-1w`.
Durations (`bucket`) are written the same way: `500ms`, `30s`, `10m`, `1h`, `7d`. Every value
travels with its tag and unit; a bad reading's value is null.

A bad parameter gets a 4xx whose `detail` names it: 400 (a value that does not make sense),
404 (an unknown tag, zone or device), 422 (a value of the wrong type or range). A request body
over {BODY_LIMITS_TEXT} gets 413 before it is read.

Every route but `health` needs `Authorization: Bearer <token>` (`scadawatch token create
--role viewer|operator|engineer|admin`): 401 without a valid token, 403 when its role is too low.
"""

# Who may call what: every route under PREFIX with the least role it needs, viewer < operator <
# engineer < admin (PUBLIC: no token). create_app refuses a route missing here, and the auth
# matrix test (tests/api/test_auth.py) calls every route with every role. Outside PREFIX (the page,
# /docs) is public: it holds no data. A route for an EventSource takes `?access_token=` too:
# "GET /alarms/stream": Access("viewer", query_token=True).
ACCESS: dict[str, Access] = {
    "GET /health": PUBLIC,  # its details only for a viewer token (api.routes.health)
    "GET /auth/me": VIEWER,
    "GET /points": VIEWER,
    "GET /latest": VIEWER,
    "GET /history": VIEWER,
    "GET /metrics": VIEWER,  # Prometheus sends the token: `authorization` in its scrape config
    "GET /alarms": VIEWER,
    "GET /alarms/kpis": VIEWER,
    "GET /alarms/stream": Access("viewer", query_token=True),
    "GET /alarms/suppressions": VIEWER,
    "GET /alarms/{alarm_id}": VIEWER,
    "POST /alarms/ack": OPERATOR,
    "POST /alarms/{alarm_id}/ack": OPERATOR,
    "POST /alarms/{alarm_id}/shelve": OPERATOR,
    "POST /alarms/{alarm_id}/unshelve": OPERATOR,
    "POST /alarms/{alarm_id}/release": OPERATOR,
    "POST /alarms/{alarm_id}/comment": OPERATOR,
    "PUT /alarms/suppressions/{scope}/{name}": OPERATOR,
    "DELETE /alarms/suppressions/{scope}/{name}": OPERATOR,
    "GET /config": ENGINEER,  # device addresses and settings: the engineer's file
    "POST /config": ENGINEER,
    "GET /config/audit": VIEWER,  # who changed what and when: anyone watching the site
}

PROBLEMS: dict[int | str, dict] = {
    code: {"model": Problem, "description": text}
    for code, text in ((400, "a parameter's value does not make sense"),
                       (404, "an unknown tag, zone or device"),
                       (413, f"a request body over {BODY_LIMITS_TEXT}"),
                       (422, "a parameter is missing, of the wrong type or out of range"))
}


def create_app(site: Site, historian: HistorianReader, status: StatusSource, *,
               status_stale_after: float = STATUS_STALE_AFTER,
               alarm_store: AlarmStore | None = None,
               site_control: config.SiteControl | None = None) -> FastAPI:
    """The API over a site's historian and its gateway's status.

    `status()` returns the gateway's current snapshot (`GatewayStatus.snapshot` in the
    all-in-one process, a read of `status.json` in a separate API process), or None.
    `alarm_store`: the gateway's alarm store in the all-in-one process; by default the API opens
    the site's own (`<data_dir>/alarms.sqlite`) on first use. `site_control`: the gateway's
    reloader in the all-in-one process (None: `POST /config` answers 409).
    """
    try:
        app_version = version("scadawatch")
    except PackageNotFoundError:
        app_version = "unknown"
    # /docs comes from the package's own Swagger UI (api/static/vendor), not FastAPI's CDN one
    app = FastAPI(title="scadawatch", version=app_version, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    app.add_api_route("/docs", _docs, include_in_schema=False)
    app.state.context = ApiContext(site, historian, status, status_stale_after)
    app.state.alarms = alarm_store
    app.state.config = site_control
    app.state.stopping = asyncio.Event()  # set by api.server.serve on shutdown: streams end
    app.add_exception_handler(RequestValidationError, _validation_problem)
    # The last added is the outermost: every answer, a 413 or a CORS preflight too, carries
    # the security headers.
    app.add_middleware(BodyLimit)
    if site.api.cors_origins:  # off unless the site file names the origins
        app.add_middleware(CORSMiddleware, allow_origins=site.api.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    app.add_middleware(SecurityHeaders)
    # Every route is a GuardedRoute: the guard checks its ACCESS rule before the body is read.
    guard = app.state.guard = Guard(TokenStore(site.site.data_dir), ACCESS, PREFIX)
    guarded, problems = guard.dependencies, PROBLEMS | AUTH_PROBLEMS
    app.include_router(health.router, prefix=PREFIX)
    app.include_router(auth.router, prefix=PREFIX, responses=AUTH_PROBLEMS,
                       dependencies=guarded)
    app.include_router(points.router, prefix=PREFIX, responses=problems, dependencies=guarded)
    app.include_router(history.router, prefix=PREFIX, responses=problems, dependencies=guarded)
    app.include_router(alarms.router, prefix=PREFIX, responses=problems, dependencies=guarded)
    app.include_router(metrics.router, prefix=PREFIX, responses=AUTH_PROBLEMS,
                       dependencies=guarded)
    app.include_router(config.router, prefix=PREFIX, responses=problems, dependencies=guarded)
    guard.verify(app)
    # The control-room page: plain static files, mounted last so the API's routes match first.
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app


def follow_site(app: FastAPI, site: Site, historian: HistorianReader) -> None:
    """Serve `site` from now on, over `historian` opened with its tags (a change of the site
    file applied live): its points, limits and alarm settings."""
    old: ApiContext = app.state.context
    app.state.context = ApiContext(site, historian, old.status, old.status_stale_after)


def _docs() -> FileResponse:
    """Swagger UI over /openapi.json, every file served from here: it works offline."""
    return FileResponse(STATIC / "docs.html")


async def _validation_problem(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 in the same shape as every other 4xx: one `detail` naming the parameter."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        name = loc[1] if len(loc) > 1 else ".".join(loc) or "request"
        problems.append(f"{name}: {err.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)
