"""ASGI middleware around the whole app: request bodies bounded before they are read, and
the headers that keep a browser from running or framing anything the page did not bring.

Pure ASGI (no BaseHTTPMiddleware): they wrap `receive` and `send` only, so the alarm stream
flows through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_LIMIT = 64 << 10  # bytes: every JSON body the API takes fits many times over
# Routes that take more ("METHOD /path", the path as requested): a bulk acknowledgement of
# up to 10,000 alarm ids (api.models.BulkAckRequest) of ~40 characters each; a whole site file,
# whose inline [[points]] take ~150 bytes each (~25,000 of them; a larger list belongs in its
# points_csv, which stays on disk).
BODY_LIMITS: Mapping[str, int] = {"POST /api/v1/alarms/ack": 1 << 20,
                                  "POST /api/v1/config": 4 << 20}

# The page and /docs are static files of the package (uPlot and Swagger UI vendored): nothing
# from elsewhere, no inline script or style, no frames.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "X-Content-Type-Options": "nosniff",
}


class BodyTooLarge(HTTPException):
    """413 naming the limit. An HTTPException, so that FastAPI, reading the body when it is
    raised, answers it as it is (any other error there becomes a 400)."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        got = f", got {size:,}" if size is not None else ""
        super().__init__(413, f"request body: at most {limit:,} bytes{got}")


class BodyLimit:
    """413 for a body over its route's limit: at once when Content-Length says so (no byte of
    it read, nothing else run), else (chunked) as soon as the bytes read pass the limit."""

    def __init__(self, app: ASGIApp, default: int = BODY_LIMIT,
                 limits: Mapping[str, int] = BODY_LIMITS) -> None:
        self.app, self.default, self.limits = app, default, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(f"{scope['method']} {scope['path']}", self.default)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            too_large = BodyTooLarge(limit, int(declared))
            await JSONResponse({"detail": too_large.detail}, 413)(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, bounded, send)


class SecurityHeaders:
    """SECURITY_HEADERS on every answer, unless the answer sets its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
