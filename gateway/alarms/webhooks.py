"""Outgoing webhooks for on-call: raise and clear transitions of annunciated alarms, POSTed as
JSON in journal order, at least once.

Each webhook keeps a cursor (the last journal event id it has dealt with) in the alarm store:
the journal is the outbox, so a receiver that is down gets every event later, in order, even
across gateway restarts. A failed delivery (connection error, timeout, 5xx, 408, 429) is
retried with exponential backoff and holds back the events after it; another 4xx is the
receiver refusing that body for good, so it is logged and passed. A new webhook starts at the
journal's end (no history replayed at on-call). The receiver deduplicates by
`X-Scadawatch-Event-Id` (a crash between delivery and cursor update resends one event).

Logs and the cursor know a webhook by `Webhook.key` (its name, else its host), never by its
URL; a user and password in the URL are sent as HTTP Basic auth.

Body: `{"event_id", "transition", "time", "site", "alarm": {...the alarm's state...}}`.
Headers: `X-Scadawatch-Event-Id`, and with `secret_env` set
`X-Scadawatch-Signature: sha256=<hex HMAC-SHA256 of the raw body under the secret>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request

from gateway.alarms.store import AlarmStore, JournalEntry
from gateway.site.model import Site, Webhook
from timegrammar.iso import iso

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between looks at the journal when caught up
BATCH = 100  # journal entries read at a time
TRANSITIONS = ("raise", "clear")
SIGNATURE_HEADER = "X-Scadawatch-Signature"


class DeliveryError(Exception):
    """This delivery failed; `permanent`: the receiver refused the body (do not retry)."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(site: str, entry: JournalEntry) -> bytes:
    return json.dumps({"event_id": entry.seq, "transition": entry.transition,
                       "time": iso(entry.ts_ns, "ms"), "site": site, "alarm": entry.data},
                      separators=(",", ":")).encode()


def _target(hook: Webhook) -> tuple[str, dict[str, str], list[str]]:
    """The URL to send to, its headers, and the parts of it that are secret: a user and
    password in the URL (`https://user:pass@host/...`) go as HTTP Basic auth, as curl sends
    them (urllib would take them for the host)."""
    parts = urllib.parse.urlsplit(hook.url)
    secrets = [s for s in (parts.query, parts.password, parts.username) if s]
    if parts.username is None and parts.password is None:
        return hook.url, {}, secrets
    login = ":".join(urllib.parse.unquote(s or "") for s in (parts.username, parts.password))
    url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url, {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}, secrets


def _scrubbed(text: str, secrets: list[str]) -> str:
    """An error's text for the log, without the URL's secret parts (an error may quote it)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def post(hook: Webhook, body: bytes, event_id: int) -> int:
    """POST one body (blocking; run in a thread); the HTTP status, or DeliveryError."""
    url, headers, secrets = _target(hook)
    headers |= {"Content-Type": "application/json", "User-Agent": "scadawatch",
                "X-Scadawatch-Event-Id": str(event_id)}
    if hook.secret_env is not None:
        secret = os.environ.get(hook.secret_env)
        if not secret:  # never send unsigned what the receiver expects signed
            raise DeliveryError(f"environment variable {hook.secret_env} (secret_env of "
                                f"webhook {hook.key}) is not set")
        headers[SIGNATURE_HEADER] = sign(secret, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        retry = e.code >= 500 or e.code in (408, 429)
        raise DeliveryError(_scrubbed(f"HTTP {e.code} {e.reason}", secrets),
                            permanent=not retry) from None
    except (urllib.error.URLError, OSError, ValueError) as e:  # http.client's InvalidURL too
        reason = getattr(e, "reason", None) or e
        raise DeliveryError(_scrubbed(f"{type(reason).__name__}: {reason}", secrets)) from None


class WebhookSender:
    """Delivers one webhook's events from its cursor on, until stopped."""

    def __init__(self, site: Site, store: AlarmStore, hook: Webhook) -> None:
        self.site, self.store, self.hook = site, store, hook
        self.delivered = 0
        self.failures = 0
        self._backoff = hook.retry_initial  # seconds before the next retry

    def _wanted(self, entry: JournalEntry) -> bool:
        return (entry.transition in TRANSITIONS and entry.alarm_id is not None
                and bool(entry.data.get("annunciated"))
                and self.hook.accepts(entry.data.get("priority", "low")))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; a store error (a lock held too long) is logged and
        retried like a delivery."""
        name = self.hook.key
        while not stop.is_set():
            try:
                await self._follow(stop, name)
            except sqlite3.Error as e:
                log.error("event=webhook_store_error webhook=%s reason=%r", name, str(e))
                await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._backoff):
                await stop.wait()
        self._backoff = min(self._backoff * 2, self.hook.retry_max)

    async def _follow(self, stop: asyncio.Event, name: str) -> None:
        store, key = self.store, self.hook.key
        # Before, an unnamed webhook's cursor was kept under its whole URL: moved, if there.
        if self.hook.url != key and await asyncio.to_thread(store.move_cursor, self.hook.url,
                                                            key):
            log.info("event=webhook_cursor_moved webhook=%s from=its_url", name)
        cursor = await asyncio.to_thread(store.cursor, key)
        if cursor is None:
            cursor = await asyncio.to_thread(store.last_event_id)
            await asyncio.to_thread(store.set_cursor, key, cursor)
        log.info("event=webhook_started webhook=%s after_event_id=%d", name, cursor)
        saved = cursor
        while not stop.is_set():
            entries = await asyncio.to_thread(store.events_after, cursor, BATCH)
            retry = False
            for entry in entries:
                if stop.is_set():
                    break
                if self._wanted(entry):
                    try:
                        await self._deliver(entry)
                    except DeliveryError as e:
                        self.failures += 1
                        if not e.permanent:
                            log.warning("event=webhook_failed webhook=%s event_id=%d reason=%r "
                                        "retry_in=%.1f", name, entry.seq, str(e), self._backoff)
                            await self._pause(stop)
                            retry = True
                            break  # this entry again; the ones after it wait
                        log.error("event=webhook_refused webhook=%s event_id=%d reason=%r",
                                  name, entry.seq, str(e))
                    self._backoff = self.hook.retry_initial
                    # Saved after each delivery: a restart resends at most this one.
                    await asyncio.to_thread(store.set_cursor, key, entry.seq)
                    saved = entry.seq
                cursor = entry.seq
            if cursor != saved:  # entries not for this webhook: one write for all of them
                await asyncio.to_thread(store.set_cursor, key, cursor)
                saved = cursor
            if not retry and len(entries) < BATCH:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_INTERVAL):
                        await stop.wait()

    async def _deliver(self, entry: JournalEntry) -> None:
        await asyncio.to_thread(post, self.hook, body_of(self.site.site.name, entry), entry.seq)
        self.delivered += 1
        log.info("event=webhook_delivered webhook=%s event_id=%d transition=%s alarm=%s",
                 self.hook.key, entry.seq, entry.transition, entry.alarm_id)


async def run_webhooks(site: Site, store: AlarmStore, stop: asyncio.Event) -> None:
    """Run every webhook of the site until `stop` is set."""
    senders = [WebhookSender(site, store, hook) for hook in site.webhooks]
    await asyncio.gather(*(s.run(stop) for s in senders))
