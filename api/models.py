"""Response bodies of the API, as OpenAPI shows them. Times are UTC ISO 8601 with `Z`."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from anomaly.batch import Quality
from gateway.config import PointKind

QualityName = Literal["good", "uncertain", "bad"]
Overall = Literal["ok", "degraded", "down"]
Aggregate = Literal["mean", "min", "max", "first", "last", "count"]
AGGREGATES: tuple[Aggregate, ...] = ("mean", "min", "max", "first", "last", "count")
QUALITY_NAMES = np.array([q.name.lower() for q in sorted(Quality)])  # indexed by Quality


class Problem(BaseModel):
    """Every 4xx answer: what was wrong, naming the parameter (`start: '-1x' is not a time...`)."""

    detail: str


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


class SinkHealth(BaseModel):
    name: str
    readings_total: int = Field(description="readings this sink has stored")
    errors_total: int
    quarantined_total: int = Field(0, description="readings refused for good, kept aside")
    last_error: str | None
    backlog_readings: int = Field(description="spooled, not yet stored by this sink")
    backlog_age_seconds: float


class SpoolHealth(BaseModel):
    bytes: int
    batches: int
    readings_appended_total: int
    readings_dropped_total: int = Field(description="dropped by the spool's size or age bound")
    oldest_age_seconds: float


class GatewayHealth(BaseModel):
    running: bool = Field(description="false when its status is absent or stale")
    started: str | None
    uptime_seconds: float | None
    status_updated: str | None = Field(description="when the gateway last published its status")
    status_age_seconds: float | None


class Health(BaseModel):
    status: Overall
    reasons: list[str] = Field(description="why the status is not `ok`; empty when it is")
    site: str
    time: str
    gateway: GatewayHealth
    devices: list[DeviceHealth]
    sinks: list[SinkHealth]
    spool: SpoolHealth | None


class PointInfo(BaseModel):
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
    points: list[PointInfo]


class LatestReading(BaseModel):
    tag: str
    value: float | None = Field(description="null when the reading is bad or there is none")
    unit: str
    quality: QualityName | None = Field(description="null when the tag has no reading yet")
    cause: str | None = Field(description="why it is not good: timeout, illegal_data_address...")
    source_ts: str | None
    server_ts: str | None = Field(description="OPC UA ServerTimestamp; source_ts for Modbus")
    gateway_ts: str | None
    stale: bool = Field(description="no reading, or none for the device's stale_after × "
                                    "poll_interval")


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
