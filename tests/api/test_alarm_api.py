"""The alarm API on a real uvicorn server on loopback over a real alarm store: the lifecycle
table (every operator action and engine event in every state), filters, bulk ack, KPIs, and
the event stream resuming across an API restart with every event exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter
from support.alarm_helpers import NS, T0, alarm, cleared, raised
from support.harness import RUN_LIMIT, running

from anomaly.core.alarms import Alarm as EngineAlarm
from api.app import create_app
from api.models import AlarmHistory, AlarmKpis, Alarms, BulkAckResult
from api.routes import alarms as alarms_api
from api.tokens import TokenStore
from gateway.alarms.encoding import AlarmView
from gateway.alarms.store import AlarmStore
from gateway.data_dir import store_path
from gateway.site.loader import load_site
from gateway.site.model import Site
from gateway.storage.historian import EmbeddedHistorian

API = "/api/v1/alarms"
ALARM = TypeAdapter(AlarmView)  # the answer checked against the one alarm type


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    folder = tmp_path_factory.mktemp("alarm-api")
    (folder / "site.toml").write_text('[site]\nname = "alarmtest"\n[alarms]\nmax_shelve = 7200\n'
                                      '[[points]]\ntag = "sz.inlet.flow"\nzone = "sz"\n')
    return load_site(folder / "site.toml")


@pytest.fixture(scope="module")
def store(site: Site) -> Iterator[AlarmStore]:
    """The gateway's side: engine events go in here, the API reads and writes the same file."""
    s = AlarmStore(store_path(site.site.data_dir))
    yield s
    s.close()


@pytest.fixture(scope="module")
def historian(site: Site) -> Iterator[EmbeddedHistorian]:
    h = EmbeddedHistorian(site.site.data_dir / "historian.sqlite", [p.tag for p in site.points])
    yield h
    h.close()


def new_app(site: Site, historian: EmbeddedHistorian) -> FastAPI:
    return create_app(site, historian, lambda: None)


@pytest.fixture(scope="module")
def tokens(site: Site) -> dict[str, dict[str, str]]:
    made = TokenStore(site.site.data_dir)
    return {name: {"Authorization": f"Bearer {made.create(role, name)[1]}"}
            for name, role in (("alice", "operator"), ("vic", "viewer"))}


@pytest.fixture(scope="module")
def http(site: Site, historian: EmbeddedHistorian,
         tokens: dict[str, dict[str, str]]) -> Iterator[httpx.Client]:
    with running(new_app(site, historian)) as (url, _), \
            httpx.Client(base_url=url, headers=tokens["alice"], timeout=30) as c:
        yield c


# --- lifecycle ------------------------------------------------------------------------------

SETUPS = ["active-unacknowledged", "active-acknowledged", "cleared-unacknowledged", "closed",
          "shelved"]
# (action, state before) -> the state after, or (409, words the refusal must contain).
LIFECYCLE: dict[str, dict[str, str | tuple[int, str]]] = {
    "ack": {"active-unacknowledged": "active-acknowledged",
            "active-acknowledged": (409, "acknowledged by alice"),
            "cleared-unacknowledged": "closed",
            "closed": (409, "acknowledged by alice"),
            "shelved": "active-acknowledged"},
    "shelve": {"active-unacknowledged": "active-unacknowledged",
               "active-acknowledged": "active-acknowledged",
               "cleared-unacknowledged": "cleared-unacknowledged",
               "closed": (409, "is closed"),
               "shelved": (409, "already shelved")},
    "unshelve": {"active-unacknowledged": (409, "is not shelved"),
                 "active-acknowledged": (409, "is not shelved"),
                 "cleared-unacknowledged": (409, "is not shelved"),
                 "closed": (409, "is not shelved"),
                 "shelved": "active-unacknowledged"},
    "comment": {s: s if s != "shelved" else "active-unacknowledged" for s in SETUPS},
    "clear": {"active-unacknowledged": "cleared-unacknowledged",
              "active-acknowledged": "closed",
              "cleared-unacknowledged": "cleared-unacknowledged",
              "closed": "closed",
              "shelved": "cleared-unacknowledged"},
    "raise": {s: s if s != "shelved" else "active-unacknowledged" for s in SETUPS},
}
BODIES = {"ack": {"comment": "seen"}, "shelve": {"duration": "30min", "reason": "work"},
          "unshelve": {}, "comment": {"text": "crew sent"}}
