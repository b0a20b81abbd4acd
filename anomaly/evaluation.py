"""Scoring alarms against ground-truth labels (event level); pure, no I/O.

- A label window is [start - slack, end + grace]. An alarm *matches* a label when it starts in
  the window at a compatible location: the alarm's tag is the label's location, or the
  location is among the tags the alarm covers, or the alarm's zone is the location, or the
  location is a tag of the alarm's zone (with the site's tag -> zone map), or the alarm's tag
  lies under the location (`feeder1.line3_8` covers `feeder1.line3_8.current`).
- A label is *detected* when an alarm of its kind's family matches it (`comms` and `dropout`
  accept each other: a silent device and a silent sensor look alike); the delay is the first
  such alarm's start minus the label's start.
- An alarm is *false* when it matches no label of any kind: a consequence of a real event
  (a limit alarm in a leaking zone) is not false. Labels of kind `anomaly` (pump trips, noise)
  are not scored for recall, but alarms they explain are not false either.
- Recall = detected / labels, precision = (alarms - false) / alarms, F1 their harmonic mean;
  false alarms per zone-day = false alarms / (zones x days of the recording).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median

from anomaly.core.alarms import Alarm

NS = 1_000_000_000
DAY_NS = 86400 * NS
UNSCORED = frozenset({"anomaly"})  # label kinds not scored for recall
FAMILY: dict[str, frozenset[str]] = {  # label kind -> alarm kinds that detect it
    "comms": frozenset({"comms", "dropout"}),
    "dropout": frozenset({"comms", "dropout"}),
}


@dataclass(frozen=True)
class Label:
    kind: str
    location: str  # a zone or a tag
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class Score:
    """The scores of one alarm/label kind, or of all (`kind` "all")."""

    kind: str
    labels: int  # scored labels
    detected: int
    alarms: int
    false_alarms: int
    median_delay_s: float | None  # over detected labels
    false_per_zone_day: float | None  # None: the recording spans no time

    @property
    def recall(self) -> float | None:
        return self.detected / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        return (self.alarms - self.false_alarms) / self.alarms if self.alarms else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict:
        return {"kind": self.kind, "labels": self.labels, "detected": self.detected,
                "recall": self.recall, "alarms": self.alarms,
                "false_alarms": self.false_alarms, "precision": self.precision, "f1": self.f1,
                "median_delay_s": self.median_delay_s,
                "false_per_zone_day": self.false_per_zone_day}


@dataclass(frozen=True)
class Evaluation:
    kinds: list[Score]  # one per kind found among labels and alarms, by name
    overall: Score
    zones: int
    days: float
    missed: list[Label] = field(default_factory=list)  # scored labels no alarm detected
    false: list[Alarm] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"overall": self.overall.to_json(), "kinds": [s.to_json() for s in self.kinds],
                "zones": self.zones, "days": self.days,
                "missed": [{"kind": x.kind, "location": x.location, "start_ns": x.start_ns}
                           for x in self.missed],
                "false": [a.id for a in self.false]}


def covers(location: str, alarm: Alarm, zone_of: Mapping[str, str | None]) -> bool:
    """Whether an alarm is at a label's location (see the module's rules)."""
    return (alarm.tag == location or location in alarm.tags
            or (alarm.zone is not None and (alarm.zone == location
                                            or zone_of.get(location) == alarm.zone))
            or (alarm.tag is not None and alarm.tag.startswith(location + ".")))


def family(kind: str) -> frozenset[str]:
    return FAMILY.get(kind, frozenset({kind}))


def zones_of(alarms: Sequence[Alarm], labels: Sequence[Label],
             zone_of: Mapping[str, str | None]) -> set[str]:
    """The zones a run covers: the site's (from `zone_of`) if known, else the alarms' zones
    and the label locations that name no tag."""
    zones = {z for z in zone_of.values() if z}
    if zones:
        return zones
    tags = {t for a in alarms for t in (a.tag, *a.tags) if t}
    return {a.zone for a in alarms if a.zone} | {x.location for x in labels
                                                 if x.location not in tags
                                                 and "." not in x.location}


def evaluate(alarms: Sequence[Alarm], labels: Sequence[Label], *, slack_ns: int = 0,
             grace_ns: int = 3600 * NS, zone_of: Mapping[str, str | None] | None = None,
             zones: Collection[str] | None = None, span_ns: tuple[int, int] | None = None
             ) -> Evaluation:
    """Score `alarms` against `labels`.

    `zone_of`: tag -> zone of the site (optional). `zones`: the zones for false alarms per
    zone-day (default: `zones_of`). `span_ns`: the recording's first and last time (default:
    from the labels and alarms).
    """
    zone_of = zone_of or {}
    zone_set = set(zones) if zones is not None else zones_of(alarms, labels, zone_of)
    n_zones = max(len(zone_set), 1)
    if span_ns is None:
        times = [t for x in labels for t in (x.start_ns, x.end_ns)] + [
            t for a in alarms for t in (a.start_ns, a.end_ns) if t is not None]
        span_ns = (min(times), max(times)) if times else (0, 0)
    days = max(span_ns[1] - span_ns[0], 0) / DAY_NS

    def matches(a: Alarm, x: Label) -> bool:
        return (x.start_ns - slack_ns <= a.start_ns <= x.end_ns + grace_ns
                and covers(x.location, a, zone_of))

    delays: dict[Label, float] = {}
    scored = [x for x in labels if x.kind not in UNSCORED]
    for x in scored:
        starts = [a.start_ns for a in alarms if a.kind in family(x.kind) and matches(a, x)]
        if starts:
            delays[x] = (min(starts) - x.start_ns) / NS
    false = [a for a in alarms if not any(matches(a, x) for x in labels)]
    false_ids = {id(a) for a in false}

    def score(kind: str, kind_labels: list[Label], kind_alarms: list[Alarm]) -> Score:
        found = [delays[x] for x in kind_labels if x in delays]
        n_false = sum(1 for a in kind_alarms if id(a) in false_ids)
        return Score(kind=kind, labels=len(kind_labels), detected=len(found),
                     alarms=len(kind_alarms), false_alarms=n_false,
                     median_delay_s=median(found) if found else None,
                     false_per_zone_day=n_false / (n_zones * days) if days else None)

    kinds = sorted({x.kind for x in scored} | {a.kind for a in alarms})
    per_kind = [score(k, [x for x in scored if x.kind == k], [a for a in alarms if a.kind == k])
                for k in kinds]
    return Evaluation(kinds=per_kind, overall=score("all", scored, list(alarms)),
                      zones=len(zone_set), days=days,
                      missed=[x for x in scored if x not in delays], false=false)
