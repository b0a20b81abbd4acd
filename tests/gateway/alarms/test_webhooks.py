"""Outgoing webhooks against a real HTTP receiver on loopback (http.server) that fails when
told to: retries with backoff, HMAC signatures checked as a receiver would, priority routing,
an outbox that survives a receiver outage and a restart of the sender."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.alarm_helpers import alarm, cleared, raised
from support.harness import RUN_LIMIT

from gateway.alarms.store import AlarmStore
from gateway.alarms.webhooks import SIGNATURE_HEADER, WebhookSender, run_webhooks
from gateway.site.model import Site, SiteSection, Webhook
from scadawatch.ports import free_port

SECRET = "correct horse battery staple"
SECRET_ENV = "SCADAWATCH_TEST_HOOK_SECRET"


@dataclass
class Receiver:
    """What a receiver got; `fail[path]` requests to a path are answered with that status
    first (503: try again; 400: refused for good)."""

    port: int
    fail: dict[str, list[int]] = field(default_factory=dict)
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)  # accepted
    attempts: list[tuple[str, int]] = field(default_factory=list)  # (path, event id) of each

    def bodies(self, path: str) -> list[dict]:
        return [json.loads(body) for p, _, body in self.got if p == path]


@contextlib.contextmanager
def receiver(port: int = 0, fail: dict[str, list[int]] | None = None) -> Iterator[Receiver]:
    state = Receiver(port, fail or {})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.attempts.append((self.path, int(self.headers["X-Scadawatch-Event-Id"])))
            pending = state.fail.get(self.path, [])
            status = pending.pop(0) if pending else 204
            if status == 204:
                state.got.append((self.path, dict(self.headers), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def hook(port: int, path: str, **keys: object) -> Webhook:
    return Webhook(url=f"http://127.0.0.1:{port}{path}", retry_initial=0.05, retry_max=0.2,
                   timeout=5.0, **keys)


def site_with(*hooks: Webhook) -> Site:
    return Site(site=SiteSection(name="hooks"), webhooks=list(hooks))


async def run_until(site: Site, store: AlarmStore, done: Callable[[], bool]) -> None:
    """Run the site's webhooks until `done()` (checked every 20 ms, at most RUN_LIMIT)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_webhooks(site, store, stop))
    try:
        deadline = time.monotonic() + RUN_LIMIT
        while not done():
            assert time.monotonic() < deadline, "the webhooks did not deliver in time"
            assert not task.done(), task
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlarmStore]:
    s = AlarmStore(tmp_path / "alarms.sqlite")
    yield s
    s.close()


def started(store: AlarmStore, *names: str) -> bool:
    return all(store.cursor(n) is not None for n in names)


def test_retries_signatures_and_priority_routing(store: AlarmStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    leak, drift = alarm("leak", "dma1"), alarm("drift", "dma1.p1", scope="tag")
    outage, hidden = alarm("line_outage", "f1.l1", scope="tag"), alarm("leak", "dma9")
    with receiver(fail={"/all": [503, 503, 503]}) as rx:
        site = site_with(hook(rx.port, "/all", name="oncall", min_priority="medium",
                              secret_env=SECRET_ENV),
                         hook(rx.port, "/critical", priorities=["critical"]))

        async def scenario() -> None:
            async def engine() -> None:
                while not started(store, "oncall", site.webhooks[1].key):
                    await asyncio.sleep(0.01)
                store.apply([raised(leak), raised(drift), raised(outage)])
                store.suppress("zone", "dma9", "op", "pump station works")
                store.apply([raised(hidden), cleared(hidden), cleared(leak)])

            writer = asyncio.create_task(engine())
            await run_until(site, store, lambda: len(rx.got) == 4)
            await writer

        asyncio.run(scenario())
    # The receiver's side: verify each signature over the raw body, as documented.
    for path, headers, body in rx.got:
        if path == "/all":
            want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers[SIGNATURE_HEADER], want)
        else:
            assert SIGNATURE_HEADER not in headers  # no secret_env: unsigned
        assert headers["X-Scadawatch-Event-Id"] == str(json.loads(body)["event_id"])
    sent = rx.bodies("/all")
    assert [(b["transition"], b["alarm"]["id"]) for b in sent] == [
        ("raise", leak.id), ("raise", outage.id), ("clear", leak.id)]
    assert [b["event_id"] for b in sent] == sorted(b["event_id"] for b in sent)
    assert {b["site"] for b in sent} == {"hooks"}
    assert sent[2]["alarm"]["state"] == "cleared-unacknowledged"
    assert [(b["transition"], b["alarm"]["id"]) for b in rx.bodies("/critical")] == [
        ("raise", outage.id)]
    # The first event was tried four times (three 503s), then the next ones once each.
    first = sent[0]["event_id"]
    assert [e for p, e in rx.attempts if p == "/all"] == [first] * 4 + [
        b["event_id"] for b in sent[1:]]


