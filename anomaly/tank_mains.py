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

So per (tank, balance meter of the tank's zone) this learns, over the bins where both are
known, the share of the meter's squared flow that a line through the origin
on the tank's level rate explains (the uncentred R2); the tank's main is metered once that is
at least `SHARE` with a negative slope over `MIN_BINS` bins. It only ever reads
the balance meters and levels the leak detector reads; it knows nothing of the levels' units
(R2 and the slope's sign do not depend on them).

Set from the physics, not fitted: the water simulator's tank 2 (tuning seeds 1-3) meets it with
R2 above 0.99; no tank of wntr's Net1 and ky4 (tuning) has a meter of its own, and none of
ky10, Anytown and Net6 (held out, only evaluated).

>>> import numpy as np
>>> from anomaly.points import PointInfo, PointTable
>>> t = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
...                 PointInfo("z.tank.flow", "flow", "L/s", zone="z", role="inflow"),
...                 PointInfo("z.tank.level", "level", "m", zone="z")])
>>> mains = TankMains(t, np.array([0, 1]), np.array([1.0, 1.0]))
>>> rng = np.random.default_rng(1)
>>> for b in range(200):  # a 300 m2 tank draining by day, filling by night, on its own meter
...     rate = 0.2 * np.sin(2 * np.pi * b / 96)  # L/s per m2 ... m/s x 1000 of level
...     mains.add(np.array([20.0 + 5 * np.sin(2 * np.pi * b / 96), -300 * rate]),
...               np.array([True, True]))
...     mains.close(np.array([rate + rng.normal(0, 0.002)]))
>>> mains.metered.tolist()
[True]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly.points import PointTable

SHARE = 0.9  # of the meter's squared flow a line through the origin on the level rate explains
MIN_BINS = 96  # bins known (a day of 15-minute bins)


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
        self.sums = np.zeros((4, len(pairs)))  # bins, x^2, f^2, x f per pair
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
        self.sums += np.where(ok, np.array([np.ones_like(x), x * x, f * f, x * f]), 0.0)
        n, xx, ff, xf = self.sums
        with np.errstate(invalid="ignore", divide="ignore"):
            share = xf * xf / (xx * ff)
        main = (n >= MIN_BINS) & (xf < 0) & (share >= SHARE)
        self.metered = np.bincount(self.tank, weights=main, minlength=self.n_tanks) > 0

    def state(self) -> dict[str, np.ndarray]:
        return {"acc": self.acc, "sums": self.sums, "metered": self.metered}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in ("acc", "sums", "metered"):
            setattr(self, name, state[name].copy())
