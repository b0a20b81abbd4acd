"""`limit`: a reading outside its point's lo/hi limits, with a deadband to leave the condition.

The limits are the instrument's range or the process's hard limits; a reading a hair outside
(a flow meter showing -0.2 L/s with the pump off, a transmitter's zero offset, noise around a
stopped pump's 0 A) is within its accuracy, so the value must pass a limit by TOLERANCE of the
span, or by NOISE_SIGMAS of the tag's own learned noise if that is more, to trip.

What the gateway knows for certain is alarmed from the reading itself, not from a tick: each
reading is judged as it comes (`judge`, one row of readings of one time at a time), so a value
beyond its limit raises within a poll. The noise is learned from the ticks (the step between
consecutive ticks' last readings, so one reading's noise), and a reading is judged on the noise
of the last tick that had closed by its time less the engine's lateness: the same tick live and
in a replay, whatever the batches, and never a tick the reading itself is part of (the step
that crosses a limit must not widen its own tolerance).

>>> import numpy as np
>>> from anomaly.core.points import PointInfo, PointTable
>>> d = Limits(PointTable([PointInfo("p", lo=0.0, hi=10.0)]))
>>> def judge(v):
...     d.judge(0, np.array([0]), np.array([v]), np.array([True]))
...     return bool(d.active[0])
>>> [judge(v) for v in (5.0, 5.1, 10.05, 10.5, 9.95, 9.5)]
[False, False, False, True, True, False]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import numpy as np

from anomaly.core.alarms import Finding
from anomaly.core.batch import Batch
from anomaly.core.points import PointTable
from anomaly.core.ticks import Tick
from anomaly.tables.precision import Float32Fields
from anomaly.tables.state_part import restored

DEADBAND = 0.02  # of the lo-hi span: how far back inside a value must come to leave
TOLERANCE = 0.01  # of the lo-hi span, a class-1 transducer's accuracy: how far outside to trip
NOISE_SIGMAS = 4.0  # ... or this many of the tag's noise standard deviations
NOISE_ALPHA = 0.02  # EWMA weight of each new step in the noise estimate
# Mean |step| of Gaussian noise of deviation s is s * 2 / sqrt(pi): steps -> deviation.
STEP_TO_SIGMA = np.sqrt(np.pi) / 2
# Tolerances kept per closed tick: a live reading may be judged after later ticks closed (by
# the clock, by other devices); it needs the one of its own watermark. Covers this many
# seconds of processing delay beyond the lateness.
HISTORY_S = 30.0
MESSAGE = "{subject} at {value} {unit}, outside its limit {limit}"


NO_TICK = np.iinfo(np.int64).min  # an unused row of the saved history


def limit_span(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per point, the span its accuracy and deadband are shares of: hi - lo; a one-sided
    limit's own magnitude; 0 without limits."""
    with np.errstate(invalid="ignore"):
        span = hi - lo
    one_sided = np.abs(np.where(np.isnan(hi), lo, hi))
    return np.where(np.isnan(span), np.nan_to_num(one_sided), span)


