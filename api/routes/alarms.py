"""`/alarms`: list and filter, acknowledge, shelve, comment, suppress; KPIs; the live stream.

The store is the gateway's alarm store (SQLite, WAL): the API reads it and writes operator
actions to it directly (see `gateway.alarms.store`); the stream follows its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse

from anomaly.core.alarms import AlarmKind
from api.context import Ctx, bad_param
from api.models import (
    ALARM_ID,
    NAME,
    AckRequest,
    AlarmHistory,
    AlarmKpis,
    Alarms,
    AlarmStateName,
    BulkAckRequest,
    BulkAckResult,
    CommentRequest,
    JournalEvent,
    PriorityName,
    Problem,
    ShelveRequest,
    Skipped,
    Suppression,
    SuppressRequest,
)
from api.security.auth import QUERY_TOKEN, Caller, GuardedRoute
from api.times import DURATION_HELP, TIME_HELP, parse_time
from gateway.alarms.encoding import AlarmView
from gateway.alarms.kpis import kpis
from gateway.alarms.store import AlarmConflict, AlarmStore, Filter, UnknownAlarm
from gateway.data_dir import store_path
from timegrammar import NS, DurationTooLong, now_ns, parse_duration
from timegrammar.iso import iso

router = APIRouter(route_class=GuardedRoute)
T = TypeVar("T")
_opening = threading.Lock()

POLL = 0.15  # seconds between looks at the journal, per stream
KEEPALIVE = 15.0  # seconds without an event before a comment line keeps proxies from closing
RETRY_MS = 1000  # the reconnect delay the stream asks of EventSource
BATCH = 500  # journal entries read at a time
MAX_LIMIT = 10_000
MAX_KPI_DAYS = 92
MAX_EVENT_ID = 2**63 - 1  # SQLite's INTEGER: the journal's event ids never go beyond

StateFilter = AlarmStateName | Literal["active", "unacknowledged", "open"]
Visibility = Literal["hide", "include", "only"]
AlarmId = Annotated[str, Path(description="an alarm id, such as `leak:dma2:1767600000`",
                              max_length=ALARM_ID)]
ScopeName = Annotated[str, Path(description="the tag or zone", max_length=NAME)]
CONFLICT: dict[int | str, dict] = {
    404: {"model": Problem, "description": "no such alarm"},
    409: {"model": Problem, "description": "the alarm's state does not allow this (the detail "
                                           "says why: already acknowledged, closed...)"},
}


def alarm_store(request: Request) -> AlarmStore:
    """The site's alarm store: the gateway's own in one process, else opened on first use."""
    state = request.app.state
    with _opening:  # sync routes run in a thread pool: two first requests at once open one
        if getattr(state, "alarms", None) is None:
            state.alarms = AlarmStore(store_path(state.context.site.site.data_dir))
    return state.alarms


Store = Annotated[AlarmStore, Depends(alarm_store)]


def _call(action: Callable[[], T]) -> T:
    """Run a store action, its refusals as HTTP answers."""
    try:
        return action()
    except UnknownAlarm as e:
        raise HTTPException(404, str(e)) from None
    except AlarmConflict as e:
        raise HTTPException(409, str(e)) from None


def _time(param: str, text: str, now: int) -> int:
    try:
        return parse_time(text, now)
    except ValueError as e:
        raise bad_param(param, str(e)) from None


def _visible(value: Visibility) -> bool | None:
    return {"hide": False, "include": None, "only": True}[value]


@router.get("/alarms", response_model=Alarms, summary="List and filter alarms")
def list_alarms(
    store: Store,
    state: Annotated[list[StateFilter] | None, Query(
        description="any of these states; `active`, `unacknowledged` and `open` (not closed) "
                    "group them")] = None,
    priority: Annotated[list[PriorityName] | None, Query()] = None,
    zone: str | None = None,
    tag: str | None = None,
    kind: AlarmKind | None = None,
    device: Annotated[str | None, Query(
        description="the device an alarm is about (a device's `comms`; a point's alarms "
                    "name its device too)")] = None,
    start: Annotated[str | None, Query(description=f"alarms that started from: {TIME_HELP}")
                     ] = None,
    end: Annotated[str | None, Query(description="... and before")] = None,
    shelved: Annotated[Visibility, Query(description="shelved alarms: hidden, included, or "
                                                     "only they")] = "hide",
    suppressed: Annotated[Visibility, Query(description="suppressed alarms (out of service)")
                          ] = "hide",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
) -> Alarms:
    """Alarms by priority (critical first), then by start (newest first)."""
    now = now_ns()
    where = Filter(states=state or (), priorities=priority or (), zone=zone or None,
                   tag=tag or None, kind=kind, device=device or None,
                   start_ns=None if start is None else _time("start", start, now),
                   end_ns=None if end is None else _time("end", end, now),
                   shelved=_visible(shelved), suppressed=_visible(suppressed))
    alarms, total = store.alarms(where, limit, now)
    return Alarms(count=len(alarms), total=total, alarms=alarms)


@router.get("/alarms/kpis", response_model=AlarmKpis, summary="Alarm-system KPIs (EEMUA 191)")
def alarm_kpis(ctx: Ctx, store: Store,
               start: Annotated[str, Query(description=TIME_HELP)] = "-24h",
               end: Annotated[str, Query(description=TIME_HELP)] = "now") -> dict:
    """Alarm rate per window (10 min by default) now and as a series, flood state and
    episodes, the 10 most frequent alarms, chattering alarms (those that repeat, and those the
    engine holds back), stale alarms, priority mix, standing alarms. Rates count annunciated
    raises by when they were recorded."""
    now = now_ns()
    first, last = _time("start", start, now), _time("end", end, now)
    if first >= last:
        raise bad_param("start", f"must be before end ({iso(last)})")
    if last - first > MAX_KPI_DAYS * 86400 * NS:
        raise bad_param("start", f"the period is at most {MAX_KPI_DAYS} days (one rate per "
                                 "window each)")
    return kpis(store, ctx.site.alarms, first, last)


@router.post("/alarms/ack", response_model=BulkAckResult, summary="Acknowledge many alarms")
def ack_many(store: Store, caller: Caller, body: BulkAckRequest) -> BulkAckResult:
    """Acknowledge the alarms listed in `ids`, or those matching the filter (shelved and
    suppressed ones included), in one transaction. Those that cannot be are in `skipped`."""
    if body.ids is None and not any((body.state, body.priority, body.zone, body.tag,
                                     body.kind)):
        raise bad_param("ids", "give the ids, or a filter (state, priority, zone, tag, kind); "
                               "to acknowledge every alarm, use state=[\"unacknowledged\"]")
    ids = body.ids
    if body.state or body.priority or body.zone or body.tag or body.kind:
        where = Filter(states=body.state or (), priorities=body.priority or (),
                       zone=body.zone, tag=body.tag, kind=body.kind, shelved=None,
                       suppressed=None)
        matching = {a["id"]: None for a in store.alarms(where, 10**9)[0]}
        ids = list(matching) if ids is None else [i for i in ids if i in matching]
    done, skipped = store.ack_many(ids or [], caller.name, body.comment)
    return BulkAckResult(acked=done,
                         skipped=[Skipped(id=i, reason=r) for i, r in skipped])


@router.get("/alarms/suppressions", response_model=list[Suppression],
            summary="Tags and zones out of service")
def suppressions(store: Store) -> list[dict]:
    return store.suppressions()


@router.put("/alarms/suppressions/{scope}/{name}", response_model=Suppression,
            summary="Take a tag or zone out of service")
def suppress(ctx: Ctx, store: Store, caller: Caller, scope: Literal["tag", "zone"],
             name: ScopeName, body: SuppressRequest) -> dict:
    """Alarms of the tag or zone (open ones, and any raised until it is back in service) are
    recorded but suppressed: not shown by default, not counted, not sent to webhooks. One
    already out of service stays as it was (its reason, who and since). A tag or zone the
    site does not have is a 404."""
    known = ctx.index if scope == "tag" else {p.zone for p in ctx.site.points if p.zone}
    if name not in known:
        raise HTTPException(404, f"name: {name!r} is not a {scope} of site "
                                 f"{ctx.site.site.name!r}")
    return store.suppress(scope, name, caller.name, body.reason)


@router.delete("/alarms/suppressions/{scope}/{name}", response_model=Suppression,
               responses=CONFLICT, summary="Put a tag or zone back in service")
def unsuppress(store: Store, caller: Caller, scope: Literal["tag", "zone"],
               name: ScopeName) -> dict:
    """Also for a tag or zone the site no longer has (its rule outlived it)."""
    return _call(lambda: store.unsuppress(scope, name, caller.name))


@router.get("/alarms/stream", summary="Alarm transitions as server-sent events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "an endless event stream"}})
async def stream(
    request: Request, store: Store,
    last_event_id: Annotated[str | None, Header(
        description="resume after this event id (EventSource sends it on reconnect)")] = None,
    resume: Annotated[int | None, Query(
        alias="last_event_id", ge=0, le=MAX_EVENT_ID,
        description="the same, for EventSource polyfills that cannot send headers")] = None,
    access_token: Annotated[str | None, Query(
        alias=QUERY_TOKEN, description="the token, for EventSource (which cannot send "
                                       "headers); checked by the auth guard")] = None,
) -> StreamingResponse:
    """Every journal entry after `Last-Event-ID` (or, without one, from now on), in order:
    `id:` the event id, `event:` the transition (raise, clear, ack, shelve, unshelve,
    release, comment, suppress, unsuppress; `suppression` for a rule, whose data is the
    rule), `data:`
    the alarm's new state as JSON. A reconnect with the last id seen gets each event exactly
    once, across API restarts too. A comment line every 15 s keeps the connection open."""
    del access_token  # declared for the OpenAPI description only
    if last_event_id is not None:
        cursor = _event_id(last_event_id)
    elif resume is not None:
        cursor = resume
    else:
        cursor = await asyncio.to_thread(store.last_event_id)
    stopping: asyncio.Event = request.app.state.stopping
    return StreamingResponse(_events(store, cursor, stopping), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event_id(text: str) -> int:
    """`Last-Event-ID` as a journal cursor: a whole number SQLite can compare."""
    if not (text.strip().isdigit() and len(text.strip()) <= 19
            and int(text) <= MAX_EVENT_ID):
        raise bad_param("Last-Event-ID", f"{text[:40]!r} is not an event id (a whole number "
                                         f"from 0 to {MAX_EVENT_ID})")
    return int(text)


async def _events(store: AlarmStore, cursor: int, stopping: asyncio.Event
                  ) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n: resuming after {cursor}\n\n"
    quiet_since = time.monotonic()
    while not stopping.is_set():
        entries = await asyncio.to_thread(store.events_after, cursor, BATCH)
        for e in entries:
            yield f"id: {e.seq}\nevent: {e.transition}\ndata: {json.dumps(e.data)}\n\n"
            cursor = e.seq
        if entries:
            quiet_since = time.monotonic()
            if len(entries) == BATCH:
                continue
        elif time.monotonic() - quiet_since >= KEEPALIVE:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        # The server sets `stopping` on shutdown: streams end, clients reconnect elsewhere.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL):
                await stopping.wait()


@router.get("/alarms/{alarm_id}", response_model=AlarmHistory, responses=CONFLICT,
            summary="One alarm and its journal")
def alarm_history(store: Store, alarm_id: AlarmId) -> AlarmHistory:
    def read() -> AlarmHistory:
        journal = store.history(alarm_id)
        return AlarmHistory(alarm=store.get(alarm_id),
                            journal=[JournalEvent(**e.to_json()) for e in journal])
    return _call(read)


@router.post("/alarms/{alarm_id}/ack", response_model=AlarmView, responses=CONFLICT,
             summary="Acknowledge an alarm")
def ack(store: Store, caller: Caller, alarm_id: AlarmId,
        body: AckRequest | None = None) -> AlarmView:
    """active-unacknowledged -> active-acknowledged; cleared-unacknowledged -> closed; 409 if
    it is acknowledged already."""
    return _call(lambda: store.ack(alarm_id, caller.name, body.comment if body else None))


@router.post("/alarms/{alarm_id}/shelve", response_model=AlarmView, responses=CONFLICT,
             summary="Shelve an alarm for a while")
def shelve(ctx: Ctx, store: Store, caller: Caller, alarm_id: AlarmId,
           body: ShelveRequest) -> AlarmView:
    """Hide the alarm, and repeats of its condition, for `duration`; it is unshelved on its
    own at the end. 409 if it is closed or shelved already."""
    try:
        duration = parse_duration(body.duration)
    except DurationTooLong:
        duration = -1  # beyond any shelf: said below, with the site's bound
    except ValueError as e:
        raise bad_param("duration", str(e)) from None
    longest = int(ctx.site.alarms.max_shelve * NS)
    if not 0 < duration <= longest:
        raise bad_param("duration", f"{body.duration!r} must be more than 0 and at most "
                                    f"{ctx.site.alarms.max_shelve:g} s (alarms.max_shelve); "
                                    f"use {DURATION_HELP}")
    return _call(lambda: store.shelve(alarm_id, caller.name, body.reason, duration))


@router.post("/alarms/{alarm_id}/unshelve", response_model=AlarmView, responses=CONFLICT,
             summary="Unshelve an alarm")
def unshelve(store: Store, caller: Caller, alarm_id: AlarmId,
             body: AckRequest | None = None) -> AlarmView:
    return _call(lambda: store.unshelve(alarm_id, caller.name, body.comment if body else None))


@router.post("/alarms/{alarm_id}/release", response_model=AlarmView, responses=CONFLICT,
             summary="Release the alarm a chattering alarm holds back")
def release(store: Store, caller: Caller, alarm_id: AlarmId,
            body: AckRequest | None = None) -> AlarmView:
    """An alarm that raised too often (ISA-18.2 chattering; `[anomaly] chattering`) is held
    back by a `chattering` alarm: releasing that one annunciates the held alarm again (at once
    if its condition is on). The gateway clears the chattering alarm within a second or so;
    the answer is its state as recorded now. 409 unless it is an active chattering alarm not
    released yet."""
    return _call(lambda: store.release(alarm_id, caller.name, body.comment if body else None))


@router.post("/alarms/{alarm_id}/comment", response_model=AlarmView, responses=CONFLICT,
             summary="Add a comment to an alarm's journal")
def comment(store: Store, caller: Caller, alarm_id: AlarmId, body: CommentRequest) -> AlarmView:
    return _call(lambda: store.comment(alarm_id, caller.name, body.text))
