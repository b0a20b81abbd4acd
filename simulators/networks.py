"""Water networks the water simulator does not use, for judging detectors on data they were not
tuned on: wntr's example networks, run with their own tanks, pumps and level controls.

Each network is one supply zone, named after it, measured as a utility measures one: a flow
meter on every line leaving a source (a reservoir's pipes and pumps; role inflow, with a
low-flow cut-off, so a meter reads exactly 0 while its pump is off), every tank's level (no
tank meters: the tanks are inside the zone, so the zone's inflow is its consumption plus the
filling of its tanks), every pump's status, and a handful of pressures spread over the
network (farthest-point sampling of the demand junctions' coordinates, from the first source).
The tanks' areas go into the site file (`area`), and a bench can drop them to make the engine
learn them.

Hydraulics: EPANET 2.2 through wntr's toolkit binding, pressure-driven (full demand above 15 m,
none at 0 m), stepped one recording step at a time so that a leak's orifice (an emitter,
q = C sqrt(p)) opens, widens and closes mid-run. A recording starts where `SPIN_UP_DAYS` of
clean running leave the tanks. EPANET steps to the exact moment a tank
reaches a control level, so level controls switch pumps as they would. An export takes ~0.01 s a
simulated day for Net1, 2-5 s for ky10 and Net6.

Demand: every junction demand that follows a varying pattern follows the network's own daily
pattern (interpolated per minute; weekends 1.5 h later and 4 % higher) with
`simulators.physics.water.Demand`'s day-to-day factors and AR(1) noise, drawn for groups of
junctions (so a large network's total is not unrealistically smooth). Constant demands stay
constant.

Which networks tune and which only evaluate (`NETWORKS[...].role`): Net1 and ky4 tuned the
detectors; ky10, Anytown and Net6 are held out, only evaluated. Net3 (2 pumps, 3 tanks, a bulk
customer with a pattern of its own at junction 15) tunes too: the water simulator's districts
are cut from it and already tuned on it (seeds 1-3), and it is the one tuning network whose
loggers include one the neighbours' fit follows loosely (`drift`, session 11). Net2 is left
out: its source is a fixed injection with no control, so over weeks its only tank runs full or
empty.

Events: `leak` (target: the zone; `size` L/s or `percent` of the zone's mean consumption, at
the pressure when it starts; optional `ramp` seconds and `junction`) and the sensor faults of
`simulators.physics.measure`. `recording_events` draws a recording's events from a seed.
"""

from __future__ import annotations

import math
import re
import tempfile
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import wntr
from wntr.epanet.toolkit import ENepanet
from wntr.epanet.util import EN
from wntr.network import LinkStatus, WaterNetworkModel
from wntr.network.controls import Comparison, Control, ControlAction, ValueCondition

from simulators.physics.water import Demand
from simulators.scenario import Event, Scenario
from simulators.signals import Signal
from simulators.site import SimulatedSite

WNTR = Path(wntr.__file__).parent
REQUIRED_PRESSURE = 15.0  # m: full demand above it
GROUPS = 16  # junction groups with demand noise of their own
# At weekends the day runs later, its peaks by WEEKEND_SHIFT minutes, its quietest hour by
# WEEKEND_NIGHT_SHIFT, and takes WEEKEND_MORE water.
WEEKEND_SHIFT, WEEKEND_NIGHT_SHIFT, WEEKEND_MORE = 90, 30, 1.04
PRESSURES = 5  # pressure loggers per network, at junctions served above SERVED m
SERVED = 10.0
SURVEY_DAYS = 2.0  # a first run of the clean network, to size meters and place loggers
# ... after a spin-up: the .inp files' initial tank levels are not the network's daily cycle
# (ky10's tanks drain to their floors over its first four days, and one of its junctions then
# loses all pressure every day), so a recording starts where SPIN_UP_DAYS of clean running
# leave the tanks, and loggers go where pressure holds once they have settled.
SPIN_UP_DAYS = 7
# Sensors: (noise standard deviation, resolution) in the signal's unit. Flow meters: noise and
# cut-off as fractions of their range (a magnetic meter's low-flow cut-off is 0.5-2 %).
LEVEL_SENSOR = (0.005, 0.01)
PRESSURE_SENSOR = (0.05, 0.01)
FLOW_NOISE, FLOW_CUTOFF, FLOW_RESOLUTION = 0.002, 0.01, 0.01
PRESSURE_RANGES = (60.0, 100.0, 160.0, 250.0)  # m: transducer ranges on the market
Role = Literal["tuning", "held-out"]


