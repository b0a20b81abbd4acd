"""Water site physics: EPANET's Net3 (shipped with wntr), pressure-driven, stepped in time.

Net3 (2 pumps, 3 tanks, 92 junctions) runs in wntr's `WNTRSimulator` with pressure-dependent
demand, so leaks, bursts and pump trips move flows and pressures through the hydraulics rather
than being painted on. The simulator advances in simulated time: each `advance` raises the
duration and calls `run_sim` again, so tank levels and controls carry over and an event can
start at any step.

Three district metered areas are cut out of Net3 by closing two boundary valves (pipes 169 and
271, as utilities do to form DMAs); every other pipe crossing a DMA boundary is metered:

| zone | junctions            | inflow meters                                | outflow meters     |
|------|----------------------|----------------------------------------------|--------------------|
| dma1 | 206-231 (south-east) | `inlet` (pipe 238)                           | `outlet` (269)     |
| dma2 | 237-255 (tank 2)     | `inlet` (269, from dma1), `tank2` (289)      | -                  |
| dma3 | 139-153 (north-east) | `inlet1` (145), `inlet2` (171)               | `bulk` (151)       |

dma1 feeds dma2 through main 269, which has a meter at each end (one per zone's outstation);
the tank-2 main (289) flows both ways; `bulk` is the bulk customer at Net3's junction 15.
So inflow minus outflow of a zone is its consumption plus its leaks, whatever the tanks and
pumps do.

Signals, in this order (units: flows in L/s, the unit of leak sizes; pressures in m of head;
levels in m; pump motor current in A; status 1 = running):
- plant: `plant.tank1.level`, `plant.tank3.level`, and per pump `plant.pumpN.status`,
  `plant.pumpN.flow`, `plant.pumpN.current`;
- per zone: its meters (`dma1.inlet.flow`, `dma1.outlet.flow`, ..., with role inflow/outflow),
  `dma2.tank2.level` (tank 2's outstation is dma2's), and three pressure loggers
  (`dma1.j206.pressure`, ...: at the inlet, mid-zone and the far end or highest point).

Demand: Net3's residential junctions (its pattern 1) follow a daily profile with a night minimum
around 03:30, a later morning peak at weekends, a day-to-day factor (mostly on daytime use, as
night use is steady) and per-junction AR(1) noise, all from the seed. Net3's four bulk customers
keep their own patterns. Pump 1 (Net3 pump 10, from the lake) runs 01:00-15:00 every day;
pump 2 (pump 335, from the river) keeps Net3's tank-1 level control.

Events (`simulators.scenario.EVENT_KINDS`):
- `leak` on a zone: an orifice at `junction` (Net3's number, "215" or "j215"; default: the
  zone's `leak_junction`), sized so that it loses `size` L/s, or `percent` % of the zone's mean
  consumption (its mean net inflow), at the pressure when it starts; afterwards its flow
  follows the pressure. With `ramp` (s) the orifice opens linearly over that time (an
  incipient leak).
- `burst` on a zone: as an abrupt leak, `size` L/s (default 20).
- `pump_trip` on a pump, named `pump1` or by its status tag `plant.pump1.status`: the pump is
  held off for the event's duration, then its control takes over again.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import wntr
import wntr.sim.hydraulics
from wntr.network import LinkStatus, WaterNetworkModel
from wntr.network.controls import Control, ControlAction, ControlPriority, FunctionCondition

from simulators.scenario import Event
from simulators.signals import Signal

NETWORK = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
LPS = 1000.0  # L/s per m3/s
G = 9.81
RHO = 1000.0

REQUIRED_PRESSURE = 15.0  # m: full demand above it (pressure-driven demand)
LEAK_CD = 0.75  # discharge coefficient of leak orifices
BURST_SIZE = 20.0  # L/s
MAX_SIZE = 200.0  # L/s: beyond it a "leak" would empty Net3's tanks in hours
MIN_SIZING_PRESSURE = 5.0  # m: a leak starting in a depressurised zone is sized as if at 5 m
PUMP_EFFICIENCY = 0.75  # Net3's global pump efficiency
MOTOR_EFFICIENCY, POWER_FACTOR = 0.95, 0.87


@dataclass(frozen=True, slots=True)
class Meter:
    """A zone flow meter on `pipe`; `sign` = +1 when the pipe's own direction is metered."""

    thing: str
    pipe: str
    sign: float
    role: str  # inflow|outflow
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class Zone:
    junctions: tuple[str, ...]
    meters: tuple[Meter, ...]
    pressures: tuple[str, ...]  # junctions with a pressure logger
    leak_junction: str  # where a leak without a `junction` parameter opens
    tanks: tuple[str, ...] = ()  # tank levels reported by the zone's outstation


