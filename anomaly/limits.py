"""`limit`: a point's value outside its lo/hi limits, with a deadband to leave the condition.

The limits are the instrument's range or the process's hard limits; a reading a hair outside
(a flow meter showing -0.2 L/s with the pump off, a transmitter's zero offset, noise around a
stopped pump's 0 A) is within its accuracy, so the value must pass a limit by TOLERANCE of the
span, or by NOISE_SIGMAS of the tag's own learned noise if that is more, to trip.

>>> import numpy as np
>>> from anomaly.points import PointInfo, PointTable
>>> from anomaly.ticks import Tick
>>> d = Limits(PointTable([PointInfo("p", lo=0.0, hi=10.0)]))
>>> def tick(v):
...     a = np.array([v])
...     return Tick(0, 1, np.array([1]), a, a, a, a, np.array([0]), np.array([0]))
>>> [bool(d.update(tick(v))[0].active[0]) for v in (5.0, 5.1, 5.0, 10.5, 9.95, 9.5)]
[False, False, False, True, True, False]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly.alarms import Finding
from anomaly.points import PointTable
from anomaly.ticks import Tick

DEADBAND = 0.02  # of the lo-hi span: how far back inside a value must come to leave
TOLERANCE = 0.01  # of the lo-hi span, a class-1 transducer's accuracy: how far outside to trip
NOISE_SIGMAS = 4.0  # ... or this many of the tag's noise standard deviations
NOISE_ALPHA = 0.02  # EWMA weight of each new step in the noise estimate
# Mean |step| of Gaussian noise of deviation s is s * 2 / sqrt(pi): steps -> deviation.
STEP_TO_SIGMA = np.sqrt(np.pi) / 2


class Limits:
    """Tick means against each point's limits; points without limits never trip, nor do
    those `skip` marks (another detector judges them against the same limits)."""

    name = "limits"

    def __init__(self, table: PointTable, skip: np.ndarray | None = None) -> None:
        self.lo, self.hi = table.lo, table.hi
        if skip is not None:
            self.lo, self.hi = np.where(skip, np.nan, self.lo), np.where(skip, np.nan, self.hi)
        with np.errstate(invalid="ignore"):
            span = self.hi - self.lo
        # A one-sided limit gets its span from its own magnitude.
        one_sided = np.abs(np.where(np.isnan(self.hi), self.lo, self.hi))
        span = np.where(np.isnan(span), np.nan_to_num(one_sided), span)
        self.band, self.tolerance = DEADBAND * span, TOLERANCE * span
        self.inside_lo = np.where(np.isnan(self.lo), -np.inf, self.lo)
        self.inside_hi = np.where(np.isnan(self.hi), np.inf, self.hi)
        self.active = np.zeros(len(table), dtype=bool)
        self.previous = np.full(len(table), np.nan)  # last tick mean with data
        self.step = np.zeros(len(table))  # EWMA of |step| between tick means
        self.weight = np.zeros(len(table))  # the EWMA's total weight: 1 - (1 - alpha)^steps

    def update(self, tick: Tick) -> list[Finding]:
        v = tick.mean
        known = tick.good
        with np.errstate(invalid="ignore"):
            # A step of over 5 of the usual (a spike, a switch) teaches it at most 5.
            step = np.minimum(np.abs(v - self.previous),
                              np.where(self.step > 0, 5 * self.step, np.inf))
            # Judged on the noise learned so far: the step that crosses a limit must not widen
            # its own tolerance. Divided by its weight, the EWMA is unbiased from the start.
            noise = STEP_TO_SIGMA * self.step / np.maximum(self.weight, NOISE_ALPHA)
            tolerance = np.maximum(self.tolerance, NOISE_SIGMAS * noise)
            learn = known & np.isfinite(step)
            self.step[learn] += NOISE_ALPHA * (step[learn] - self.step[learn])
            self.weight[learn] += NOISE_ALPHA * (1 - self.weight[learn])
            self.previous = np.where(known, v, self.previous)
            out = (v < self.inside_lo - tolerance) | (v > self.inside_hi + tolerance)
            back = (v >= self.inside_lo + self.band) & (v <= self.inside_hi - self.band)
        self.active = np.where(known, np.where(self.active, ~back, out), self.active)
        limit = np.where(v < self.inside_lo, self.lo, self.hi)
        return [Finding("limit", "tag", self.active.copy(), known=known, value=v, limit=limit,
                        message="{subject} at {value} {unit}, outside its limit {limit}")]

    def state(self) -> dict[str, np.ndarray]:
        return {"active": self.active, "previous": self.previous, "step": self.step,
                "weight": self.weight}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.active = state["active"].copy()
        self.previous = state["previous"].copy()
        self.step = state["step"].copy()
        self.weight = state["weight"].copy()
