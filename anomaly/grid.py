"""Grid events: `voltage_sag`, `voltage_swell`, `line_outage`, `overload` per feeder, and
`frequency` per frequency point.

A feeder is a zone with voltage points and no water-process points (pressure, flow, level):
in a pumping station's zone, a voltage is a motor's supply. The detector judges (and `claims`,
so that `limit` leaves them alone) every voltage point, the feeders' current and loading
points (kind `other`, unit `%`) and every frequency point.

- Voltage, per EN 50160's slow voltage variations: a bus is in `voltage_sag` when the
  10-minute mean of its polled RMS readings is below 90 % of nominal, in `voltage_swell` above
  110 %; it leaves 2 % of nominal back inside. The 10-minute mean is that of the readings of
  the last 10 minutes of ticks (of the last tick when ticks are longer), so one polled value
  beyond the band is no sag: SCADA polls an RMS value every second or minute, and a polled
  value is no half-cycle RMS that could measure an EN 50160 dip (IEC 61000-4-30 class A
  instruments do that). A bus is never in both: a mean is below or above. A feeder is in the
  condition when at least two of its measured buses are (one when only one reports, and then
  a window holding a single reading must be beyond twice in a row): an upstream sag moves
  every bus of a feeder, so a single bus off while its neighbours are not is a sensor fault
  (`drift`, `stuck`), not a grid event. One alarm per feeder, never sag and swell at once (the
  side with more buses). A voltage point outside any feeder (zone-less, or in a process zone)
  is judged alone by the same rule, as a tag: `voltage_sag`/`voltage_swell` on the tag.
- Nominal voltage: the point's `nominal`; else the middle of its lo/hi when these are a band
  (0 < lo, hi <= 1.5 lo, as 0.9 / 1.1 of nominal); else learned: the median of its first
  `WARMUP` live readings snapped to the nearest standard voltage (IEC 60038 on 50 Hz sites,
  ANSI C84.1 on 60 Hz ones, by the site's frequency points) when within 15 %, else the median
  itself. Until then the point is not judged.
- Line outage: a bus reading below 10 % of nominal in a tick (IEC 61000-4-30's interruption
  threshold) is dead, and no sag. A feeder is in outage when a status point that is normally 1
  (learned over about a week of ticks with readings) reads 0, or buses are dead and something
  confirms it: two or more dead, a line current collapsed (below 1 % of its rating `hi` while
  it usually carries more than 5 %), or the feeder has a single voltage point. A lone dead
  reading is a failed voltage transformer fuse, not an outage. The message names the lines
  out (or without current) and the dead buses.
- Overload: a loading point's 10-minute mean above its `hi` (100 % without one), or a current
  point's above its `hi` (the rating), on two readings in a row (a thermal condition lasts;
  one spiking reading is a sensor fault); it ends below 95 % of the limit. The message names
  the most loaded item.
- Frequency: the tick mean outside the point's lo/hi when they are within 5 % of the nominal,
  else outside nominal +-0.2 Hz (ENTSO-E maximum steady-state deviation); it ends 10 % of the
  half band back inside. Nominal: the point's `nominal`, else 50 or 60 Hz, whichever is
  nearer to the middle of lo/hi or to the first reading.

Thresholds come from the standards, not from data; the corroboration and persistence rules
were tuned on simulator exports of seeds 1-3 only (TUNING SEEDS: 1, 2, 3).

>>> from anomaly.core.points import PointInfo, PointTable
>>> from anomaly.core.ticks import Tick
>>> table = PointTable([PointInfo(f"f1.bus{i}.voltage", "voltage", "kV", zone="f1",
...                               nominal=20.0) for i in range(3)])
>>> grid = Grid(table)
>>> def tick(i, *kv):
...     v, s = np.array(kv), 60 * 10**9
...     return Tick(i * s, (i + 1) * s, np.ones(3, int), v, v, v, v, np.zeros(3, int),
...                 np.zeros(3, int))
>>> def sag(t):
...     return bool(grid.update(t)[0].active[0])
>>> [sag(tick(i, 20.1, 19.9, 19.8)) for i in range(10)].count(True)
0
>>> sag(tick(10, 12.0, 19.9, 19.8))  # one bus at 60 % for a minute: its mean is 96 %
False
>>> [sag(tick(11 + i, 16.0, 16.1, 15.9)) for i in range(8)]  # all at 80 %: 5 minutes in
[False, False, False, False, True, True, True, True]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from anomaly.core.alarms import Finding
from anomaly.core.points import PointTable
from anomaly.core.ticks import Tick

PROCESS = ("pressure", "flow", "level")  # a zone with these is a process zone (a pump's
# station, a DMA), never a feeder: its voltage points are motor supplies, judged as tags
DIP = 0.90  # of nominal (EN 50160 dip start, slow-variation lower bound)
SWELL = 1.10
HYSTERESIS = 0.02  # of nominal, IEC 61000-4-30's typical dip/swell hysteresis
DEAD = 0.10  # of nominal: an interrupted (dead) bus
WINDOW_S = 600.0  # EN 50160 slow variations: 10-minute means
WARMUP = 5  # live readings before a learned nominal voltage is fixed
SNAP = 0.15  # a learned median this close to a standard voltage takes it as nominal
FREQ_BAND = 0.2  # Hz either side of nominal without lo/hi
BAND_NEAR = 0.05  # of nominal: frequency lo/hi this near are the band (not a sensor range)
FREQ_BACK = 0.1  # of the half band: how far back inside a frequency must come to leave
OVERLOAD = 100.0  # % of rating: a loading point's limit without `hi`
OVERLOAD_BACK = 0.95  # of the limit: an overload ends below
COLLAPSED = 0.01  # of the rating: a line current this low has collapsed
CARRIES = 0.05  # ... if the line usually carries more than this
# Time constants of a status point's learned normal state and a line's usual current, in
# ticks with a reading (times the tick interval): sparse readings learn more slowly.
STATUS_TAU_S = 7 * 86400.0
CURRENT_TAU_S = 86400.0
NAMES = 6  # items named in a message at most

# Standard nominal voltages in volts: IEC 60038 as used on 50 Hz systems, ANSI C84.1 on 60 Hz.
STANDARD_V = {
    50: (230.0, 400.0, 690.0, 1e3, 3e3, 3.3e3, 6e3, 6.6e3, 10e3, 11e3, 15e3, 20e3, 22e3, 30e3,
         33e3, 35e3, 45e3, 66e3, 110e3, 132e3, 150e3, 220e3, 330e3, 380e3, 400e3, 500e3,
         750e3),
    60: (120.0, 208.0, 240.0, 277.0, 480.0, 600.0, 2.4e3, 4.16e3, 12.47e3, 13.2e3, 13.8e3,
         24.94e3, 34.5e3, 69e3, 115e3, 138e3, 161e3, 230e3, 345e3, 500e3, 765e3),
}
VOLTS = {"V": 1.0, "kV": 1e3, "KV": 1e3, "kv": 1e3, "MV": 1e6}


def _groups(table: PointTable) -> dict[str, np.ndarray]:
    """Indices of the points the detector judges, each group sorted by zone."""
    units = np.array(table.units, dtype=object)
    zoned = table.zone_of >= 0
    process = np.unique(table.zone_of[table.of_kind(*PROCESS) & zoned])
    voltage = table.of_kind("voltage")
    volt = voltage & zoned & ~np.isin(table.zone_of, process)
    feeder = np.isin(table.zone_of, np.unique(table.zone_of[volt])) & zoned

    def pick(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return idx[np.argsort(table.zone_of[idx], kind="stable")]

    current = table.of_kind("current") & feeder
    return {"volt": pick(volt),
            "lone": np.flatnonzero(voltage & ~volt),  # judged as tags: a motor's supply
            "load": pick(feeder & table.of_kind("other") & (units == "%")),
            "amps": pick(current & (table.hi > 0)),  # with a rating
            "amps_all": pick(current),
            "status": pick(feeder & table.of_kind("status")),
            "freq": np.flatnonzero(table.of_kind("frequency"))}


def claims(table: PointTable) -> np.ndarray:
    """Boolean mask of the points whose limits this detector judges (see the module doc).

    >>> from anomaly.core.points import PointInfo, PointTable
    >>> claims(PointTable([PointInfo("f.v", "voltage", zone="f"), PointInfo("v", "voltage"),
    ...                    PointInfo("f.l", "other", "%", zone="f"), PointInfo("hz", "frequency"),
    ...                    PointInfo("f.s", "status", zone="f")])).tolist()
    [True, True, True, True, False]
    """
    g = _groups(table)
    mask = np.zeros(len(table), dtype=bool)
    mask[np.concatenate([g["volt"], g["lone"], g["load"], g["amps_all"], g["freq"]])] = True
    return mask


class _Zones:
    """Per-zone sums and maxima over a group of points sorted by zone."""

    def __init__(self, zone_of: np.ndarray, n_zones: int) -> None:
        self.of, self.n = zone_of, n_zones
        first = np.r_[True, zone_of[1:] != zone_of[:-1]] if len(zone_of) else []
        self.starts = np.flatnonzero(first)
        self.zones = zone_of[self.starts]
        self.size = self.sum(np.ones(len(zone_of)))

    def sum(self, x: np.ndarray) -> np.ndarray:
        return np.bincount(self.of, weights=x, minlength=self.n)

    def max(self, x: np.ndarray) -> np.ndarray:
        out = np.full(self.n, -np.inf)
        if len(self.zones):
            out[self.zones] = np.maximum.reduceat(x, self.starts)
        return out


class _Window:
    """Mean of the readings of the last `k` ticks per column, from each tick's mean and count
    (ticks without a reading left out), as running sums over a ring of tick slots; and how
    many readings it holds."""

    def __init__(self, k: int, n: int) -> None:
        self.k = k
        self.value = np.zeros((k, n))  # sum of the readings of each slot's tick
        self.ok = np.zeros((k, n), dtype=np.int64)  # ... and how many
        self.last = np.array([-1])  # the tick number pushed last (an array: it is state)
        self.total = np.zeros(n)
        self.count = np.zeros(n, dtype=np.int64)

    def push(self, tick_no: int, value: np.ndarray, count: np.ndarray) -> np.ndarray:
        """The window's mean after this tick's `value` (mean) of `count` readings."""
        last = int(self.last[0])
        if 0 <= last < tick_no - 1:  # ticks without any reading went by: their slots expire
            gone = [t % self.k for t in range(last + 1, min(tick_no, last + self.k + 1))]
            self.value[gone], self.ok[gone] = 0.0, 0
            self.resum()
        slot = tick_no % self.k
        new = np.where(count > 0, value * count, 0.0)
        self.total += new
        self.total -= self.value[slot]
        self.count += count
        self.count -= self.ok[slot]
        self.value[slot], self.ok[slot], self.last[0] = new, count, tick_no
        if slot == 0:  # exact sums once a round: running ones gather rounding errors
            self.resum()
        return self.total / self.count  # NaN without values (the caller ignores 0 / 0)

    def resum(self) -> None:
        self.total, self.count = self.value.sum(0), self.ok.sum(0)

    def state(self, key: str) -> dict[str, np.ndarray]:
        return {f"{key}/value": self.value, f"{key}/ok": self.ok, f"{key}/last": self.last}

    def load_state(self, key: str, state: Mapping[str, np.ndarray]) -> None:
        self.value, self.ok = state[f"{key}/value"].copy(), state[f"{key}/ok"].copy()
        self.last = state[f"{key}/last"].copy()
        self.resum()


def _short(tag: str, zone: str | None) -> str:
    """`feeder1.bus7.voltage` -> `bus7`: what an operator calls the item, brace-escaped."""
    name = tag.removeprefix(f"{zone}.") if zone else tag
    name = name.rsplit(".", 1)[0] if "." in name else name
    return name.replace("{", "{{").replace("}", "}}")


def _names(names: list[str]) -> str:
    more = len(names) - NAMES
    return ", ".join(names[:NAMES]) + (f" and {more} more" if more > 0 else "")


class Grid:
    """The grid event detector (see the module doc)."""

    name = "grid"

    def __init__(self, table: PointTable, settings: Any = None) -> None:
        interval = float(getattr(settings, "interval", 60.0))
        self.interval_ns = int(interval * 1e9)
        self.table = table
        nz, n = len(table.zones), len(table)
        g = _groups(table)
        # Voltage points: the feeders' buses by zone, then the lone ones (judged as tags).
        iv, ist, ia, ifr = np.concatenate([g["volt"], g["lone"]]), g["status"], g["amps"], \
            g["freq"]
        self.nf = len(g["volt"])
        il = np.concatenate([g["load"], ia])
        limit = np.concatenate([np.where(table.hi[g["load"]] > 0, table.hi[g["load"]],
                                         OVERLOAD), table.hi[ia]])
        order = np.argsort(table.zone_of[il], kind="stable")
        il, limit = il[order], limit[order]
        self.iv, self.ist, self.ia, self.il, self.ifr = iv, ist, ia, il, ifr
        # One gather per tick for all judged points; each group is a slice of it.
        self.gather = np.concatenate([iv, ist, ia, il, ifr])
        ends = np.cumsum([len(iv), len(ist), len(ia), len(il), len(ifr)])
        self.part = dict(zip(("v", "s", "a", "l", "f"),
                             (slice(a, b) for a, b in zip([0, *ends[:-1]], ends, strict=True)),
                             strict=True))
        self.zv, self.zs, self.za, self.zl = (_Zones(table.zone_of[i], nz)
                                              for i in (g["volt"], ist, ia, il))
        self.lone = np.arange(len(iv)) >= self.nf
        self.pct = [np.full(nz, x) for x in (100 * DIP, 100 * SWELL, 100.0)]  # the limits, %
        k = max(1, round(WINDOW_S / interval))
        self.v_window, self.l_window = _Window(k, len(iv)), _Window(k, len(il))
        self.alpha_s, self.alpha_a = (-np.expm1(-interval / tau)
                                      for tau in (STATUS_TAU_S, CURRENT_TAU_S))

        lo, hi = table.lo[iv], table.hi[iv]
        band = (lo > 0) & (hi > lo) & (hi <= 1.5 * lo)
        self.v_nominal = np.where(np.isfinite(table.nominal[iv]), table.nominal[iv],
                                  np.where(band, (lo + hi) / 2, np.nan))
        self.v_volts = np.array([VOLTS.get(table.units[i], np.nan) for i in iv])
        self.warm = np.full((WARMUP, len(iv)), np.nan)  # first readings, to learn nominal
        self.warm_n = np.zeros(len(iv), dtype=np.int64)
        self.v_low = np.zeros(len(iv), dtype=bool)
        self.v_high = np.zeros(len(iv), dtype=bool)
        self.v_dead = np.zeros(len(iv), dtype=bool)
        # The 10-minute mean beyond the band (hysteresis aside) at the last judged tick.
        self.v_below = np.zeros(len(iv), dtype=bool)
        self.v_above = np.zeros(len(iv), dtype=bool)
        self.l_scale = 100.0 / limit  # reading -> % of its limit
        self.l_over = np.zeros(len(il), dtype=bool)  # overloaded
        self.l_prev = np.zeros(len(il), dtype=bool)  # above the limit at the last reading
        self.s_norm = np.full(len(ist), np.nan)  # learned normal state of status points
        self.s_open = np.zeros(len(ist), dtype=bool)
        rating = table.hi[ia]
        self.a_floor, self.a_carries = COLLAPSED * rating, CARRIES * rating
        self.a_usual = np.full(len(ia), np.nan)  # learned usual |current|
        self.a_gone = np.zeros(len(ia), dtype=bool)
        f_lo, f_hi, f_nominal = table.lo[ifr], table.hi[ifr], table.nominal[ifr]
        self.f_nominal = np.where(np.isfinite(f_nominal), f_nominal, _hz((f_lo + f_hi) / 2))
        self.f_active = np.zeros(len(ifr), dtype=bool)
        self._derive()
        # What a tick without readings of these points finds: nothing judged, all holds.
        lone = (("voltage_sag", "tag", n), ("voltage_swell", "tag", n)) if len(g["lone"]) \
            else ()
        self._unknown = [Finding(kind, scope, np.zeros(size, dtype=bool), "",
                                 known=np.zeros(size, dtype=bool))
                         for kind, scope, size in (("voltage_sag", "zone", nz),
                                                   ("voltage_swell", "zone", nz),
                                                   ("line_outage", "zone", nz),
                                                   ("overload", "zone", nz),
                                                   ("frequency", "tag", n), *lone)]

    def _derive(self) -> None:
        """What follows from the nominal values (again whenever one is learned)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            self.v_scale = np.where(self.v_nominal > 0, 1.0 / self.v_nominal, np.nan)
        self.v_learning = bool(np.isnan(self.v_nominal).any())
        nom, n = self.f_nominal, len(self.table)
        lo, hi = self.table.lo[self.ifr], self.table.hi[self.ifr]
        with np.errstate(invalid="ignore"):  # NaN limits are never near: the default band
            lo = np.where((lo < nom) & (lo > nom * (1 - BAND_NEAR)), lo, nom - FREQ_BAND)
            hi = np.where((hi > nom) & (hi < nom * (1 + BAND_NEAR)), hi, nom + FREQ_BAND)
        self.f_mid, self.f_half = (lo + hi) / 2, (hi - lo) / 2
        # the band and nominal of every point, for the finding's message: only at a site
        # with frequency points (three vectors, 1.2 MB at 50,000 points)
        self.f_full = {name: np.full(n if len(nom) else 0, np.nan)
                       for name in ("lo", "hi", "nominal")}
        self.f_full["lo"][self.ifr], self.f_full["hi"][self.ifr] = lo, hi
        self.f_full["nominal"][self.ifr] = nom

    # ----- per tick -----

    def update(self, tick: Tick) -> list[Finding]:
        good = tick.count[self.gather] > 0
        if not good.any():
            return self._unknown
        tick_no = tick.start_ns // self.interval_ns
        mean = tick.mean[self.gather]
        p = self.part
        with np.errstate(invalid="ignore", divide="ignore"):
            voltage, has = self._voltage(tick, tick_no, good[p["v"]])
            return [*voltage,
                    *self._outage(has[:self.nf], good[p["s"]], tick.last[self.ist],
                                  good[p["a"]], mean[p["a"]]),
                    *self._overload(tick_no, good[p["l"]], mean[p["l"]],
                                    tick.count[self.il]),
                    self._frequency(tick, good[p["f"]], mean[p["f"]])]

    def _learn_nominal(self, mean: np.ndarray, good: np.ndarray) -> None:
        # A dead bus tells nothing of its nominal voltage.
        idx = np.flatnonzero(np.isnan(self.v_nominal) & good & (mean > 0))
        self.warm[self.warm_n[idx], idx] = mean[idx]
        self.warm_n[idx] += 1
        ready = idx[self.warm_n[idx] >= WARMUP]
        if len(ready):
            median = np.median(self.warm[:, ready], axis=0)
            hz = 60 if np.any(self.f_nominal == 60.0) else 50
            self.v_nominal[ready] = _standard_voltage(median, self.v_volts[ready], hz)
            self._derive()

    def _voltage(self, tick: Tick, tick_no: int,
                 good: np.ndarray) -> tuple[list[Finding], np.ndarray]:
        iv, f = self.iv, slice(0, self.nf)
        if self.v_learning:
            self._learn_nominal(tick.mean[iv], good)
        scale = self.v_scale
        has = good & (scale > 0)
        dead = has & (tick.min[iv] * scale < DEAD)
        self.v_dead = np.where(has, dead, self.v_dead)
        alive = has & ~dead
        # A dead tick stays out of the mean, so a bus coming back is no dip.
        mean10 = self.v_window.push(tick_no, tick.mean[iv] * scale,
                                    np.where(alive, tick.count[iv], 0))
        below = mean10 < np.where(self.v_low, DIP + HYSTERESIS, DIP)
        above = mean10 > np.where(self.v_high, SWELL - HYSTERESIS, SWELL)
        # A window of one reading is one polled value: a bus with no neighbour reporting to
        # corroborate it (a lone point, a feeder's only one) needs a second window beyond.
        z = self.zv
        measured = z.sum(alive[f])
        alone = self.lone.copy()
        alone[f] = measured[z.of] < 2
        single = alone & (self.v_window.count < 2)
        dip = below & (~single | self.v_below)
        swell = above & (~single | self.v_above)
        self.v_below = np.where(alive, below, self.v_below)
        self.v_above = np.where(alive, above, self.v_above)
        self.v_low = np.where(alive, dip, self.v_low & ~has)
        self.v_high = np.where(alive, swell, self.v_high & ~has)
        low, high = (self.v_low & alive)[f], (self.v_high & alive)[f]
        need = np.minimum(2, measured)
        n_low, n_high = z.sum(low), z.sum(high)
        sag, swell_z = (n_low >= need) & (n_low > 0), (n_high >= need) & (n_high > 0)
        # Never both on one feeder: the side with more buses (a bus is never both).
        both = sag & swell_z
        sag &= ~both | (n_low >= n_high)
        swell_z &= ~both | (n_high > n_low)
        known = measured > 0
        low_pct = -z.max(np.where(low, -100 * mean10[f], -np.inf)) if sag.any() else None
        high_pct = z.max(np.where(high, 100 * mean10[f], -np.inf)) if swell_z.any() else None
        findings = [
            Finding("voltage_sag", "zone", sag, known=known, value=low_pct, limit=self.pct[0],
                    details={"buses": n_low, "measured": measured},
                    message="{subject}: voltage below {limit} % of nominal on {buses} of "
                            "{measured} buses, lowest {value} % (10-minute mean; EN 50160 "
                            "undervoltage)"),
            Finding("voltage_swell", "zone", swell_z, known=known, value=high_pct,
                    limit=self.pct[1], details={"buses": n_high, "measured": measured},
                    message="{subject}: voltage above {limit} % of nominal on {buses} of "
                            "{measured} buses, highest {value} % (10-minute mean; EN 50160 "
                            "overvoltage)"),
        ]
        if self.nf < len(iv):
            findings += self._lone(mean10, alive)
        return findings, has

    def _lone(self, mean10: np.ndarray, alive: np.ndarray) -> list[Finding]:
        """`voltage_sag` and `voltage_swell` of the voltage points outside any feeder, each
        judged on its own 10-minute mean."""
        n, lone, at = len(self.table), self.lone, self.iv[self.lone]
        found = []
        for kind, state, limit, side in (("voltage_sag", self.v_low, DIP, "below"),
                                         ("voltage_swell", self.v_high, SWELL, "above")):
            active, known = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
            active[at], known[at] = (state & alive)[lone], alive[lone]
            value, mean, nominal = (np.full(n, np.nan) for _ in range(3))
            value[at] = 100 * mean10[lone]
            mean[at], nominal[at] = (mean10 * self.v_nominal)[lone], self.v_nominal[lone]
            what = "undervoltage" if side == "below" else "overvoltage"
            found.append(Finding(
                kind, "tag", active, known=known, value=value, limit=np.full(n, 100 * limit),
                details={"mean": mean, "nominal": nominal},
                message="{subject}: 10-minute mean {mean} {unit}, {value} % of its nominal "
                        "{nominal} {unit}, " + side + " {limit} % (EN 50160 " + what + ")"))
        return found

    def _outage(self, v_has: np.ndarray, s_good: np.ndarray, s_last: np.ndarray,
                a_good: np.ndarray, a_mean: np.ndarray) -> list[Finding]:
        if len(self.ist):
            self.s_open = np.where(s_good, (self.s_norm > 0.5) & (s_last < 0.5), self.s_open)
            self.s_norm = _ewma(self.s_norm, s_last, s_good, self.alpha_s)
        if len(self.ia):
            amps = np.abs(a_mean)
            gone = (amps < self.a_floor) & (self.a_usual > self.a_carries)
            self.a_gone = np.where(a_good, gone, self.a_gone)
            self.a_usual = _ewma(self.a_usual, amps, a_good & ~gone, self.alpha_a)
        zv = self.zv
        n_dead = zv.sum(self.v_dead[:self.nf])
        n_open = self.zs.sum(self.s_open)
        confirmed = (n_dead >= 2) | (self.za.sum(self.a_gone) > 0) | (zv.size == 1)
        active = (n_open > 0) | ((n_dead > 0) & confirmed)
        known = (zv.sum(v_has) + self.zs.sum(s_good)) > 0
        finding = Finding("line_outage", "zone", active, known=known, value=n_dead,
                          details={"dead_buses": n_dead, "lines_out": n_open},
                          message="{subject}: line outage")
        if not active.any():
            return [finding]
        return _per_subject(finding, {z: self._outage_message(z, n_open[z] > 0)
                                      for z in np.flatnonzero(known & active).tolist()})

    def _short(self, point: int) -> str:
        # made when a message needs it: kept for every point it would cost 2.6 MB at 50,000
        return _short(self.table.tags[point], self.table.zone_name(point))

    def _outage_message(self, z: int, opened: bool) -> str:
        short = self._short
        lines = [short(i) for i in self.ist[self.s_open & (self.zs.of == z)]] or \
            [short(i) for i in self.ia[self.a_gone & (self.za.of == z)]]
        f = slice(0, self.nf)
        buses = [short(i) for i in self.iv[f][self.v_dead[f] & (self.zv.of == z)]]
        what = "lines out of service" if opened else "lines without current"
        parts = ([f"{what}: {_names(lines)}"] if lines else []) + (
            [f"dead buses: {_names(buses)}"] if buses else [])
        return "; ".join(["{subject}: line outage", *parts])

    def _overload(self, tick_no: int, good: np.ndarray, mean: np.ndarray,
                  count: np.ndarray) -> list[Finding]:
        mean10 = self.l_window.push(tick_no, mean * self.l_scale, np.where(good, count, 0))
        above = mean10 > 100.0
        # Into the condition on two readings in a row; out of it well below the limit.
        over = np.where(self.l_over, mean10 >= 100.0 * OVERLOAD_BACK, above & self.l_prev)
        self.l_over = np.where(good, over, self.l_over)
        self.l_prev = np.where(good, above, self.l_prev)
        z = self.zl
        n_over = z.sum(self.l_over)
        active = n_over > 0
        known = z.sum(good) > 0
        finding = Finding("overload", "zone", active, known=known, limit=self.pct[2],
                          details={"items": n_over},
                          message="{subject}: overload above {limit} % of rating")
        if not active.any():
            return [finding]
        level = np.where(self.l_over, mean10, -np.inf)
        finding = replace(finding, value=z.max(level))
        messages = {}
        for zone in np.flatnonzero(known & active).tolist():
            item = self.il[np.argmax(np.where(z.of == zone, level, -np.inf))]
            messages[zone] = ("{subject}: overload, " + self._short(item) + " at {value} % of "
                              "its rating (limit {limit} %, 10-min mean); {items} item(s) over")
        return _per_subject(finding, messages)

    def _frequency(self, tick: Tick, good: np.ndarray, f: np.ndarray) -> Finding:
        n, ifr = len(self.table), self.ifr
        first = np.isnan(self.f_nominal) & good
        if first.any():
            self.f_nominal[first] = _hz(f[first])
            self._derive()
        half = np.where(self.f_active, (1 - FREQ_BACK) * self.f_half, self.f_half)
        self.f_active = np.where(good, np.abs(f - self.f_mid) > half, self.f_active)
        active, known = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        active[ifr], known[ifr] = self.f_active, good
        message = "{subject} at {value} {unit}, beyond {limit} {unit} (nominal {nominal} {unit})"
        if not len(ifr):  # no frequency point: no subject to describe (nor bands to hold)
            return Finding("frequency", "tag", active, known=known, message=message)
        full = self.f_full
        return Finding("frequency", "tag", active, known=known, value=tick.mean,
                       limit=np.where(tick.mean < full["nominal"], full["lo"], full["hi"]),
                       details={"nominal": full["nominal"]}, message=message)

    # ----- state -----

    _STATE = ("v_nominal", "warm", "warm_n", "v_low", "v_high", "v_dead", "v_below", "v_above",
              "l_over", "l_prev", "s_norm", "s_open", "a_usual", "a_gone", "f_nominal",
              "f_active")

    def state(self) -> dict[str, np.ndarray]:
        return ({name: getattr(self, name) for name in self._STATE}
                | self.v_window.state("v_window") | self.l_window.state("l_window"))

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in self._STATE:
            setattr(self, name, state[name].copy())
        self.v_window.load_state("v_window", state)
        self.l_window.load_state("l_window", state)
        self._derive()