class Limits(Float32Fields):
    """Readings against each point's limits; points without limits never trip, nor do those
    `skip` marks (another detector judges them against the same limits)."""

    name = "limits"
    # The usual step and its weight in float32 (anomaly/tables/precision.py); `previous`, a
    # reading, in float64.
    FLOAT32 = frozenset({"step", "weight"})

    def __init__(self, table: PointTable, skip: np.ndarray | None = None, *,
                 interval: float = 60.0, lateness: float = 0.0) -> None:
        lo, hi = table.lo, table.hi
        if skip is not None:
            lo, hi = np.where(skip, np.nan, lo), np.where(skip, np.nan, hi)
        # Only the points with a limit are held (a column each, in point order): a reading of
        # one without never trips, whatever its noise (at 50,000 points without limits nine
        # vectors, 3.2 MB).
        limited = ~(np.isnan(lo) & np.isnan(hi))
        self.held = np.flatnonzero(limited)
        self.column = np.where(limited, np.cumsum(limited) - 1, -1).astype(np.int32)
        self.lo, self.hi = lo[self.held], hi[self.held]
        span = limit_span(self.lo, self.hi)
        self.band, self.tolerance = DEADBAND * span, TOLERANCE * span
        self.inside_lo = np.where(np.isnan(self.lo), -np.inf, self.lo)
        self.inside_hi = np.where(np.isnan(self.hi), np.inf, self.hi)
        self.lateness_ns = int(lateness * 1e9)
        m = len(self.held)
        self.active = np.zeros(len(table), dtype=bool)
        # Every point that has had a good reading: a tick's step counts (and the tolerances
        # are kept for it) once any point has two, as when every point's noise was learned.
        self.seen = np.zeros(len(table), dtype=bool)
        self.previous = np.full(m, np.nan)  # the last tick's last good reading
        self.step = np.zeros(m)  # EWMA of |step| between ticks' last readings
        self.weight = np.zeros(m)  # the EWMA's total weight: 1 - (1 - alpha)^steps
        self.history: deque[tuple[int, np.ndarray, np.ndarray]] = deque(
            maxlen=2 + math.ceil((lateness + HISTORY_S) / interval))
        self._before = (self.step, self.weight)

    def update(self, tick: Tick) -> list[Finding]:
        """Learn the noise from a closed tick; the judging is `judge`'s, reading by reading."""
        known = tick.good
        if not known.any():
            return []
        finite = np.isfinite(tick.last)
        stepped = bool((known & finite & self.seen).any())
        self.seen = np.where(known, finite, self.seen)
        if not stepped:
            return []
        known, v = known[self.held], tick.last[self.held]
        with np.errstate(invalid="ignore"):
            # A step of over 5 of the usual (a spike, a switch) teaches it at most 5.
            step = np.minimum(np.abs(v - self.previous),
                              np.where(self.step > 0, 5 * self.step, np.inf))
        learn = known & np.isfinite(step)
        self.previous = np.where(known, v, self.previous)
        # New arrays, not updates in place: the history keeps each tick's as they were.
        self.step = np.where(learn, self.step + NOISE_ALPHA * (step - self.step), self.step)
        self.weight = np.where(learn, self.weight + NOISE_ALPHA * (1 - self.weight),
                               self.weight)
        if len(self.history) == self.history.maxlen:
            _, *oldest = self.history[0]
            self._before = (oldest[0], oldest[1])
        self.history.append((tick.end_ns, self.step, self.weight))
        return []

    def wants(self, point: np.ndarray, value: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Readings that may change a point's condition: beyond a limit by the least
        tolerance, or back inside the band of a point that is (or may become) active."""
        out = np.zeros(len(point), dtype=bool)
        if not len(self.held):
            return out
        column = self.column[point]
        at = np.flatnonzero(good & (column >= 0))
        column, value = column[at], value[at]
        with np.errstate(invalid="ignore"):
            beyond = ((value < self.inside_lo[column] - self.tolerance[column])
                      | (value > self.inside_hi[column] + self.tolerance[column]))
            out[at] = beyond
            if not beyond.any() and not self.active.any():
                return out
            maybe = self.active.copy()
            maybe[point[at][beyond]] = True
            out[at] |= (maybe[point[at]] & (value >= self.inside_lo[column] + self.band[column])
                        & (value <= self.inside_hi[column] - self.band[column]))
        return out

    def restamp(self, batch: Batch) -> Batch:
        return batch  # a value is judged at its own time

    def observe(self, ts: np.ndarray, point: np.ndarray, good: np.ndarray) -> None:
        """Readings that cannot change a condition teach nothing here (the ticks do)."""

    def next_due(self) -> None:
        return None  # a limit begins with a reading, never by time alone

    def fire(self, at: int) -> list[Finding]:
        return []

    def judge(self, ts: int, point: np.ndarray, value: np.ndarray,
              good: np.ndarray) -> list[Finding]:
        """The readings of one time `ts` (at most one per point; bad ones say nothing of the
        value): the points whose condition they change, as a finding on those points only."""
        column = self.column[point]
        mine = good & (column >= 0)  # a point without limits never trips
        point, value, column = point[mine], value[mine], column[mine]
        tolerance = self._tolerance(ts, column)
        with np.errstate(invalid="ignore"):
            out = ((value < self.inside_lo[column] - tolerance)
                   | (value > self.inside_hi[column] + tolerance))
            back = ((value >= self.inside_lo[column] + self.band[column])
                    & (value <= self.inside_hi[column] - self.band[column]))
        was = self.active[point]
        flip = (~was & out) | (was & back)
        if not flip.any():
            return []
        changed = point[flip]
        self.active[changed] = ~was[flip]
        known = np.zeros(len(self.active), dtype=bool)
        known[changed] = True
        shown = np.full(len(self.active), np.nan)
        shown[changed] = value[flip]
        limit = np.full(len(self.active), np.nan)
        limit[self.held] = np.where(shown[self.held] < self.inside_lo, self.lo, self.hi)
        return [Finding("limit", "tag", self.active.copy(), known=known, value=shown,
                        limit=limit, message=MESSAGE)]

    def _tolerance(self, ts: int, column: np.ndarray) -> np.ndarray:
        """The tolerance of the points of `column` as of the last tick closed by `ts` less
        the lateness."""
        watermark = ts - self.lateness_ns
        step, weight = next(((st, w) for end, st, w in reversed(self.history)
                             if end <= watermark), self._before)
        noise = STEP_TO_SIGMA * step[column] / np.maximum(weight[column], NOISE_ALPHA)
        return np.maximum(self.tolerance[column], NOISE_SIGMAS * noise)

    def state(self) -> dict[str, np.ndarray]:
        """Per point (a point without limits: NaN, 0), so that a kept point's state follows it
        when the site changes (gateway.engine_carry)."""
        n, size = len(self.active), self.history.maxlen or 0
        ends = np.full(size, NO_TICK, dtype=np.int64)
        steps = np.zeros((size + 1, n), dtype=self.step.dtype)
        weights = np.zeros_like(steps)
        steps[0, self.held], weights[0, self.held] = self._before
        for k, (end, st, w) in enumerate(self.history):
            ends[k], steps[k + 1, self.held], weights[k + 1, self.held] = end, st, w
        previous = np.full(n, np.nan)
        step, weight = np.zeros(n, dtype=self.step.dtype), np.zeros(n, dtype=self.step.dtype)
        previous[self.held], step[self.held], weight[self.held] = (self.previous, self.step,
                                                                   self.weight)
        return {"active": self.active, "seen": self.seen, "previous": previous, "step": step,
                "weight": weight, "history_end": ends, "history_step": steps,
                "history_weight": weights}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.active = restored(state["active"])
        self.seen = restored(state["seen"])
        self.previous = state["previous"][self.held].astype(np.float64)
        held = self.step.dtype  # float32, whichever an older state saved
        self.step = state["step"][self.held].astype(held)
        self.weight = state["weight"][self.held].astype(held)
        self.history.clear()
        steps, weights = state["history_step"], state["history_weight"]
        steps, weights = steps[:, self.held].astype(held), weights[:, self.held].astype(held)
        self._before = (steps[0], weights[0])
        for k, end in enumerate(state["history_end"].tolist(), start=1):
            if end != NO_TICK:
                self.history.append((end, steps[k], weights[k]))
