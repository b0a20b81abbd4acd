"""Auth of the HTTP API through a real uvicorn server on loopback: every route x every caller
(each role, no token, a bad, expired or revoked token, a token in the query) -> the expected
status; tokens made and revoked while the API runs; CORS off by default; HTTPS from the site
file through `scadawatch api`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CliRun
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from support.harness import RUN_LIMIT, running

from api.app import ACCESS, PREFIX, create_app
from api.security.auth import (
    ADMIN,
    ENGINEER,
    OPERATOR,
    QUERY_TOKEN,
    VIEWER,
    Access,
    Caller,
    Guard,
    GuardedRoute,
    served,
)
from api.tokens import ROLES, TokenStore, outranks
from gateway.site.loader import load_site
from gateway.site.model import Site
from gateway.status import GatewayStatus
from gateway.storage.historian import EmbeddedHistorian
from scadawatch.ports import free_port

SITE_TOML = """
[site]
name = "authtest"

[[points]]
tag = "t1"
kind = "level"
unit = "m"
"""
# Requests that every route answers with 200 once let through; a new route that needs
# parameters (or an id in its path) to answer 200 gets its entry here.
# `path`: the path with its values (default: each `{...}` is 1); `json`: a body; `status`:
# what the route answers once let through, when not 200 (404 for an alarm that does not
# exist still shows the guard let the request through).
SAMPLES: dict[str, dict] = {
    "GET /history": {"params": {"tag": "t1"}},
    "GET /alarms/{alarm_id}": {"status": 404},
    "POST /alarms/ack": {"json": {"ids": []}},
    "POST /alarms/{alarm_id}/ack": {"status": 404},
    "POST /alarms/{alarm_id}/shelve": {"json": {"duration": "1h", "reason": "r"}, "status": 404},
    "POST /alarms/{alarm_id}/unshelve": {"status": 404},
    "POST /alarms/{alarm_id}/release": {"status": 404},
    "POST /alarms/{alarm_id}/comment": {"json": {"text": "t"}, "status": 404},
    "PUT /alarms/suppressions/{scope}/{name}": {"path": "/alarms/suppressions/tag/t1",
                                                "json": {"reason": "r"}},
    "DELETE /alarms/suppressions/{scope}/{name}": {"path": "/alarms/suppressions/zone/none",
                                                   "status": 404},
    # this app has no gateway to change (tests/gateway/test_reload.py has one)
    "GET /config": {"status": 409},
    "POST /config": {"status": 409},
}
CALLERS = [*ROLES, "no token", "bad token", "expired", "revoked", "not bearer",
           "admin in query"]


def expected(access: Access, caller: str) -> int:
    if access.role is None:
        return 200
    if caller == "admin in query":
        return 200 if access.query_token else 401
    if caller in ROLES:
        return 200 if outranks(caller, access.role) else 403  # type: ignore[arg-type]
    return 401


def write_site(folder: Path, extra: str = "") -> Site:
    path = folder / "site.toml"
    path.write_text(SITE_TOML + extra)
    return load_site(path)


def make_callers(data_dir: Path) -> dict[str, dict]:
    """Request options (headers or query) per caller, each with its own token in `data_dir`."""
    store = TokenStore(data_dir)
    out = {role: bearer(store.create(role)[1]) for role in ROLES}
    _, expired = store.create("admin", expires_days=1, now=time.time() - 2 * 86400)
    _, revoked = store.create("admin", "to-revoke")
    store.revoke("to-revoke")
    _, admin = store.create("admin")
    out |= {"no token": {}, "bad token": bearer("sw_" + secrets.token_urlsafe(32)),
            "expired": bearer(expired), "revoked": bearer(revoked),
            "not bearer": {"headers": {"Authorization": f"Basic {admin}"}},
            "admin in query": {"params": {QUERY_TOKEN: admin}}}
    return out


def bearer(secret: str) -> dict:
    return {"headers": {"Authorization": f"Bearer {secret}"}}


def call(client: httpx.Client, method: str, path: str, options: dict) -> httpx.Response:
    """One request; only the status and headers are read, unless refused (an event stream
    let through would not end)."""
    path = re.sub(r"\{[^}]+\}", "1", path)
    with client.stream(method, path, **options) as r:
        if r.status_code in (401, 403):
            r.read()
    return r


def check(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text if r.is_stream_consumed else r.status_code
    if status == 401:
        assert r.headers["www-authenticate"].startswith('Bearer realm="scadawatch"')
    if status in (401, 403):
        assert r.json()["detail"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return write_site(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def app(site: Site) -> Iterator[FastAPI]:
    historian = EmbeddedHistorian(site.site.data_dir / "historian.sqlite", ["t1"])
    running_gateway = GatewayStatus(site="authtest", started=time.time()).snapshot
    yield create_app(site, historian, running_gateway, status_stale_after=1e9)
    historian.close()


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[httpx.Client]:
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture
def own_client(site: Site) -> Iterator[httpx.Client]:
    """A client of an app of the test's own: what it logs owes nothing to earlier tests (the
    refusals of the matrix above are rate-limited in the module's app)."""
    historian = EmbeddedHistorian(site.site.data_dir / "historian.sqlite", ["t1"])
    app = create_app(site, historian, GatewayStatus(site="authtest").snapshot)
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        yield c
    historian.close()


