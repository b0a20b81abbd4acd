"""`leak`: water leaks per zone, from the zone's flow balance against its learned profile.

A zone's net inflow is the sum of its flow meters with a role (inflow +, outflow -), in L/s;
whatever tanks and pumps do, it is the zone's consumption plus its leaks, so a pump trip (which
lowers pressures, not consumption) or a metered tank filling does not move it. A tank inside
the zone whose flow has no meter with a role is not in the balance: its filling shows as
consumption, learned into the profile only if it follows the clock.

The detector learns online (no training step), per zone, on 15-minute bins of source time
(so it works the same for 1-s polls, 1-min ticks or 5-min recordings), judging a bin once it
has `WARM_DAYS` days:
- a time-of-day profile of net inflow, its mean and spread per bin (EWMA of mean and of
  absolute residuals, residuals clipped at 3 spreads so a holiday or an odd day bends it
  little), pooled and split weekday / weekend once a day type has `TYPE_DAYS` days (until
  then that day's residual is taken outside the pooled profile's range within 2.5 hours, by
  day, with a wider spread: a weekend's late morning peak is no leak);
- the minimum night flow (MNF): the mean over the 2-hour window where the profile is lowest
  (found from the profile), against the median and MAD of past nights;
- a CUSUM of the log-likelihood ratio "leak of `LEAK_FRACTION` of the zone's mean inflow" vs
  "no leak" on each bin's residual. Each bin weighs by its learned spread, and bins whose
  spread is above the night's weigh less again, since daytime demand varies with the weather
  for hours at a time; and as a leak runs day and night, daytime bins alone take the CUSUM
  only half way: so a small leak is found at night, as in a utility's MNF analysis;
- a fast test for bursts: bin means above the profile's envelope (the highest profile + 3
  spreads, at least 25 % above it, within 2 hours either side, of either day type; twice the
  margin for a day type not yet learned), for `FAST_BINS` bins in a row;
- pressure residuals (learned the same way per pressure point) as supporting evidence in the
  confidence only: a leak lowers pressures, but so does a pump trip.

While a leak is suspected the zone's profile is frozen; in alarm its night bins stay frozen and
its day bins learn the flow less the estimated leak (so a weekend first seen during a leak is
learned), so the leak is not learned as demand. The alarm's `size_lps` is the spread-weighted
(so night-weighted) mean residual since the CUSUM began rising, then over about the last day;
`confidence` in 0-1 combines the statistical evidence and the pressure support. The condition
ends when a reverse CUSUM (again needing night bins) finds the residual back at zero
(repair); the gate's off-delay follows.

Units of flow: L/s (l/s, lps), L/min (l/min, lpm), m3/s, m3/h, m3/d, ML/d (Ml/d, MLD), gpm
(US), MGD (US), cfs (ft3/s); an empty unit is taken as L/s; a zone with a meter in another unit
is not judged. A tick where any balance meter of a zone has no good reading is skipped for that
zone (a comms fault must not look like a leak). Bins are in UTC; weekday and weekend too.

Tuned on simulator exports with seeds 1, 2 and 3 only (scenarios normal, leak, and own files
with 3-10 % leaks, abrupt and ramped, at several times and days, plus pump trips).

>>> import numpy as np
>>> from anomaly.points import PointInfo, PointTable
>>> from anomaly.ticks import Tick
>>> table = PointTable([PointInfo("z.in", "flow", "L/s", zone="z", role="inflow")])
>>> d = Leak(table)
>>> def tick(k, v):
...     a = np.array([v])
...     return Tick(k * 300 * 10**9, (k + 1) * 300 * 10**9, np.array([1]), a, a, a, a,
...                 np.array([k]), np.array([0]))
>>> def demand(k):  # 10 L/s with a daily cycle, lowest 12:00-24:00 (UTC), 5-min samples
...     return 10.0 + 5.0 * np.sin(2 * np.pi * k / 288) + 0.1 * np.sin(k)
>>> start = 288 * 4 + 144  # a 1.5 L/s leak from the fifth day's 12:00
>>> raised = [k for k in range(288 * 6)
...           if d.update(tick(k, demand(k) + (1.5 if k >= start else 0.0)))[0].active[0]]
>>> raised[0] >= start, (raised[0] - start) * 5 / 60 < 3, round(float(d.size[0]), 1)
(True, True, 1.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from anomaly.alarms import Finding
from anomaly.points import PointTable
from anomaly.ticks import Tick

NS = 10**9
BIN_S = 900  # profile resolution: 15 min
DAY_BINS = 86400 // BIN_S
WARM_DAYS = 3  # days of a bin before it is judged on
TYPE_DAYS = 2  # days of a bin of a day type (weekday, weekend) before that type's profile is used
UNSEEN_TYPE = 1.5  # spread factor meanwhile
ALPHA = 0.1  # per-day EWMA weight of the profile (a memory of ~10 days)
CLIP = 3.0  # residuals beyond CLIP spreads update the profile as if at CLIP spreads
SPREAD_FLOOR = 0.01  # of the zone's mean inflow: meters resolve no better
LEAK_FRACTION = 0.03  # the leak the CUSUM is tuned for, of the zone's mean inflow
H_SLOW = 14.0  # CUSUM threshold (log-likelihood ratio)
LLR_CAP = H_SLOW / 4  # no single bin decides
H_BACK = H_SLOW  # reverse CUSUM threshold: the condition ends (a repair)
# Daytime demand varies with the weather for hours at a time, so its residuals are correlated:
# a bin's variance counts (spread / night's spread) ** DAY_DEFLATE times its own.
DAY_DEFLATE = 0.75
NIGHT_LEVEL = 1.5  # a night bin: its pooled mean below NIGHT_LEVEL x the lowest bin's
UNSEEN_SHIFT = 10  # bins (2.5 h): how early or late an unlearned day type's demand may come
ENVELOPE_Z, ENVELOPE_SHIFT = 3.0, 8  # fast test: spreads above, bins either side (2 h)
# A burst is at least ENVELOPE_REL above the highest demand near the time of day: a few days
# learn the spread poorly, and a hot day lifts the whole day's demand by 10-20 %.
ENVELOPE_REL = 0.25
FAST_BINS = 2  # bins in a row above the envelope: a burst
NIGHT_BINS = 8  # MNF window: 2 h
NIGHTS = 14  # MNF history
MNF_Z = 5.0  # MNF above its baseline by MNF_Z robust spreads and twice the CUSUM's leak: a leak
SIZE_MEMORY = 96  # bins: the size estimate in alarm follows a growing leak over about a day

# Flow units -> L/s (lower case; ML/d is megalitres a day, as utilities write it).
LPS = {"": 1.0, "l/s": 1.0, "lps": 1.0, "l/min": 1 / 60, "lpm": 1 / 60, "m3/s": 1000.0,
       "m3/h": 1 / 3.6, "m3/d": 1 / 86.4, "ml/d": 1e6 / 86400, "mld": 1e6 / 86400,
       "gpm": 3.785411784 / 60, "mgd": 3.785411784e6 / 86400, "cfs": 28.316846592,
       "ft3/s": 28.316846592}


_BIG = np.finfo(float).max


def _nan_to_num(x: np.ndarray, nan: float = 0.0, neginf: float = -_BIG) -> np.ndarray:
    """`np.nan_to_num` of a float array, without its ~30 us of Python per call."""
    return np.where(np.isfinite(x), x, np.where(np.isnan(x), nan, np.where(x > 0, _BIG, neginf)))


def _clip(x: np.ndarray, lo: object, hi: object) -> np.ndarray:
    """`np.clip` (numpy defines it as this), without its Python wrapper."""
    return np.minimum(np.maximum(x, lo), hi)


def flow_factor(unit: str) -> float:
    """L/s per unit of `unit`, NaN when unknown.

    >>> flow_factor("m3/h"), flow_factor("L/s"), flow_factor("furlongs")
    (0.2777777777777778, 1.0, nan)
    """
    text = unit.strip().lower().replace("³", "3").replace(" ", "")
    return LPS.get(text, math.nan)


class _Profile:
    """Time-of-day profiles of S series: mean and spread per (day type, bin, series).

    Day type 0 is pooled, 1 weekday, 2 weekend; a type is used once its bin has WARM_DAYS.
    Series run along the last axis, so a bin's values are one contiguous row and a statistic
    over the day is one vectorised pass over all series, not a short loop per series.
    """

    def __init__(self, n: int) -> None:
        self.mu = np.zeros((3, DAY_BINS, n))
        self.spread = np.full((3, DAY_BINS, n), np.nan)
        self.days = np.zeros((3, DAY_BINS, n), dtype=np.int64)

    def expected(self, b: int, weekend: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, spread, warm) per series at bin b, from the day type when it is learned."""
        t = 2 if weekend else 1
        own = self.days[t, b] >= TYPE_DAYS
        mu = np.where(own, self.mu[t, b], self.mu[0, b])
        warm = self.days[0, b] >= WARM_DAYS
        # A day type not seen yet (the first weekend) may differ from the pooled profile.
        spread = self.smooth_spread(own, t, b) * np.where(own, 1.0, UNSEEN_TYPE)
        return mu, spread, warm

    def night(self, b: int) -> np.ndarray:
        """Per series, whether bin b is a night bin: its pooled mean below NIGHT_LEVEL times
        the lowest bin's."""
        pooled = self.mu[0]
        low = np.min(np.where(self.days[0] > 0, pooled, np.inf), axis=0)
        return pooled[b] < NIGHT_LEVEL * low

    def band(self, b: int, weekend: bool, night: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) expected mean at bin b, per series. Before the day type is learned,
        the range of the pooled profile within UNSEEN_SHIFT bins, as that day's demand may come
        hours apart (a weekend's late morning): demand early or late is no leak. Else the
        profile's own bin: a learned profile is sharp, and its neighbours' noise would hide a
        small leak at night. `night`: `night(b)`, which the caller has at hand."""
        t = 2 if weekend else 1
        typed = self.days[t, b] >= TYPE_DAYS
        sharp = typed | night  # a night hides no leak
        far = self.mu[0].take((b + np.arange(-UNSEEN_SHIFT, UNSEEN_SHIFT + 1)) % DAY_BINS,
                              axis=0)
        mu = np.where(typed, self.mu[t, b], self.mu[0, b])
        return np.where(sharp, mu, far.min(axis=0)), np.where(sharp, mu, far.max(axis=0))

    def smooth_spread(self, own: np.ndarray, t: int, b: int) -> np.ndarray:
        """Spread at bin b pooled over its neighbours (of day type t where `own`, else pooled):
        a few days give a noisy estimate."""
        window = (b + np.arange(-2, 3)) % DAY_BINS
        s = np.where(own, self.spread[t].take(window, axis=0),
                     self.spread[0].take(window, axis=0))
        finite = np.isfinite(s)
        n = np.count_nonzero(finite, axis=0)
        # a sum over the finite ones: spreads are finite or NaN, so this is `nansum`, faster
        total = np.sum(np.where(finite, s * s, 0.0), axis=0)
        return np.where(n > 0, np.sqrt(total / np.maximum(n, 1)), np.nan)

    def update(self, b: int, weekend: bool, x: np.ndarray, learn: np.ndarray) -> None:
        """Fold bin means x into bin b of the pooled and the day type's profile."""
        for t in (0, 2 if weekend else 1):
            n = self.days[t, b]
            mu, s = self.mu[t, b], self.spread[t, b]
            first = learn & (n == 0)
            a = np.maximum(1.0 / (n + 1), ALPHA)
            r = x - mu
            bound = np.where(np.isnan(s), np.inf, CLIP * s)
            rc = _clip(r, -bound, bound)
            rest = learn & ~first
            self.mu[t, b] = np.where(first, x, np.where(rest, mu + a * rc, mu))
            fresh = 1.2533 * np.abs(rc)  # mean absolute deviation -> standard deviation
            new_s = np.where(np.isnan(s), fresh, s + a * (fresh - s))
            self.spread[t, b] = np.where(rest, new_s, s)
            self.days[t, b] = n + learn

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}mu": self.mu, f"{prefix}spread": self.spread,
                f"{prefix}days": self.days}

    def load_state(self, prefix: str, state: Mapping[str, np.ndarray]) -> None:
        self.mu = state[f"{prefix}mu"].copy()
        self.spread = state[f"{prefix}spread"].copy()
        self.days = state[f"{prefix}days"].copy()


