"""Tank mains: which of a zone's tanks has its own main metered in the zone's balance.

A tank whose main carries a flow meter with a role (the water simulator's Net3 tank 2, a
utility's metered service reservoir) is in the zone's water balance already: the meter carries
what goes into and out of the tank, so its level rate must not be counted again as storage,
and its zone needs no learned area to be judged. Such a meter carries the tank's flow and
nothing else: bin by bin its signed flow (inflow +) is minus the tank's volume rate, a
straight line through the origin with a negative slope (a draining tank feeds the zone). A
zone's inflow main beside a floating tank is not: it carries the zone's demand too, which
runs when the tank rests, so a line through the origin explains little of it, and a pump
filling a tank from the zone's inflow moves the two the same way (a positive slope).

So per (tank, balance meter of the tank's zone) this learns, over the hours where both are
known (an hour's level rate carries the level's noise at two edges, as a bin's does, over four
times the movement: a slow tank's bins are mostly noise), the share of the meter's squared
flow that a line through the origin on the tank's level rate explains (the uncentred R2); the
tank's main is metered once that is at least `SHARE` with a negative slope over `MIN_HOURS`
hours. It reads the balance meters and levels the leak detector reads; it needs no level unit
(R2 and the slope's sign do not depend on it).

Set from the physics, not fitted: the water simulator's tank 2 meets it with an R2 of 0.993
(hourly, evaluation seed 101; 0.978 bin by bin); no tank of wntr's Net1 and ky4 (tuning) has
a meter of its own, nor any of ky10, Anytown and Net6 (held out, only evaluated).

>>> import numpy as np
>>> from anomaly.core.points import PointInfo, PointTable
>>> t = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
...                 PointInfo("z.tank.flow", "flow", "L/s", zone="z", role="inflow"),
...                 PointInfo("z.tank.level", "level", "m", zone="z")])
>>> mains = TankMains(t, np.array([0, 1]), np.array([1.0, 1.0]))
>>> rng = np.random.default_rng(1)
>>> for b in range(200):  # a 300 m2 tank draining by day, filling by night, on its own meter
...     rate = 0.2 * np.sin(2 * np.pi * b / 96)  # of the level: m/s x 1000
...     mains.add(np.array([20.0 + 5 * np.sin(2 * np.pi * b / 96), -300 * rate]),
...               np.array([True, True]))
...     mains.close(np.array([rate + rng.normal(0, 0.002)]))
>>> mains.metered.tolist()
[True]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly.core.points import PointTable

SHARE = 0.9  # of the meter's squared flow a line through the origin on the level rate explains
MIN_HOURS = 24  # hours known
BLOCK = 4  # bins (of 15 minutes) in an hour


class TankMains:
    """Per tank (a level point in a zone), whether a balance meter of its zone is its main."""

    def __init__(self, table: PointTable, meters: np.ndarray, gain: np.ndarray) -> None:
        """`meters`: the zone balance's flow points (indices into the table); `gain`: their
        sign times their L/s factor."""
        tanks = np.flatnonzero(table.of_kind("level") & (table.zone_of >= 0))
        zone = table.zone_of[tanks]
        meter_zone = table.zone_of[meters]
        pairs = [(k, m) for k in range(len(tanks)) for m in range(len(meters))
                 if meter_zone[m] == zone[k]]
        self.tank = np.array([k for k, _ in pairs], dtype=np.int64)
        self.meter = np.array([m for _, m in pairs], dtype=np.int64)
        self.gain = gain
        self.n_tanks = len(tanks)
        self.acc = np.zeros((2, len(meters)))  # sum, count of each meter's flow this bin
        self.hour = np.zeros((3, len(pairs)))  # level rate, flow, bins known this hour
        self.bins = np.zeros(1, dtype=np.int64)  # bins into the hour
        self.sums = np.zeros((4, len(pairs)))  # hours, x^2, f^2, x f per pair
        self.metered = np.zeros(len(tanks), dtype=bool)

    def add(self, value: np.ndarray, good: np.ndarray) -> None:
        """A tick's readings of the balance meters (in their own units), and which are good."""
        if len(self.tank):
            self.acc[0] += np.where(good, value, 0.0)
            self.acc[1] += good

    def close(self, rate: np.ndarray) -> None:
        """A bin ended: each tank's level rate over it (NaN where unknown)."""
        if not len(self.tank):
            return
        total, count = self.acc
        flow = np.where(count > 0, self.gain * total / np.maximum(count, 1), np.nan)
        self.acc[:] = 0.0
        x, f = rate[self.tank], flow[self.meter]
        ok = np.isfinite(x) & np.isfinite(f)
        self.hour += np.where(ok, np.array([x, f, np.ones_like(x)]), 0.0)
        self.bins += 1
        if self.bins[0] < BLOCK:
            return
        x, f, known = self.hour.copy()
        self.hour[:] = 0.0
        self.bins[:] = 0
        ok = known == BLOCK
        self.sums += np.where(ok, np.array([np.ones_like(x), x * x, f * f, x * f]), 0.0)
        n, xx, ff, xf = self.sums
        with np.errstate(invalid="ignore", divide="ignore"):
            share = xf * xf / (xx * ff)
        main = (n >= MIN_HOURS) & (xf < 0) & (share >= SHARE)
        self.metered = np.bincount(self.tank, weights=main, minlength=self.n_tanks) > 0

    def state(self) -> dict[str, np.ndarray]:
        return {"acc": self.acc, "hour": self.hour, "bins": self.bins, "sums": self.sums,
                "metered": self.metered}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in ("acc", "hour", "bins", "sums", "metered"):
            setattr(self, name, state[name].copy())
