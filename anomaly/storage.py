"""Storage in a zone's water balance: the tanks and reservoirs whose level point is in the zone.

A zone's consumption is its metered inflow less its outflow less the water going into its
tanks: where a tank has no meter of its own, a pump filling it under level control raises the
zone's inflow as much as the tank's level rate times its area, and consumption does not move.
This module gives the leak detector, per zone and 15-minute bin, the rate at which the zone's
storage grows (L/s), from the levels at the bin's edges (each edge the mean of the last reading
before it and the first after, so the volume of a bin is the volume between the flow readings
the bin averages): the rates of consecutive bins share an edge, so the level's noise does not
add up over hours, it stays that of two readings.

A tank's volume comes from its level point's `area` (m2; the level in m, cm, mm, ft or in) or
`volume_curve` ([[level, m3], ...] in the point's own unit, linear between), and where neither
is given from an **effective area learned online** (m3 per unit of level): the zone's net inflow
y and each tank's level rate x obey y = consumption + sum(A_k x_k), and consumption follows its
daily profile (per bin of the day and day type, weekday or weekend) with noise, so A is the
fit (A >= 0) that leaves the consumption most like its profile: y on the level rates x over
every bin, both taken less their means in the bin's slot of the day (the profile), with a
memory of `FORGET_DAYS`. Every bin tells, not only the pump switchings: tanks that float on
the system head (Net6's 32, held out) move all day while the inflow seldom steps, and their
storage is what makes one day's consumption unlike the next's at the same hour. What the
tanks do the same every day is in the profile whatever the areas: the balance needs, and the
fit learns, the storage that differs from day to day.
Tanks that float on one system head move near collinearly, so one tank's area may not be
identifiable while the sum the balance needs is: the fit is a ridge that pulls the tanks'
standardised contributions towards their mean (a group of tanks moving together shares one
effective area, split evenly, not put on one of them), its weight the one whose fits best
predicted the bins they had not seen (each bin is predicted, against the profile of the days
before it, before it is learned). A zone's learned tanks enter the balance together once their
storage is identifiable: `MIN_DAYS` of bins, the storage fitted known to `PRECISION` of itself,
and the bins not yet seen predicted nearly as well as the learned ones are explained
(`OVERFIT`) and better than with no storage at all; they leave the balance when either is
twice as bad. A tank whose main is metered (outside the balance) moves with no inflow: the fit
explains nothing and it stays out. Until a zone's tanks are settled (in, or out after
`SETTLE_BINS` because they explain less than `LEAVE_R2` of the inflow's variation about its
profile or their levels rested) the zone is not judged (judged without tanks that move, their
filling would be consumption), and when they enter its consumption is learned anew. Nothing is
learned while the leak detector's burst test fires. What is learned is logged
(`event=zone_storage_learned` for the zone, whether it is judged, `event=tank_area_learned`
per tank) when a tank enters or leaves or an area moves by `RELOG`, and once when
`SETTLE_BINS` have passed; it is kept in the engine's state.

Tuned on wntr's Net1 and ky4 (simulators/networks.py, seeds 1-20) and the water simulator's
Net3 zones (its tank 2 is metered: it must learn ~0); ky10, Anytown and Net6 only evaluated it.
The identifiability rules (`PRECISION`, `OVERFIT`, `MOVING`) and the ridge (`SHRINK`) were set
from the statistics, not fitted; the floating-tank zones of tests/anomaly/test_anomaly_storage.py
exercised them. Net6's seldom-stepping tanks (held out: they explain ~1 % of the inflow's
steps, so the step-based learner this replaced never identified them) showed the failure mode
the all-bins fit answers.

>>> import numpy as np
>>> from anomaly.points import PointInfo, PointTable
>>> t = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
...                 PointInfo("z.tank.level", "level", "m", zone="z")])
>>> s = Storage(t)
>>> rng = np.random.default_rng(1)
>>> level, pump = 3.0, 0.0
>>> for b in range(400):  # a 200 m2 tank, a 40 L/s pump switched on a level, 20 L/s demand
...     pump = 40.0 if level < 2.5 else 0.0 if level > 3.5 else pump
...     level += (pump - 20.0 - rng.normal(0, 0.5)) / 1000 / 200 * BIN_S  # m over the bin
...     s.edge(np.array([level + rng.normal(0, 0.003)]))  # the bin ends
...     s.learn(b, np.array([pump]), np.array([True]))
>>> round(float(s.area[0]), -1), bool(s.used[0]), round(float(s.rates()[0][0]), -1)
(200.0, True, 20.0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from anomaly.points import PointTable
from anomaly.ticks import Tick

log = logging.getLogger(__name__)

BIN_S = 900.0  # seconds per bin: the leak detector's
LENGTH = {"": 1.0, "m": 1.0, "cm": 0.01, "mm": 0.001, "ft": 0.3048, "in": 0.0254}
DAY_BINS = round(86400 / BIN_S)
SLOTS = 2 * DAY_BINS  # a profile's slots: bin of the day, weekday or weekend (as leak.py's)
EVENT = 6.0  # a level's change this many times its usual one does not teach the usual one
SCALE_ALPHA = 0.02  # per bin: EWMA of the usual change (a memory of ~12 hours)
SCALE_CLIP = 4.0  # scales: the largest change the usual one learns from
FORGET_DAYS = 14.0  # the fit's memory: weeks of tank cycles, days of a slot's profile
FORGET = 1.0 - 1.0 / (FORGET_DAYS * DAY_BINS)  # per bin
# of bins before the tanks enter: a slot's profile needs a second day's bins, and the sooner
# the tanks enter the sooner the zone's consumption is learned (Net1, ky4 tuning: 2 days found
# 5/6 and 5/10 of leaks >= 3 %, 1.25 days 6/6 and 5/10)
MIN_DAYS = 1.25
ENTER_R2, LEAVE_R2 = 0.8, 0.5  # share of the inflow's variation predicted: in / out
PRECISION = 1 / 3  # relative standard error of the storage fitted, to enter
OVERFIT = 2.0  # share of unseen bins missed, of the share left of the learned, to enter
SOLVE_BINS = 4  # the fit is solved every hour: its areas move slowly
SETTLE_BINS = 4 * DAY_BINS  # four days
RIDGE = 1e-9  # of the fit's largest diagonal: tanks that never moved stay at 0
# ridge weights tried, each tank's penalty this share of its own level rates' sum of squares
# about their profile; the one that best predicts unseen bins is kept
SHRINK = (1e-6, 1e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
HELD_FORGET = 1.0 - 1.0 / (2 * DAY_BINS)  # per bin: the memory of how the fits predicted
HELD_SLACK = 1.05  # a more shrunk fit is kept if it predicted within this of the best
RELOG = 0.2  # a learned area is logged again when it moves by this fraction
MOVING = 3.0  # usual level rate, of its usual bin-to-bin change: a tank that moves (fills,
# drains over hours) rather than rests with a noisy level


def length_factor(unit: str) -> float:
    """Metres per unit of a level, NaN when the unit is not a length.

    >>> length_factor("cm"), length_factor("ft"), length_factor("%")
    (0.01, 0.3048, nan)
    """
    return LENGTH.get(unit.strip().lower(), math.nan)


class Storage:
    """Per zone, the storage rate of its tanks per bin, and their learned areas."""

    def __init__(self, table: PointTable) -> None:
        z = len(table.zones)
        self.n_zones = z
        level = np.flatnonzero(table.of_kind("level") & (table.zone_of >= 0))
        self.points = level
        self.zone = table.zone_of[level]
        self.tags = [table.tags[i] for i in level.tolist()]
        self.zone_names = list(table.zones)
        info = [table.detail(i) for i in level.tolist()]
        metres = np.array([length_factor(table.units[i]) for i in level.tolist()])
        # m3 per unit of level where the geometry is known by its area
        self.gain = np.array([p.area * m if p.area else np.nan for p, m in zip(info, metres,
                                                                              strict=True)])
        self.curves = {k: (np.array([c[0] for c in p.volume_curve], dtype=float),
                           np.array([c[1] for c in p.volume_curve], dtype=float))
                       for k, p in enumerate(info) if p.volume_curve}
        self.learned = np.isnan(self.gain) & np.array([k not in self.curves
                                                       for k in range(len(info))], dtype=bool)
        self.metres = metres  # to report a learned area in m2 where the level is a length
        n = len(level)
        self.last = np.full(n, np.nan)  # last level reading and its time
        self.last_ns = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self.edge_prev = np.full(n, np.nan)  # level at the current bin's first edge
        self.x = np.full(n, np.nan)  # level rate of the last bin, unit/s x 1000
        self.volume_rate = np.full(n, np.nan)  # L/s into each tank of known geometry
        # learning, per tank (the fit's arrays are per zone, over the zone's learned tanks)
        self.area = np.zeros(n)  # m3 per unit of level
        self.se = np.full(n, np.inf)
        self.used = np.zeros(n, dtype=bool)
        self.entered = np.zeros(z, dtype=bool)  # zones where a tank entered the balance now
        self.logged = np.zeros(n)
        self.x_scale = np.full(n, np.nan)  # the usual change of a level rate, bin to bin
        self.x_n = np.zeros(n)
        self.x_abs = np.full(n, np.nan)  # the usual level rate: a tank that moves, or rests
        self.zones_learning = np.unique(self.zone[self.learned])
        width = max((int(np.count_nonzero(self.learned & (self.zone == q)))
                     for q in self.zones_learning.tolist()), default=0)
        self.members = np.full((len(self.zones_learning), width), -1, dtype=np.int64)
        for r, q in enumerate(self.zones_learning.tolist()):
            k = np.flatnonzero(self.learned & (self.zone == q))
            self.members[r, :len(k)] = k
        rows = len(self.zones_learning)
        # the fit's faded sums per zone row: per slot of the profile (count, level rates, net
        # inflow) and over all bins (x'x, x'y, y'y); the fit is on their parts about the slots'
        # means (`_within`)
        self.slot_n = np.zeros((rows, SLOTS))
        self.slot_x = np.zeros((rows, SLOTS, width))
        self.slot_y = np.zeros((rows, SLOTS))
        self.gram = np.zeros((rows, width, width))
        self.cross = np.zeros((rows, width))
        self.sq = np.zeros(rows)
        self.bins = np.zeros(rows)  # bins seen, to settle a zone whose tanks rest
        self.explained = np.zeros(rows)  # share of the inflow's variation the fit explains
        self.predicted = np.zeros(rows)  # ... of the bins it had not seen, as it predicted
        self.error = np.full(rows, np.inf)  # relative standard error of the fitted storage
        self.fits = np.zeros((rows, len(SHRINK), width))  # areas per ridge weight
        self.miss = np.zeros((rows, len(SHRINK)))  # their faded squared misses of unseen bins
        self.held_sq = np.zeros(rows)  # the faded squares of the bins they predicted
        self.held = np.zeros(rows)  # ... and their faded count
        self.zone_in = np.zeros(rows, dtype=bool)  # the zone's learned tanks are in

    @property
    def any(self) -> bool:
        return len(self.points) > 0

    # --- per tick and bin -------------------------------------------------------------------

    def observe(self, tick: Tick) -> None:
        """Keep each tank's last level reading (after `edge_level` has seen the tick)."""
        good = tick.count[self.points] > 0
        self.last = np.where(good, tick.last[self.points], self.last)
        self.last_ns = np.where(good, tick.last_ts[self.points], self.last_ns)

    def edge_level(self, tick: Tick) -> np.ndarray:
        """The level at the edge before `tick`, the first tick of a bin: the mean of the last
        reading before it (if at most a bin old) and the tick's own (its first, or the mean
        of several), or whichever of the two there is."""
        before = np.where(tick.start_ns - self.last_ns <= BIN_S * 1e9, self.last, np.nan)
        after = np.where(tick.count[self.points] > 0, tick.mean[self.points], np.nan)
        both = (before + after) / 2
        return np.where(np.isfinite(both), both, np.where(np.isfinite(before), before, after))

    def edge(self, level: np.ndarray) -> None:
        """A bin ended: `level` per tank at the edge (NaN: unknown). Keeps each tank's level
        rate over the bin that ended."""
        rate = (level - self.edge_prev) / BIN_S * 1000.0
        _learn_scale(np.abs(rate - self.x), self.x_scale, self.x_n)
        self.x = rate
        known = np.where(np.isfinite(self.gain), self.gain * rate, np.nan)
        for k, (levels, volumes) in self.curves.items():
            known[k] = ((np.interp(level[k], levels, volumes)
                         - np.interp(self.edge_prev[k], levels, volumes)) / BIN_S * 1000.0)
        self.volume_rate = known
        self.edge_prev = level

    def settled(self) -> np.ndarray:
        """Per zone, whether its balance is known: its learned tanks in it, or after
        SETTLE_BINS bins out of it because they explain less than LEAVE_R2 of the inflow's
        variation about its profile (a metered main) or their levels rested (a tank at its
        floor)."""
        out = np.ones(self.n_zones, dtype=bool)
        rows = self.zones_learning
        # Not while the tanks move but their storage is not identifiable yet: judged
        # without them, their filling would be consumption, a pump starting a leak (Net6,
        # held out: 32 floating tanks judged without them, false leaks of 430-550 L/s).
        moving = np.logical_or.reduce((self.members >= 0) & (
            self.x_abs[self.members] > MOVING * self.x_scale[self.members]), axis=1)
        out[rows] = self.zone_in | ((self.bins >= SETTLE_BINS) & (
            ~moving | (self.explained < LEAVE_R2)))
        return out

    def rates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(L/s into each zone's storage over the bin that ended, whether it is known,
        whether the zone has tanks in its balance): a zone's storage is unknown when a tank
        in its balance has no level at an edge."""
        inside = np.isfinite(self.gain) | ~self.learned | self.used
        per_tank = np.where(self.learned, self.area * self.x, self.volume_rate)
        missing = inside & ~np.isfinite(per_tank)
        rate = np.bincount(self.zone, weights=np.where(inside & ~missing, per_tank, 0.0),
                           minlength=self.n_zones)
        bad = np.bincount(self.zone, weights=missing, minlength=self.n_zones)
        tanks = np.bincount(self.zone, weights=inside, minlength=self.n_zones)
        return rate, bad == 0, tanks > 0

    def learn(self, bin_no: int, net: np.ndarray, quiet: np.ndarray) -> None:
        """Fold bin `bin_no` (bins since the epoch) into the learned areas: `net` inflow per
        zone (L/s, NaN if unknown), `quiet` zones where no burst is suspected (a burst is no
        profile's). The bin is first predicted by each ridge weight's fit against the
        profile of the days before it (its slot's means), then learned."""
        self.entered[:] = False
        if not len(self.zones_learning):
            return
        known = np.where(self.learned, 0.0, np.nan_to_num(self.volume_rate))
        y = net - np.bincount(self.zone, weights=known, minlength=self.n_zones)
        rows = self.zones_learning
        rate = np.abs(self.x)
        self.x_abs = np.where(np.isfinite(rate), np.where(np.isfinite(self.x_abs), self.x_abs
                                                          + SCALE_ALPHA * (rate - self.x_abs),
                                                          rate), self.x_abs)
        self.bins += np.isfinite(y[rows])
        weekend = (bin_no // DAY_BINS + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        slot = bin_no % DAY_BINS + (DAY_BINS if weekend else 0)
        solve = bin_no % SOLVE_BINS == SOLVE_BINS - 1
        for r, q in enumerate(rows.tolist()):
            k = self.members[r][self.members[r] >= 0]
            x = self.x[k]
            if quiet[q] and np.isfinite(y[q]) and np.isfinite(x).all():
                self._fold(r, slot, float(y[q]), x)
            if solve and self.held[r] > 0:
                self._solve(r, k)
            if self.bins[r] == SETTLE_BINS and np.isfinite(y[q]):
                self._log_zone(r, k)  # judged from now on, or still not

    def _fold(self, r: int, slot: int, y: float, x: np.ndarray) -> None:
        """Predict bin (y, x) of zone row r by each fit, against its slot's profile of the days
        before, then fold it into the faded sums."""
        n = len(x)
        seen = self.slot_n[r, slot]
        if seen > 0.5:  # the bin as the fits so far predict it: unseen by them (a faded count)
            dy = y - self.slot_y[r, slot] / seen
            dx = x - self.slot_x[r, slot, :n] / seen
            # a profile of `seen` days misses a bin (1 + 1/seen) times the demand's own noise:
            # taken back to it, to compare with the fit's own residual
            shrink = seen / (seen + 1.0)
            miss = dy - self.fits[r, :, :n] @ dx
            self.miss[r] = HELD_FORGET * self.miss[r] + shrink * miss ** 2
            self.held_sq[r] = HELD_FORGET * self.held_sq[r] + shrink * dy ** 2
            self.held[r] = HELD_FORGET * self.held[r] + 1.0
        for a in (self.slot_n, self.slot_y, self.slot_x, self.gram, self.cross, self.sq):
            a[r] *= FORGET
        self.slot_n[r, slot] += 1.0
        self.slot_y[r, slot] += y
        self.slot_x[r, slot, :n] += x
        self.gram[r, :n, :n] += np.outer(x, x)
        self.cross[r, :n] += x * y
        self.sq[r] += y * y

    def _within(self, r: int, n: int) -> tuple[np.ndarray, np.ndarray, float, float, int]:
        """(x'x, x'y, y'y about the slots' means, the faded count of bins, the slots seen)."""
        seen = self.slot_n[r] > 0
        w = 1.0 / self.slot_n[r, seen]
        sx, sy = self.slot_x[r, seen, :n], self.slot_y[r, seen]
        g = self.gram[r, :n, :n] - (sx * w[:, None]).T @ sx
        c = self.cross[r, :n] - (sx * (w * sy)[:, None]).sum(axis=0)
        sq = float(self.sq[r] - np.sum(w * sy * sy))
        return g, c, max(sq, 0.0), float(self.slot_n[r].sum()), int(np.count_nonzero(seen))

    def _solve(self, r: int, k: np.ndarray) -> None:
        n = len(k)
        g, c, sq, m, slots = self._within(r, n)
        # Ridge towards tanks' contributions alike, each tank's penalty a share (SHRINK) of its
        # own level rates' sum of squares (the columns standardised): tanks that float on one
        # system head move near collinearly, and least squares explains their sum by a handful
        # of tanks, thousands of m2 on a small one, where the ridge spreads it over the tanks
        # that moved together.
        for i, weight in enumerate(SHRINK):
            self.fits[r, i, :n] = _nonnegative(g, c, weight)
        # The fit kept is the one that predicted the bins it had not seen best (each bin is
        # predicted before it is learned), or the most shrunk of those about as good: where
        # the bins do not tell the tanks apart, the ridge's split is the safer.
        miss = self.miss[r]
        choice = int(np.flatnonzero(miss <= HELD_SLACK * miss.min())[-1])
        area = self.fits[r, choice, :n]
        resid = max(sq - 2 * area @ c + area @ g @ area, 0.0)
        # the unknowns: every tank whose level moved (the fit chose among them all)
        unknowns = int(np.count_nonzero(np.diag(g) > RIDGE * max(float(np.max(np.diag(g))),
                                                                  1e-30)))
        dof = m - slots - unknowns  # the slots' means are fitted too
        var = resid / dof if dof > 0 else math.inf  # of a bin, about the fit
        with np.errstate(divide="ignore", invalid="ignore"):
            free = area > 0
            f = np.flatnonzero(free)
            inv = np.zeros((n, n))
            inv[np.ix_(f, f)] = np.linalg.pinv(g[np.ix_(f, f)] + _penalty(
                np.sqrt(np.diag(g)[f]), SHRINK[choice]))
            se = np.where(free, np.sqrt(np.maximum(np.diag(inv @ g @ inv) * var, 0.0)), np.inf)
        self.area[k], self.se[k] = area, se
        # The share of the inflow's variation about its profile the fit leaves, per degree of
        # freedom left, and the share of the bins it had not seen that it missed.
        left = (var / (sq / max(m - slots, 1e-9))) if dof > 0 and sq > 0 else math.inf
        missed = miss[choice] / self.held_sq[r] if self.held_sq[r] > 0 else math.inf
        self.explained[r] = 1.0 - resid / sq if sq > 0 else 0.0
        self.predicted[r] = 1.0 - missed
        # The zone's tanks enter the balance together (tanks filled by one pump move
        # together, so one tank's area alone may be poorly known while the sum the balance
        # needs is well known) once their storage is identifiable:
        # - MIN_DAYS of bins, more than the slots and tanks fitted;
        # - the storage the fit puts on the bins known to PRECISION of itself (its standard
        #   error against the explained variance): a tank whose main is metered (outside the
        #   balance) moves with no inflow: it explains nothing and stays out;
        # - and the fit misses the bins it had not seen at most OVERFIT times the share it
        #   leaves of those it learned (or at most 1 - ENTER_R2 of them), and fewer than with
        #   no storage at all: an over-fitted split explains the bins it learned and misses
        #   the next ones.
        # They leave when one of them is twice as bad (or misses 1 - LEAVE_R2 and more than
        # no storage).
        explained = max(self.explained[r], 1e-9)
        error = math.sqrt(left * unknowns / max(m, 1e-9) / explained)
        self.error[r] = error
        was_in = bool(self.zone_in[r])
        if was_in:
            self.zone_in[r] = (error <= 2 * PRECISION and missed < 1.0
                               and missed <= max(2 * OVERFIT * left, 1.0 - LEAVE_R2))
        else:
            self.zone_in[r] = (m >= MIN_DAYS * DAY_BINS and dof >= 1 and error <= PRECISION
                               and missed < 1.0
                               and missed <= max(OVERFIT * left, 1.0 - ENTER_R2))
        # The zone's consumption is learned anew when its tanks enter, not when one tank's
        # area leaves or comes back to 0 while the zone's storage is in (ky4, tuning: its 4
        # tanks in and out one by one, each time the zone's profile and spreads restarting)
        self.entered[self.zone[k[0]]] = self.zone_in[r] and not was_in
        used = self.zone_in[r] & free
        changed = False
        for j, tank in enumerate(k.tolist()):
            moved = abs(self.area[tank] - self.logged[tank]) > RELOG * max(self.logged[tank],
                                                                          1e-9)
            if used[j] != self.used[tank] or (used[j] and moved):
                self.logged[tank] = self.area[tank] if used[j] else 0.0
                changed = True
        self.used[k] = used
        if changed:
            self._log_zone(r, k)

    def _log_zone(self, r: int, k: np.ndarray) -> None:
        """What the zone's fit learned: the zone (whether its tanks are in its balance and
        it is judged, the days of bins it learned from, the share of the inflow's variation
        about its profile the fit explains and of the unseen bins' it predicted, the relative
        standard error of the storage it fits), then each tank."""
        m = self.metres[k]
        z = int(self.zone[k[0]])
        log.info("event=zone_storage_learned zone=%s in_balance=%s judged=%s tanks=%d "
                 "tanks_in=%d days=%.1f explained=%.2f predicted=%.2f error=%.2g "
                 "area_m2_total=%.4g", self.zone_names[z], str(bool(self.zone_in[r])).lower(),
                 str(bool(self.settled()[z])).lower(), len(k),
                 int(np.count_nonzero(self.used[k])), self.slot_n[r].sum() / DAY_BINS,
                 self.explained[r],
                 self.predicted[r], self.error[r],
                 float(np.sum(np.where(np.isfinite(m) & self.used[k], self.area[k] / m, 0.0))))
        for tank in k.tolist():
            metres = self.metres[tank]
            unit = "m2" if np.isfinite(metres) else "m3_per_unit"
            scale = 1.0 / metres if np.isfinite(metres) else 1.0
            log.info("event=tank_area_learned tag=%s in_balance=%s area_%s=%.4g se=%.2g",
                     self.tags[tank], str(bool(self.used[tank])).lower(), unit,
                     self.area[tank] * scale, self.se[tank] * scale)

    # --- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _STATE}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in _STATE:
            setattr(self, name, state[name].copy())


_STATE = ("last", "last_ns", "edge_prev", "x", "volume_rate", "area", "se", "used", "logged",
          "x_scale", "x_n", "x_abs", "slot_n", "slot_x", "slot_y", "gram", "cross", "sq", "bins",
          "explained", "predicted", "error", "fits", "miss", "held_sq", "held", "zone_in")


def _learn_scale(change: np.ndarray, scale: np.ndarray, n: np.ndarray) -> None:
    """Learn the usual change (EWMA, in place) from the changes below EVENT usual ones once
    warm, clipped, so that a tank's filling starting does not teach it."""
    ok = np.isfinite(change)
    outlier = ok & (n >= 16) & (change > EVENT * scale)
    first = ok & np.isnan(scale)
    bound = np.where(np.isfinite(scale) & (n >= 8), SCALE_CLIP * scale, np.inf)
    alpha = np.maximum(1.0 / (n + 1), SCALE_ALPHA)
    learn = ok & ~outlier & ~first
    scale[:] = np.where(first, change, np.where(learn, scale + alpha * (
        np.minimum(change, bound) - scale), scale))
    n += ok & ~outlier


def _penalty(s: np.ndarray, weight: float) -> np.ndarray:
    """The ridge's matrix: `weight` times sum((b - mean(b))^2) as a quadratic form in the
    areas, where b_k = a_k s_k is tank k's standardised contribution (s_k: |X_k|)."""
    return weight * (np.diag(s * s) - np.outer(s, s) / max(len(s), 1))


def _nonnegative(g: np.ndarray, c: np.ndarray, weight: float) -> np.ndarray:
    """argmin |y - X a|^2 + weight sum((b - mean(b))^2) over a >= 0, from X'X and X'y, where
    b_k = a_k |X_k| is tank k's standardised contribution (active set: the most negative out,
    one at a time). The penalty pulls the tanks' contributions towards their mean, not
    towards 0: it splits what the steps cannot tell apart evenly over the tanks, and leaves
    their sum (a single tank's area) to the steps."""
    n = len(c)
    top = float(np.max(np.diag(g))) if n else 0.0
    s = np.sqrt(np.maximum(np.diag(g), RIDGE * max(top, 1e-30)))
    free = np.ones(n, dtype=bool)
    while True:
        a = np.zeros(n)
        f = np.flatnonzero(free)
        if not len(f):
            return a
        ridge = RIDGE * max(top, 1e-30) * np.eye(len(f))
        a[f] = np.linalg.solve(g[np.ix_(f, f)] + _penalty(s[f], weight) + ridge, c[f])
        if (a[f] >= 0).all():
            return a
        free[f[np.argmin(a[f])]] = False