@dataclass(frozen=True, slots=True)
class LevelControl:
    """A pump on below `on` m and off above `off` m of a tank's level (networks without)."""

    pump: str
    tank: str
    on: float
    off: float


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    inp: str  # path under wntr's package
    role: Role
    controls: tuple[LevelControl, ...] = ()  # added to the network's own
    demand: float = 1.0  # multiplier of the network's demands


NETWORKS: dict[str, NetworkSpec] = {
    "net1": NetworkSpec("library/networks/Net1.inp", "tuning"),
    "ky4": NetworkSpec("library/networks/ky4.inp", "tuning"),
    "net3": NetworkSpec("library/networks/Net3.inp", "tuning"),
    "ky10": NetworkSpec("library/networks/ky10.inp", "held-out"),
    # Anytown is a design exercise's template: its pumps run on all-zero schedules and its
    # demands (618 L/s) are more than they deliver at its pressures. Here pump 78 runs, 79 and
    # 80 follow the tanks' levels, and demands are 40 % of the file's.
    "anytown": NetworkSpec("tests/networks_for_testing/Anytown.inp", "held-out",
                           (LevelControl("79", "41", 4.5, 9.5),
                            LevelControl("80", "42", 4.0, 9.0)), demand=0.4),
    "net6": NetworkSpec("library/networks/Net6.inp", "held-out"),
}


def tag_name(name: str, prefix: str) -> str:
    """A tag segment for an EPANET id: `~@Pump-1` -> `pump-1`, `2` -> `tank2`.

    >>> tag_name("~@Pump-1", "pump"), tag_name("2", "tank"), tag_name("TANK-3324", "tank")
    ('pump-1', 'tank2', 'tank-3324')
    """
    text = re.sub(r"[^a-z0-9_-]", "", name.lower())
    return text if text[:1].isalpha() else f"{prefix}{text}"


@dataclass
class _Leak:
    event: Event
    junction: int  # EPANET node index
    size: float  # L/s at the pressure when it starts
    ramp: float
    coefficient: float = 0.0  # emitter coefficient fully open, set when it starts