@pytest.fixture(scope="module")
def callers(site: Site) -> dict[str, dict]:
    return make_callers(site.site.data_dir)


# --- the API's own routes -------------------------------------------------------------------

def test_every_route_under_the_prefix_has_a_rule(app: FastAPI) -> None:
    """create_app refuses a route without a rule; this shows the matrix below covers them all."""
    keys = {f"{m} {path.removeprefix(PREFIX)}" for m, path, _ in served(app)
            if path.startswith(PREFIX)}
    assert keys == set(ACCESS)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(ACCESS))
def test_auth_matrix(client: httpx.Client, callers: dict[str, dict], route: str,
                     caller: str) -> None:
    method, path = route.split(" ", 1)
    sample = SAMPLES.get(route, {})
    options = callers[caller] | {"params": {**sample.get("params", {}),
                                            **callers[caller].get("params", {})}}
    if "json" in sample:
        options["json"] = sample["json"]
    status = expected(ACCESS[route], caller)
    check(call(client, method, PREFIX + sample.get("path", path), options),
          sample.get("status", 200) if status == 200 else status)


def test_docs_and_page_are_public(app: FastAPI, client: httpx.Client) -> None:
    outside = [path for m, path, _ in served(app) if m == "GET" and not path.startswith(PREFIX)]
    assert "/openapi.json" in outside and "/docs" in outside
    for path in outside:
        assert call(client, "GET", path, {}).status_code == 200, path


def test_openapi_offers_bearer_auth(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    ops = spec["paths"]
    # Public; a token (optional) shows the details.
    assert ops[PREFIX + "/health"]["get"]["security"] == [{"HTTPBearer": []}, {}]
    assert {"401", "403"} <= set(ops[PREFIX + "/latest"]["get"]["responses"])
    assert ops[PREFIX + "/latest"]["get"]["security"] == [{"HTTPBearer": []}]


# --- every role's refusal and the query token, on routes made for the purpose ---------------

ROLE_ROUTES = {"GET /v": VIEWER, "GET /o": OPERATOR, "POST /e": ENGINEER, "DELETE /a": ADMIN,
               "GET /stream": Access("viewer", query_token=True), "GET /open": Access(None)}


@pytest.fixture(scope="module")
def role_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client,
                                                                          dict[str, dict]]]:
    data_dir = tmp_path_factory.mktemp("roles")
    guard = Guard(TokenStore(data_dir), ROLE_ROUTES, PREFIX)
    router = APIRouter(route_class=GuardedRoute)
    for key, access in ROLE_ROUTES.items():
        method, path = key.split(" ")
        router.add_api_route(path, whoami if access.role else lambda: {}, methods=[method])
    app = FastAPI()
    app.state.guard = guard
    app.include_router(router, prefix=PREFIX, dependencies=guard.dependencies)
    guard.verify(app)
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        yield c, make_callers(data_dir)


def whoami(who: Caller) -> dict:
    return {"name": who.name, "role": who.role}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(ROLE_ROUTES))
def test_each_role_and_the_query_token(role_client: tuple[httpx.Client, dict[str, dict]],
                                       route: str, caller: str) -> None:
    client, callers = role_client
    method, path = route.split(" ")
    check(call(client, method, PREFIX + path, callers[caller]),
          expected(ROLE_ROUTES[route], caller))


def test_a_route_knows_who_called(role_client: tuple[httpx.Client, dict[str, dict]]) -> None:
    """What an acknowledgement records as its author: the token's name and role."""
    client, callers = role_client
    assert client.get(PREFIX + "/o", **callers["engineer"]).json() == {
        "name": "engineer-1", "role": "engineer"}


def _router(*paths: str, guarded: bool = True) -> APIRouter:
    router = APIRouter(route_class=GuardedRoute if guarded else APIRoute)
    for path in paths:
        router.add_api_route(path, lambda: None, methods=["GET"])
    return router


@pytest.mark.parametrize(("paths", "guarded", "problem"), [
    (["/v", "/new"], True, "GET /new: no access rule"),
    (["/v"], True, "GET /gone: an access rule for a route the app does not have"),
    (["/v", "/gone"], False, "GET /v: needs viewer but is served without the guard"),
])
def test_a_route_and_its_rule_must_match(tmp_path: Path, paths: list[str], guarded: bool,
                                         problem: str) -> None:
    guard = Guard(TokenStore(tmp_path), {"GET /v": VIEWER, "GET /gone": VIEWER}, PREFIX)
    app = FastAPI()
    app.include_router(_router(*paths, guarded=guarded), prefix=PREFIX)
    with pytest.raises(ValueError, match=re.escape(problem)):
        guard.verify(app)