def _per_subject(finding: Finding, messages: dict[int, str]) -> list[Finding]:
    """`finding` with the subjects of `messages` split off, each with its own message: a
    Finding has one message for all subjects, and these name the items at fault."""
    if not messages:
        return [finding]
    n = len(finding.active)
    rest = np.ones(n, dtype=bool) if finding.known is None else finding.known.copy()
    rest[list(messages)] = False
    out = [replace(finding, known=rest)]
    for i, message in messages.items():
        one = np.zeros(n, dtype=bool)
        one[i] = True
        out.append(replace(finding, known=one, message=message))
    return out


def _hz(x: np.ndarray) -> np.ndarray:
    """50 or 60 Hz, whichever is nearer; NaN stays NaN."""
    return np.where(np.isnan(x), np.nan, np.where(x > 55.0, 60.0, 50.0))


def _standard_voltage(median: np.ndarray, volts: np.ndarray, hz: int) -> np.ndarray:
    """The standard voltage nearest each median (in the point's unit, `volts` per unit) when
    within SNAP of it, else the median.

    >>> _standard_voltage(np.array([113.2, 20.3, 0.4, 1.0]), np.array([1e3, 1e3, 1e3, np.nan]),
    ...                   50).tolist()
    [110.0, 20.0, 0.4, 1.0]
    """
    std = np.array(STANDARD_V[hz])
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.abs(np.log(np.abs(median * volts)[:, None] / std[None, :]))
    best = np.argmin(np.where(np.isnan(distance), np.inf, distance), axis=1)
    snapped = std[best] / volts
    return np.where(np.abs(snapped / median - 1.0) <= SNAP, snapped, median)


def _ewma(mean: np.ndarray, x: np.ndarray, good: np.ndarray, alpha: float) -> np.ndarray:
    """Exponentially weighted mean over the ticks with a reading; the first one starts it."""
    new = mean + alpha * (x - mean)
    return np.where(good, np.where(np.isnan(mean), x, new), mean)
