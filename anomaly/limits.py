"""`limit`: a point's value outside its lo/hi limits, with a deadband to leave the condition.

The limits are the instrument's range or the process's hard limits; a reading a hair outside
(a flow meter showing -0.2 L/s with the pump off, a transmitter's zero offset) is within its
accuracy, so the value must pass a limit by TOLERANCE of the span to trip.

>>> import numpy as np
>>> from anomaly.points import PointInfo, PointTable
>>> from anomaly.ticks import Tick
>>> d = Limits(PointTable([PointInfo("p", lo=0.0, hi=10.0)]))
>>> def tick(v):
...     a = np.array([v])
...     return Tick(0, 1, np.array([1]), a, a, a, a, np.array([0]), np.array([0]))
>>> [bool(d.update(tick(v))[0].active[0]) for v in (5.0, 10.5, 9.95, 9.5)]
[False, True, True, False]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly.alarms import Finding
from anomaly.points import PointTable
from anomaly.ticks import Tick

DEADBAND = 0.02  # of the lo-hi span: how far back inside a value must come to leave
TOLERANCE = 0.01  # of the lo-hi span, a class-1 transducer's accuracy: how far outside to trip


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

    def update(self, tick: Tick) -> list[Finding]:
        v = tick.mean
        known = tick.good
        with np.errstate(invalid="ignore"):
            out = (v < self.inside_lo - self.tolerance) | (v > self.inside_hi + self.tolerance)
            back = (v >= self.inside_lo + self.band) & (v <= self.inside_hi - self.band)
        self.active = np.where(known, np.where(self.active, ~back, out), self.active)
        limit = np.where(v < self.inside_lo, self.lo, self.hi)
        return [Finding("limit", "tag", self.active.copy(), known=known, value=v, limit=limit,
                        message="{subject} at {value} {unit}, outside its limit {limit}")]

    def state(self) -> dict[str, np.ndarray]:
        return {"active": self.active}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.active = state["active"].copy()