@dataclass(frozen=True, slots=True)
class Pump:
    net3: str
    volts: float  # motor supply voltage, for its current
    hi_flow: float  # L/s, meter range
    hi_current: float  # A


ZONES: dict[str, Zone] = {
    "dma1": Zone(
        junctions=("206", "208", "209", "211", "213", "215", "217", "219", "225", "229", "231"),
        meters=(Meter("inlet", "238", 1.0, "inflow", 0.0, 150.0),
                Meter("outlet", "269", 1.0, "outflow", -50.0, 100.0)),
        pressures=("206", "215", "219"), leak_junction="215"),
    "dma2": Zone(
        junctions=("237", "239", "241", "243", "247", "249", "251", "253", "255"),
        meters=(Meter("inlet", "269", 1.0, "inflow", -50.0, 100.0),
                Meter("tank2", "289", 1.0, "inflow", -100.0, 100.0)),
        pressures=("237", "243", "251"), leak_junction="247", tanks=("tank2",)),
    "dma3": Zone(
        junctions=("139", "141", "143", "145", "147", "149", "151", "153"),
        meters=(Meter("inlet1", "145", 1.0, "inflow", -50.0, 100.0),
                Meter("inlet2", "171", 1.0, "inflow", -100.0, 150.0),
                Meter("bulk", "151", -1.0, "outflow", 0.0, 100.0)),
        pressures=("139", "145", "153"), leak_junction="147"),
}
BOUNDARY_VALVES = ("169", "271")  # closed to cut the DMAs out of Net3's loops
TANKS = {"tank1": "1", "tank2": "2", "tank3": "3"}
PUMPS = {"pump1": Pump("10", 400.0, 400.0, 200.0), "pump2": Pump("335", 6600.0, 1200.0, 100.0)}
PUMP1_HOURS = (1.0, 15.0)  # Net3's daily schedule of pump 10, clock time

# Sensors: (noise standard deviation, resolution), in the signal's unit.
SENSOR = {"flow": (0.1, 0.01), "pressure": (0.05, 0.01), "level": (0.01, 0.01),
          "current": (0.5, 0.1), "status": (0.0, 0.0)}
PUMP_FLOW_SENSOR = (1.0, 0.1)
CURRENT_CUTOFF = 0.02  # of a motor current transducer's range: read as 0 below it