SHELVED_AFTER = {("shelve", s) for s in SETUPS if s != "closed"} | {
    ("ack", "shelved"), ("comment", "shelved"), ("clear", "shelved"), ("raise", "shelved")}


def put_in(http: httpx.Client, store: AlarmStore, a: EngineAlarm, state: str) -> None:
    store.apply([raised(a)])
    if state in ("active-acknowledged", "closed"):
        http.post(f"{API}/{a.id}/ack").raise_for_status()
    if state in ("cleared-unacknowledged", "closed"):
        store.apply([cleared(a)])
    if state == "shelved":
        http.post(f"{API}/{a.id}/shelve", json=BODIES["shelve"]).raise_for_status()


@pytest.mark.parametrize("state", SETUPS)
@pytest.mark.parametrize("action", list(LIFECYCLE))
def test_lifecycle(http: httpx.Client, store: AlarmStore, action: str, state: str) -> None:
    a = alarm("spike", f"life.{action}.{state}", scope="tag")
    put_in(http, store, a, state)
    expected = LIFECYCLE[action][state]
    if action in ("clear", "raise"):
        store.apply([cleared(a) if action == "clear" else raised(a)])
        got = ALARM.validate_python(http.get(f"{API}/{a.id}").json()["alarm"])
    else:
        r = http.post(f"{API}/{a.id}/{action}", json=BODIES[action])
        if isinstance(expected, tuple):
            status, words = expected
            assert (r.status_code, words in r.json()["detail"]) == (status, True), r.text
            return
        assert r.status_code == 200, r.text
        got = ALARM.validate_python(r.json())
    assert got["state"] == expected
    assert got["shelved"] == ((action, state) in SHELVED_AFTER)


def test_journal_names_who_did_what(http: httpx.Client, store: AlarmStore) -> None:
    a = alarm("leak", "journal-zone")
    store.apply([raised(a)])
    http.post(f"{API}/{a.id}/comment", json={"text": "crew on the way"}).raise_for_status()
    http.post(f"{API}/{a.id}/ack", json={"comment": "leak confirmed"}).raise_for_status()
    store.apply([cleared(a)])
    got = AlarmHistory.model_validate(http.get(f"{API}/{a.id}").json())
    assert [(e.transition, e.who, e.comment) for e in got.journal] == [
        ("raise", "system", None), ("comment", "alice", "crew on the way"),
        ("ack", "alice", "leak confirmed"), ("clear", "system", None)]
    assert (got.alarm["state"], got.alarm["acked_by"]) == ("closed", "alice")
    ids = [e.event_id for e in got.journal]
    assert ids == sorted(ids) and got.alarm["event_id"] == ids[-1]


@pytest.mark.parametrize("path,body,status,words", [
    ("nope:x:1/ack", {}, 404, "alarm 'nope:x:1' does not exist"),
    ("nope:x:1", None, 404, "does not exist"),
    ("{id}/shelve", {"duration": "soon", "reason": "x"}, 400, "duration: 'soon' is not a "
                                                              "duration"),
    ("{id}/shelve", {"duration": "3h", "reason": "x"}, 400, "at most 7200 s (alarms.max_shelve)"),
    ("{id}/shelve", {"duration": "9" * 400 + "s", "reason": "x"}, 400, "at most 7200 s"),
    ("{id}/shelve", {"duration": "1h"}, 422, "reason"),
    ("{id}/comment", {"text": ""}, 422, "text"),
    # Every request model is bounded, and so is every body (before it is read):
    ("{id}/comment", {"text": "x" * 2001}, 422, "text: String should have at most 2000"),
    ("{id}/shelve", {"duration": "1" * 2001, "reason": "x"}, 422, "duration: String should"),
    ("ack", {"ids": ["x" * 257]}, 422, "ids: String should have at most 256 characters"),
    ("ack", {"ids": [str(i) for i in range(10_001)]}, 422, "ids: List should have at most"),
    ("ack", {"zone": "z" * 201}, 422, "zone: String should have at most 200 characters"),
    ("ack", {"state": ["open"] * 6}, 422, "state: List should have at most 5 items"),
    ("{id}/comment", {"text": "x" * 70_000}, 413, "request body: at most 65,536 bytes"),
    ("ack", {"ids": ["x" * 200] * 6000}, 413, "request body: at most 1,048,576 bytes"),
])
def test_bad_requests_are_named(http: httpx.Client, store: AlarmStore, path: str,
                                body: dict | None, status: int, words: str) -> None:
    a = alarm("drift", "bad.requests", scope="tag")
    store.apply([raised(a)])
    url = f"{API}/{path.format(id=a.id)}"
    r = http.get(url) if body is None else http.post(url, json=body)
    assert r.status_code == status and words in r.json()["detail"], r.text


