"""The FastAPI application: `create_app(site, historian, status)`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api import health, history, metrics, points
from api.context import ApiContext, StatusSource
from api.models import Problem
from gateway.config import Site

if TYPE_CHECKING:
    from gateway.historian import HistorianReader

PREFIX = "/api/v1"
STATUS_STALE_AFTER = 10.0  # seconds; the gateway publishes its status every second

DESCRIPTION = """
Points, latest readings, history and health of a scadawatch site, and Prometheus metrics.

Times in answers are UTC ISO 8601 with `Z`. Times in parameters may also carry an offset
(naive means UTC) or be relative to now: `now`, `-1h`, `-15min`, `-2d`. Every value travels
with its tag and unit; a bad reading's value is null.

A bad parameter gets a 4xx whose `detail` names it: 400 (a value that does not make sense),
404 (an unknown tag, zone or device), 422 (a value of the wrong type or range).
"""

PROBLEMS: dict[int | str, dict] = {
    code: {"model": Problem, "description": text}
    for code, text in ((400, "a parameter's value does not make sense"),
                       (404, "an unknown tag, zone or device"),
                       (422, "a parameter is missing, of the wrong type or out of range"))
}


def create_app(site: Site, historian: HistorianReader, status: StatusSource, *,
               status_stale_after: float = STATUS_STALE_AFTER) -> FastAPI:
    """The API over a site's historian and its gateway's status.

    `status()` returns the gateway's current snapshot (`GatewayStatus.snapshot` in the
    all-in-one process, a read of `status.json` in a separate API process), or None.
    """
    try:
        app_version = version("scadawatch")
    except PackageNotFoundError:
        app_version = "unknown"
    app = FastAPI(title="scadawatch", version=app_version, description=DESCRIPTION)
    app.state.context = ApiContext(site, historian, status, status_stale_after)
    app.add_exception_handler(RequestValidationError, _validation_problem)
    # One include per router, so that auth can add its dependency to each (health stays
    # public) without touching the routes.
    app.include_router(health.router, prefix=PREFIX)
    app.include_router(points.router, prefix=PREFIX, responses=PROBLEMS)
    app.include_router(history.router, prefix=PREFIX, responses=PROBLEMS)
    app.include_router(metrics.router, prefix=PREFIX)
    return app


async def _validation_problem(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 in the same shape as every other 4xx: one `detail` naming the parameter."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        name = loc[1] if len(loc) > 1 else ".".join(loc) or "request"
        problems.append(f"{name}: {err.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)