# --- tokens come and go while the API runs; logs never hold one ----------------------------

def test_new_and_revoked_tokens_count_at_once(own_client: httpx.Client, site: Site,
                                              cli: CliRun,
                                              caplog: pytest.LogCaptureFixture) -> None:
    client = own_client
    config = site.site.data_dir.parent / "site.toml"  # data_dir is beside the site file
    code, out, err = cli("token", "create", "--role", "viewer", "--name", "live",
                         "--config", config)
    assert code == 0
    secret = out.strip()
    assert secret.startswith("sw_") and secret not in err
    with caplog.at_level(logging.INFO):
        assert client.get(PREFIX + "/points", **bearer(secret)).status_code == 200
        assert cli("token", "revoke", "live", "--config", config)[0] == 0
        refused = client.get(PREFIX + "/points", **bearer(secret))
        assert refused.status_code == 401
        client.get(PREFIX + "/points", params={QUERY_TOKEN: secret})
    server_log = "\n".join(r.getMessage() for r in caplog.records
                           if not r.name.startswith("httpx"))  # httpx: this test's client
    assert "event=auth_refused status=401 reason=invalid_token" in server_log
    assert secret[3:] not in server_log


def test_refused_requests_are_logged_at_a_bounded_rate(own_client: httpx.Client,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Anyone can make the API refuse requests: 300 of them log 10 lines (a minute's
    allowance per status and reason); the first line after the minute counts the rest."""
    with caplog.at_level(logging.INFO, logger="api.security.auth"):
        for _ in range(300):
            assert own_client.get(PREFIX + "/points").status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "api.security.auth"]
    assert len(lines) == 10, lines[:3]
    assert all(line.startswith("event=auth_refused status=401 reason=missing ")
               for line in lines)


# --- CORS and HTTPS -------------------------------------------------------------------------

HMI = "https://hmi.example:8443"


@pytest.mark.parametrize(("origins", "origin", "allowed"), [
    ("", HMI, False),  # off by default
    (f'cors_origins = ["{HMI}"]', HMI, True),
    (f'cors_origins = ["{HMI}"]', "https://evil.example", False),
])
def test_cors(tmp_path: Path, origins: str, origin: str, allowed: bool) -> None:
    site = write_site(tmp_path, f"\n[api]\n{origins}\n")
    options = make_callers(site.site.data_dir)["viewer"]
    historian = EmbeddedHistorian(tmp_path / "h.sqlite", ["t1"])
    try:
        with (running(create_app(site, historian, lambda: None)) as (url, _),
              httpx.Client(base_url=url + PREFIX, timeout=30) as c):
            got = c.get("/points", headers={**options["headers"], "Origin": origin})
            preflight = c.options("/points", headers={
                "Origin": origin, "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization"})
    finally:
        historian.close()
    assert got.status_code == 200
    assert got.headers.get("access-control-allow-origin") == (origin if allowed else None)
    assert (preflight.status_code == 200) == allowed
    if allowed:
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as an admin would make with openssl."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "api-cert.pem", folder / "api-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_from_the_site_file(tmp_path: Path) -> None:
    """`scadawatch api` with `tls_cert` and `tls_key` speaks HTTPS only."""
    cert, _ = self_signed(tmp_path)
    port = free_port()
    site = write_site(tmp_path, f'\n[api]\nport = {port}\ntls_cert = "api-cert.pem"\n'
                                f'tls_key = "api-key.pem"\n')
    EmbeddedHistorian(site.site.data_dir / "historian.sqlite", ["t1"]).close()
    options = make_callers(site.site.data_dir)["viewer"]
    api = subprocess.Popen([sys.executable, "-m", "scadawatch", "api", "--config",
                            str(tmp_path / "site.toml")], stderr=subprocess.PIPE, text=True)
    trust = ssl.create_default_context(cafile=cert)
    try:
        deadline = time.monotonic() + RUN_LIMIT
        while True:
            assert api.poll() is None and time.monotonic() < deadline, "the API did not start"
            try:
                points = httpx.get(f"https://127.0.0.1:{port}{PREFIX}/points", verify=trust,
                                   timeout=5, **options)
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}{PREFIX}/health", timeout=5)
    finally:
        api.send_signal(signal.SIGTERM)
        _, err = api.communicate(timeout=RUN_LIMIT)
    assert points.status_code == 200 and points.json()["count"] == 1
    assert f"url=https://127.0.0.1:{port}" in err