@pytest.mark.parametrize(("method", "path", "status", "words"), [
    ("PUT", "tag/nope", 404, "name: 'nope' is not a tag of site 'alarmtest'"),
    ("PUT", "zone/nope", 404, "name: 'nope' is not a zone of site 'alarmtest'"),
    ("PUT", "zone/" + "z" * 201, 422, "name: String should have at most 200 characters"),
    ("DELETE", "tag/" + "t" * 201, 422, "name: String should have at most 200 characters"),
    ("PUT", "valve/sz", 422, "scope: "),
])
def test_suppressions_name_only_tags_and_zones_of_the_site(http: httpx.Client, method: str,
                                                            path: str, status: int,
                                                            words: str) -> None:
    r = http.request(method, f"{API}/suppressions/{path}", json={"reason": "works"})
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert all(s["name"] != "nope" for s in http.get(f"{API}/suppressions").json())


def test_viewer_reads_but_cannot_ack(http: httpx.Client, store: AlarmStore,
                                     tokens: dict[str, dict[str, str]]) -> None:
    a = alarm("leak", "viewer-zone")
    store.apply([raised(a)])
    assert http.get(f"{API}/{a.id}", headers=tokens["vic"]).status_code == 200
    assert http.post(f"{API}/{a.id}/ack", headers=tokens["vic"]).status_code == 403


# --- list, bulk ack, suppression, KPIs -------------------------------------------------------

def test_filters_and_order(http: httpx.Client, store: AlarmStore) -> None:
    made = [alarm("leak", "fz1", T0, priority="high"),
            alarm("limit", "fz1.p", T0 + NS, scope="tag"),
            alarm("line_outage", "fz1.f", T0 + 2 * NS, scope="tag"),
            alarm("dropout", "fz1.q", T0 + 3 * NS, scope="tag")]
    store.apply([raised(a) for a in made])
    store.apply([cleared(made[3])])

    def ids(**params: object) -> list[str]:
        body = Alarms.model_validate(http.get(API, params={"zone": "fz1", **params}).json())
        assert body.count == len(body.alarms) <= body.total
        return [a["id"] for a in body.alarms]

    assert ids() == [made[2].id, made[0].id, made[1].id, made[3].id]  # priority, then time
    assert ids(state="active") == [made[2].id, made[0].id, made[1].id]
    assert ids(state="cleared-unacknowledged") == [made[3].id]
    assert ids(priority=["high", "critical"]) == [made[2].id, made[0].id]
    assert ids(kind="limit") == [made[1].id]
    assert ids(tag="fz1.q") == [made[3].id]
    assert ids(start="2026-01-05T08:00:01Z", end="2026-01-05T08:00:03Z") == [made[2].id,
                                                                            made[1].id]
    assert ids(limit=1) == [made[2].id]
    r = http.get(API, params={"start": "yesterday-ish"})
    assert r.status_code == 400 and r.json()["detail"].startswith("start:")
    assert http.get(API, params={"state": "sleeping"}).status_code == 422


