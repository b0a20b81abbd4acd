"""Alarms: what detectors find on a tick (`Finding`), and the gate that turns findings into
raise and clear events with alarm hygiene (on-delay, off-delay, one alarm per condition).

Detectors say, per tick, which subjects (points, zones or devices) are in a condition; they
own their thresholds and hysteresis. The gate owns time: a condition raises an alarm once it
has held for the kind's on-delay, and clears it once it has been absent for the off-delay, so
a value hovering at a threshold gives one long alarm instead of a chattering one. Python
objects are made only at transitions; the per-tick work is array operations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, get_args

import numpy as np

from anomaly.figures import significant
from anomaly.points import PointTable

Scope = Literal["tag", "zone", "device"]
Action = Literal["raise", "clear"]

AlarmKind = Literal["leak", "stuck", "spike", "drift", "dropout", "comms", "limit", "voltage_sag",
                    "voltage_swell", "frequency", "overload", "line_outage", "anomaly"]
Priority = Literal["low", "medium", "high", "critical"]
KINDS: tuple[str, ...] = get_args(AlarmKind)
PRIORITIES: tuple[str, ...] = get_args(Priority)
# Default priority per kind (EEMUA 191: priority follows the consequence and the time to act).
PRIORITY = {
    "line_outage": "critical", "leak": "high", "voltage_sag": "high", "voltage_swell": "high",
    "frequency": "high", "overload": "high", "comms": "medium", "limit": "medium",
    "dropout": "low", "stuck": "low", "spike": "low", "drift": "low", "anomaly": "low",
}
# Seconds a condition must hold before it raises / be gone before it clears. A spike is over
# at once, so it keeps its alarm long enough for an operator to see it and for repeats to
# merge; slow conditions (drift, leak) clear only once clearly gone.
ON_DELAY = {kind: 0.0 for kind in KINDS}
OFF_DELAY = {kind: 300.0 for kind in KINDS} | {"spike": 1800.0, "drift": 3600.0,
                                               "leak": 3600.0}


def iso(ns: int) -> str:
    """UTC ISO 8601 with `Z`, to the second or with the milliseconds it has."""
    moment = datetime.fromtimestamp(ns / 1e9, UTC).replace(tzinfo=None)
    text = moment.isoformat(timespec="milliseconds" if ns % 10**9 else "seconds")
    return f"{text}Z"


@dataclass(frozen=True)
class Finding:
    """One alarm kind's condition on one tick, for every subject of a scope at once.

    `active[i]`: subject i is in the condition. `known[i]` False: the detector could not
    judge subject i this tick (no good reading), so its condition holds as it was.
    `value`, `limit` and `details` (e.g. `size_lps`, `confidence`) describe the condition
    for the alarm's message; `message` is a format string over `subject`, `value`, `limit`,
    `unit` and the details' names.
    """

    kind: str
    scope: Scope
    active: np.ndarray
    message: str
    known: np.ndarray | None = None
    value: np.ndarray | None = None
    limit: np.ndarray | None = None
    details: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Alarm:
    """One alarm as DESIGN.md's alarm contract has it, plus what it covers and its figures."""

    id: str
    kind: str
    tag: str | None
    zone: str | None
    start_ns: int
    end_ns: int | None
    priority: str
    message: str
    tags: tuple[str, ...] = ()
    device: str | None = None
    value: float | None = None
    limit: float | None = None
    details: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "tag": self.tag, "zone": self.zone,
                "start": iso(self.start_ns),
                "end": None if self.end_ns is None else iso(self.end_ns),
                "priority": self.priority, "message": self.message, "tags": list(self.tags),
                "device": self.device, "value": self.value, "limit": self.limit,
                "details": self.details}


@dataclass(frozen=True)
class AlarmEvent:
    """A transition, with the alarm as it was at that moment (a copy: the open alarm goes on
    changing)."""

    action: Action
    alarm: Alarm


