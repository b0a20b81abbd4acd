"""A simulated site: physics model, Modbus map, sensors and the scenario's faults, composed.

The physics steps on a fixed grid (multiples of `step` from the clock's start), whoever drives
it, and a reading at time t interpolates between the two physics states around t, so a site
serving live and the same site exporting a recording give the same values at the same instants.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from simulators import scenario as scenarios
from simulators.physics.measure import SENSOR_FAULTS, Sensors
from simulators.scenario import EVENT_KINDS, Event, Scenario, ScenarioError
from simulators.servers.registers import assign_addresses
from simulators.signals import Signal
from timegrammar.iso import iso

SiteName = Literal["water", "grid"]
CommsState = Literal["ok", "silent", "exception"]
COMMS_MODES = ("silent", "exception")
HORIZON = 366 * 86400.0  # no scenario event may end later than a year after the start


class PhysicsModel(Protocol):
    site: str
    signals: list[Signal]
    zones: list[str]
    time: float

    def check_event(self, event: Event) -> str | None: ...
    def values(self) -> np.ndarray: ...
    def advance(self, dt: float) -> np.ndarray: ...


def check_step(step: float) -> None:
    """The physics steps whole minutes."""
    if not (step > 0 and math.isfinite(step) and step % 60 == 0):
        raise ValueError(f"the step must be a positive whole number of minutes, not {step:g} s")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_us(moment: datetime) -> str:
    """UTC ISO 8601 with `Z`, microseconds only when there are some (as datetime holds)."""
    return iso((moment - EPOCH) // timedelta(microseconds=1) * 1000, "us")


def scenario_file(scenario: str | Path) -> str:
    """The file `simulators.scenario.load` reads for a shipped name or a path."""
    path = Path(scenario)
    return str(path if path.suffix == ".toml" else scenarios.scenario_dir() / f"{scenario}.toml")


class SimulatedSite:
    """One site's physics, its mapped signals, and what its sensors and Modbus units report."""

    def __init__(self, model: PhysicsModel, scenario: Scenario, *, seed: int, start: datetime,
                 step: float, file: str = "") -> None:
        check_step(step)
        if seed < 0:
            raise ValueError(f"the seed must be zero or more, not {seed}")
        self.name: str = model.site
        self.scenario = scenario
        self.seed = seed
        self.start = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
        self.step = float(step)
        self.signals: list[Signal] = assign_addresses(model.site, list(model.signals))
        self.tags = [s.tag for s in self.signals]
        self.zones: list[str] = list(model.zones)
        self.devices: dict[str, int] = {s.device: s.unit_id for s in self.signals}
        self.events: tuple[Event, ...] = scenario.for_site(model.site)
        _validate(model, self.signals, self.devices, self.events, file or scenario.name)
        self._model = model
        self._status = np.array([s.kind == "status" for s in self.signals])
        self._columns = {d: np.array([i for i, s in enumerate(self.signals) if s.device == d])
                         for d in self.devices}
        self._sensors = Sensors(model.site, self.signals, self.events, seed=seed, step=step)
        self._times: list[float] = [0.0]
        self._states: list[np.ndarray] = [np.asarray(model.values(), dtype=np.float64)]
        self._sensors.freeze_between(-math.inf, 0.0, self._true_at)

    @property
    def time(self) -> float:
        """Simulated seconds since `start` reached by the physics."""
        return self._times[-1]

    def advance(self, dt: float) -> None:
        """Step the physics by at least `dt` simulated seconds, in whole steps."""
        self._advance_to(self.time + dt)

    def _advance_to(self, t: float, on_step: Callable[[], None] | None = None) -> None:
        while self._times[-1] < t:
            t0 = self._times[-1]
            self._states.append(np.asarray(self._model.advance(self.step), dtype=np.float64))
            self._times.append(t0 + self.step)
            self._sensors.freeze_between(t0, t0 + self.step, self._true_at)
            if on_step:
                on_step()

    def _true_at(self, times: np.ndarray) -> np.ndarray:
        """True values at `times`, interpolated between the recorded physics states."""
        grid = np.asarray(self._times)
        if times.size and times.min() < grid[0]:
            raise ValueError(f"simulated time {times.min():g} s is before the oldest physics "
                             f"state kept ({grid[0]:g} s); sample times must not go back")
        states = np.asarray(self._states)
        i0 = np.clip(np.searchsorted(grid, times, side="right") - 1, 0, grid.size - 1)
        i1 = np.minimum(i0 + 1, grid.size - 1)
        span = grid[i1] - grid[i0]
        w = np.divide(times - grid[i0], span, out=np.zeros_like(times), where=span > 0)
        s0, s1 = states[i0], states[i1]
        # Pumps and breakers switch; halfway between two states they are still as they were.
        return np.where(self._status, s0, s0 + w[:, None] * (s1 - s0))

    def _forget(self) -> None:
        """Drop all but the last two physics states: all that later samples need."""
        del self._times[:-2], self._states[:-2]

    def sample(self, t: float) -> np.ndarray:
        """Sensor readings (one per signal, NaN = no reading) at simulated time t.

        The physics steps forward to t first if it is not there yet; t must not go back before
        the previous physics state.
        """
        return self.run(np.array([float(t)]))[0]

    def run(self, times: np.ndarray, on_step: Callable[[], None] | None = None) -> np.ndarray:
        """Sensor readings at increasing `times`, shape (len(times), len(signals)).

        Steps the physics up to the last time (calling `on_step` after each step), then reads
        every time at once: an export's whole run is one call.
        """
        times = np.asarray(times, dtype=np.float64)
        if times.size:
            self._advance_to(float(times[-1]), on_step)
        readings = self._sensors.measure(times, self._true_at(times))
        self._forget()
        return readings

    def comms_state(self, device: str, t: float) -> CommsState:
        """How Modbus unit `device` answers at simulated time t."""
        if device not in self.devices:
            raise KeyError(f"no Modbus device {device!r} on the {self.name} site")
        for e in self.events:
            if e.kind == "comms" and e.target == device and e.active(t):
                return e.params.get("mode", "silent")  # type: ignore[return-value]
        return "ok"

    def unreachable(self, times: np.ndarray) -> np.ndarray:
        """Boolean (len(times), len(signals)): the reading's device does not answer."""
        out = np.zeros((times.size, len(self.signals)), dtype=bool)
        for e in self.events:
            if e.kind == "comms":
                active = (times >= e.start) & (times < e.end)
                out[np.ix_(active, self._columns[e.target])] = True
        return out

    def labels(self, until: float = math.inf) -> list[tuple[str, str, str, str]]:
        """Ground truth: (kind, location, start, end) per event, times ISO 8601 UTC.

        With `until` (simulated seconds), only events starting before it, ending at it at the
        latest: what a recording of that long shows.
        """
        out = []
        for e in self.events:
            if e.start >= until:
                continue
            begin = iso_us(self.start + timedelta(seconds=e.start))
            end = iso_us(self.start + timedelta(seconds=min(e.end, until)))
            if e.kind == "comms":
                out += [(e.label_kind, self.tags[c], begin, end) for c in self._columns[e.target]]
            else:
                out.append((e.label_kind, self._location(e), begin, end))
        return out

    def _location(self, e: Event) -> str:
        if e.target in self.zones or e.target in self.tags:
            return e.target
        # A junction, line or pump: the model knows its zone or tag.
        locate = getattr(self._model, "event_location", None)
        return locate(e) if locate else e.target