def test_a_down_receiver_gets_everything_later_once(store: AlarmStore) -> None:
    port = free_port()
    site = site_with(hook(port, "/hook", name="pager"))
    made = [alarm("leak", f"dma{i}") for i in range(4)]

    async def while_down() -> None:
        sender = WebhookSender(site, store, site.webhooks[0])
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop))
        while not started(store, "pager"):
            await asyncio.sleep(0.01)
        store.apply([raised(made[0]), raised(made[1])])
        while sender.failures < 2:  # connection refused, retried
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(while_down())  # the gateway stops while the receiver is still down
    store.apply([raised(made[2])])
    with receiver(port) as rx:  # back up, and the gateway restarts: its outbox is persisted
        asyncio.run(run_until(site, store, lambda: len(rx.got) == 3))
        assert [b["alarm"]["id"] for b in rx.bodies("/hook")] == [a.id for a in made[:3]]
        store.apply([raised(made[3])])
        asyncio.run(run_until(site, store, lambda: len(rx.got) == 4))
    assert [b["alarm"]["id"] for b in rx.bodies("/hook")] == [a.id for a in made]  # none twice


def test_a_refused_body_is_passed_and_an_unset_secret_holds_the_queue(
        store: AlarmStore, monkeypatch: pytest.MonkeyPatch) -> None:
    made = [alarm("leak", f"dma{i}") for i in range(2)]
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with receiver(fail={"/hook": [400]}) as rx:
        site = site_with(hook(rx.port, "/hook", name="pager", secret_env=SECRET_ENV))
        sender = WebhookSender(site, store, site.webhooks[0])

        async def unsigned() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(sender.run(stop))
            while not started(store, "pager"):
                await asyncio.sleep(0.01)
            store.apply([raised(a) for a in made])
            while sender.failures < 2:
                await asyncio.sleep(0.01)
            stop.set()
            await task

        asyncio.run(unsigned())
        assert rx.attempts == []  # never sent unsigned
        monkeypatch.setenv(SECRET_ENV, SECRET)
        asyncio.run(run_until(site, store, lambda: len(rx.got) == 1))
    # The first was refused (400) for good and passed over; the second delivered.
    (_, refused), (_, delivered) = rx.attempts  # each tried once
    assert refused < delivered == rx.bodies("/hook")[0]["event_id"]
    assert [b["alarm"]["id"] for b in rx.bodies("/hook")] == [made[1].id]


# --- credentials in a webhook URL ------------------------------------------------------------

USER, PASSWORD, QUERY_SECRET = "alice", "S3cretPass", "T0ken4711"


def secret_url(port: int) -> str:
    return f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/hook?token={QUERY_SECRET}"


def files_holding(folder: Path, *secrets: str) -> list[str]:
    """Files in `folder` (the alarm store, its WAL...) holding any of `secrets`."""
    return [f"{p.name}: {s}" for p in sorted(folder.iterdir()) for s in secrets
            if s.encode() in p.read_bytes()]


def test_url_credentials_go_as_basic_auth_and_never_to_logs_or_the_store(
        store: AlarmStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = [alarm("leak", f"dma{i}") for i in range(2)]
    with receiver(fail={f"/hook?token={QUERY_SECRET}": [503]}) as rx:  # a failure logged too
        site = site_with(Webhook(url=secret_url(rx.port), retry_initial=0.05, timeout=5.0))

        async def scenario() -> None:
            async def engine() -> None:
                while not started(store, site.webhooks[0].key):
                    await asyncio.sleep(0.01)
                store.apply([raised(a) for a in made])

            writer = asyncio.create_task(engine())
            await run_until(site, store, lambda: len(rx.got) == 2)
            await writer

        asyncio.run(scenario())
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert [h.get("Authorization") for _, h, _ in rx.got] == [f"Basic {basic}"] * 2
    assert site.webhooks[0].key == f"127.0.0.1:{rx.port}"  # unnamed: its host and port
    assert f"webhook=127.0.0.1:{rx.port} " in caplog.text
    assert "event=webhook_failed" in caplog.text
    for secret in (USER, PASSWORD, QUERY_SECRET):
        assert secret not in caplog.text
    store.close()
    assert files_holding(tmp_path, USER, PASSWORD, QUERY_SECRET) == []


@pytest.mark.parametrize("named_before", [False, True],
                         ids=["unnamed-before", "named-since-with-its-own-cursor"])
def test_a_cursor_kept_under_the_url_moves_to_the_name_with_nothing_resent_or_skipped(
        store: AlarmStore, tmp_path: Path, named_before: bool) -> None:
    """Before, an unnamed webhook's cursor was keyed by its whole URL, credentials and all:
    the first start of this version moves it to the webhook's name and leaves no trace (a
    name given since, with a cursor of its own, keeps that one)."""
    made = [alarm("leak", f"dma{i}") for i in range(5)]
    with receiver() as rx:
        url = secret_url(rx.port)
        store.apply([raised(a) for a in made[:3]])
        if named_before:
            store.set_cursor(url, 0)  # stale: the name's cursor is the one in use
            store.set_cursor("pager", store.last_event_id() - 1)
        else:
            store.set_cursor(url, store.last_event_id() - 1)  # made[2] not yet delivered
        store.apply([raised(a) for a in made[3:]])
        site = site_with(Webhook(url=url, name="pager", retry_initial=0.05, timeout=5.0))
        asyncio.run(run_until(site, store, lambda: len(rx.got) == 3))
    assert [b["alarm"]["id"] for b in rx.bodies(f"/hook?token={QUERY_SECRET}")] == [
        a.id for a in made[2:]]
    assert store.cursor(url) is None and store.cursor("pager") == store.last_event_id()
    store.close()
    assert files_holding(tmp_path, USER, PASSWORD, QUERY_SECRET) == []
