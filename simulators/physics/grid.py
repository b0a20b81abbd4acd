"""MV grid simulator: pandapower's CIGRE MV benchmark (with PV and wind), seeded profiles, events.

The network is CIGRE MV as pandapower ships it, with one change: the two 110/20 kV transformers
are fed from separate 110 kV busbar sections (an H-arrangement substation), so an upstream
disturbance can reach one feeder and not the other. Each zone is one transformer's supply chain:
its 110 kV section, the transformer, its 20 kV busbar (whose aggregated load stands for the
busbar's other feeders) and the CIGRE feeder behind it:

    feeder1: trafo 0-1,  buses 1-11, ties S2 (line 6-7) and S3 (line 11-4), PV, wind turbine
    feeder2: trafo 0-12, buses 12-14, tie S1 (line 14-8, to feeder1's bus 8)

Tags are `<zone>.<thing>.<quantity>`; lines are named by their CIGRE end buses, `line3_4` for
"Line 3-4", and an event targets a line by its tag prefix, e.g. `feeder1.line3_4`:

| tag                             | kind      | unit | what                                     |
|---------------------------------|-----------|------|------------------------------------------|
| feederN.hv.voltage              | voltage   | kV   | 110 kV supply section                    |
| feederN.trafo.loading           | other     | %    | transformer loading (of 25 MVA)          |
| feederN.p, feederN.q            | power     | MW, Mvar | into the feeder at its bay (head line)|
| feederN.busK.voltage            | voltage   | kV   | 20 kV bus K, line-to-line                |
| feederN.lineA_B.current         | current   | A    | line current                             |
| feederN.lineA_B.loading         | other     | %    | current over the line's rating           |
| feederN.lineA_B.status          | status    |      | 1 in service (a tie: its switch closed)  |
| feeder1.pv.p / feeder1.wind.p   | power     | MW   | distributed generation feed-in           |
| substation.frequency            | frequency | Hz   | system frequency (zone-less: grid-plant) |

Loading is kind "other" with unit "%" everywhere (lines and transformers); its `hi` is 100.

Events, all evaluated from the clock alone, so any sequence of steps reaches the same state:
- voltage_sag / voltage_swell (feeder, `depth`): a disturbance in the upstream 110 kV network
  (a fault or a line trip there, where most sags seen at MV come from) moves the feeder's 110 kV
  section to (1 - depth) or (1 + depth) of its set point; the transformer carries it down.
- overload (feeder, `factor`): every load of the zone, the busbar's aggregate included, times
  `factor` (cold-load pickup, a heat wave): transformer and head-line loadings rise together.
- line_outage (line, `restore`): the line is out of service; the buses behind it are dead (0 kV,
  0 A, their PV disconnected). With restore = 1 the control room closes a tie switch
  RESTORE_DELAY after the trip, re-energising them while the line stays out; the line is back
  and the tie open again at the event's end.
- frequency ("grid" or a feeder, `deviation` Hz): a system-wide excursion, e.g. after the loss of
  a large generator, held until secondary control restores it at the event's end. The feeders are
  synchronous, so the deviation shows on substation.frequency whatever the target.

Loads are a ZIP mix (40 % constant impedance, 30 % constant current, 30 % constant power), typical
of residential and commercial feeders, so they draw less under a sag, as real ones do.
Profiles follow the wall clock of `start` as the site's local time (Central Europe, no DST).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandapower as pp
import pandapower.networks as pn
from pandapower.auxiliary import LoadflowNotConverged
from scipy.signal import lfilter

from simulators.scenario import EVENT_KINDS, Event
from simulators.signals import Signal

NOMINAL_HZ = 50.0
TOLERANCE_MVA = 1e-6  # power-flow mismatch: 1 W, far below any sensor's noise
RESTORE_DELAY = 600.0  # s from the trip to the remote closing of the tie switch
LIMITS = {  # what check_event accepts; the power flow converges at peak load inside them
    "voltage_sag": ("depth", 0.0, 0.5),
    "voltage_swell": ("depth", 0.0, 0.3),
    "overload": ("factor", 1.0, 2.5),
    "frequency": ("deviation", 0.0, 2.0),  # |deviation|; beyond it under-frequency shedding acts
}
FREQUENCY_TAG = "substation.frequency"
ZIP = {"const_z_p_percent": 40.0, "const_i_p_percent": 30.0,
       "const_z_q_percent": 40.0, "const_i_q_percent": 30.0}
LATITUDE = math.radians(49.0)
SOLAR_NOON = 12.5  # wall-clock hour at about 8° E in CET

# Hourly load shapes (fraction of the CIGRE peak load), weekday / Saturday / Sunday.
_RESIDENTIAL = (
    (0.38, 0.33, 0.30, 0.29, 0.29, 0.32, 0.45, 0.60, 0.58, 0.52, 0.50, 0.52,
     0.56, 0.53, 0.50, 0.50, 0.55, 0.68, 0.82, 0.88, 0.85, 0.75, 0.62, 0.48),
    (0.42, 0.36, 0.32, 0.30, 0.29, 0.30, 0.35, 0.44, 0.56, 0.62, 0.64, 0.66,
     0.68, 0.62, 0.57, 0.55, 0.58, 0.70, 0.82, 0.86, 0.83, 0.75, 0.64, 0.52),
    (0.45, 0.38, 0.33, 0.31, 0.30, 0.30, 0.32, 0.38, 0.50, 0.60, 0.66, 0.72,
     0.74, 0.66, 0.58, 0.55, 0.58, 0.68, 0.80, 0.85, 0.80, 0.70, 0.58, 0.47),
)
_COMMERCIAL = (
    (0.35, 0.34, 0.33, 0.33, 0.34, 0.38, 0.50, 0.70, 0.82, 0.86, 0.87, 0.87,
     0.84, 0.85, 0.86, 0.85, 0.80, 0.70, 0.56, 0.46, 0.42, 0.40, 0.38, 0.36),
    (0.34, 0.33, 0.33, 0.33, 0.33, 0.34, 0.38, 0.45, 0.54, 0.58, 0.60, 0.60,
     0.57, 0.52, 0.47, 0.43, 0.40, 0.38, 0.37, 0.36, 0.35, 0.35, 0.34, 0.34),
    (0.33, 0.32, 0.32, 0.32, 0.32, 0.32, 0.33, 0.35, 0.37, 0.39, 0.40, 0.40,
     0.40, 0.39, 0.38, 0.37, 0.37, 0.37, 0.37, 0.36, 0.35, 0.34, 0.34, 0.33),
)
# Daily cloud regimes: (probability, mean transmission, standard deviation).
_SKIES = ((0.35, 0.95, 0.03), (0.40, 0.65, 0.22), (0.25, 0.30, 0.08))
# AR(1) time constants, minutes
_TAU_LOAD, _TAU_CLOUD, _TAU_WIND, _TAU_FREQ, _TAU_HV = 20.0, 10.0, 180.0, 4.0, 60.0
HV_WANDER = 0.006  # per unit, standard deviation of the 110 kV network's voltage


def _minute_shape(hourly: Sequence[float]) -> np.ndarray:
    hours = np.arange(25.0)
    return np.interp(np.arange(1440) / 60.0, hours, [*hourly, hourly[0]])


def _ar1(e: np.ndarray, tau: float, y0: np.ndarray) -> np.ndarray:
    """Unit-variance AR(1) series per column from standard normals `e`, continuing from y0."""
    phi = math.exp(-1.0 / tau)
    y, _ = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], e, axis=0, zi=(phi * y0)[None, :])
    return y


class _Sample(NamedTuple):
    load: np.ndarray  # per load, fraction of its CIGRE peak
    pv: float  # per unit of nameplate
    wind: float  # per unit of rated power
    hz: float  # frequency deviation, Hz
    hv: float  # 110 kV voltage, relative deviation


class _Profiles:
    """Seeded minute-by-minute load, PV, wind and frequency series, a calendar day at a time.

    Each day draws from its own generator, keyed on (seed, day), and the slow random processes
    carry their state across midnight, so a value depends only on the seed and the minute.
    """

    def __init__(self, seed: int, start: datetime, commercial: np.ndarray,
                 size_mw: np.ndarray) -> None:
        self._seed = seed
        self._date0 = start.date()
        self._minute0 = start.hour * 60 + start.minute
        shapes = np.array([[_minute_shape(h) for h in _RESIDENTIAL],
                           [_minute_shape(h) for h in _COMMERCIAL]])  # (class, daytype, minute)
        self._shapes = shapes[commercial.astype(int)]  # (load, daytype, minute)
        # Aggregates of many customers vary less than a few dozen houses.
        self._day_sigma = np.minimum(0.08, 0.02 + 0.01 / np.sqrt(size_mw))
        self._step_sigma = np.minimum(0.10, 0.01 + 0.012 / np.sqrt(size_mw))
        self._day = -1
        self._state: np.ndarray | None = None  # AR(1) states: loads..., cloud, wind, Hz, HV

    def at(self, t: float) -> _Sample:
        """The profiles' values at t seconds after the start."""
        minute = self._minute0 + int(t // 60)
        day, m = divmod(minute, 1440)
        while self._day < day:
            self._generate(self._day + 1)
        return _Sample(self._load[m], float(self._pv[m]), float(self._wind[m]),
                       float(self._freq[m]), float(self._hv[m]))

    def _generate(self, day: int) -> None:
        rng = np.random.default_rng([self._seed, day])
        n = self._shapes.shape[0]
        if self._state is None:
            self._state = rng.standard_normal(n + 4)
        e = rng.standard_normal((1440, n + 4))
        loads = _ar1(e[:, :n], _TAU_LOAD, self._state[:n])
        cloud, wind, freq, hv = (
            _ar1(e[:, n + k:n + k + 1], tau, self._state[n + k:n + k + 1])[:, 0]
            for k, tau in enumerate((_TAU_CLOUD, _TAU_WIND, _TAU_FREQ, _TAU_HV)))
        self._state = np.concatenate([loads[-1], [cloud[-1], wind[-1], freq[-1], hv[-1]]])
        self._hv = HV_WANDER * hv

        date = self._date0 + timedelta(days=day)
        daytype = max(0, date.weekday() - 4)  # weekday, Saturday, Sunday
        day_factor = np.exp(rng.normal(0.0, 0.03) + rng.normal(0.0, self._day_sigma))
        self._load = (self._shapes[:, daytype, :].T * day_factor
                      * np.maximum(0.2, 1.0 + self._step_sigma * loads))

        sky = min(np.searchsorted(np.cumsum([p for p, _, _ in _SKIES]), rng.random()), 2)
        _, mean, sd = _SKIES[sky]
        self._pv = _clear_sky(date.timetuple().tm_yday) * np.clip(mean + sd * cloud, 0.05, 1.0)

        speed = np.clip(7.0 + 2.8 * wind, 0.0, None)  # m/s at hub height
        self._wind = np.where(speed < 25.0, np.clip((speed**3 - 27.0) / (1728.0 - 27.0), 0, 1), 0)

        # Continental Europe: ~20 mHz of wander, plus the deterministic deviations that follow
        # the hourly schedule changes of the electricity market.
        hourly = rng.normal(0.0, 0.03, 24)
        minutes = np.arange(1440)
        self._freq = 0.018 * freq + hourly[minutes // 60] * np.exp(-(minutes % 60) / 6.0)
        self._day = day


def _clear_sky(day_of_year: int) -> np.ndarray:
    """Clear-sky PV output per unit of nameplate, per minute of the day."""
    decl = math.radians(23.45) * math.sin(2 * math.pi * (284 + day_of_year) / 365)
    omega = np.radians(15.0 * (np.arange(1440) / 60.0 - SOLAR_NOON))
    sin_elev = (math.sin(LATITUDE) * math.sin(decl)
                + math.cos(LATITUDE) * math.cos(decl) * np.cos(omega))
    return np.clip(sin_elev, 0.0, None) ** 1.2


@functools.cache
def _template() -> pp.pandapowerNet:
    """The network before any run; built once, as pandapower's builders are slow (~0.4 s)."""
    net = pn.create_cigre_network_mv(with_der="pv_wind")
    hv2 = pp.create_bus(net, 110.0, name="Bus 0b", zone="CIGRE_MV")
    second = net.trafo.index[1]
    net.trafo.loc[second, "hv_bus"] = hv2
    grid = net.ext_grid.iloc[0]
    pp.create_ext_grid(net, hv2, vm_pu=grid.vm_pu, s_sc_max_mva=grid.s_sc_max_mva,
                       s_sc_min_mva=grid.s_sc_min_mva, rx_min=grid.rx_min, rx_max=grid.rx_max)
    for column, percent in ZIP.items():
        net.load[column] = percent
    # The simulator switches lines itself: a tie line with its normally open switch becomes a
    # line out of service, and the switch tables go, which also spares their per-run results.
    normally_open = (net.switch.et == "l") & ~net.switch.closed
    net.line.loc[net.switch.element[normally_open], "in_service"] = False
    net.switch.drop(net.switch.index, inplace=True)
    return net


class GridNetwork:
    """CIGRE MV grid under seeded load, PV, wind and frequency profiles and the grid's events.

    Only the physics events that `check_event` accepts act on the grid; whoever builds the site
    reports the others with their file and key (see `simulators.site`).
    """

    site = "grid"

    def __init__(self, events: Sequence[Event], *, seed: int, start: datetime) -> None:
        if seed < 0:
            raise ValueError(f"the seed must be zero or more, not {seed}")
        self._net = net = copy.deepcopy(_template())
        self._busbars = [int(b) for b in net.trafo.lv_bus]
        self.zones = [f"feeder{i + 1}" for i in range(len(self._busbars))]
        self._ties = frozenset(int(i) for i in net.line.index[~net.line.in_service])
        self._adjacent = [(int(a), int(b)) for a, b in zip(net.line.from_bus, net.line.to_bus,
                                                           strict=True)]
        zone_of_bus = self._supplied(frozenset(), frozenset())
        self._line_zone = np.array([zone_of_bus[a] for a, _ in self._adjacent])
        self._line_tags = [f"{self.zones[self._line_zone[i]]}.line{a}_{b}"
                           for i, (a, b) in enumerate(self._adjacent)]
        self._line_names = {name: i for i, name in enumerate(self._line_tags)}
        self._load_zone = np.array([zone_of_bus[int(b)] for b in net.load.bus])
        self._p0 = net.load.p_mw.to_numpy(copy=True)
        self._q0 = net.load.q_mvar.to_numpy(copy=True)
        self._sgen_p0 = net.sgen.p_mw.to_numpy(copy=True)
        self._pv = (net.sgen.type == "PV").to_numpy()
        # slot in the per-zone feed-in sums: 2 * zone for PV, 2 * zone + 1 for wind
        self._der_slot = (np.array([2 * zone_of_bus[int(b)] for b in net.sgen.bus])
                          + (~self._pv).astype(int))
        self._vm0 = net.ext_grid.vm_pu.to_numpy(copy=True)
        self._grid_zone = np.array([self._busbars.index(self._fed_by(int(b)))
                                    for b in net.ext_grid.bus])
        self._profiles = _Profiles(seed, start,
                                   commercial=net.load.name.str.startswith("Load CI").to_numpy(),
                                   size_mw=self._p0)
        self._events = [e for e in events
                        if self.check_event(e) is None and EVENT_KINDS[e.kind][0] == "grid"]
        # per event, the tie line its restoration closes
        self._restore_tie = [
            self._restoring_tie(self._line_names[e.target])
            if e.kind == "line_outage" and e.params.get("restore", 0) == 1 else None
            for e in self._events]
        self.signals, self._gather = self._make_signals(zone_of_bus)
        self.time = 0.0
        self._topology: tuple[frozenset[int], frozenset[int]] | None = None
        self._values = self._solve()

    # ----- topology -----

    def _supplied(self, out: frozenset[int], closed: frozenset[int]) -> dict[int, int]:
        """Energised 20 kV bus -> index of the busbar (zone) feeding it, with `out` lines out
        and the tie lines in `closed` closed. A bus fed through a closed tie keeps the zone it
        is reached from first, which is its own unless its own supply is the one cut off."""
        zone = {b: z for z, b in enumerate(self._busbars)}
        frontier = list(self._busbars)
        while frontier:
            nxt = []
            for bus in frontier:
                for i, (a, b) in enumerate(self._adjacent):
                    if i in out or (i in self._ties and i not in closed) or bus not in (a, b):
                        continue
                    other = b if bus == a else a
                    if other not in zone:
                        zone[other] = zone[bus]
                        nxt.append(other)
            frontier = nxt
        return zone

    def _fed_by(self, hv_bus: int) -> int:
        net = self._net
        return int(net.trafo.lv_bus[net.trafo.hv_bus == hv_bus].iloc[0])

    def _restoring_tie(self, line: int) -> int | None:
        """The tie line whose closing re-energises every bus the outage of `line` cuts off,
        preferring one inside the line's own zone; None if there is none."""
        dead = set(self._supplied(frozenset(), frozenset())) - set(
            self._supplied(frozenset({line}), frozenset()))
        own = self._line_zone[line]
        for tie in sorted(self._ties, key=lambda i: (self._line_zone[i] != own, i)):
            if dead <= set(self._supplied(frozenset({line}), frozenset({tie}))):
                return tie
        return None

    # ----- signals -----

    def _make_signals(self, zone_of_bus: dict[int, int]) -> tuple[list[Signal], np.ndarray]:
        """The signal list, and for each signal its position in the flat vector `_flat` builds."""
        net = self._net
        nb, nl, nt = len(net.bus), len(net.line), len(net.trafo)
        nz = len(self.zones)
        bus_pos = {b: i for i, b in enumerate(net.bus.index)}
        o_vm, o_i, o_load, o_trafo = 0, nb, nb + nl, nb + 2 * nl
        o_p, o_q = o_trafo + nt, o_trafo + nt + nl
        o_der, o_status = o_q + nl, o_q + nl + 2 * nz
        o_freq = o_status + nl
        signals: list[Signal] = []
        gather: list[int] = []

        def add(pos: int, tag: str, kind: str, unit: str, zone: str | None, lo: float | None,
                hi: float | None, noise: float, resolution: float, description: str,
                nominal: float | None = None) -> None:
            signals.append(Signal(tag, kind, unit, zone=zone, lo=lo, hi=hi, nominal=nominal,
                                  noise=noise, resolution=resolution, description=description))
            gather.append(pos)

        for z, zone in enumerate(self.zones):
            trafo = net.trafo.index[net.trafo.lv_bus == self._busbars[z]][0]
            hv = int(net.trafo.hv_bus[trafo])
            add(o_vm + bus_pos[hv], f"{zone}.hv.voltage", "voltage", "kV", zone, 99.0, 121.0,
                0.05, 0.1, f"110 kV supply section of transformer {net.trafo.name[trafo]}",
                nominal=float(net.bus.vn_kv[hv]))
            add(o_trafo + trafo, f"{zone}.trafo.loading", "other", "%", zone, 0.0, 100.0, 0.2,
                0.1, f"loading of transformer {net.trafo.name[trafo]}, "
                f"{net.trafo.sn_mva[trafo]:g} MVA")
            head = next(i for i, (a, _) in enumerate(self._adjacent) if a == self._busbars[z])
            rating = (math.sqrt(3) * float(net.bus.vn_kv[self._busbars[z]])
                      * float(net.line.max_i_ka[head]))
            add(o_p + head, f"{zone}.p", "power", "MW", zone, -rating, rating, 0.005, 0.001,
                f"active power into {zone} at its bay (head of line {self._line_tags[head]})")
            add(o_q + head, f"{zone}.q", "power", "Mvar", zone, -rating, rating, 0.005, 0.001,
                f"reactive power into {zone} at its bay")
            for bus in sorted(b for b, bz in zone_of_bus.items() if bz == z):
                kv = float(net.bus.vn_kv[bus])
                add(o_vm + bus_pos[bus], f"{zone}.bus{bus}.voltage", "voltage", "kV", zone,
                    0.9 * kv, 1.1 * kv, 0.01, 0.01, f"{kv:g} kV bus {bus}, line-to-line",
                    nominal=kv)
            for i in np.flatnonzero(self._line_zone == z):
                name = self._line_tags[i]
                amps = 1000.0 * float(net.line.max_i_ka[i])
                what = ("normally open tie" if i in self._ties else "line") + \
                    f" {net.line.name[i]} ({net.line.std_type[i]}, {net.line.length_km[i]:g} km)"
                add(o_i + i, f"{name}.current", "current", "A", zone, 0.0, amps, 0.3, 0.1, what)
                add(o_load + i, f"{name}.loading", "other", "%", zone, 0.0, 100.0, 0.2, 0.1,
                    f"loading of {what}, rated {amps:g} A")
                add(o_status + i, f"{name}.status", "status", "", zone, None, None, 0.0, 0.0,
                    f"{what}: 1 = " + ("tie switch closed" if i in self._ties else "in service"))
            for k, kind in enumerate(("pv", "wind")):
                units = np.flatnonzero(self._der_slot == 2 * z + k)
                if units.size:
                    installed = float(self._sgen_p0[units].sum())
                    add(o_der + 2 * z + k, f"{zone}.{kind}.p", "power", "MW", zone, 0.0,
                        installed, 0.0005 if kind == "pv" else 0.005,
                        0.0001 if kind == "pv" else 0.001,
                        f"{kind.upper() if kind == 'pv' else 'wind'} feed-in, "
                        f"{units.size} unit(s), {installed:g} MW installed")
        add(o_freq, FREQUENCY_TAG, "frequency", "Hz", None, NOMINAL_HZ - 0.2, NOMINAL_HZ + 0.2,
            0.002, 0.001, "system frequency; limits: ENTSO-E alert state, ±200 mHz",
            nominal=NOMINAL_HZ)
        return signals, np.array(gather)

    # ----- events -----

    def check_event(self, event: Event) -> str | None:
        """Why a physics event cannot run on this grid, or None."""
        site = EVENT_KINDS.get(event.kind, ("?",))[0]
        if site == "any":
            return None  # sensor and comms faults: the measurement layer's
        if site != "grid":
            return f"{event.kind!r} is not a grid event"
        if event.kind == "line_outage":
            if event.target not in self._line_names:
                return (f"unknown line {event.target!r}; lines: "
                        + ", ".join(n for n, i in self._line_names.items() if i not in self._ties))
            line = self._line_names[event.target]
            if line in self._ties:
                return f"{event.target} is a normally open tie line; its outage changes nothing"
            restore = event.params.get("restore", 0)
            if restore not in (0, 1):
                return f"restore must be 0 or 1, not {restore!r}"
            if restore == 1 and self._restoring_tie(line) is None:
                return f"no tie switch can restore the buses behind {event.target}"
            return None
        targets = [*self.zones, "grid"] if event.kind == "frequency" else self.zones
        if event.target not in targets:
            return f"unknown target {event.target!r}; expected one of {', '.join(targets)}"
        name, low, high = LIMITS[event.kind]
        if name not in event.params:
            return f"{event.kind} needs the parameter {name!r}"
        value = event.params[name]
        if isinstance(value, str):
            return f"{name} must be a number, not {value!r}"
        size = abs(value) if event.kind == "frequency" else value
        if not low < size <= high:
            bound = f"|{name}|" if event.kind == "frequency" else name
            return f"{bound} must be above {low:g} and at most {high:g}, not {value!r}"
        return None

    def event_location(self, event: Event) -> str:
        """The zone or tag a label names for `event`."""
        if event.kind == "line_outage" and event.target in self._line_names:
            return self.zones[self._line_zone[self._line_names[event.target]]]
        if event.kind == "frequency" and event.target == "grid":
            return FREQUENCY_TAG
        return event.target

    # ----- stepping -----

    def values(self) -> np.ndarray:
        return self._values.copy()

    def advance(self, dt: float) -> np.ndarray:
        if not dt >= 0:
            raise ValueError(f"the grid steps forward only, not by {dt!r} s")
        self.time += float(dt)
        self._values = self._solve()
        return self.values()

    def _solve(self) -> np.ndarray:
        t = self.time
        now = self._profiles.at(t)
        f_dev = now.hz
        scale = np.ones(len(self.zones))
        vm = self._vm0 * (1.0 + now.hv)  # both sections hang on the same 110 kV network
        out: set[int] = set()
        closed: set[int] = set()
        for e, tie in zip(self._events, self._restore_tie, strict=True):
            if not e.active(t):
                continue
            if e.kind == "overload":
                scale[self.zones.index(e.target)] *= float(e.params["factor"])
            elif e.kind in ("voltage_sag", "voltage_swell"):
                sign = -1.0 if e.kind == "voltage_sag" else 1.0
                vm[self._grid_zone == self.zones.index(e.target)] *= (
                    1.0 + sign * float(e.params["depth"]))
            elif e.kind == "frequency":
                f_dev += float(e.params["deviation"])
            elif e.kind == "line_outage":
                out.add(self._line_names[e.target])
                if tie is not None and t >= e.start + RESTORE_DELAY:
                    closed.add(tie)
        net = self._net
        factor = now.load * scale[self._load_zone]
        net.load["p_mw"] = self._p0 * factor
        net.load["q_mvar"] = self._q0 * factor
        net.sgen["p_mw"] = self._sgen_p0 * np.where(self._pv, now.pv, now.wind)
        net.ext_grid["vm_pu"] = vm
        self._run(frozenset(out), frozenset(closed))
        return self._flat(frozenset(out), frozenset(closed), NOMINAL_HZ + f_dev)[self._gather]

    def _run(self, out: frozenset[int], closed: frozenset[int]) -> None:
        net = self._net
        topology = (out, closed)
        if topology == self._topology:
            try:
                # Same switching state: reuse the admittance matrix, only injections change.
                pp.runpp(net, numba=False, recycle={"bus_pq": True, "gen": True, "trafo": False})
                return
            except LoadflowNotConverged:
                pass  # a full run from a fresh start below
        self._topology = None
        net.line["in_service"] = self._status(out, closed) > 0
        try:
            pp.runpp(net, numba=False, init="auto", max_iteration=30, tolerance_mva=TOLERANCE_MVA)
        except LoadflowNotConverged:
            active = [f"{e.kind} on {e.target}" for e in self._events if e.active(self.time)]
            raise RuntimeError(f"grid power flow did not converge at t={self.time:g} s "
                               f"(events: {', '.join(active) or 'none'}): the grid collapses "
                               "under these events together") from None
        self._topology = topology

    def _flat(self, out: frozenset[int], closed: frozenset[int], hz: float) -> np.ndarray:
        """Every measurable quantity in the order `_make_signals` indexes: dead parts read 0."""
        net = self._net
        rl = net.res_line
        der = np.bincount(self._der_slot, weights=np.nan_to_num(net.res_sgen.p_mw.to_numpy()),
                          minlength=2 * len(self.zones))
        status = self._status(out, closed)
        return np.nan_to_num(np.concatenate([
            net.res_bus.vm_pu.to_numpy() * net.bus.vn_kv.to_numpy(),
            1000.0 * rl.i_ka.to_numpy(), rl.loading_percent.to_numpy(),
            net.res_trafo.loading_percent.to_numpy(),
            rl.p_from_mw.to_numpy(), rl.q_from_mvar.to_numpy(), der, status, [hz],
        ]))

    def _status(self, out: frozenset[int], closed: frozenset[int]) -> np.ndarray:
        """Per line, 1.0 if in service: not out, and closed if it is a tie."""
        return np.array([i not in out and (i not in self._ties or i in closed)
                         for i in range(len(self._adjacent))], dtype=np.float64)
