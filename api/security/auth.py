"""Who may call what: bearer tokens from the site's token store, checked against the least role
each route needs (the `ACCESS` table in `api.app`).

401 (with `WWW-Authenticate: Bearer`) without a token, or with an unknown, revoked or expired
one; 403 when the token's role is below the route's. The caller's token is then in
`request.state.caller`, for routes that record who acted (`Caller`).

The check runs in `GuardedRoute`, the route class of every router, before FastAPI reads and
parses a request's body (its dependencies run only after that): a client without a valid
token makes the API parse nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from api.models import Me, Problem
from api.tokens import Role, Token, TokenStore, outranks
from gateway.logs import RateLimit

log = logging.getLogger(__name__)

QUERY_TOKEN = "access_token"
REALM = 'Bearer realm="scadawatch"'

bearer = HTTPBearer(auto_error=False, description="a token from `scadawatch token create`")

AUTH_PROBLEMS: dict[int | str, dict] = {
    401: {"model": Problem, "description": "no token, or an unknown, revoked or expired one"},
    403: {"model": Problem, "description": "the token's role is below the one this needs"},
}


@dataclass(frozen=True)
class Access:
    """The least role a route needs (None: public), and whether it also takes the token as
    `?access_token=`: only for a stream a browser opens with EventSource, which cannot send
    headers (a URL ends up in browser history and proxy logs: nowhere else)."""

    role: Role | None
    query_token: bool = False


PUBLIC = Access(None)
VIEWER, OPERATOR, ENGINEER, ADMIN = (Access(r) for r in ("viewer", "operator", "engineer",
                                                         "admin"))


def route_key(method: str, path: str, prefix: str) -> str:
    """How the access table names a route: `GET /history` (the path without the prefix)."""
    return f"{method} {path.removeprefix(prefix)}"


class Guard:
    """Checks each request's token against its route's ACCESS rule; `create_app` keeps it in
    `app.state.guard` for GuardedRoute."""

    def __init__(self, store: TokenStore, access: Mapping[str, Access], prefix: str) -> None:
        self.store = store
        self.access = access
        self.prefix = prefix
        # What a non-public router is included with: the bearer scheme, for OpenAPI (the
        # /docs "Authorize" button); the check itself is GuardedRoute's.
        self.dependencies: list[DependsParam] = [Depends(bearer)]
        # Anyone can make refusals: their log lines are rate-limited per status and reason.
        self._refusals = RateLimit()

    def check(self, request: Request, route: APIRoute) -> None:
        """Raise 401/403 unless the request may call `route`; set `request.state.caller`."""
        access = self.access[route_key(request.method, route.path, self.prefix)]
        if access.role is None:
            return
        # As the HTTPBearer scheme reads it (it only describes the header to OpenAPI here).
        scheme, secret = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "bearer":
            secret = ""
        if not secret and access.query_token:
            secret = request.query_params.get(QUERY_TOKEN, "")
        if not secret:
            self._refuse(request, 401, "missing", "no token: send the header 'Authorization: "
                         "Bearer <token>' (make one with `scadawatch token create`)")
        token = self.store.check(secret)
        if token is None:
            self._refuse(request, 401, "invalid_token", "the token is unknown or revoked")
        elif token.expired(time.time()):
            self._refuse(request, 401, "invalid_token", f"token {token.name!r} expired at "
                         f"{token.expires}", token)
        elif not outranks(token.role, access.role):
            self._refuse(request, 403, "insufficient_role", f"this needs the {access.role} role "
                         f"or above; token {token.name!r} has {token.role}", token)
        request.state.caller = token

    def admits(self, secret: str | None, role: Role) -> bool:
        """Whether `secret` is a valid, unexpired token of `role` or above (for a public route
        that shows more to those who have one; nothing is refused or logged)."""
        token = self.store.check(secret) if secret else None
        return (token is not None and not token.expired(time.time())
                and outranks(token.role, role))

    def _refuse(self, request: Request, status: int, reason: str, detail: str,
                token: Token | None = None) -> NoReturn:
        # The path without its query: a query may hold a token.
        held = self._refusals.admit((status, reason))
        if held is not None:
            log.info("event=auth_refused status=%d reason=%s method=%s path=%s client=%s "
                     "token=%s%s", status, reason, request.method, request.url.path,
                     request.client.host if request.client else "-",
                     token.name if token else "-", f" suppressed={held}" if held else "")
        headers = None
        if status == 401:
            headers = {"WWW-Authenticate": REALM if reason == "missing"
                       else f'{REALM}, error="invalid_token"'}
        raise HTTPException(status, detail, headers=headers)

    def verify(self, app: FastAPI) -> None:
        """Refuse an app with a route under the prefix that has no access rule, a rule without
        its route, or a non-public route that is not a GuardedRoute."""
        routes = {route_key(m, path, self.prefix): r for m, path, r in served(app)
                  if path.startswith(self.prefix)}
        problems = [f"{key}: no access rule" for key in routes if key not in self.access]
        problems += [f"{key}: an access rule for a route the app does not have"
                     for key in self.access if key not in routes]
        problems += [f"{key}: needs {self.access[key].role} but is served without the guard"
                     for key, r in routes.items() if key in self.access
                     and self.access[key].role is not None
                     and not isinstance(getattr(r, "original_route", r), GuardedRoute)]
        if problems:
            raise ValueError("api.app.ACCESS does not match the routes: " + "; ".join(problems))


class GuardedRoute(APIRoute):
    """A route whose caller the app's Guard checks before FastAPI reads and parses the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            request.app.state.guard.check(request, self)
            return await handler(request)

        return guarded


def served(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, full path, route) of every route the app serves, in included routers too."""
    try:  # newer FastAPI keeps an included router whole and resolves its routes per request
        from fastapi.routing import iter_route_contexts
    except ImportError:
        routes: Iterable[Any] = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    for route in routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            yield method, route.path, route


def caller(request: Request) -> Token:
    return request.state.caller


Caller = Annotated[Token, Depends(caller)]  # the token of a guarded route's request


router = APIRouter(route_class=GuardedRoute)


@router.get("/auth/me", response_model=Me, summary="Whose token this is and its role")
def me(token: Caller) -> Me:
    """The caller's token name, role and expiry: a cheap call for a client (the page) to learn
    what it may do before it offers it."""
    return Me(name=token.name, role=token.role, expires=token.expires)
