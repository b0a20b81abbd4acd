"""Response bodies of the API, as OpenAPI shows them. Times are UTC ISO 8601 with `Z`."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field

from anomaly.core.alarms import PRIORITIES, Priority
from anomaly.core.batch import Quality
from api.tokens import Role
from gateway.alarms.encoding import AlarmView, State
from gateway.site.model import NAME_MAX, PointKind

QualityName = Literal["good", "uncertain", "bad"]
Overall = Literal["ok", "degraded", "down"]
Aggregate = Literal["mean", "min", "max", "first", "last", "count"]
AGGREGATES: tuple[Aggregate, ...] = ("mean", "min", "max", "first", "last", "count")
QUALITY_NAMES = np.array([q.name.lower() for q in sorted(Quality)])  # indexed by Quality


class Problem(BaseModel):
    """Every 4xx answer: what was wrong, naming the parameter (`start: '-1x' is not a time...`)."""

    detail: str


class Me(BaseModel):
    """Whose token this is and what it may do: the page hides the actions it may not take."""

    name: str
    role: Role
    expires: str | None = Field(description="ISO 8601 UTC; null: never")


class DeviceHealth(BaseModel):
    name: str
    protocol: str
    bus: str
    state: Literal["ok", "degraded", "down", "unknown"] = Field(
        description="`unknown`: not polled yet, or the gateway is not running")
    last_success: str | None = Field(description="last successful poll")
    last_error: str | None
    polls_total: int
    poll_errors_total: int
    requests_total: int
    request_errors_total: dict[str, int] = Field(description="failed requests by cause")
    readings_total: int
    reconnects_total: int
    stale_after_seconds: float | None = Field(
        None, description="without a successful poll for this long, the device is down")


class SinkHealth(BaseModel):
    name: str
    readings_total: int = Field(description="readings this sink has stored")
    errors_total: int
    quarantined_total: int = Field(0, description="readings refused for good, kept aside")
    last_error: str | None
    cause: str | None = Field(None, description="why it cannot store now (`disk_full`...); "
                                                "null while it stores")
    backlog_readings: int = Field(description="spooled, not yet stored by this sink")
    backlog_age_seconds: float


class SpoolHealth(BaseModel):
    bytes: int
    batches: int
    readings_appended_total: int
    readings_dropped_total: int = Field(description="dropped by the spool's size or age bound")
    oldest_age_seconds: float
    held_readings: int = Field(0, description="polled while the disk refuses writes: held "
                                              "in memory, not yet on disk")
    readings_lost_total: int = Field(0, description="held readings dropped: memory was full "
                                                    "too, or the gateway stopped first")
    cause: str | None = Field(None, description="why it cannot write now (`disk_full`...)")
    last_error: str | None = None


class TaskHealth(BaseModel):
    """A long-lived part of the gateway (poller, sink, clock...), restarted when it fails."""

    name: str
    state: Literal["running", "restarting"]
    restarts_total: int
    cause: str | None = Field(description="why it last failed")
    last_error: str | None


class GatewayHealth(BaseModel):
    running: bool = Field(description="false when its status is absent or stale")
    started: str | None
    uptime_seconds: float | None
    status_updated: str | None = Field(description="when the gateway last published its status")
    status_age_seconds: float | None


class HealthSummary(BaseModel):
    """What `health` tells anyone: no addresses, no error text."""

    status: Overall


class Health(BaseModel):
    """What `health` tells a viewer or above."""

    status: Overall
    reasons: list[str] = Field(description="why the status is not `ok`; empty when it is")
    site: str
    time: str
    gateway: GatewayHealth
    devices: list[DeviceHealth]
    sinks: list[SinkHealth]
    spool: SpoolHealth | None
    tasks: list[TaskHealth] = []


class PointListing(BaseModel):
    tag: str
    device: str | None
    kind: PointKind
    unit: str
    zone: str | None
    role: Literal["inflow", "outflow"] | None
    lo: float | None
    hi: float | None
    description: str


class Points(BaseModel):
    count: int
    points: list[PointListing]


class LatestReading(BaseModel):
    tag: str
    value: float | None = Field(description="null when the reading is bad or there is none")
    unit: str
    quality: QualityName | None = Field(description="null when the tag has no reading yet")
    cause: str | None = Field(description="why it is not good: timeout, illegal_data_address...")
    source_ts: str | None
    server_ts: str | None = Field(description="OPC UA ServerTimestamp; source_ts for Modbus")
    gateway_ts: str | None
    stale: bool = Field(description="no reading, or neither a reading nor an answer of its "
                                    "device for its stale_after × poll_interval plus the "
                                    "historian's flush_interval")


class Latest(BaseModel):
    time: str
    count: int
    readings: list[LatestReading]


class History(BaseModel):
    """One tag's history as columns: element i of every array belongs to row i.

    Raw (no `bucket`): `ts` (source time), `value` (null when bad), `quality`.
    Bucketed: `ts` (bucket start) and one array per aggregate asked for.
    """

    tag: str
    unit: str
    start: str
    end: str
    bucket: str | None = Field(description="bucket width as asked (null: raw readings)")
    bucket_seconds: float | None
    rows: int
    truncated: bool = Field(description="raw only: more readings than `limit` matched")
    next_start: str | None = Field(description="when truncated: `start` of the next page")
    ts: list[str]
    value: list[float | None] | None = None
    quality: list[QualityName] | None = None
    mean: list[float | None] | None = None
    min: list[float | None] | None = None
    max: list[float | None] | None = None
    first: list[float | None] | None = None
    last: list[float | None] | None = None
    count: list[int] | None = None


# --- alarms ------------------------------------------------------------------------------

AlarmStateName = State
PriorityName = Priority


class Alarms(BaseModel):
    count: int = Field(description="alarms in this answer")
    total: int = Field(description="alarms matching the filter")
    alarms: list[AlarmView]


class JournalEvent(BaseModel):
    event_id: int
    time: str
    alarm_id: str | None
    transition: str = Field(description="raise, clear, ack, shelve, unshelve, release, "
                                        "comment, suppress, unsuppress")
    who: str = Field(description="the token's name; `system` for the engine and shelf expiry")
    comment: str | None


class AlarmHistory(BaseModel):
    alarm: AlarmView
    journal: list[JournalEvent]


# Bounds of what a request may carry (with the body limit, api.security.middleware): text an
# operator types, names as long as the site file allows, lists no longer than what they choose
# from.
TEXT = 2000  # characters of a comment or reason
NAME = NAME_MAX  # characters of a tag, zone or kind
ALARM_ID = NAME + 56  # "<kind>:<tag or zone>:<seconds>"
Name = Annotated[str, Field(min_length=1, max_length=NAME)]


class AckRequest(BaseModel):
    comment: str | None = Field(None, max_length=TEXT)


class BulkAckRequest(BaseModel):
    """Which alarms: `ids`, or a filter (at least one field); both: the listed ones that match
    too."""

    ids: list[Annotated[str, Field(min_length=1, max_length=ALARM_ID)]] | None = Field(
        None, max_length=10_000)
    state: list[Literal["active-unacknowledged", "cleared-unacknowledged", "active",
                        "unacknowledged", "open"]] | None = Field(None, max_length=5)
    priority: list[PriorityName] | None = Field(None, max_length=len(PRIORITIES))
    zone: Name | None = None
    tag: Name | None = None
    kind: Name | None = None
    comment: str | None = Field(None, max_length=TEXT)


class Skipped(BaseModel):
    id: str
    reason: str


class BulkAckResult(BaseModel):
    acked: list[AlarmView]
    skipped: list[Skipped] = Field(description="alarms that were not acknowledged, and why")


class ShelveRequest(BaseModel):
    duration: str = Field(description="how long: 30min, 2h, 1d (at most the site's "
                                      "alarms.max_shelve)", examples=["2h"], max_length=TEXT)
    reason: str = Field(min_length=1, max_length=TEXT)


class CommentRequest(BaseModel):
    text: str = Field(min_length=1, max_length=TEXT)


class Suppression(BaseModel):
    scope: Literal["tag", "zone"]
    name: str
    reason: str
    by: str
    since: str


class SuppressRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=TEXT)


class RateBucket(BaseModel):
    start: str
    count: int


class AlarmRate(BaseModel):
    current: int = Field(description="alarms raised in the last window")
    average: float = Field(description="per window over the period")
    max: int = Field(description="most in one aligned window of the period")
    series: list[RateBucket]


class FloodEpisode(BaseModel):
    start: str
    end: str | None
    peak: int = Field(description="most alarms in one window during the flood")


class Flood(BaseModel):
    active: bool
    since: str | None
    start_above: int
    end_below: int
    percent_of_time: float
    episodes: list[FloodEpisode]


class FrequentAlarm(BaseModel):
    kind: str
    tag: str | None
    zone: str | None
    device: str | None
    count: int


class ChatteringAlarm(FrequentAlarm):
    max_in_window: int = Field(description="most raises within the chatter window")


class HeldAlarm(BaseModel):
    id: str = Field(description="the `chattering` alarm's id (release it with it)")
    kind: str = Field(description="the kind of the alarm held back")
    tag: str | None
    zone: str | None
    device: str | None
    since: str


class HeldBack(BaseModel):
    raised: int = Field(description="`chattering` alarms raised in the period: alarms held "
                                    "back because they raised too often")
    active: list[HeldAlarm] = Field(description="the alarms held back now, oldest first")


class StaleAlarms(BaseModel):
    after_seconds: float
    count: int
    ids: list[str] = Field(description="the oldest 100")


class PriorityShare(BaseModel):
    count: int
    percent: float


class Standing(BaseModel):
    active: int = Field(description="active, neither shelved nor suppressed")
    unacknowledged: int
    shelved: int
    suppressed: int


class AlarmKpis(BaseModel):
    """EEMUA 191 KPIs over [start, end): counts are annunciated raises."""

    time: str
    start: str
    end: str
    window_seconds: float
    rate: AlarmRate
    flood: Flood
    raised: int
    suppressed_raised: int
    top: list[FrequentAlarm] = Field(description="the 10 most frequent (kind and subject)")
    chattering: list[ChatteringAlarm]
    held_back: HeldBack
    stale: StaleAlarms
    priority_mix: dict[PriorityName, PriorityShare]
    standing: Standing