def test_bulk_ack_by_ids_and_by_filter(http: httpx.Client, store: AlarmStore) -> None:
    made = [alarm("stuck", f"bz.p{i}", T0 + i * NS, scope="tag") for i in range(5)]
    store.apply([raised(a) for a in made])
    r = http.post(f"{API}/ack", json={"ids": [made[0].id, made[1].id, "nope:1:1"],
                                      "comment": "shift start"})
    got = BulkAckResult.model_validate(r.json())
    assert [a["id"] for a in got.acked] == [made[0].id, made[1].id]
    assert [(s.id, "does not exist" in s.reason) for s in got.skipped] == [("nope:1:1", True)]
    got = BulkAckResult.model_validate(http.post(f"{API}/ack", json={
        "zone": "bz", "state": ["unacknowledged"]}).json())
    assert sorted(a["id"] for a in got.acked) == sorted(a.id for a in made[2:])
    assert {a["acked_by"] for a in got.acked} == {"alice"}
    r = http.post(f"{API}/ack", json={"comment": "everything?"})
    assert r.status_code == 400 and "give the ids, or a filter" in r.json()["detail"]


def test_suppression_routes(http: httpx.Client, store: AlarmStore) -> None:
    for reason in ("works", "again"):  # idempotent: the second changes nothing
        r = http.put(f"{API}/suppressions/zone/sz", json={"reason": reason})
        assert r.status_code == 200 and (r.json()["by"], r.json()["reason"]) == ("alice", "works")
    a = alarm("leak", "sz")
    store.apply([raised(a)])
    assert a.id not in [x["id"] for x in http.get(API, params={"zone": "sz"}).json()["alarms"]]
    hidden = http.get(API, params={"zone": "sz", "suppressed": "only"}).json()["alarms"]
    assert [x["id"] for x in hidden] == [a.id]
    assert {"scope": "zone", "name": "sz"}.items() <= http.get(
        f"{API}/suppressions").json()[0].items()
    assert http.delete(f"{API}/suppressions/zone/sz").status_code == 200
    assert http.delete(f"{API}/suppressions/zone/sz").status_code == 404
    assert a.id in [x["id"] for x in http.get(API, params={"zone": "sz"}).json()["alarms"]]


def test_an_operator_releases_what_a_chattering_alarm_holds_back(
        http: httpx.Client, store: AlarmStore) -> None:
    spike = alarm("spike", "rel.p", scope="tag")
    held = replace(spike, id=f"chattering:spike:rel.p:{T0 // NS}", kind="chattering",
                   priority="medium")
    store.apply([raised(held), raised(alarm("spike", "rel.q", scope="tag"))])
    kpis = AlarmKpis.model_validate(http.get(f"{API}/kpis").json())
    assert kpis.held_back.raised >= 1
    assert {(h.id, h.kind, h.tag) for h in kpis.held_back.active} >= {(held.id, "spike",
                                                                       "rel.p")}
    r = http.post(f"{API}/{held.id}/release", json={"comment": "loose wire fixed"})
    assert r.status_code == 200 and ALARM.validate_python(r.json())["state"] == \
        "active-unacknowledged", r.text  # the gateway clears it, not the request
    journal = AlarmHistory.model_validate(http.get(f"{API}/{held.id}").json()).journal
    assert (journal[-1].transition, journal[-1].who, journal[-1].comment) == \
        ("release", "alice", "loose wire fixed")
    assert [a for _, a in store.releases_after(journal[-1].event_id - 1)] == [held.id]
    for alarm_id, words in ((held.id, "was released by alice"),
                            ("spike:rel.q:1767600000", "only a chattering alarm"),
                            ("chattering:spike:nowhere:1", "does not exist")):
        r = http.post(f"{API}/{alarm_id}/release")
        assert r.status_code in (404, 409) and words in r.json()["detail"], r.text
    store.apply([cleared(held)])
    r = http.post(f"{API}/{held.id}/release")
    assert r.status_code == 409 and "cleared at" in r.json()["detail"]


def test_kpis_route(http: httpx.Client, store: AlarmStore) -> None:
    store.apply([raised(alarm("leak", f"kz{i}")) for i in range(12)])
    k = AlarmKpis.model_validate(http.get(f"{API}/kpis").json())
    assert k.rate.current >= 12 and k.flood.active and k.flood.start_above == 10
    assert k.window_seconds == 600
    for start, end, words in (("now", "-1h", "start: must be before end"),
                              ("1970-01-01", "now", "start: the period is at most 92 days")):
        r = http.get(f"{API}/kpis", params={"start": start, "end": end})
        assert r.status_code == 400 and words in r.json()["detail"], r.text


# --- the event stream ------------------------------------------------------------------------

Event = tuple[int, str, dict]


