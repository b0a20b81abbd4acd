"""The alarm's encoding: the engine's `anomaly.core.alarms.Alarm` as DESIGN.md's JSON (a line of
`replay`'s alarms.jsonl, the store's `data` column), and as the store and the API show it, with
its place in the ISA-18.2 lifecycle (`AlarmView`: the API's schema, the store's return type).

The engine keeps times in ns and knows no wire format; this module is where an alarm becomes
text, once."""

from __future__ import annotations

from typing import Annotated, Literal, cast

from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from 3.12

from anomaly.core.alarms import Alarm, Priority
from timegrammar.iso import iso

State = Literal["active-unacknowledged", "active-acknowledged", "cleared-unacknowledged",
                "closed"]


class AlarmJson(TypedDict):
    """An alarm as DESIGN.md's alarm contract has it: what the engine reported, last. (The API
    answers in this order; `encode` writes alarms.jsonl in the contract's.)"""

    id: str
    kind: str
    tag: str | None
    zone: str | None
    device: str | None
    tags: Annotated[list[str], Field(description="the points the alarm covers")]
    start: str
    end: Annotated[str | None, Field(description="when the condition cleared; null while active")]
    priority: Priority
    message: str
    value: float | None
    limit: Annotated[float | None, Field(description="the limit the value passed, if any")]
    details: dict[str, float]


ALARM_KEYS = tuple(AlarmJson.__annotations__)


class AlarmView(AlarmJson):
    """An alarm (DESIGN.md's fields) and where it is in its lifecycle."""

    state: State
    active: bool
    acknowledged: bool
    acked_by: str | None
    acked_at: str | None
    ack_comment: str | None
    shelved: Annotated[bool, Field(description="hidden until `shelved_until` (also repeats of "
                                               "its condition)")]
    shelved_until: str | None
    shelve_reason: str | None
    shelved_by: str | None
    suppressed: Annotated[bool, Field(description="its tag or zone is out of service")]
    annunciated: Annotated[bool, Field(description="raised neither shelved nor suppressed "
                                                   "(counted in the KPIs, sent to webhooks)")]
    raised_at: Annotated[str, Field(description="when the alarm store recorded the raise")]
    event_id: Annotated[int, Field(description="its last journal event id")]


def encode(alarm: Alarm) -> AlarmJson:
    """`alarm` as DESIGN.md's JSON object (times UTC ISO 8601 with `Z`)."""
    return {"id": alarm.id, "kind": alarm.kind, "tag": alarm.tag, "zone": alarm.zone,
            "start": iso(alarm.start_ns, "ms"),
            "end": None if alarm.end_ns is None else iso(alarm.end_ns, "ms"),
            # The gate's priorities come from the site file, checked against Priority.
            "priority": cast(Priority, alarm.priority),
            "message": alarm.message, "tags": list(alarm.tags),
            "device": alarm.device, "value": alarm.value, "limit": alarm.limit,
            "details": alarm.details}