def _validate(model: PhysicsModel, signals: Sequence[Signal], devices: dict[str, int],
              events: Sequence[Event], file: str) -> None:
    tags = {s.tag for s in signals}
    last: dict[str, Event] = {}  # tag or device -> its latest fault so far, to find overlaps
    for e in events:
        if e.start >= HORIZON:
            raise ScenarioError(file, f"{e.key}.start", "starts more than 366 days after the "
                                "clock's start; a scenario covers at most a year")
        if e.end > HORIZON:
            raise ScenarioError(file, f"{e.key}.duration", "ends more than 366 days after the "
                                "clock's start; a scenario covers at most a year")
        if e.kind in SENSOR_FAULTS:
            if e.target not in tags:
                raise ScenarioError(file, f"{e.key}.target", f"unknown tag {e.target!r} on the "
                                    f"{model.site} site; tags: {_some(sorted(tags))}")
            _check_fault_params(e, file)
        elif e.kind == "comms":
            if e.target not in devices:
                raise ScenarioError(file, f"{e.key}.target", f"unknown Modbus device "
                                    f"{e.target!r}; devices: {_some(sorted(devices))}")
            mode = e.params.get("mode", "silent")
            if mode not in COMMS_MODES:
                raise ScenarioError(file, f"{e.key}.mode", f"expected 'silent' or 'exception', "
                                    f"not {mode!r}")
        else:
            if reason := model.check_event(e):
                raise ScenarioError(file, _physics_key(e, reason), reason)
            continue
        # Two faults at once on one sensor or one unit have no single meaning.
        if (prev := last.get(e.target)) and e.start < prev.end:
            raise ScenarioError(file, f"{e.key}.start", f"overlaps {prev.key} on "
                                f"{e.target!r}; faults on one tag or device must not overlap")
        last[e.target] = e


def _physics_key(e: Event, reason: str) -> str:
    """The key a model's complaint is about: a parameter it names, else the target."""
    named = [p for p in sorted(EVENT_KINDS[e.kind][1]) if re.search(rf"\b{p}\b", reason)]
    return f"{e.key}.{named[0] if named else 'target'}"


def _check_fault_params(e: Event, file: str) -> None:
    count = e.params.get("count", 1)
    if (isinstance(count, float) and not count.is_integer()) or count < 1:  # type: ignore[operator]
        raise ScenarioError(file, f"{e.key}.count", f"expected a whole number of spikes "
                            f"(1 or more), not {count!r}")
    factor = e.params.get("factor", 1.0)
    if factor <= 0:  # type: ignore[operator]
        raise ScenarioError(file, f"{e.key}.factor", f"expected a factor above 0, not {factor!r}")


def _some(names: Sequence[str], shown: int = 12) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def build_site(name: SiteName, scenario: str | Path, *, seed: int, start: datetime,
               step: float, speed: float | None = None) -> SimulatedSite:
    """Load `scenario`, build the site's physics with its events and check every event;
    `speed`: the clock's when serving (see `Scenario.at_speed`; None: as written, for an
    export)."""
    check_step(step)
    loaded = scenarios.load(scenario)
    if speed is not None:
        loaded = loaded.at_speed(speed)
    physics = [e for e in loaded.for_site(name) if e.kind not in SENSOR_FAULTS | {"comms"}]
    # Each physics package is heavy (wntr, pandapower): import only the one this site needs.
    if name == "water":
        from simulators.physics.water import WaterNetwork as Model
    elif name == "grid":
        from simulators.physics.grid import GridNetwork as Model
    else:
        raise ValueError(f"unknown site {name!r}; expected water or grid")
    file = scenario_file(scenario)
    try:
        model = Model(physics, seed=seed, start=start)
    except ValueError:
        # The model refuses a bad event without naming its file: find it, and say where.
        probe = Model([], seed=seed, start=start)
        for e in physics:
            if reason := probe.check_event(e):
                raise ScenarioError(file, _physics_key(e, reason), reason) from None
        raise
    return SimulatedSite(model, loaded, seed=seed, start=start, step=step, file=file)