class Leak:
    """Zone leaks from the flow balance; see the module docstring."""

    name = "leak"

    def __init__(self, table: PointTable, settings: object | None = None) -> None:
        z = len(table.zones)
        self.n_zones = z
        factor = np.array([flow_factor(u) for u in table.units]) if len(table) else np.zeros(0)
        balance = (table.sign != 0) & (table.zone_of >= 0) & table.of_kind("flow")
        self.bal = np.flatnonzero(balance)
        self.bal_zone = table.zone_of[self.bal]
        self.bal_gain = table.sign[self.bal] * factor[self.bal]
        unknown = np.bincount(self.bal_zone, weights=np.isnan(self.bal_gain), minlength=z)
        inflows = np.bincount(self.bal_zone, weights=table.sign[self.bal] > 0, minlength=z)
        self.judged = (inflows > 0) & (unknown == 0)
        self.bal_gain = np.nan_to_num(self.bal_gain)
        self.pres = np.flatnonzero(table.of_kind("pressure") & (table.zone_of >= 0))
        self.pres_zone = table.zone_of[self.pres]
        self.flow = _Profile(z)
        self._top = np.full((2, DAY_BINS, z), -np.inf)  # see _refresh_tops
        self.pressure = _Profile(len(self.pres))
        self.bin = np.array([-1], dtype=np.int64)  # bin number (since the epoch) accumulating
        self.acc = np.zeros((2, z))  # sum, count of net inflow this bin
        self.pacc = np.zeros((2, len(self.pres)))
        # Per zone: CUSUM, its weight and weighted residual sums since it left 0, fast bins in a
        # row, reverse CUSUM in alarm, alarm, size, confidence, MNF sums, nights, last MNF.
        self.cusum = np.zeros(z)
        self.wsum = np.zeros((2, z))
        self.fast = np.zeros(z, dtype=np.int64)
        self.back = np.zeros(z)
        self.alarm = np.zeros(z, dtype=bool)
        self.size = np.full(z, np.nan)
        self.confidence = np.full(z, np.nan)
        self.pz = np.zeros((2, z))  # pressure z-score sum, count since the CUSUM left 0
        self.night = np.zeros((2, z))  # sum, count of the current MNF window
        self.nights = np.full((z, NIGHTS), np.nan)
        self.mnf = np.full(z, np.nan)  # last night's MNF
        self.alarm_mnf = np.full(z, np.nan)  # a night's MNF measured while in alarm
        self.usual = np.full(z, np.nan)
        self.night_mad = np.full(z, np.inf)
        self.limit = np.full(z, np.nan)
        self._known = np.zeros(z, dtype=bool)
        self._night_lps = np.full(z, np.nan)
        self._finding = self._make_finding()

    # --- per tick ---------------------------------------------------------------------------

    def update(self, tick: Tick) -> list[Finding]:
        b = tick.start_ns // (BIN_S * NS)
        if b != self.bin[0]:
            if self.bin[0] >= 0:
                # NaN stands for "not learned yet" throughout: its warnings are noise.
                with np.errstate(invalid="ignore", divide="ignore"):
                    self._close_bin(int(self.bin[0]))
            self.bin[0] = b
        if len(self.bal):
            v = tick.mean[self.bal]
            good = tick.count[self.bal] > 0
            if good.all():
                ok = self.judged
                net = np.bincount(self.bal_zone, weights=self.bal_gain * v, minlength=self.n_zones)
            else:
                missing = np.bincount(self.bal_zone, weights=~good, minlength=self.n_zones)
                ok = self.judged & (missing == 0)
                net = np.bincount(self.bal_zone, weights=self.bal_gain * np.where(good, v, 0.0),
                                  minlength=self.n_zones)
            # adding 0.0 leaves a sum as it is: cheaper than indexing twice
            self.acc[0] += np.where(ok, net, 0.0)
            self.acc[1] += ok
        if len(self.pres):
            g = tick.count[self.pres] > 0
            self.pacc[0] += np.where(g, tick.mean[self.pres], 0.0)
            self.pacc[1] += g
        return self._finding

    def _make_finding(self) -> list[Finding]:
        """The finding holds until the next bin closes: made once a bin, not once a tick."""
        return [Finding(
            "leak", "zone", self.alarm.copy(), known=self._known.copy(), value=self.size,
            limit=self.limit,
            details={"size_lps": self.size, "confidence": self.confidence,
                     "night_lps": self._night_lps, "usual_lps": self.usual},
            message="{subject}: leak of ~{size_lps} L/s (confidence {confidence}), night flow "
                    "{night_lps} L/s against its usual {usual_lps} L/s")]

    # --- per bin ----------------------------------------------------------------------------

    def _close_bin(self, bin_no: int) -> None:
        b = bin_no % DAY_BINS
        weekend = (bin_no // DAY_BINS + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        total, count = self.acc
        has = count > 0
        x = np.where(has, total / np.maximum(count, 1), np.nan)
        self.acc[:] = 0.0
        zp = self._pressure_bin(b, weekend)

        mu, s, warm = self.flow.expected(b, weekend)
        learned = self.flow.days[0] >= 1
        bins = np.count_nonzero(learned, axis=0)
        mean = np.where(bins > 0, np.sum(self.flow.mu[0] * learned, axis=0) / np.maximum(bins, 1),
                        np.nan)
        s = np.fmax(_nan_to_num(s, nan=0.0), SPREAD_FLOOR * np.abs(mean))
        self._known = self.judged & warm & (s > 0)
        judge = self._known & has
        r = np.where(judge, x - mu, 0.0)
        night = self.flow.night(b)
        lo, hi = self.flow.band(b, weekend, night)
        r_band = np.where(judge, x - _clip(x, lo, hi), 0.0)  # outside the shifted profile
        night_done = self._night_window(b, x, has)

        # Slow CUSUM: leak of size L0 against none, per bin weighted by its effective variance.
        leak0 = np.fmax(LEAK_FRACTION * np.abs(mean), 1e-9)
        self.limit = leak0
        s_night = self._night_spread()
        var = s * s * np.fmax(1.0, s / np.fmax(s_night, 1e-12)) ** DAY_DEFLATE
        llr = np.minimum(leak0 / var * (r_band - leak0 / 2), LLR_CAP)
        weight = 1.0 / var
        llr = np.where(judge, _nan_to_num(llr, nan=0.0, neginf=-LLR_CAP), 0.0)
        restart = judge & (self.cusum == 0.0) & (llr > 0)
        self.wsum[:, restart] = 0.0
        self.pz[:, restart] = 0.0
        # A leak runs day and night: daytime excess alone (an odd day's demand) takes the
        # CUSUM no further than half way, so an alarm needs night bins or the fast test.
        day_cap = np.where(night, np.inf, np.maximum(self.cusum, H_SLOW / 2))
        self.cusum = np.where(judge, _clip(self.cusum + llr, 0.0, day_cap), self.cusum)
        rising = judge & (self.cusum > 0) & ~self.alarm  # in alarm `_judge` keeps the sums
        self.wsum[0] += np.where(rising, weight, 0.0)
        self.wsum[1] += np.where(rising, weight * r_band, 0.0)
        self.pz[0] += np.where(rising & np.isfinite(zp), zp, 0.0)
        self.pz[1] += rising & np.isfinite(zp)

        # Fast test: above the envelope of the profile for FAST_BINS bins in a row.
        env = self._envelope(b, weekend)
        above = judge & (x > env) & (r > leak0)
        self.fast = np.where(judge, np.where(above, self.fast + 1, 0), self.fast)

        self._judge(judge, r_band, var, leak0, night_done, night)
        # Learn demand, not the leak: nothing while a leak is suspected, and in alarm the flow
        # less the leak's estimated size by day, so that days not seen before the leak (a
        # weekend) are learned too and a repair shows as the residual falling back to zero.
        # Night bins, where the leak is measured, stay as they were before it.
        quiet = (self.alarm & ~night) | (~self.alarm & (self.cusum < H_SLOW / 2)
                                         & (self.fast == 0))
        demand = x - np.where(self.alarm, _nan_to_num(self.size), 0.0)
        self.flow.update(b, weekend, demand, has & self.judged & quiet)
        self._refresh_tops(b)
        if len(self.pres):
            px = np.where(self.pacc[1] > 0, self.pacc[0] / np.maximum(self.pacc[1], 1), np.nan)
            self.pressure.update(b, weekend, px, (self.pacc[1] > 0) & quiet[self.pres_zone])
            self.pacc[:] = 0.0
        self._finding = self._make_finding()

    def _judge(self, judge: np.ndarray, r: np.ndarray, var: np.ndarray, leak0: np.ndarray,
               night_done: np.ndarray, night: np.ndarray) -> None:
        """Raise on the CUSUM, the fast test or the MNF; clear on the reverse CUSUM."""
        est = self.wsum[1] / self.wsum[0]
        evidence = self.wsum[1] / np.sqrt(self.wsum[0])  # the estimate in standard errors
        mnf_excess = self.mnf - self.usual
        mnf_hit = night_done & (_nan_to_num(mnf_excess)
                                > np.fmax(2 * leak0, MNF_Z * self.night_mad))
        start = judge & ~self.alarm & ((self.cusum > H_SLOW) | (self.fast >= FAST_BINS)
                                       | mnf_hit)
        fast_size = np.where(self.fast >= FAST_BINS, r, np.nan)
        size = np.fmax(np.fmax(est, fast_size), np.where(mnf_hit, mnf_excess, np.nan))
        size = np.fmax(size, leak0)
        self.size = np.where(start, size, self.size)
        self.back = np.where(start, 0.0, self.back)
        # In alarm the size is a weighted mean of the residuals, starting as if from a few bins
        # at the size found, so that it does not inherit the bins before the leak began.
        start_w = np.where(start, 4.0 / var, 0.0)
        self.wsum = np.where(start, np.array([start_w, start_w * size]), self.wsum)
        self.alarm_mnf = np.where(start, np.nan, self.alarm_mnf)
        self.alarm |= start
        on = judge & self.alarm & ~start
        # In alarm: the size follows the weighted residual (a ramp grows); the reverse CUSUM
        # (no leak against a leak of the current size) ends the condition.
        keep = 1.0 - 1.0 / SIZE_MEMORY
        w0 = np.where(on, self.wsum[0] * keep + 1.0 / var, self.wsum[0])
        w1 = np.where(on, self.wsum[1] * keep + r / var, self.wsum[1])
        self.wsum = np.array([w0, w1])
        est_on = np.fmax(w1 / w0, leak0)
        self.size = np.where(on, np.fmax(est_on, leak0), self.size)
        llr_back = np.minimum(self.size / var * (self.size / 2 - r), LLR_CAP)
        # As a leak, a repair shows at night: daytime alone takes the reverse CUSUM half way.
        back_cap = np.where(night, np.inf, np.maximum(self.back, H_BACK / 2))
        self.back = np.where(on, _clip(self.back + _nan_to_num(llr_back), 0.0, back_cap),
                             self.back)
        end = on & (self.back > H_BACK)
        self.alarm &= ~end
        self.cusum[end] = 0.0
        self.fast[end] = 0
        self.wsum[:, end] = 0.0
        # Confidence: the evidence in standard errors, less without a pressure drop.
        zp = self.pz[0] / self.pz[1]
        stat = 1.0 - np.exp(-np.fmax(_nan_to_num(evidence), 0.0) / 4.0)
        fast = np.where(self.fast >= FAST_BINS, 0.95, 0.0)
        support = _clip(0.9 - 0.1 * _nan_to_num(zp), 0.7, 1.0)
        conf = np.fmax(stat, fast) * support
        self.confidence = np.where(start | on, np.fmax(conf, 0.5), np.nan)
        self._night_lps = np.where(np.isfinite(self.alarm_mnf), self.alarm_mnf,
                                   self.usual + self.size)

    def _pressure_bin(self, b: int, weekend: bool) -> np.ndarray:
        """Mean pressure z-score per zone at this bin (NaN where none)."""
        z = np.full(self.n_zones, np.nan)
        if not len(self.pres):
            return z
        px = np.where(self.pacc[1] > 0, self.pacc[0] / np.maximum(self.pacc[1], 1), np.nan)
        mu, s, warm = self.pressure.expected(b, weekend)
        zs = (px - mu) / np.fmax(s, 0.01 * np.abs(mu))
        ok = warm & np.isfinite(zs)
        n = np.bincount(self.pres_zone, weights=ok, minlength=self.n_zones)
        tot = np.bincount(self.pres_zone, weights=np.where(ok, zs, 0.0), minlength=self.n_zones)
        return np.where(n > 0, tot / np.maximum(n, 1), z)

    def _envelope(self, b: int, weekend: bool) -> np.ndarray:
        """Highest profile + ENVELOPE_Z spreads (at least ENVELOPE_REL above) within
        ENVELOPE_SHIFT bins, of any day type; twice the margin before this day type is learned,
        as its peaks may come at other times and be higher."""
        window = (b + np.arange(-ENVELOPE_SHIFT, ENVELOPE_SHIFT + 1)) % DAY_BINS
        unseen = self.flow.days[2 if weekend else 1, b] < TYPE_DAYS
        top = self._top.take(window, axis=1).max(axis=1)
        return np.where(unseen, top[1], top[0])

    def _refresh_tops(self, bins: int | slice = slice(None)) -> None:
        """`_top` at `bins` from the flow profile: per margin (1, 2), the highest of the day
        types' profile + margin x ENVELOPE_Z spreads (at least margin x ENVELOPE_REL above);
        it changes only where the profile learns, so `_envelope` need not rebuild it."""
        p = self.flow
        mu, spread, learned = p.mu[:, bins], p.spread[:, bins], p.days[:, bins] >= 1
        for k, margin in enumerate((1.0, 2.0)):
            top = np.fmax(mu + margin * ENVELOPE_Z * spread, mu * (1 + margin * ENVELOPE_REL))
            self._top[k, bins] = np.max(np.where(learned, top, -np.inf), axis=0)

    def _night_spread(self) -> np.ndarray:
        """Per zone, the 10th percentile of the bins' spreads: the quiet night's."""
        spread = self.flow.spread[0]
        s = np.where(np.isnan(spread), np.inf, spread)
        n = np.count_nonzero(np.isfinite(s), axis=0)
        if len(n) and (n == n[0]).all():  # zones learned alike (the rule): no need to sort
            s = np.partition(s, n[0] // 10, axis=0)
        else:
            s = np.sort(s, axis=0)
        return np.where(n > 0, s[n // 10, np.arange(len(n))], np.nan)

    def _night_window(self, b: int, x: np.ndarray, has: np.ndarray) -> np.ndarray:
        """MNF: sum the bins of the lowest-demand window; at its end keep the night (unless a
        leak is suspected). The zones whose night ended on this bin."""
        days = self.flow.days[0]
        pooled = np.where(days >= 1, self.flow.mu[0], 1e12)  # never a night
        csum = np.cumsum(np.concatenate([np.zeros((1, self.n_zones)), pooled,
                                         pooled[:NIGHT_BINS]]), axis=0)
        window = csum[NIGHT_BINS:NIGHT_BINS + DAY_BINS] - csum[:DAY_BINS]
        first = np.argmin(window, axis=0)  # first bin of each zone's night window
        inside = ((b - first) % DAY_BINS < NIGHT_BINS) & (days.min(axis=0) >= 1)
        last = (b - first) % DAY_BINS == NIGHT_BINS - 1
        self.night[0] += np.where(inside & has, _nan_to_num(x), 0.0)
        self.night[1] += inside & has
        done = last & (self.night[1] >= NIGHT_BINS // 2)
        mnf = self.night[0] / self.night[1]
        self.mnf = np.where(done, mnf, np.where(last, np.nan, self.mnf))
        self.alarm_mnf = np.where(done & self.alarm, mnf, self.alarm_mnf)
        keep = done & ~self.alarm & (self.cusum < H_SLOW / 2)
        if keep.any():
            self.nights[keep] = np.roll(self.nights[keep], 1, axis=1)
            self.nights[keep, 0] = mnf[keep]
            # Median and MAD of the past nights (once a night: nanmedian is slow).
            n = np.sum(np.isfinite(self.nights), axis=1)
            filled = np.where(n[:, None] > 0, self.nights, 0.0)
            median = np.nanmedian(filled, axis=1)
            mad = 1.4826 * np.nanmedian(np.abs(filled - median[:, None]), axis=1)
            self.usual = np.where(n > 0, median, np.nan)
            self.night_mad = np.where(n >= WARM_DAYS, mad, np.inf)
        self.night[:, last] = 0.0
        return done

    # --- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        return {**self.flow.state("flow/"), **self.pressure.state("pressure/"),
                "bin": self.bin, "acc": self.acc, "pacc": self.pacc, "cusum": self.cusum,
                "wsum": self.wsum, "fast": self.fast, "back": self.back, "alarm": self.alarm,
                "size": self.size, "confidence": self.confidence, "pz": self.pz,
                "night": self.night, "nights": self.nights, "mnf": self.mnf,
                "alarm_mnf": self.alarm_mnf, "usual": self.usual, "night_mad": self.night_mad,
                "limit": self.limit,
                "known": self._known, "night_lps": self._night_lps}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.flow.load_state("flow/", state)
        self._refresh_tops()
        self.pressure.load_state("pressure/", state)
        for name in ("bin", "acc", "pacc", "cusum", "wsum", "fast", "back", "alarm", "size",
                     "confidence", "pz", "night", "nights", "mnf", "alarm_mnf", "usual",
                     "night_mad", "limit"):
            setattr(self, name, state[name].copy())
        self._known = state["known"].copy()
        self._night_lps = state["night_lps"].copy()
        self._finding = self._make_finding()