class NetworkModel:
    """One wntr example network as one zone, stepped with EPANET; see the module docstring."""

    def __init__(self, name: str, events: Sequence[Event], *, seed: int, start: datetime,
                 step: float, days: float) -> None:
        spec = NETWORKS[name]
        self.site = name
        self.zone = name
        self.zones = [name]
        self.time = 0.0
        self._step = step
        wn = WaterNetworkModel(str(WNTR / spec.inp))
        self._wn = wn
        n_steps = math.ceil(days * 86400 / step) + 2
        self._prepare(wn, spec, seed=seed, start=start, n_steps=n_steps)
        self.mean_demand = self._mean_demand(wn, n_steps)
        self.signals: list[Signal] = []
        self._readers: list[Callable[[], float]] = []
        self._dir = tempfile.TemporaryDirectory(prefix=f"scadawatch-{name}-")
        inp = Path(self._dir.name) / f"{name}.inp"
        wntr.network.io.write_inpfile(wn, str(inp), units="LPS")
        self._survey = _survey(wn, inp, SPIN_UP_DAYS, min(days, SURVEY_DAYS))
        for tank, level in self._survey.levels.items():
            wn.get_node(tank).init_level = level
        wntr.network.io.write_inpfile(wn, str(inp), units="LPS")
        self._en = en = ENepanet(version=2.2)
        en.ENopen(str(inp), str(inp.with_suffix(".rpt")), "")
        en.ENopenH()
        en.ENinitH(0)
        weakref.finalize(self, _close, en, self._dir)
        for e in events:
            if reason := self.check_event(e):
                raise ValueError(f"{e.key or e.kind}: {reason}")
        self._leaks = [self._leak(e) for e in events if e.kind == "leak"]
        self._add_signals()
        en.ENrunH()
        # (time, L/s) the leaks lose at each step: the truth a leak's size is judged by
        self.leak_flow: list[tuple[float, float]] = [(0.0, 0.0)]

    # --- interface used by simulators.site ---------------------------------------------------

    def check_event(self, event: Event) -> str | None:
        """Why a physics event cannot happen on this network, or None."""
        p = event.params
        if event.kind != "leak":
            return f"{event.kind!r} is not simulated on {self.site}; leaks and sensor faults are"
        if event.target != self.zone:
            return f"unknown zone {event.target!r}; the zone is {self.zone!r}"
        if ("size" in p) == ("percent" in p):
            return "a leak needs either size (L/s) or percent (of the zone's mean consumption)"
        if "junction" in p and str(p["junction"]) not in self._wn.junction_name_list:
            return f"no junction {p['junction']!r} in {self.site}"
        if float(p.get("ramp", 0.0)) < 0:
            return f"ramp must not be negative, not {p['ramp']!r}"
        return None

    def event_location(self, event: Event) -> str:
        return event.target

    def values(self) -> np.ndarray:
        return np.array([read() for read in self._readers], dtype=np.float64)

    def advance(self, dt: float) -> np.ndarray:
        """Step the hydraulics `dt` simulated seconds ahead (EPANET's own steps between)."""
        target = self.time + dt
        t = self.time
        while t < target:
            step = self._en.ENnextH()
            if step <= 0:
                raise RuntimeError(f"{self.site}: the simulation ends at {t:g} s")
            t += step
            self._set_leaks(t)
            self._en.ENrunH()
        self.time = t
        self.leak_flow.append((t, self._leaking()))
        return self.values()

    # --- the network -------------------------------------------------------------------------

    def _prepare(self, wn: WaterNetworkModel, spec: NetworkSpec, *, seed: int, start: datetime,
                 n_steps: int) -> None:
        """Pressure-driven demand, our clock and step, demand patterns, added controls."""
        step = int(self._step)
        opts = wn.options
        opts.hydraulic.demand_model = "PDD"
        opts.hydraulic.required_pressure = REQUIRED_PRESSURE
        opts.hydraulic.minimum_pressure = 0.0
        opts.hydraulic.demand_multiplier = spec.demand
        # A step the solver does not balance within its trials is kept, not the end of the run
        # (a large leak can starve a network at its limits for a while).
        opts.hydraulic.unbalanced, opts.hydraulic.unbalanced_value = "CONTINUE", 10
        clock = start.hour * 3600 + start.minute * 60 + start.second
        old_step, old_start = opts.time.pattern_timestep, opts.time.pattern_start
        old_clock = opts.time.start_clocktime
        t = opts.time
        # long enough for the survey's run too (patterns repeat past their end)
        t.duration = max(n_steps - 1, math.ceil((SPIN_UP_DAYS + SURVEY_DAYS) * 86400 / step)) * step
        t.hydraulic_timestep = t.pattern_timestep = t.report_timestep = step
        t.quality_timestep = step
        t.rule_timestep = step
        t.pattern_start, t.report_start, t.start_clocktime = 0, 0, clock
        default = opts.hydraulic.pattern
        varying: dict[str, list] = {}
        for _, j in wn.junctions():
            for ts in j.demand_timeseries_list:
                name = ts.pattern_name or default
                pattern = wn.get_pattern(name) if name in wn.pattern_name_list else None
                if ts.base_value > 0 and pattern is not None and np.ptp(pattern.multipliers) > 0:
                    varying.setdefault(name, []).append(ts)
        # The network's daily shape per minute of the clock: its pattern's first day, the
        # centres of its steps interpolated.
        since = (np.arange(1440) * 60.0 - old_clock) % 86400 + old_start
        shapes = {}
        for name in varying:
            m = np.asarray(wn.get_pattern(name).multipliers, dtype=float)
            centres = (np.arange(len(m)) + 0.5) * old_step
            shapes[name] = np.interp(since, centres, m, period=len(m) * old_step)
        # Every pattern kept (supply schedules, energy prices) on the new step.
        index = ((np.arange(n_steps) * step + old_start) // old_step).astype(np.int64)
        for _, pattern in wn.patterns():
            m = np.asarray(pattern.multipliers, dtype=float)
            pattern.multipliers = m[index % len(m)].tolist()
        for k, (name, demands) in enumerate(sorted(varying.items())):
            weekday = shapes[name]
            weekend = _later(weekday) * WEEKEND_MORE
            groups = min(len(demands), GROUPS)
            demand = Demand(groups, seed=seed + 1000 * k, start=start,
                            profiles=(weekday, weekend))
            series = np.array([demand.at(i * step, step if i else 0.0) for i in range(n_steps)])
            for g in range(groups):
                wn.add_pattern(f"sw{k}g{g}", series[:, g].tolist())
            for i, ts in enumerate(demands):
                ts.pattern_name = f"sw{k}g{i % groups}"
        for _, pump in wn.pumps():
            if pump.speed_timeseries.pattern_name and spec.controls:
                pump.speed_timeseries.pattern_name = None
        for c in spec.controls:
            pump, tank = wn.get_link(c.pump), wn.get_node(c.tank)
            wn.add_control(f"{c.pump} on", Control(
                ValueCondition(tank, "level", Comparison.lt, c.on),
                ControlAction(pump, "status", LinkStatus.Open)))
            wn.add_control(f"{c.pump} off", Control(
                ValueCondition(tank, "level", Comparison.gt, c.off),
                ControlAction(pump, "status", LinkStatus.Closed)))

    @staticmethod
    def _mean_demand(wn: WaterNetworkModel, n_steps: int) -> float:
        """L/s: the zone's mean consumption over the run's patterns (a week at most)."""
        total = 0.0
        for _, j in wn.junctions():
            for ts in j.demand_timeseries_list:
                if ts.base_value > 0:
                    name = ts.pattern_name or wn.options.hydraulic.pattern
                    m = (wn.get_pattern(name).multipliers if name in wn.pattern_name_list
                         else [1.0])
                    total += ts.base_value * float(np.mean(m[:2016]))
        return total * 1000.0 * wn.options.hydraulic.demand_multiplier

    def _leak(self, e: Event) -> _Leak:
        p = e.params
        size = (float(p["percent"]) / 100.0 * self.mean_demand if "percent" in p
                else float(p["size"]))
        name = str(p.get("junction", "")) or self._leak_junction(e)
        return _Leak(e, self._en.ENgetnodeindex(name), size, float(p.get("ramp", 0.0)))

    def _leak_junction(self, e: Event) -> str:
        """A junction with demand, drawn from the event's start: leaks happen where people
        live."""
        names = sorted(n for n, j in self._wn.junctions()
                       if any(ts.base_value > 0 for ts in j.demand_timeseries_list))
        return names[int(e.start) % len(names)]

    def _leaking(self) -> float:
        """L/s through the leaks' orifices now."""
        en = self._en
        return sum(en.ENgetnodevalue(node, EN.EMITTER)
                   * math.sqrt(max(en.ENgetnodevalue(node, EN.PRESSURE), 0.0))
                   for node in {leak.junction for leak in self._leaks})

    def _set_leaks(self, t: float) -> None:
        en = self._en
        coefficients: dict[int, float] = {}
        for leak in self._leaks:
            c = 0.0
            if leak.event.active(t):
                if not leak.coefficient:
                    head = max(en.ENgetnodevalue(leak.junction, EN.PRESSURE), 5.0)
                    leak.coefficient = leak.size / math.sqrt(head)
                opened = min(1.0, (t - leak.event.start) / leak.ramp) if leak.ramp else 1.0
                c = leak.coefficient * opened
            coefficients[leak.junction] = coefficients.get(leak.junction, 0.0) + c
        for node, c in coefficients.items():
            en.ENsetnodevalue(node, EN.EMITTER, c)

    # --- signals -----------------------------------------------------------------------------

    def _add_signals(self) -> None:
        wn, en, zone, survey = self._wn, self._en, self.zone, self._survey
        for res_name, _ in wn.reservoirs():
            links = sorted(wn.get_links_for_node(res_name))
            # A station's meters are alike: sized for its busiest line.
            hi = _nice(1.25 * max(max(np.abs(survey.flows[n]).max() for n in links), 1.0))
            for link_name in links:
                link = wn.get_link(link_name)
                sign = 1.0 if link.start_node_name == res_name else -1.0
                index = en.ENgetlinkindex(link_name)
                flows = sign * survey.flows[link_name]
                # A pump's meter reads one way; a main's both (a pump elsewhere may push water
                # back into a reservoir).
                lo = 0.0 if flows.min() > -FLOW_CUTOFF * hi else -hi
                prefix = "pump" if link.link_type == "Pump" else "p"
                self._add(Signal(f"{zone}.{tag_name(link_name, prefix)}.flow", "flow", "L/s",
                                 zone=zone, role="inflow", lo=lo, hi=hi,
                                 noise=FLOW_NOISE * hi, resolution=FLOW_RESOLUTION,
                                 cutoff=FLOW_CUTOFF * hi,
                                 description=f"flow from {res_name} in {link_name}"),
                          lambda i=index, s=sign: s * en.ENgetlinkvalue(i, EN.FLOW))
        for name, tank in wn.tanks():
            index = en.ENgetnodeindex(name)
            elevation = tank.elevation
            noise, resolution = LEVEL_SENSOR
            self._add(Signal(f"{zone}.{tag_name(name, 'tank')}.level", "level", "m", zone=zone,
                             lo=0.0, hi=round(tank.max_level, 2), noise=noise,
                             resolution=resolution,
                             area=round(math.pi * tank.diameter ** 2 / 4, 1),
                             description=f"level of tank {name}"),
                      lambda i=index, z=elevation: en.ENgetnodevalue(i, EN.HEAD) - z)
        for name, _ in wn.pumps():
            index = en.ENgetlinkindex(name)
            self._add(Signal(f"{zone}.{tag_name(name, 'pump')}.status", "status", "",
                             zone=zone, description=f"pump {name} running"),
                      lambda i=index: float(en.ENgetlinkvalue(i, EN.STATUS) >= 1
                                            and en.ENgetlinkvalue(i, EN.FLOW) > 1e-3))
        junctions = self._pressure_junctions()
        top = max(float(survey.pressures[j].max()) for j in junctions)
        hi = next((r for r in PRESSURE_RANGES if r >= 1.2 * top), PRESSURE_RANGES[-1])
        noise, resolution = PRESSURE_SENSOR
        for name in junctions:
            index = en.ENgetnodeindex(name)
            self._add(Signal(f"{zone}.{tag_name(name, 'j')}.pressure", "pressure", "m",
                             zone=zone, lo=0.0, hi=hi, noise=noise, resolution=resolution,
                             description=f"pressure at junction {name}"),
                      lambda i=index: en.ENgetnodevalue(i, EN.PRESSURE))

    def _pressure_junctions(self) -> list[str]:
        """PRESSURES demand junctions served above SERVED m, spread over the network:
        farthest-point sampling of their coordinates, from the one nearest the first source."""
        wn = self._wn
        names = sorted(n for n, p in self._survey.pressures.items() if p.min() >= SERVED)
        xy = np.array([wn.get_node(n).coordinates for n in names], dtype=float)
        source = next(iter(wn.reservoir_name_list), None) or wn.tank_name_list[0]
        d = np.hypot(*(xy - np.asarray(wn.get_node(source).coordinates, dtype=float)).T)
        chosen = [int(np.argmin(d))]
        nearest = np.hypot(*(xy - xy[chosen[0]]).T)
        while len(chosen) < min(PRESSURES, len(names)):
            chosen.append(int(np.argmax(nearest)))
            nearest = np.minimum(nearest, np.hypot(*(xy - xy[chosen[-1]]).T))
        return [names[i] for i in chosen]

    def _add(self, sig: Signal, read: Callable[[], float]) -> None:
        self.signals.append(sig)
        self._readers.append(read)


@dataclass(frozen=True, slots=True)
class _Survey:
    flows: dict[str, np.ndarray]  # L/s per link leaving a reservoir, every hour
    pressures: dict[str, np.ndarray]  # m per demand junction, every hour
    levels: dict[str, float]  # m per tank at the end of the spin-up


def _survey(wn: WaterNetworkModel, inp: Path, spin_up: int, days: float) -> _Survey:
    """The clean network's tank levels after `spin_up` whole days (the clock where they
    began), and its hourly flows out of the reservoirs and pressures at the demand junctions
    over the next `days`: what an engineer knows before fitting meters."""
    links = sorted({name for r in wn.reservoir_name_list for name in wn.get_links_for_node(r)})
    junctions = sorted(n for n, j in wn.junctions()
                       if any(ts.base_value > 0 for ts in j.demand_timeseries_list))
    en = ENepanet(version=2.2)
    en.ENopen(str(inp), str(inp.with_suffix(".survey.rpt")), "")
    try:
        en.ENopenH()
        en.ENinitH(0)
        li = [en.ENgetlinkindex(n) for n in links]
        ji = [en.ENgetnodeindex(n) for n in junctions]
        tanks = {n: (en.ENgetnodeindex(n), wn.get_node(n)) for n in wn.tank_name_list}
        flows: list[list[float]] = []
        pressures: list[list[float]] = []
        levels: dict[str, float] = {}
        t = 0
        while t <= (spin_up + days) * 86400:
            t = en.ENrunH()
            if t == spin_up * 86400:
                levels = {n: float(np.clip(en.ENgetnodevalue(i, EN.HEAD) - tank.elevation,
                                           tank.min_level, tank.max_level))
                          for n, (i, tank) in tanks.items()}
            if t >= spin_up * 86400 and t % 3600 == 0:
                flows.append([en.ENgetlinkvalue(i, EN.FLOW) for i in li])
                pressures.append([en.ENgetnodevalue(i, EN.PRESSURE) for i in ji])
            if en.ENnextH() <= 0:
                break
        en.ENcloseH()
    finally:
        en.ENclose()
    f, p = np.array(flows).reshape(-1, len(links)), np.array(pressures).reshape(-1, len(ji))
    return _Survey({n: f[:, k] for k, n in enumerate(links)},
                   {n: p[:, k] for k, n in enumerate(junctions)}, levels)


def _later(day: np.ndarray) -> np.ndarray:
    """A day's shape (per minute) run later: by WEEKEND_SHIFT minutes at its peak and
    WEEKEND_NIGHT_SHIFT at its lowest, in between by its level (a monotone warp of time)."""
    level = (day - day.min()) / max(float(np.ptp(day)), 1e-12)
    shift = WEEKEND_NIGHT_SHIFT + (WEEKEND_SHIFT - WEEKEND_NIGHT_SHIFT) * level
    minutes = np.arange(len(day), dtype=float)
    return np.interp(minutes - shift, minutes, day, period=len(day))


def _nice(x: float) -> float:
    """The next meter range above x: 1, 2 or 5 times a power of ten."""
    power = 10 ** math.floor(math.log10(x))
    return next(k * power for k in (1, 2, 5, 10) if k * power >= x)


def _close(en: ENepanet, directory: tempfile.TemporaryDirectory) -> None:
    try:
        en.ENcloseH()
        en.ENclose()
    finally:
        directory.cleanup()


# --- recordings ----------------------------------------------------------------------------

KINDS = ("clean", "leak", "faults")  # what a recording holds besides normal operation
# Bumped whenever a seed's recording changes (2: the spin-up), so caches of the old ones are
# not taken for them.
RECORDING_VERSION = 2
LEAK_PERCENT = (2.0, 15.0)  # of the zone's mean consumption, drawn log-uniform
LEAK_AFTER = 3 * 86400.0  # a leak starts after three clean days ...
LEAK_BEFORE = 3 * 86400.0  # ... and at least three days before the recording ends
RAMP = (2 * 3600.0, 24 * 3600.0)  # an incipient leak opens over this long (half the leaks)
DRIFT_RATE = 1.5 / 24  # m per hour: a pressure transducer walking 1.5 m a day
FAULTS_AFTER = 2 * 86400.0  # sensor faults start after two days of learning


def recording_plan(seed: int) -> tuple[float, float]:
    """(days, step s) of recording `seed`: 10 to 30 days, 15-minute steps for odd seeds and
    5-minute steps for even ones."""
    return (10.0, 14.0, 21.0, 30.0)[seed % 4], 900.0 if seed % 2 else 300.0


@dataclass(frozen=True, slots=True)
class Recording:
    site: SimulatedSite  # to export
    model: NetworkModel  # its hydraulics, with the leaks' true flow once run


def build(name: str, events: Sequence[Event], *, seed: int, start: datetime, step: float,
          days: float, scenario: str = "custom",
          faults: Callable[[list[Signal]], list[Event]] | None = None) -> Recording:
    """Network `name` with `events` and the sensor `faults` drawn for its signals, ready to
    export `days` at `step`."""
    model = NetworkModel(name, [e for e in events if e.kind == "leak"], seed=seed, start=start,
                         step=step, days=days)
    every = sorted([*events, *(faults(model.signals) if faults else [])], key=lambda e: e.start)
    site = SimulatedSite(model, Scenario(scenario, f"{name} {scenario}, seed {seed}",
                                         {name: tuple(every)}), seed=seed, start=start, step=step)
    return Recording(site, model)


def recording(name: str, kind: str, seed: int, start: datetime) -> Recording:
    """The recording `seed` of network `name`: normal operation (`clean`), with one leak
    (`leak`: 2-15 % of mean consumption, abrupt or ramped, at any time of day after day 3), or
    with sensor faults (`faults`: two stuck, a spike, a pressure drift of 1.5 m/day and a
    dropout, after day 2), all drawn from the seed."""
    if kind not in KINDS:
        raise ValueError(f"unknown recording kind {kind!r}; expected {', '.join(KINDS)}")
    days, step = recording_plan(seed)
    rng = np.random.default_rng([seed, zlib_key(name), KINDS.index(kind)])
    leaks = []
    if kind == "leak":
        begin = rng.uniform(LEAK_AFTER, days * 86400 - LEAK_BEFORE)
        begin -= begin % 60
        percent = float(np.exp(rng.uniform(*np.log(LEAK_PERCENT))))
        params: dict[str, float | str] = {"percent": round(percent, 2)}
        if rng.random() < 0.5:
            params["ramp"] = float(round(rng.uniform(*RAMP), -2))
        leaks.append(Event("leak", name, begin, days * 86400 - begin, params,
                           key=f"{name}.leak"))
    return build(name, leaks, seed=seed, start=start, step=step, days=days, scenario=kind,
                 faults=(lambda signals: _faults(signals, rng, days)) if kind == "faults"
                 else None)


def _faults(signals: Sequence[Signal], rng: np.random.Generator, days: float) -> list[Event]:
    """Sensor faults on distinct analog tags at random times after FAULTS_AFTER."""
    analog = [s for s in signals if s.kind in ("flow", "level", "pressure")]
    flows = [s.tag for s in analog if s.kind == "flow"]
    pressures = [s.tag for s in analog if s.kind == "pressure"]
    used: set[str] = set()

    def pick(tags: Sequence[str]) -> str:
        free = [t for t in tags if t not in used] or list(tags)
        tag = str(free[int(rng.integers(len(free)))])
        used.add(tag)
        return tag

    def at(hours: float) -> float:
        latest = days * 86400 - hours * 3600 - 3600
        begin = rng.uniform(FAULTS_AFTER, latest)
        return float(begin - begin % 60)

    span = {s.tag: (s.hi or 1.0) - (s.lo or 0.0) for s in analog}
    spike = pick([*pressures, *flows])
    drift = pick(pressures)
    events = [
        Event("stuck", pick(flows), at(6), float(rng.uniform(3, 6)) * 3600),
        Event("stuck", pick([s.tag for s in analog]), at(6), float(rng.uniform(3, 6)) * 3600),
        Event("spike", spike, at(2), 3600.0, {"magnitude": round(
            float(rng.uniform(0.1, 0.25)) * span[spike], 1), "count": 3}),
        Event("drift", drift, at(48), 2 * 86400.0,
              {"rate": float(rng.choice([-1.0, 1.0])) * DRIFT_RATE}),
        Event("dropout", pick([s.tag for s in analog]), at(2), 2 * 3600.0),
    ]
    return [Event(e.kind, e.target, e.start, e.duration, e.params, key=f"faults[{i}]")
            for i, e in enumerate(events)]


def zlib_key(name: str) -> int:
    """A stable number for a network's name (Python's hash() changes per process)."""
    return zlib.crc32(name.encode())
