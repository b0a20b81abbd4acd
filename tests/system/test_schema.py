"""schemathesis over the whole `/openapi.json`, with an admin token, against the real API on
loopback over a site with data (an hour of readings) and alarms in each lifecycle state: no
answer is a 5xx, and every answer (status, content type, body) is one the schema declares.

The event stream never ends, so it is left out (tests/api/test_alarm_api.py reads it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from support.alarm_helpers import NS, alarm, cleared, raised
from support.harness import auth_headers, running

from anomaly.core.batch import Batch
from api.app import create_app
from gateway.alarms.store import AlarmStore
from gateway.data_dir import store_path
from gateway.site.loader import load_site
from gateway.site.model import Site
from gateway.status import GatewayStatus
from gateway.storage.historian import EmbeddedHistorian

SITE_TOML = """
[site]
name = "schematest"

[[points]]
tag = "dma1.inlet.flow"
kind = "flow"
unit = "m3/h"
zone = "dma1"
role = "inflow"
lo = 0.0
hi = 500.0

[[points]]
tag = "dma1.pressure"
kind = "pressure"
unit = "bar"
zone = "dma1"
"""
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]
MAX_EXAMPLES = 15  # per operation: the whole run stays under a minute


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    path = tmp_path_factory.mktemp("schema") / "site.toml"
    path.write_text(SITE_TOML)
    return load_site(path)


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[str]:
    """The API over an hour of 10 s readings of both points and alarms in every state."""
    now = (np.int64(np.datetime64("now", "s").astype(np.int64)) * NS).item()
    ts = now - 3600 * NS + np.arange(360) * 10 * NS
    historian = EmbeddedHistorian(site.site.data_dir / "historian.sqlite",
                                  [p.tag for p in site.points])
    historian.store([(1, Batch.concat([
        Batch.of(source_ts=ts, point=np.full(360, i), value=np.linspace(1.0, 9.0, 360),
                 quality=0) for i in range(2)]))])
    store = AlarmStore(store_path(site.site.data_dir))
    open_, acked, done, shelved = (alarm("limit", "dma1.pressure", now - k * 60 * NS, scope="tag")
                                   for k in range(4))
    store.apply([raised(a) for a in (open_, acked, done, shelved)] + [cleared(done)])
    store.ack(acked.id, "schemathesis")
    store.ack(done.id, "schemathesis")
    store.shelve(shelved.id, "schemathesis", "test", 3600 * NS)
    try:
        status = GatewayStatus(site="schematest", started=time.time() - 60)  # health: 200
        with running(create_app(site, historian, status.snapshot, alarm_store=store)) as (url, _):
            yield url
    finally:
        store.close()
        historian.close()


@pytest.fixture(scope="module")
def admin(site: Site) -> dict[str, str]:
    return auth_headers(site.site.data_dir, "admin")


@pytest.fixture(scope="module")
def api_schema(server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/api/v1/alarms/stream")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_answer_matches_the_schema(case: schemathesis.Case,
                                        admin: dict[str, str]) -> None:
    case.call_and_validate(headers=admin, checks=CHECKS, timeout=30)
