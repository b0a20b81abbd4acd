"""Scenario files: the events a simulation run injects, each with a start and a duration.

A scenario is a TOML file with one table per site, each holding a list of events:

    description = "a 5 L/s leak in dma2 after two clean days"
    [[water.events]]
    kind = "leak"          # see EVENT_KINDS
    target = "dma2"        # a zone, junction, tag, device, line or bus, as the kind requires
    start = "2d 02:30"     # simulated time after the run's start: "90s", "15m", "36h", "2d 6h"
    duration = "3d"
    size = 5.0             # kind-specific parameters, see EVENT_KINDS

Times are offsets from the start of the simulated clock, so a scenario runs the same whatever
the start date. A scenario with `clock = "wall"` at its top gives them in wall-clock time from
the start of serving instead: served at `--speed X`, its events start at X times their offset
in simulated time and last X times as long (ramps too, drift rates per wall-clock hour), so an
outage lasts as long for a gateway at any speed (the demo's scenario). Exported, it runs as at
speed 1. Served fast, an outage of any scenario lasts at least MIN_OUTAGE wall-clock seconds.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from timegrammar import seconds

# Event kind -> (site, parameters it accepts, label kind written to labels.csv)
EVENT_KINDS: dict[str, tuple[str, frozenset[str], str]] = {
    # water physics
    "leak": ("water", frozenset({"size", "percent", "ramp", "junction"}), "leak"),
    "burst": ("water", frozenset({"size", "junction"}), "leak"),
    "pump_trip": ("water", frozenset(), "anomaly"),
    # grid physics
    "voltage_sag": ("grid", frozenset({"depth"}), "voltage_sag"),
    "voltage_swell": ("grid", frozenset({"depth"}), "voltage_swell"),
    "overload": ("grid", frozenset({"factor"}), "overload"),
    "line_outage": ("grid", frozenset({"restore"}), "line_outage"),
    "frequency": ("grid", frozenset({"deviation"}), "frequency"),
    # sensor faults (any site, target is a tag)
    "stuck": ("any", frozenset(), "stuck"),
    "spike": ("any", frozenset({"magnitude", "count"}), "spike"),
    "drift": ("any", frozenset({"rate"}), "drift"),
    "dropout": ("any", frozenset(), "dropout"),
    "noise": ("any", frozenset({"factor"}), "anomaly"),
    "offset": ("any", frozenset({"size"}), "drift"),  # a bias, as a drift's end state
    # comms faults (any site, target is a Modbus device / unit name)
    "comms": ("any", frozenset({"mode"}), "comms"),  # mode: "silent" | "exception"
}

MIN_OUTAGE = 10.0  # wall-clock seconds: three default stale windows (3 x 1 s polls) and more
_CLOCK = re.compile(r"^(?:(\d+(?:\.\d+)?)\s*d\s+)?(\d{1,2}):(\d{2})$")


class ScenarioError(ValueError):
    """A scenario problem, naming the file and the key."""

    def __init__(self, file: str, key: str, reason: str):
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a scenario time: the duration grammar (`timegrammar`: "90s", "15m",
    "36h", "2d 6h", a number of seconds), or days and a time of day ("2d 02:30").

    >>> parse_duration("2d 6h"), parse_duration("1d 02:30"), parse_duration(90)
    (194400.0, 95400.0, 90.0)
    """
    if isinstance(text, str) and (m := _CLOCK.match(text.strip())):
        days, hh, mm = m.groups()
        if int(hh) > 23 or int(mm) > 59:
            raise ValueError(f"{text!r} is not a valid time of day")
        return float(days or 0) * 86400 + int(hh) * 3600 + int(mm) * 60
    return seconds(text)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    target: str
    start: float  # seconds after the simulation start
    duration: float
    params: dict[str, float | str] = field(default_factory=dict)
    key: str = ""  # where it was defined, e.g. "water.events[3]", for error messages

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def label_kind(self) -> str:
        return EVENT_KINDS[self.kind][2]

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    events: dict[str, tuple[Event, ...]]  # site -> events, sorted by start
    clock: str = "simulated"  # or "wall": times in wall-clock seconds of serving

    def for_site(self, site: str) -> tuple[Event, ...]:
        return self.events.get(site, ())

    def at_speed(self, speed: float) -> Scenario:
        """Events in simulated time for a clock running at `speed`: a wall-clock scenario's
        times scaled; and at any speed, an outage (`comms`) no shorter than MIN_OUTAGE
        seconds of wall-clock time (up to the next fault of its device), so that a fast
        clock never makes one too short for a gateway to see."""
        if speed <= 0:
            return self
        wall = self.clock == "wall"

        def scaled(e: Event) -> Event:
            if not wall or speed == 1:
                return e
            params = dict(e.params)
            if "ramp" in params:
                params["ramp"] = float(params["ramp"]) * speed
            if e.kind == "drift" and "rate" in params:  # per wall-clock hour
                params["rate"] = float(params["rate"]) / speed
            return replace(e, start=e.start * speed, duration=e.duration * speed,
                           params=params)

        def lengthened(events: list[Event]) -> tuple[Event, ...]:
            out = []
            for k, e in enumerate(events):
                if e.kind == "comms" and e.duration < MIN_OUTAGE * speed:
                    after = min((f.start for f in events[k + 1:] if f.target == e.target),
                                default=math.inf)
                    e = replace(e, duration=min(MIN_OUTAGE * speed, after - e.start))
                out.append(e)
            return tuple(out)

        return replace(self, events={site: lengthened([scaled(e) for e in events])
                                     for site, events in self.events.items()})