class Demand:
    """Residential demand multipliers, one per junction, at a given simulated time.

    multiplier = night * N_day + (profile - night) * D_day, times (1 + AR(1) noise), where the
    profile (mean 1 on weekdays) has its minimum `night` around 03:30, N_day and D_day are
    day-to-day factors (2 % and 7 %) and the noise has a 10 % spread and a 15-minute memory.
    """

    NIGHT_SPREAD, DAY_SPREAD = 0.02, 0.07
    NOISE, NOISE_TIME = 0.10, 900.0

    def __init__(self, junctions: int, *, seed: int, start: datetime,
                 profiles: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """`profiles`: another network's (weekday, weekend) shapes, one value per minute of
        the day; by default this module's."""
        self._seed = seed
        self._clock0 = start.hour * 3600 + start.minute * 60 + start.second
        self._weekday0 = start.weekday()
        self._rng = np.random.default_rng([seed, 1])
        self._noise = self.NOISE * self._rng.standard_normal(junctions)
        minutes = np.arange(1440) / 60.0
        self._profiles = profiles or (_profile(minutes, weekend=False),
                                      _profile(minutes, weekend=True))
        self._days: dict[int, tuple[float, float]] = {}

    def clock(self, t: float) -> tuple[int, float]:
        """(day number since the start's midnight, seconds since midnight) at sim time t."""
        day, sec = divmod(self._clock0 + t, 86400.0)
        return int(day), sec

    def at(self, t: float, dt: float) -> np.ndarray:
        """Multipliers at time t, `dt` seconds after the previous call (0 for the first)."""
        if dt > 0:
            keep = math.exp(-dt / self.NOISE_TIME)
            fresh = self._rng.standard_normal(self._noise.size)
            self._noise = keep * self._noise + math.sqrt(1 - keep * keep) * self.NOISE * fresh
        day, sec = self.clock(t)
        profile = self._profiles[(self._weekday0 + day) % 7 >= 5]
        shape = float(profile[int(sec // 60) % 1440])
        night_factor, day_factor = self._day_factors(day)
        night = float(profile.min())
        level = night * night_factor + (shape - night) * day_factor
        return level * np.maximum(1.0 + self._noise, 0.0)

    def _day_factors(self, day: int) -> tuple[float, float]:
        if day not in self._days:
            # Keyed on the day, so a day's factors do not depend on the step.
            z = np.random.default_rng([self._seed, 2, day]).standard_normal(2)
            self._days[day] = (math.exp(self.NIGHT_SPREAD * z[0]), math.exp(self.DAY_SPREAD * z[1]))
        return self._days[day]


def _profile(hours: np.ndarray, *, weekend: bool) -> np.ndarray:
    """Daily demand shape: night floor plus morning, midday and evening peaks (circular)."""

    def peak(centre: float, width: float) -> np.ndarray:
        d = (hours - centre + 12.0) % 24.0 - 12.0
        return np.exp(-0.5 * (d / width) ** 2)

    if weekend:  # later, broader morning; a little more water over the day
        shape = 0.3 + 1.0 * peak(9.5, 1.6) + 0.6 * peak(13.5, 2.5) + 0.8 * peak(19.5, 2.0)
        mean = 1.04
    else:
        shape = 0.3 + 1.3 * peak(7.25, 1.1) + 0.5 * peak(12.5, 2.5) + 0.9 * peak(19.5, 1.8)
        mean = 1.0
    return shape * (mean / shape.mean())


# WNTRSimulator.run_sim rebuilds its whole hydraulic model on every call (~0.2 s for Net3, 20x a
# solve). Between our calls the model changes only through the simulator's own change tracker
# and the updates `WaterNetwork` makes itself, so the model of the previous call stays valid:
# hand it back for the networks stepped here, and build as usual for any other.
_STEPPED: weakref.WeakKeyDictionary[WaterNetworkModel, wntr.sim.WNTRSimulator] = (
    weakref.WeakKeyDictionary())
_build_model = wntr.sim.hydraulics.create_hydraulic_model


def _reuse_model(wn: WaterNetworkModel, HW_approx: str = "default"):
    sim = _STEPPED.get(wn)
    if sim is None or sim._model is None:
        return _build_model(wn, HW_approx=HW_approx)
    return sim._model, sim._model_updater


wntr.sim.hydraulics.create_hydraulic_model = _reuse_model


class _SteppedSimulator(wntr.sim.WNTRSimulator):
    """A WNTRSimulator whose run_sim keeps its connectivity graph from call to call.

    Like the model, the graph changes only through the change tracker within a call.
    """

    def _initialize_internal_graph(self) -> None:
        if self._internal_graph is None:
            super()._initialize_internal_graph()


@dataclass
class _Leak:
    event: Event
    junction: str
    size: float  # L/s at the pressure when it starts
    ramp: float  # s
    area: float = 0.0  # m2 when fully open, set when it starts


class WaterNetwork:
    """Net3 with three DMAs, stepped in simulated time; see the module docstring."""

    site = "water"

    def __init__(self, events: Sequence[Event], *, seed: int, start: datetime) -> None:
        for e in events:
            if reason := self.check_event(e):
                raise ValueError(f"{e.key or e.kind}: {reason}")
        self.zones: list[str] = list(ZONES)
        self.time = 0.0
        self._wn = wn = _network(start)
        _check_zones(wn)
        self._trips = [e for e in events if e.kind == "pump_trip"]
        self._leaks = [self._leak(e) for e in events if e.kind in ("leak", "burst")]
        self._residential = [j for _, j in wn.junctions()
                             if j.demand_timeseries_list[0].pattern_name == "1"]
        self._base = np.array([j.demand_timeseries_list[0].base_value for j in self._residential])
        for j in self._residential:
            j.demand_timeseries_list[0].pattern_name = None
        self._demand = Demand(len(self._residential), seed=seed, start=start)
        self._add_pump_controls()
        self._sim = _SteppedSimulator(wn)
        _STEPPED[wn] = self._sim
        self.signals: list[Signal] = []
        self._readers: list[Callable[[], float]] = []
        self._add_signals()
        self._set_demand(0.0, 0.0)
        self._solve(0.0, step=60.0)

    # --- interface used by simulators.site ---------------------------------------------------

    def check_event(self, event: Event) -> str | None:
        """Why a physics event cannot happen on this network, or None."""
        p = event.params
        if event.kind == "pump_trip":
            if self._pump_name(event.target) is None:
                return (f"unknown pump {event.target!r}; pumps: "
                        + ", ".join(f"{n} (plant.{n}.status)" for n in PUMPS))
            return None
        if event.kind not in ("leak", "burst"):
            return None
        zone = ZONES.get(event.target)
        if zone is None:
            return f"unknown zone {event.target!r}; zones: {', '.join(ZONES)}"
        if "junction" in p and _junction(p["junction"]) not in zone.junctions:
            return (f"junction {p['junction']!r} is not in {event.target}; its junctions: "
                    + ", ".join(zone.junctions))
        if event.kind == "leak":
            if ("size" in p) == ("percent" in p):
                return "a leak needs either size (L/s) or percent (of the zone's mean consumption)"
            if "percent" in p and not 0 < float(p["percent"]) <= 100:
                return f"percent must be above 0 and at most 100, not {p['percent']!r}"
            if float(p.get("ramp", 0.0)) < 0:
                return f"ramp must not be negative, not {p['ramp']!r}"
        if "size" in p and not 0 < float(p["size"]) <= MAX_SIZE:
            return f"size must be above 0 and at most {MAX_SIZE:g} L/s, not {p['size']!r}"
        return None

    def event_location(self, event: Event) -> str:
        """Where labels.csv places an event: the zone, or the tripped pump's status tag."""
        if event.kind == "pump_trip":
            return f"plant.{self._pump_name(event.target)}.status"
        return event.target

    def values(self) -> np.ndarray:
        """True values, one per signal, at `time`."""
        return np.array([read() for read in self._readers], dtype=np.float64)

    def advance(self, dt: float) -> np.ndarray:
        """Step the hydraulics `dt` simulated seconds (a whole number of minutes) ahead."""
        if not (dt > 0 and dt % 60 == 0):
            raise ValueError(f"the water network steps whole minutes, not {dt:g} s")
        t = self.time + dt
        self._set_demand(t, dt)
        self._set_leaks(t)
        # Tank levels integrate explicitly between solves: solve at least every 15 minutes.
        self._solve(t, step=next(s for s in (900.0, 300.0, 60.0)
                                 if dt % s == 0 and self.time % s == 0))
        self.time = t
        return self.values()

    # --- hydraulics --------------------------------------------------------------------------

    def _solve(self, t: float, *, step: float) -> None:
        wn = self._wn
        opts = wn.options.time
        opts.hydraulic_timestep = int(step)
        # Values are read from the network objects; a report time wntr never reaches spares
        # it copying every node and link into results each solve.
        opts.report_timestep = int(step) * 10**9
        opts.duration = int(t)
        if t > 0:
            # run_sim leaves sim_time one old step past the last solve; restart on this grid.
            wn.sim_time = self.time + step
        results = self._sim.run_sim()
        self._release_observers()
        if results.error_code is not None:
            raise RuntimeError(f"Net3 hydraulics did not converge at {wn.sim_time:g} s "
                               "(simulated time)")

    def _release_observers(self) -> None:
        """Unsubscribe what this run_sim call subscribed to our controls' actions.

        Every call subscribes a new change tracker (and valve checker) to each control action
        and never lets go, so without this every action would notify all the trackers of all
        earlier steps: a leak, and steps slowing down as the run goes on.
        """
        observers = (self._sim._change_tracker, self._sim._valve_source_checker)
        for _, control in self._wn.controls():
            for action in control.actions():
                for observer in observers:
                    with contextlib.suppress(KeyError):
                        action.unsubscribe(observer)

    def _set_demand(self, t: float, dt: float) -> None:
        demand = self._base * self._demand.at(t, dt)
        for junction, q in zip(self._residential, demand, strict=True):
            junction.demand_timeseries_list[0].base_value = float(q)

    def _set_leaks(self, t: float) -> None:
        """Open, widen and close leak orifices for time t, and tell the solver's model."""
        areas = dict.fromkeys((leak.junction for leak in self._leaks), 0.0)
        for leak in self._leaks:
            if not leak.event.active(t):
                continue
            if not leak.area:
                head = max(self._wn.get_node(leak.junction).pressure, MIN_SIZING_PRESSURE)
                leak.area = leak.size / LPS / (LEAK_CD * math.sqrt(2 * G * head))
            opened = min(1.0, (t - leak.event.start) / leak.ramp) if leak.ramp else 1.0
            areas[leak.junction] += leak.area * opened
        model, updater = self._sim._model, self._sim._model_updater
        for name, area in areas.items():
            node = self._wn.get_node(name)
            if area == node.leak_area and (area > 0) == node.leak_status:
                continue
            # Leak attributes have no public setters outside wntr's (time-only) leak controls.
            node._leak, node._leak_status = area > 0, area > 0
            node._leak_area, node._leak_discharge_coeff = area, LEAK_CD
            for attr in ("leak_status", "leak_area", "leak_discharge_coeff"):
                updater.update(model, self._wn, node, attr)

    def _leak(self, e: Event) -> _Leak:
        zone = ZONES[e.target]
        p = e.params
        if "percent" in p:
            # The profile averages 1 on weekdays: base demands sum to the mean consumption.
            mean = LPS * sum(self._wn.get_node(j).demand_timeseries_list[0].base_value
                             for j in zone.junctions)
            size = float(p["percent"]) / 100.0 * mean
        else:
            size = float(p.get("size", BURST_SIZE))
        junction = _junction(p["junction"]) if "junction" in p else zone.leak_junction
        return _Leak(e, junction, size, float(p.get("ramp", 0.0)) if e.kind == "leak" else 0.0)

    def _add_pump_controls(self) -> None:
        """Pump 1's daily schedule, and trips that hold a pump off over any other control."""
        wn = self._wn
        clock = self._demand.clock
        pump1 = wn.get_link(PUMPS["pump1"].net3)

        def tripped(name: str) -> bool:
            return any(e.active(wn.sim_time) for e in self._trips
                       if self._pump_name(e.target) == name)

        def scheduled() -> bool:
            return PUMP1_HOURS[0] <= clock(wn.sim_time)[1] / 3600 < PUMP1_HOURS[1]

        wn.add_control("pump1 on", Control(
            FunctionCondition(lambda: scheduled() and not tripped("pump1")),
            ControlAction(pump1, "status", LinkStatus.Open)))
        wn.add_control("pump1 off", Control(
            FunctionCondition(lambda: not scheduled()),
            ControlAction(pump1, "status", LinkStatus.Closed)))
        for name, pump in PUMPS.items():
            if any(self._pump_name(e.target) == name for e in self._trips):
                wn.add_control(f"{name} trip", Control(
                    FunctionCondition(tripped, {"name": name}),
                    ControlAction(wn.get_link(pump.net3), "status", LinkStatus.Closed),
                    priority=ControlPriority.very_high))

    @staticmethod
    def _pump_name(target: str) -> str | None:
        for name in PUMPS:
            if target in (name, f"plant.{name}.status"):
                return name
        return None

    # --- signals ------------------------------------------------------------------------------

    def _add_signals(self) -> None:
        """Plant first, then each zone: flows, tank levels, pressures."""
        for name in ("tank1", "tank3"):
            self._level(f"plant.{name}.level", name, None)
        for name, pump in PUMPS.items():
            self._pump(name, pump)
        for zone_name, zone in ZONES.items():
            for m in zone.meters:
                self._meter(zone_name, m)
            for tank in zone.tanks:
                self._level(f"{zone_name}.{tank}.level", tank, zone_name)
            for j in zone.pressures:
                node = self._wn.get_node(j)
                self._add(Signal(f"{zone_name}.j{j}.pressure", "pressure", "m", zone=zone_name,
                                 lo=0.0, hi=100.0, description=f"pressure at junction {j}"),
                          lambda node=node: node.pressure)

    def _add(self, sig: Signal, read: Callable[[], float]) -> None:
        if sig.noise == 0.0 and sig.resolution == 0.0:
            noise, resolution = SENSOR[sig.kind]
            sig = replace(sig, noise=noise, resolution=resolution)
        self.signals.append(sig)
        self._readers.append(read)

    def _level(self, tag: str, name: str, zone: str | None) -> None:
        tank = self._wn.get_node(TANKS[name])
        self._add(Signal(tag, "level", "m", zone=zone, lo=0.0, hi=round(tank.max_level, 2),
                         description=f"level of tank {tank.name}"), lambda: tank.level)

    def _meter(self, zone: str, m: Meter) -> None:
        pipe = self._wn.get_link(m.pipe)
        self._add(Signal(f"{zone}.{m.thing}.flow", "flow", "L/s", zone=zone, role=m.role,
                         lo=m.lo, hi=m.hi, description=f"{m.role} meter on pipe {m.pipe}"),
                  lambda: m.sign * pipe.flow * LPS)

    def _pump(self, name: str, pump: Pump) -> None:
        link = self._wn.get_link(pump.net3)
        up, down = self._wn.get_node(link.start_node_name), self._wn.get_node(link.end_node_name)

        def running() -> float:
            return float(link.status != LinkStatus.Closed and link.flow > 0)

        def current() -> float:
            if not running():
                return 0.0
            watts = RHO * G * link.flow * (down.head - up.head) / PUMP_EFFICIENCY
            return watts / MOTOR_EFFICIENCY / (math.sqrt(3) * pump.volts * POWER_FACTOR)

        what = f"pump {pump.net3}"
        self._add(Signal(f"plant.{name}.status", "status", "", description=f"{what} running"),
                  running)
        noise, resolution = PUMP_FLOW_SENSOR
        self._add(Signal(f"plant.{name}.flow", "flow", "L/s", lo=0.0, hi=pump.hi_flow,
                         noise=noise, resolution=resolution, description=f"{what} flow"),
                  lambda: max(link.flow, 0.0) * LPS)
        # A motor current is an RMS magnitude: its transducer reads 0 A at a stopped motor,
        # never the -1.5 A its noise would give (that tripped `limit` at lo 0), and suppresses
        # what is below CURRENT_CUTOFF of its range (a relay's zero suppression).
        noise, resolution = SENSOR["current"]
        self._add(Signal(f"plant.{name}.current", "current", "A", lo=0.0, hi=pump.hi_current,
                         noise=noise, resolution=resolution,
                         cutoff=CURRENT_CUTOFF * pump.hi_current, floor=0.0,
                         description=f"{what} motor current ({pump.volts:g} V)"), current)


def _junction(name: object) -> str:
    """Junction names are Net3's ("215"); the tags' form ("j215") is accepted too."""
    text = str(name)
    return text[1:] if text.startswith("j") else text


def _network(start: datetime) -> WaterNetworkModel:
    wn = WaterNetworkModel(str(NETWORK))
    opts = wn.options
    opts.hydraulic.demand_model = "PDD"
    opts.hydraulic.required_pressure = REQUIRED_PRESSURE
    opts.hydraulic.minimum_pressure = 0.0
    clock = start.hour * 3600 + start.minute * 60 + start.second
    # Bulk customers' patterns follow the clock, not the simulation's start.
    opts.time.pattern_start = opts.time.start_clocktime = clock
    # run_sim re-scans rule times from zero on every call; Net3 has no rules.
    opts.time.rule_timestep = 10**9
    pump1 = PUMPS["pump1"].net3
    for name, control in list(wn.controls()):
        if any(a.target()[0].name == pump1 for a in control.actions()):
            wn.remove_control(name)  # Net3's 7-day timetable; a daily schedule replaces it
    for pipe in BOUNDARY_VALVES:
        wn.get_link(pipe).initial_status = LinkStatus.Closed
    return wn


def _check_zones(wn: WaterNetworkModel) -> None:
    """Every open pipe across a zone boundary is metered, so zone balances close."""
    for name, zone in ZONES.items():
        inside = set(zone.junctions)
        metered = {m.pipe for m in zone.meters}
        for link_name, link in wn.links():
            crosses = (link.start_node_name in inside) != (link.end_node_name in inside)
            if crosses and link_name not in metered and link_name not in BOUNDARY_VALVES:
                raise RuntimeError(f"{name}: pipe {link_name} crosses the boundary unmetered")
