"""The learned tanks' part of a zone's time-of-day profile: the zone's consumption profile is
known the moment its tanks enter its balance.

Until a zone's tanks with learned areas enter its balance (anomaly/water/storage.py), the leak
detector's profile learns the zone's net inflow, the tanks' filling in it. Learning the
consumption anew when they enter waited `leak.WARM_DAYS` more days, and a leak that began
meanwhile was learned as demand (ky4, tuning: tanks entering on days 2.7-3.8 and leaks from
day 3.5 missed, 12.99 % among them). Both things the slow test needs are of the series'
residuals: a profile's mean is linear in the series (an EWMA), an hour's variance quadratic.
So beside the net inflow's profile this learns each learned tank's level rate per bin, on the
same bins with the same weights (the series' own, as far as it clipped an odd residual: a
pump running on a night it seldom does), and per day type and hour of day the faded second
moments M
of the hour's mean residuals of [the profile's series, each tank's level rate]; when the tanks
enter with areas A, the consumption's profile is the series' less A times the tanks' level
rate profiles, and its hour's variance v'Mv, v = (1, -A), plus what the areas' standard
errors add.

The same holds whenever the areas in the balance move (each pump step refits them): the
profile learned with the old areas is taken to the new ones (less (A_new - A_old) times the
tanks' profiles), and the hours' variance recomputed, so that what was learned stays the
consumption's (ky4, tuning: a profile that kept the areas of its days, 168-320 m2 for a
358 m2 tank, had night hours' spreads of 3-27 L/s against 1-2 with the areas given). The
moments are of the net inflow (the series plus the storage it took out), so they hold for
any areas.

The minimum night flow's past nights, and tonight's bins so far, are kept by the leak
detector as consumption at the areas in the balance then; they follow the areas too: this
keeps each learned tank's level rate on the night window's bins and its mean over each night
the detector keeps, and takes them to the new areas with the profile (ky4, tuning: nights
kept with T-4 at 472 m2 judged tonight's at 263, a false leak of 10 L/s on clean seed 52).
Tuned on nothing: it follows from the profile's arithmetic. Checked on wntr's Net1 and ky4
(tuning, seeds 1-20, areas learned); ky10, Anytown and Net6 only evaluated it.

>>> import numpy as np
>>> from anomaly.core.points import PointInfo, PointTable
>>> from anomaly.water.storage import Storage
>>> s = Storage(PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow"),
...                         PointInfo("z.tank.level", "level", "m", zone="z")]))
>>> p = TankProfile(s, day_bins=4, hour_bins=2, alpha=0.1)
>>> on = np.array([True])
>>> for k in range(40):  # the tank fills at 0.05 (x 1000 m/s) in bins 0-1, drains in 2-3
...     s.x[:] = 0.05 if k % 4 < 2 else -0.05
...     p.bin(k, False, np.ones((2, 1)), on, on, np.array([1.0]))
>>> mu = np.array([[[25.0]] * 2 + [[5.0]] * 2] * 3)  # 15 L/s of demand, +- 200 m2 x 0.05
>>> p.follow(np.array([200.0]), np.array([5.0]), mu, np.full((3, 2, 1), np.nan)).tolist()
[0]
>>> mu[0, :, 0].tolist()
[15.0, 15.0, 15.0, 15.0]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly.tables.state_part import restored
from anomaly.water.storage import Storage


class TankProfile:
    """Per learned tank, its level rate's profile and the hours' residual moments; see the
    module docstring."""

    def __init__(self, storage: Storage, day_bins: int, hour_bins: int, alpha: float,
                 night_bins: int = 1, nights: int = 1) -> None:
        # `alpha`: the floor of the hours' EWMA weight, as the leak detector's; `night_bins`
        # and `nights`: its MNF window's bins and the nights it keeps per day type
        self.storage = storage
        self.hour_bins, self.alpha = hour_bins, alpha
        n = len(storage.points)
        self.mu = np.zeros((3, day_bins, n))  # level rate per (day type, bin, tank)
        self.applied = np.zeros(n)  # the area the series' profile holds each tank's storage at
        rows, width = storage.members.shape
        hours = day_bins // hour_bins
        self.moments = np.zeros((3, hours, rows, width + 1, width + 1))
        self.hours = np.zeros((3, hours, rows))
        self.hacc = np.zeros((2, n))  # the hour's residual sum, bins, per tank
        self.hour_no = np.array([-1], dtype=np.int64)
        self.night = np.full((night_bins, n), np.nan)  # level rate on the MNF window's bins
        self.nights = np.full((n, 2, nights), np.nan)  # ... its mean over the nights kept

    def bin(self, bin_no: int, weekend: bool, step: np.ndarray, learnable: np.ndarray,
            own: np.ndarray, scale: np.ndarray) -> None:
        """A bin closed: per zone, `step` (pooled, day type's) the weight the series' profile
        took this bin with (what its mean moved, of the residual: its EWMA's weight, less
        where it clipped an odd residual, 0 where it did not learn), `learnable` where its
        residual teaches the hour's variance, `own` where the residual is taken against the
        day type's profile (else the pooled one) and `scale` the residual's factor, all as
        the leak detector takes its series."""
        b = bin_no % self.mu.shape[1]
        t_own = 2 if weekend else 1
        x = self.storage.x
        zone = self.storage.zone
        ok = np.isfinite(x)
        h = bin_no // self.hour_bins
        if h != self.hour_no[0]:
            self.hacc[:] = 0.0
            self.hour_no[0] = h
        mean = np.where(own[zone], self.mu[t_own, b], self.mu[0, b])
        teach = learnable[zone] & ok
        self.hacc[0] += np.where(teach, (x - mean) * scale[zone], 0.0)
        self.hacc[1] += teach
        for t, weight in zip((0, t_own), step, strict=True):
            w = np.where(ok, weight[zone], 0.0)
            self.mu[t, b] += w * np.where(ok, x - self.mu[t, b], 0.0)

    def hour(self, of_day: int, weekend: bool, quiet: np.ndarray, typed: np.ndarray,
             residual: np.ndarray) -> None:
        """An hour ended: per zone, the series' mean residual (`residual`), learned into the
        pooled moments where `quiet` and the day type's where `typed` too, as the leak
        detector learns the hour's variance."""
        rows = self.storage.zones_learning
        members = self.storage.members
        bins = self.hacc[1]
        rx = np.where(bins > 0, self.hacc[0] / np.maximum(bins, 1), np.nan)
        inside = members >= 0
        tanks = np.where(inside, rx[members], 0.0)
        # the net inflow's residual: the series' plus the storage it took out
        net = residual[rows] + np.sum(np.where(inside, self.applied[members], 0.0) * tanks,
                                      axis=1)
        vec = np.concatenate([net[:, None], tanks], axis=1)
        outer = vec[:, :, None] * vec[:, None, :]
        finite = np.isfinite(outer).all(axis=(1, 2))
        for t in (0, 2 if weekend else 1):
            learns = quiet[rows] & finite & (typed[rows] if t else True)
            a = np.maximum(1.0 / (self.hours[t, of_day] + 1), self.alpha)[:, None, None]
            m = self.moments[t, of_day]
            self.moments[t, of_day] = np.where(learns[:, None, None],
                                               m + a * (np.nan_to_num(outer) - m), m)
            self.hours[t, of_day] += learns
        self.hacc[:] = 0.0

    def night_bin(self, at: np.ndarray, zones: np.ndarray) -> None:
        """The leak detector kept bin `at` (per zone) of the MNF window for `zones`."""
        k = np.flatnonzero(np.isin(self.storage.zone, zones))
        self.night[at[self.storage.zone[k]], k] = self.storage.x[k]

    def keep_night(self, keep: np.ndarray, t: int, seen: np.ndarray) -> None:
        """The leak detector kept the night just ended among day type t's (0 weekday, 1
        weekend) where `keep` (per zone), its mean over the window's bins `seen` (bin, zone)."""
        k = np.flatnonzero(keep[self.storage.zone])
        if not len(k):
            return
        z = self.storage.zone[k]
        bins = seen[:, z]
        mean = np.where(bins, np.nan_to_num(self.night[:, k]), 0.0).sum(axis=0) / np.maximum(
            bins.sum(axis=0), 1)
        self.nights[k, t] = np.roll(self.nights[k, t], 1, axis=1)
        self.nights[k, t, 0] = mean

    def follow(self, areas: np.ndarray, se: np.ndarray, mu: np.ndarray,
               hour_var: np.ndarray, night: np.ndarray | None = None,
               nights: np.ndarray | None = None) -> np.ndarray:
        """Take the series' profile `mu` (day type, bin, zone) and its hours' variance
        `hour_var` (day type, hour, zone), and the MNF's window bins `night` (bin, zone) and
        kept `nights` (zone, day type, night), to the tanks' `areas` in the balance (per
        tank, m3 per unit of level, 0 where out; `se` their standard errors), in place, where
        they moved; the zones moved."""
        moved = areas != self.applied
        rows = self.storage.zones_learning
        members = self.storage.members
        changed = np.logical_or.reduce((members >= 0) & moved[members], axis=1)
        for r in np.flatnonzero(changed).tolist():
            z = int(rows[r])
            k = members[r][members[r] >= 0]
            moved_by = areas[k] - self.applied[k]
            mu[..., z] -= np.sum(moved_by * self.mu[..., k], axis=-1)
            if night is not None and nights is not None:
                night[:, z] -= np.nan_to_num(self.night[:, k]) @ moved_by
                nights[z] -= np.nan_to_num(self.nights[k]).transpose(1, 2, 0) @ moved_by
            v = np.concatenate([[1.0], -areas[k], np.zeros(members.shape[1] - len(k))])
            m = self.moments[:, :, r]
            # and what the areas' own error adds: sum se_k^2 E[r_xk^2] (the fit's
            # correlations left out): an hour whose tanks filled as they seldom do is no
            # leak for the share of a tank's area the steps left unknown
            err = np.where(np.isfinite(se[k]) & (areas[k] > 0), se[k], 0.0) ** 2
            own = np.diagonal(m, axis1=2, axis2=3)[..., 1:len(k) + 1]
            var = np.einsum("i,thij,j->th", v, m, v) + own @ err
            hour_var[..., z] = np.where(self.hours[:, :, r] > 0, var, hour_var[..., z])
        self.applied = areas.copy()
        return rows[changed]

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _STATE}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in _STATE:
            setattr(self, name, restored(state[name]))


_STATE = ("mu", "applied", "moments", "hours", "hacc", "hour_no", "night", "nights")