def scenario_dir() -> Path:
    return Path(str(resources.files("simulators") / "scenarios"))


def available() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.toml"))


def load(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = scenario_dir() / f"{name_or_path}.toml"
        if not path.exists():
            raise ScenarioError(
                str(name_or_path), "",
                f"unknown scenario; shipped scenarios are: {', '.join(available())}",
            )
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(file, "", "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(file, "", f"invalid TOML: {e}") from None
    return parse(raw, file=file, name=path.stem)


def parse(raw: dict, *, file: str, name: str) -> Scenario:
    unknown = set(raw) - {"description", "clock", "water", "grid"}
    if unknown:
        raise ScenarioError(file, sorted(unknown)[0],
                            "unknown key (expected description, clock, water, grid)")
    clock = raw.get("clock", "simulated")
    if clock not in ("simulated", "wall"):
        raise ScenarioError(file, "clock", f"expected 'simulated' or 'wall', not {clock!r}")
    events: dict[str, tuple[Event, ...]] = {}
    for site in ("water", "grid"):
        table = raw.get(site, {})
        if not isinstance(table, dict) or set(table) - {"events"}:
            raise ScenarioError(file, site, "expected a table holding only an 'events' list")
        items = table.get("events", [])
        if not isinstance(items, list):
            raise ScenarioError(file, f"{site}.events", "expected a list of [[events]] tables")
        events[site] = tuple(
            sorted((_event(item, file, f"{site}.events[{i}]", site)
                    for i, item in enumerate(items)), key=lambda e: e.start)
        )
    return Scenario(name=name, description=str(raw.get("description", "")), events=events,
                    clock=clock)


def _event(item: object, file: str, key: str, site: str) -> Event:
    if not isinstance(item, dict):
        raise ScenarioError(file, key, "expected a table")
    kind = item.get("kind")
    if kind not in EVENT_KINDS:
        raise ScenarioError(file, f"{key}.kind", f"unknown event kind {kind!r}; expected one of "
                            + ", ".join(EVENT_KINDS))
    event_site, allowed, _ = EVENT_KINDS[kind]
    if event_site not in ("any", site):
        raise ScenarioError(file, f"{key}.kind", f"{kind!r} is a {event_site} event, not {site}")
    for k in ("target", "start", "duration"):
        if k not in item:
            raise ScenarioError(file, f"{key}.{k}", "missing")
    if not isinstance(item["target"], str) or not item["target"]:
        raise ScenarioError(file, f"{key}.target", "expected a non-empty string")
    times = {}
    for k in ("start", "duration"):
        try:
            times[k] = parse_duration(item[k])
        except ValueError as e:
            raise ScenarioError(file, f"{key}.{k}", str(e)) from None
    if times["duration"] <= 0:
        raise ScenarioError(file, f"{key}.duration", "must be longer than zero")
    params = {k: v for k, v in item.items() if k not in ("kind", "target", "start", "duration")}
    for k, v in params.items():
        if k not in allowed:
            raise ScenarioError(file, f"{key}.{k}", f"unknown parameter for {kind!r}; expected "
                                + (", ".join(sorted(allowed)) or "none"))
        numeric = isinstance(v, int | float) and not isinstance(v, bool)
        if k not in ("junction", "mode") and not numeric:
            if k == "ramp" and isinstance(v, str):
                try:
                    params[k] = parse_duration(v)
                except ValueError as e:
                    raise ScenarioError(file, f"{key}.{k}", str(e)) from None
                continue
            raise ScenarioError(file, f"{key}.{k}", f"expected a number, got {v!r}")
    return Event(kind=kind, target=item["target"], start=times["start"],
                 duration=times["duration"], params=params, key=key)