class AlarmGate:
    """On-delay, off-delay and one open alarm per (kind, subject)."""

    def __init__(self, table: PointTable, *, on_delay: Mapping[str, float] = ON_DELAY,
                 off_delay: Mapping[str, float] = OFF_DELAY,
                 priority: Mapping[str, str] = PRIORITY) -> None:
        self.table = table
        self.on_ns = {k: int(on_delay.get(k, 0.0) * 1e9) for k in KINDS}
        self.off_ns = {k: int(off_delay.get(k, 0.0) * 1e9) for k in KINDS}
        self.priority = dict(priority)
        self._since: dict[str, np.ndarray] = {}  # "kind/scope" -> ns the condition began
        self._absent: dict[str, np.ndarray] = {}  # ... ns it was last seen gone (-1: present)
        self._is_open: dict[str, np.ndarray] = {}  # ... whether it has an open alarm
        # Keys whose `since` is all -1 and that have no open alarm: a finding active nowhere
        # leaves them as they are, at the cost of one `any()` (most findings, most ticks).
        self._idle: set[str] = set()
        self.open: dict[tuple[str, Scope, int], Alarm] = {}

    def update(self, end_ns: int, findings: list[Finding]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        for f in findings:
            key = f"{f.kind}/{f.scope}"
            if key not in self._since:
                n = len(f.active)
                self._since[key] = np.full(n, -1, dtype=np.int64)
                self._absent[key] = np.full(n, -1, dtype=np.int64)
                self._is_open[key] = np.zeros(n, dtype=bool)
            if not f.active.any():
                if key in self._idle:
                    continue
                since, is_open = self._since[key], self._is_open[key]
                if not is_open.any():  # the common case, made cheap
                    if f.known is None:
                        since.fill(-1)
                    else:
                        since[f.known] = -1
                    if not (since >= 0).any():
                        self._idle.add(key)
                    continue
            self._idle.discard(key)
            since, absent, is_open = self._since[key], self._absent[key], self._is_open[key]
            if f.known is None:
                on, off = f.active, ~f.active
            else:
                on, off = f.active & f.known, ~f.active & f.known
            since[on & (since < 0)] = end_ns
            since[off] = -1
            absent[on] = -1
            absent[off & (absent < 0)] = end_ns
            raise_ = on & ~is_open & (end_ns - since >= self.on_ns[f.kind])
            clear = is_open & off & (end_ns - absent >= self.off_ns[f.kind])
            if raise_.any():
                for i in np.flatnonzero(raise_).tolist():
                    alarm = self._alarm(f, i, end_ns)
                    self.open[(f.kind, f.scope, i)] = alarm
                    events.append(AlarmEvent("raise", replace(alarm)))
                is_open |= raise_
            if clear.any():
                for i in np.flatnonzero(clear).tolist():
                    alarm = self.open.pop((f.kind, f.scope, i))
                    alarm.end_ns = end_ns
                    events.append(AlarmEvent("clear", alarm))
                is_open &= ~clear
        return events

    def _subject(self, scope: Scope, i: int) -> tuple[str, str | None, str | None,
                                                      tuple[str, ...], str | None, str]:
        """(name, tag, zone, tags, device, unit) of subject i of a scope."""
        t = self.table
        if scope == "tag":
            return t.tags[i], t.tags[i], t.zone_name(i), (t.tags[i],), t.points[i].device, \
                t.units[i]
        if scope == "zone":
            return t.zones[i], None, t.zones[i], (), None, ""
        device = t.devices[i]
        members = np.flatnonzero(t.device_of == i)
        zones = {t.zone_name(j) for j in members.tolist()}
        zone = zones.pop() if len(zones) == 1 else None
        return device, None, zone, tuple(t.tags[j] for j in members.tolist()), device, ""

    def _alarm(self, f: Finding, i: int, end_ns: int) -> Alarm:
        name, tag, zone, tags, device, _ = self._subject(f.scope, i)
        priority = ((f.scope == "tag" and self.table.points[i].priority)
                    or self.priority.get(f.kind, "low"))
        alarm = Alarm(id=f"{f.kind}:{name}:{end_ns // 10**9}", kind=f.kind, tag=tag, zone=zone,
                      start_ns=end_ns, end_ns=None, priority=priority, message="", tags=tags,
                      device=device)
        self._refresh(alarm, f, i)
        return alarm

    def _refresh(self, alarm: Alarm, f: Finding, i: int) -> None:
        """The alarm's figures and message: the condition as it raised the alarm."""
        name, *_, unit = self._subject(f.scope, i)
        value = None if f.value is None else _number(f.value[i])
        limit = None if f.limit is None else _number(f.limit[i])
        details = {k: v for k, a in f.details.items() if (v := _number(a[i])) is not None}
        alarm.value, alarm.limit, alarm.details = value, limit, details
        text = f.message.format(subject=name, value=significant(value),
                                limit=significant(limit), unit=unit,
                                **{k: significant(v) for k, v in details.items()})
        alarm.message = " ".join(text.split())  # a point without a unit leaves a gap

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key, arr in self._since.items():
            out[f"since/{key}"] = arr
            out[f"absent/{key}"] = self._absent[key]
        alarms = [[kind, scope, i, asdict(a)] for (kind, scope, i), a in self.open.items()]
        out["open"] = np.array([json.dumps(alarms)])
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._since = {k.removeprefix("since/"): v.copy() for k, v in state.items()
                       if k.startswith("since/")}
        self._absent = {k.removeprefix("absent/"): v.copy() for k, v in state.items()
                        if k.startswith("absent/")}
        self.open = {}
        self._idle = set()
        self._is_open = {k: np.zeros(len(v), dtype=bool) for k, v in self._since.items()}
        for kind, scope, i, fields in json.loads(str(state["open"][0])):
            fields["tags"] = tuple(fields["tags"])
            self.open[(kind, scope, i)] = Alarm(**fields)
            self._is_open[f"{kind}/{scope}"][i] = True


def _number(x: float) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None