def follow(url: str, headers: dict[str, str], got: list[Event], until: int | None = None,
           **params: object) -> None:
    """Read the stream into `got` until it ends (the server stopped) or event `until`."""
    with httpx.Client(timeout=httpx.Timeout(10.0, read=20.0)) as client, \
            client.stream("GET", f"{url}{API}/stream", headers=headers, params=params) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        try:
            for line in r.iter_lines():
                if line.startswith(":") or line.startswith("retry:"):
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "id" in fields:
                    got.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                    if until is not None and got[-1][0] >= until:
                        return
                fields = {}
        except httpx.RemoteProtocolError:  # the server went away mid-stream: fine, resume
            pass


def test_stream_resumes_across_an_api_restart_exactly_once(
        site: Site, historian: EmbeddedHistorian, store: AlarmStore,
        tokens: dict[str, dict[str, str]]) -> None:
    start = store.last_event_id()
    count = 300
    gateway = AlarmStore(store_path(site.site.data_dir))  # the gateway process' own handle

    down = threading.Event()

    def engine() -> None:
        for i in range(count):
            if i == 200:  # the rest while the API is down or starting again
                down.wait(RUN_LIMIT)
            a = alarm("spike", f"sse.p{i}", T0 + i * NS, scope="tag")
            gateway.apply([raised(a), cleared(a)] if i % 3 == 0 else [raised(a)])
            time.sleep(0.005)

    got: list[Event] = []
    writer = threading.Thread(target=engine)
    with running(new_app(site, historian)) as (url, _):
        reader = threading.Thread(target=follow, args=(url, tokens["vic"], got),
                                  kwargs={"last_event_id": start})
        reader.start()
        writer.start()
        deadline = time.monotonic() + RUN_LIMIT
        while len(got) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(got) >= 100, "the stream delivered too little"
    # The API is down; the engine goes on. A new API process, the client resumes with the
    # id of the last event it saw.
    down.set()
    reader.join(timeout=RUN_LIMIT)
    assert not reader.is_alive()
    with running(new_app(site, historian)) as (url, _):
        writer.join(timeout=RUN_LIMIT)
        last = gateway.last_event_id()
        follow(url, {**tokens["vic"], "Last-Event-ID": str(got[-1][0])}, got, until=last)
    gateway.close()
    journal = store.events_after(start, 10**6)
    assert [e.seq for e in journal] == list(range(start + 1, last + 1))
    assert [(i, t) for i, t, _ in got] == [(e.seq, e.transition) for e in journal]
    assert [d for _, _, d in got] == [e.data for e in journal]
    assert len(journal) == count + count // 3


def test_stream_token_in_the_query_and_bad_resume_id(http: httpx.Client,
                                                     tokens: dict[str, dict[str, str]]) -> None:
    secret = tokens["vic"]["Authorization"].removeprefix("Bearer ")
    url = str(http.base_url).rstrip("/")
    got: list[Event] = []
    last = int(http.get(API, params={"limit": 1, "shelved": "include",
                                     "suppressed": "include"}).json()["alarms"][0]["event_id"])
    follow(url, {}, got, until=1, access_token=secret, last_event_id=0)
    assert got[0][0] == 1 and last >= 1
    # beyond SQLite's integers (issue 13, D10): a 400 naming the header, not a stream that
    # breaks every second
    for bad in ("x", "-1", "99999999999999999999", "1e3"):
        r = httpx.get(f"{url}{API}/stream", headers={**tokens["vic"], "Last-Event-ID": bad})
        assert r.status_code == 400 and r.json()["detail"].startswith("Last-Event-ID: "), bad
    r = httpx.get(f"{url}{API}/stream", headers=tokens["vic"],
                  params={"last_event_id": "99999999999999999999"})
    assert r.status_code == 422 and "last_event_id" in r.text



def test_a_quiet_stream_sends_keep_alive_comments(http: httpx.Client,
                                                  tokens: dict[str, dict[str, str]],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alarms_api, "KEEPALIVE", 0.2)
    with http.stream("GET", f"{API}/stream", headers=tokens["vic"]) as r:
        lines = r.iter_lines()
        assert next(lines) == "retry: 1000"
        comments = [line for _, line in zip(range(10), lines, strict=False)
                    if line.startswith(": keep-alive")]
    assert comments
