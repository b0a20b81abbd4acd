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
>>> from anomaly.points import PointInfo, PointTable
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

from anomaly.alarms import Finding
from anomaly.batch import Batch
from anomaly.points import PointTable
from anomaly.precision import Float32Fields
from anomaly.state_part import restored
from anomaly.ticks import Tick

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
    # The usual step and its weight in float32 (anomaly/precision.py); `previous`, a
    # reading, in float64.
    FLOAT32 = frozenset({"step", "weight"})

    def __init__(self, table: PointTable, skip: np.ndarray | None = None, *,
                 interval: float = 60.0, lateness: float = 0.0) -> None:
        self.lo, self.hi = table.lo, table.hi
        if skip is not None:
            self.lo, self.hi = np.where(skip, np.nan, self.lo), np.where(skip, np.nan, self.hi)
        span = limit_span(self.lo, self.hi)
        self.band, self.tolerance = DEADBAND * span, TOLERANCE * span
        self.inside_lo = np.where(np.isnan(self.lo), -np.inf, self.lo)
        self.inside_hi = np.where(np.isnan(self.hi), np.inf, self.hi)
        self.lateness_ns = int(lateness * 1e9)
        n = len(table)
        self.active = np.zeros(n, dtype=bool)
        self.previous = np.full(n, np.nan)  # the last tick's last good reading
        self.step = np.zeros(n)  # EWMA of |step| between ticks' last readings
        self.weight = np.zeros(n)  # the EWMA's total weight: 1 - (1 - alpha)^steps
        # The history holds the points with a limit only: a reading of one without never
        # trips whatever its tolerance (its bounds are infinite), and at a 1 s tick 34 rows of
        # every point's step and weight cost ~14 MB at 50,000 points. `column`: a point's
        # position in the rows, -1 without a limit.
        limited = ~(np.isnan(self.lo) & np.isnan(self.hi))
        self.held: slice | np.ndarray = slice(None) if limited.all() else np.flatnonzero(limited)
        self.column = np.where(limited, np.cumsum(limited) - 1, -1).astype(np.int32)
        # (tick end, step, weight) after each of the last ticks that taught something, oldest
        # first; `_before`: step and weight before the oldest of them
        self.history: deque[tuple[int, np.ndarray, np.ndarray]] = deque(
            maxlen=2 + math.ceil((lateness + HISTORY_S) / interval))
        self._before = (self.step[self.held], self.weight[self.held])

    def update(self, tick: Tick) -> list[Finding]:
        """Learn the noise from a closed tick; the judging is `judge`'s, reading by reading."""
        known = tick.good
        if not known.any():
            return []
        v = tick.last
        with np.errstate(invalid="ignore"):
            # A step of over 5 of the usual (a spike, a switch) teaches it at most 5.
            step = np.minimum(np.abs(v - self.previous),
                              np.where(self.step > 0, 5 * self.step, np.inf))
        learn = known & np.isfinite(step)
        self.previous = np.where(known, v, self.previous)
        if learn.any():
            # New arrays, not updates in place: the history keeps each tick's as they were.
            self.step = np.where(learn, self.step + NOISE_ALPHA * (step - self.step), self.step)
            self.weight = np.where(learn, self.weight + NOISE_ALPHA * (1 - self.weight),
                                   self.weight)
            if len(self.history) == self.history.maxlen:
                _, *oldest = self.history[0]
                self._before = (oldest[0], oldest[1])
            self.history.append((tick.end_ns, self.step[self.held], self.weight[self.held]))
        return []

    def wants(self, point: np.ndarray, value: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Readings that may change a point's condition: beyond a limit by the least
        tolerance, or back inside the band of a point that is (or may become) active."""
        with np.errstate(invalid="ignore"):
            beyond = good & ((value < self.inside_lo[point] - self.tolerance[point])
                             | (value > self.inside_hi[point] + self.tolerance[point]))
            if not beyond.any() and not self.active.any():
                return beyond
            maybe = self.active.copy()
            maybe[point[beyond]] = True
            back = (good & maybe[point] & (value >= self.inside_lo[point] + self.band[point])
                    & (value <= self.inside_hi[point] - self.band[point]))
        return beyond | back

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
        point, value = point[good], value[good]
        tolerance = self._tolerance(ts, point)
        with np.errstate(invalid="ignore"):
            out = ((value < self.inside_lo[point] - tolerance)
                   | (value > self.inside_hi[point] + tolerance))
            back = ((value >= self.inside_lo[point] + self.band[point])
                    & (value <= self.inside_hi[point] - self.band[point]))
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
        limit = np.where(shown < self.inside_lo, self.lo, self.hi)
        return [Finding("limit", "tag", self.active.copy(), known=known, value=shown,
                        limit=limit, message=MESSAGE)]

    def _tolerance(self, ts: int, point: np.ndarray) -> np.ndarray:
        """The tolerance of `point` as of the last tick closed by `ts` less the lateness."""
        watermark = ts - self.lateness_ns
        step, weight = next(((st, w) for end, st, w in reversed(self.history)
                             if end <= watermark), self._before)
        column = self.column[point]
        has = column >= 0
        # Divided by its weight, the EWMA is unbiased from its first steps on.
        known = STEP_TO_SIGMA * step[column[has]] / np.maximum(weight[column[has]], NOISE_ALPHA)
        noise = np.zeros(len(point), dtype=known.dtype)
        noise[has] = known
        return np.maximum(self.tolerance[point], NOISE_SIGMAS * noise)

    def state(self) -> dict[str, np.ndarray]:
        # Fixed shapes whatever the history holds (a saved state is checked against a fresh
        # engine's, anomaly.engine.Engine.load): unused rows carry the end NO_TICK.
        size = self.history.maxlen or 0
        ends = np.full(size, NO_TICK, dtype=np.int64)
        steps = np.zeros((size + 1, len(self.step)), dtype=self.step.dtype)
        weights = np.zeros_like(steps)
        # the points without a limit hold 0 (never read)
        steps[0, self.held], weights[0, self.held] = self._before
        for k, (end, st, w) in enumerate(self.history):
            ends[k], steps[k + 1, self.held], weights[k + 1, self.held] = end, st, w
        return {"active": self.active, "previous": self.previous, "step": self.step,
                "weight": self.weight, "history_end": ends, "history_step": steps,
                "history_weight": weights}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.active = restored(state["active"])
        self.previous = restored(state["previous"])
        self.step = restored(state["step"])
        self.weight = restored(state["weight"])
        self.history.clear()
        steps, weights = state["history_step"], state["history_weight"]
        held = self.step.dtype  # float32, whichever an older state saved
        steps, weights = steps[:, self.held].astype(held), weights[:, self.held].astype(held)
        self._before = (steps[0], weights[0])
        for k, end in enumerate(state["history_end"].tolist(), start=1):
            if end != NO_TICK:
                self.history.append((end, steps[k], weights[k]))
