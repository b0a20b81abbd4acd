"""Alarms: what detectors find on a tick (`Finding`), and the gate that turns findings into
raise and clear events with alarm hygiene (on-delay, off-delay, one alarm per condition,
chattering alarms held back).

Detectors say, per tick, which subjects (points, zones or devices) are in a condition; they
own their thresholds and hysteresis. The gate owns time: a condition raises an alarm once it
has held for the kind's on-delay, and clears it once it has been absent for the off-delay, so
a value hovering at a threshold gives one long alarm instead of a chattering one. Python
objects are made only at transitions; the per-tick work is array operations.

Chattering (ISA-18.2, EEMUA 191): the gate counts the raises of each alarm (kind and
subject). An alarm raised `raises` times within `seconds` (by default 3 in an hour, or 10 in
a day) chatters: that raise and the next are held back, and one `chattering` alarm says so
instead, at the held alarm's priority. The held alarm is released, and the `chattering`
alarm cleared, when its condition has stayed clear for the rule's `seconds`; or when the
condition has stayed on for that long (a standing condition is no chatter: its alarm is
raised then); or when an operator releases it (`release`).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, get_args

import numpy as np

from anomaly.core.figures import significant
from anomaly.core.points import PointTable

Scope = Literal["tag", "zone", "device"]
Action = Literal["raise", "clear"]

AlarmKind = Literal["leak", "stuck", "spike", "drift", "dropout", "comms", "limit", "voltage_sag",
                    "voltage_swell", "frequency", "overload", "line_outage", "anomaly",
                    "chattering"]
Priority = Literal["low", "medium", "high", "critical"]
KINDS: tuple[str, ...] = get_args(AlarmKind)
PRIORITIES: tuple[str, ...] = get_args(Priority)
# Default priority per kind (EEMUA 191: priority follows the consequence and the time to act).
PRIORITY = {
    "line_outage": "critical", "leak": "high", "voltage_sag": "high", "voltage_swell": "high",
    "frequency": "high", "overload": "high", "comms": "medium", "limit": "medium",
    "dropout": "low", "stuck": "low", "spike": "low", "drift": "low", "anomaly": "low",
}  # `chattering`: the held alarm's own, unless a site sets one
# (raises, seconds): an alarm raised this often chatters (EEMUA 191's "3 in an hour"; a day's
# worth for the slower kind of chatter).
CHATTERING = ((3, 3600.0), (10, 86400.0))
# Seconds a condition must hold before it raises / be gone before it clears. A spike is over
# at once, so it keeps its alarm long enough for an operator to see it and for repeats to
# merge; slow conditions (drift, leak) clear only once clearly gone.
ON_DELAY = {kind: 0.0 for kind in KINDS}
# A device answering again is back for certain: its `comms` clears at once.
OFF_DELAY = {kind: 300.0 for kind in KINDS} | {"spike": 1800.0, "drift": 3600.0,
                                               "leak": 3600.0, "comms": 0.0}


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


@dataclass(frozen=True)
class AlarmEvent:
    """A transition, with the alarm as it was at that moment (a copy: the open alarm goes on
    changing)."""

    action: Action
    alarm: Alarm


Key = tuple[str, Scope, int]  # (kind, scope, subject index): one alarm's condition


@dataclass
class Held:
    """A chattering alarm held back: the `chattering` alarm that says so, the rule's window,
    the held alarm while its condition is on (None while off) and since when it is off."""

    notice: Alarm
    window_ns: int
    alarm: Alarm | None
    clear_since_ns: int


class AlarmGate:
    """On-delay, off-delay, one open alarm per (kind, subject), chattering alarms held back.

    `chattering`: (raises, seconds) rules, any of which makes an alarm chattering; () holds
    nothing back.
    """

    def __init__(self, table: PointTable, *, on_delay: Mapping[str, float] = ON_DELAY,
                 off_delay: Mapping[str, float] = OFF_DELAY,
                 priority: Mapping[str, str] = PRIORITY,
                 chattering: Sequence[tuple[int, float]] = CHATTERING) -> None:
        self.table = table
        self.on_ns = {k: int(on_delay.get(k, 0.0) * 1e9) for k in KINDS}
        self.off_ns = {k: int(off_delay.get(k, 0.0) * 1e9) for k in KINDS}
        self.priority = dict(priority)
        self.rules = [(int(n), int(seconds * 1e9)) for n, seconds in chattering]
        self._since: dict[str, np.ndarray] = {}  # "kind/scope" -> ns the condition began
        self._absent: dict[str, np.ndarray] = {}  # ... ns it was last seen gone (-1: present)
        self._is_open: dict[str, np.ndarray] = {}  # ... whether it has an open (or held) alarm
        # Keys whose `since` is all -1 and that have no open alarm: a finding active nowhere
        # leaves them as they are, at the cost of one `any()` (most findings, most ticks).
        self._idle: set[str] = set()
        self.open: dict[Key, Alarm] = {}
        # "kind/scope" -> subject -> the finding that began its condition (with an on-delay)
        self._onset: dict[str, dict[int, Finding]] = {}
        self.raises: dict[Key, list[int]] = {}  # raise times within the longest rule's window
        self.held: dict[Key, Held] = {}
        self.now_ns = 0  # the end of the last tick judged

    @property
    def alarms(self) -> list[Alarm]:
        """Every open alarm, the `chattering` ones included."""
        return [*self.open.values(), *(h.notice for h in self.held.values())]

    def update(self, end_ns: int, findings: list[Finding]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        self.now_ns = end_ns
        for f in findings:
            key = f"{f.kind}/{f.scope}"
            if key not in self._since:
                if not f.active.any():
                    # Times only once the condition arises somewhere: most kinds never do on
                    # most points (12 arrays of 50,000 int64: ~5 MB), and until then they
                    # would hold -1 throughout, which is what no times at all mean.
                    continue
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
            if self.on_ns[f.kind] and (onset := on & (since < 0)).any():
                # kept for `settle`, which raises them once their on-delay has passed
                self._onset.setdefault(key, {}).update(
                    dict.fromkeys(np.flatnonzero(onset).tolist(), f))
            since[on & (since < 0)] = end_ns
            since[off] = -1
            absent[on] = -1
            absent[off & (absent < 0)] = end_ns
            raise_ = on & ~is_open & (end_ns - since >= self.on_ns[f.kind])
            clear = is_open & off & (end_ns - absent >= self.off_ns[f.kind])
            events += self._transitions(f.kind, f.scope, raise_, clear, end_ns,
                                        _always(f))
        if self.held:
            self._behaving(end_ns, events)
        return events

    def next_due(self, keys: Iterable[str], raise_until: int, clear_until: int) -> int | None:
        """The earliest time, up to the bounds, at which a subject of `keys` ("kind/scope")
        raises because its on-delay has passed, or clears because its off-delay has, with no
        finding in between: the times `settle` takes. Kinds judged reading by reading need
        them; a tick's update does the same at each tick's end."""
        best: int | None = None
        for key in keys:
            if key not in self._since or key in self._idle:
                continue
            kind = key.split("/")[0]
            since, absent, is_open = self._since[key], self._absent[key], self._is_open[key]
            for mask, start, delay, until in (
                    ((since >= 0) & ~is_open, since, self.on_ns[kind], raise_until),
                    (is_open & (absent >= 0), absent, self.off_ns[kind], clear_until)):
                if mask.any():
                    at = int(start[mask].min()) + delay
                    if at <= until and (best is None or at < best):
                        best = at
        return best

    def settle(self, keys: Iterable[str], at: int) -> list[AlarmEvent]:
        """Raise and clear, at `at`, what `next_due` found due by then."""
        events: list[AlarmEvent] = []
        self.now_ns = max(self.now_ns, at)
        for key in keys:
            if key not in self._since or key in self._idle:
                continue
            kind, scope = key.split("/")
            since, absent, is_open = self._since[key], self._absent[key], self._is_open[key]
            raise_ = (since >= 0) & ~is_open & (since + self.on_ns[kind] <= at)
            clear = is_open & (absent >= 0) & (absent + self.off_ns[kind] <= at)
            onset = self._onset.get(key, {})
            # a state file keeps no onset: the alarm then says only what it is about
            bare = Finding(kind, scope, since >= 0, "{subject}")  # type: ignore[arg-type]
            found = {i: onset.pop(i, bare) for i in np.flatnonzero(raise_).tolist()}
            events += self._transitions(kind, scope, raise_, clear, at,  # type: ignore[arg-type]
                                        found.__getitem__)
        if self.held:
            self._behaving(at, events)
        return events

    def _transitions(self, kind: str, scope: Scope, raise_: np.ndarray, clear: np.ndarray,
                     at: int, finding: Callable[[int], Finding]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        is_open = self._is_open[f"{kind}/{scope}"]
        if raise_.any():
            for i in np.flatnonzero(raise_).tolist():
                self._raise((kind, scope, i), self._alarm(finding(i), i, at), events)
            is_open |= raise_
        if clear.any():
            for i in np.flatnonzero(clear).tolist():
                self._clear((kind, scope, i), at, events)
            is_open &= ~clear
        return events

    def _raise(self, key: Key, alarm: Alarm, events: list[AlarmEvent]) -> None:
        """Raise `alarm`, unless it chatters: then it is held (and said so, once)."""
        if self.rules:
            times = self.raises.setdefault(key, [])
            times.append(alarm.start_ns)
            longest = max(w for _, w in self.rules)
            del times[:bisect.bisect_right(times, alarm.start_ns - longest)]
            held = self.held.get(key)
            if held is None:
                held = self._chatters(key, alarm, times)
                if held is not None:
                    self.held[key] = held
                    events.append(AlarmEvent("raise", replace(held.notice)))
            if held is not None:
                held.alarm = alarm
                return
        self.open[key] = alarm
        events.append(AlarmEvent("raise", replace(alarm)))

    def _chatters(self, key: Key, alarm: Alarm, times: list[int]) -> Held | None:
        """A hold, if `times` break a rule."""
        for n, window in self.rules:
            within = len(times) - bisect.bisect_right(times, alarm.start_ns - window)
            if within < n:
                continue
            name = self._subject(key[1], key[2])[0]
            span = _span(window)
            notice = replace(
                alarm, id=f"chattering:{alarm.kind}:{name}:{alarm.start_ns // 10**9}",
                kind="chattering", priority=self.priority.get("chattering") or alarm.priority,
                value=float(within), limit=float(n), details={"window_s": window / 1e9},
                message=f"{name}: the {alarm.kind} alarm chatters, raised {within} times in "
                        f"{span}: held back until its condition stays clear (or stays on) "
                        f"for {span}, or an operator releases it. Last: {alarm.message}")
            return Held(notice, window, None, alarm.start_ns)
        return None

    def _clear(self, key: Key, end_ns: int, events: list[AlarmEvent]) -> None:
        held = self.held.get(key)
        if held is not None and held.alarm is not None:
            held.alarm, held.clear_since_ns = None, end_ns
            return
        alarm = self.open.pop(key)
        alarm.end_ns = end_ns
        events.append(AlarmEvent("clear", alarm))

    def _behaving(self, end_ns: int, events: list[AlarmEvent]) -> None:
        """Release the held alarms that behave: clear, or on, for their rule's window."""
        for key, held in list(self.held.items()):
            since = held.clear_since_ns if held.alarm is None else held.alarm.start_ns
            if end_ns - since >= held.window_ns:
                events += self._release(key, end_ns)

    def _release(self, key: Key, end_ns: int) -> list[AlarmEvent]:
        """End a hold: the `chattering` alarm clears; a held alarm whose condition is on
        is raised (with the start of its condition); its raises count afresh."""
        held = self.held.pop(key)
        self.raises.pop(key, None)
        held.notice.end_ns = end_ns
        events = [AlarmEvent("clear", held.notice)]
        if held.alarm is not None:
            self.open[key] = held.alarm
            events.append(AlarmEvent("raise", replace(held.alarm)))
        return events

    def release(self, alarm_id: str) -> list[AlarmEvent]:
        """An operator releases a chattering alarm (by the `chattering` alarm's id); [] if
        it is not held (any more)."""
        for key, held in self.held.items():
            if held.notice.id == alarm_id:
                return self._release(key, self.now_ns)
        return []

    def _subject(self, scope: Scope, i: int) -> tuple[str, str | None, str | None,
                                                      tuple[str, ...], str | None, str]:
        """(name, tag, zone, tags, device, unit) of subject i of a scope."""
        t = self.table
        if scope == "tag":
            return t.tags[i], t.tags[i], t.zone_name(i), (t.tags[i],), t.device_name(i), \
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
        priority = ((f.scope == "tag" and self.table.detail(i).priority)
                    or self.priority.get(f.kind, "low"))
        # to the second, or the millisecond for a reading's time that has one
        stamp = f"{end_ns // 10**9}" if end_ns % 10**9 == 0 else f"{end_ns / 1e9:.3f}"
        alarm = Alarm(id=f"{f.kind}:{name}:{stamp}", kind=f.kind, tag=tag, zone=zone,
                      start_ns=end_ns, end_ns=None, priority=priority, message="", tags=tags,
                      device=device)
        self._refresh(alarm, f, i)
        return alarm

    def _refresh(self, alarm: Alarm, f: Finding, i: int) -> None:
        """The alarm's figures and message: the condition as it raised the alarm."""
        name, *_, unit = self._subject(f.scope, i)
        value = None if f.value is None else _number(f.value[i])
        limit = None if f.limit is None else _number(f.limit[i])
        figures = {k: _number(a[i]) for k, a in f.details.items()}
        alarm.value, alarm.limit = value, limit
        alarm.details = {k: v for k, v in figures.items() if v is not None}
        # A figure the detector could not tell (NaN) reads "?": never a missing key.
        text = f.message.format(subject=name, value=significant(value),
                                limit=significant(limit), unit=unit,
                                **{k: significant(v) for k, v in figures.items()})
        alarm.message = " ".join(text.split())  # a point without a unit leaves a gap

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key, arr in self._since.items():
            out[f"since/{key}"] = arr
            out[f"absent/{key}"] = self._absent[key]
        alarms = [[kind, scope, i, asdict(a)] for (kind, scope, i), a in self.open.items()]
        out["open"] = np.array([json.dumps(alarms)])
        out["chattering"] = np.array([json.dumps({
            "raises": [[*key, times] for key, times in self.raises.items()],
            "held": [[*key, asdict(h.notice), h.window_ns,
                      None if h.alarm is None else asdict(h.alarm), h.clear_since_ns]
                     for key, h in self.held.items()]})])
        out["now"] = np.array([self.now_ns])
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Raises KeyError, ValueError or TypeError on a state that is not the gate's."""
        sizes = {"tag": len(self.table), "zone": len(self.table.zones),
                 "device": len(self.table.devices)}
        self._since, self._absent = {}, {}
        for name, arr in state.items():
            part, _, key = name.partition("/")
            if part not in ("since", "absent"):
                continue
            kind, _, scope = key.partition("/")
            if kind not in KINDS or sizes.get(scope) != arr.shape[0] or arr.ndim != 1 \
                    or arr.dtype.kind != "i":
                raise ValueError(f"gate/{name}: not an alarm condition of this site")
            (self._since if part == "since" else self._absent)[key] = arr.copy()
        if self._since.keys() != self._absent.keys():
            raise ValueError("gate: since and absent do not match")
        self.open, self.held, self.raises = {}, {}, {}
        self._idle = set()
        self._is_open = {k: np.zeros(len(v), dtype=bool) for k, v in self._since.items()}

        def alarm(fields: dict) -> Alarm:
            alarm = Alarm(**fields)
            alarm.tags = tuple(alarm.tags)
            return alarm

        for kind, scope, i, fields in json.loads(str(state["open"][0])):
            self.open[(kind, scope, i)] = alarm(fields)
            self._is_open[f"{kind}/{scope}"][i] = True
        chatter = json.loads(str(state["chattering"][0]))
        for kind, scope, i, times in chatter["raises"]:
            self.raises[(kind, scope, i)] = [int(t) for t in times]
        for kind, scope, i, notice, window, held, clear_since in chatter["held"]:
            self.held[(kind, scope, i)] = Held(alarm(notice), int(window),
                                               None if held is None else alarm(held),
                                               int(clear_since))
            if held is not None:
                self._is_open[f"{kind}/{scope}"][i] = True
        self.now_ns = int(state["now"][0])
        for key in [k for k, since in self._since.items() if (since < 0).all()
                    and (self._absent[k] < 0).all() and not self._is_open[k].any()]:
            # a condition that never arose (an older state kept its times all the same)
            del self._since[key], self._absent[key], self._is_open[key]


def _always(finding: Finding) -> Callable[[int], Finding]:
    """`finding` for every row of its scope (bound now, not to the loop's last finding)."""
    return lambda _i: finding


def _span(ns: int) -> str:
    """A rule's window as an operator says it: `1 h`, `1 d`, `90 min`, `30 s`."""
    seconds = ns / 1e9
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def _number(x: float) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None

