"""A zone's tanks at their floor or top: states of its control, learned from the levels.

A tank that has run out, or filled, is closed by its controls (EPANET closes the links of a
tank at its minimum or maximum level; in the field an altitude valve, a low-level cut-off on
its outlet) and its level holds there. The pressures it fed drop, or rise, by tens of metres
while it holds, at whatever hour it got there, and come back as it leaves: a switch of the
zone's state as much as a pump starting, but one no status point reports. ky10 (held out,
seen): J-617 and J-581 fall 50 m as T-13 holds at its floor, J-189 40 m as T-4 does, for
2-3 h every other day, and no daily profile and no line through the tank's level (20.0 m
against 20.1 m) explains that.

Per tank (a `level` point of a zone), on each tick's mean: its floor and top are the lowest
and highest levels it has held at (two steps within its noise: `NOISE` times its usual step
taken back), each learned as a slow mean of the level it holds at (so that its noise does not
walk it to its lowest reading); a hold below the floor (above the top) is a new one. The tank
is at an end within `NEAR` such steps of it, from the reading it arrives (a pressure it fed
drops on that reading, where a hold shows one or two readings later). A tank that has never
held is between its ends. A level that only ever holds at one value (a tank kept full) is at
an end throughout: no switch.

>>> import numpy as np
>>> from anomaly.core.points import PointInfo, PointTable
>>> from anomaly.core.ticks import Tick
>>> ends = TankEnds(PointTable([PointInfo("z.t1.level", "level", "m", zone="z")]))
>>> rng = np.random.default_rng(1)
>>> cycle = np.r_[np.linspace(25, 20, 40), np.full(12, 20.0), np.linspace(20, 24, 30)]
>>> level = np.r_[cycle, cycle] + rng.normal(0, 0.01, 2 * len(cycle))  # 15-min readings
>>> def tick(i, v):
...     a, s = np.array([v]), 900 * 10**9
...     return Tick(i * s, (i + 1) * s, np.array([1]), a, a, a, a, np.array([i * s]),
...                 np.array([0]))
>>> states = [ends.update(tick(i, v))[0] for i, v in enumerate(level)]
>>> [i for i in range(1, len(states)) if states[i] != states[i - 1]]  # at its floor: 1
[42, 53, 121, 135]
>>> float(states[121]), float(states[135])  # once held (42), then on arrival
(1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly.core.points import PointTable
from anomaly.core.ticks import Tick
from anomaly.tables.precision import Float32Fields

NOISE = 3.0  # times the usual step taken back: a step within the level's noise
NEAR = 1.0  # such steps from an end: at it (a slow drain reaches it a few readings early)
MEMORY = 288.0  # ticks: the noise's memory, and the pace an end follows its holds at
BETWEEN, FLOOR, TOP = 0.0, 1.0, 2.0


class TankEnds(Float32Fields):
    """Which of a site's tanks are at their floor or top, tick by tick."""

    FLOAT32 = frozenset({"noise"})  # floor, top and the last reading: the readings' scale

    def __init__(self, table: PointTable) -> None:
        self.tanks = np.flatnonzero(table.of_kind("level") & (table.zone_of >= 0))
        self.zone_of = table.zone_of[self.tanks]
        k = len(self.tanks)
        self.floor = np.full(k, np.nan)
        self.top = np.full(k, np.nan)
        self.prev = np.full(k, np.nan)
        self.prev_step = np.full(k, np.nan)
        self.noise = np.full(k, np.nan)  # mean step taken back by the next (of those > 0)
        self.steps = np.zeros(k)  # ... and how many it has seen (up to MEMORY)

    def update(self, tick: Tick) -> np.ndarray:
        """Per tank: FLOOR, TOP or BETWEEN on this tick; NaN without a reading."""
        with np.errstate(invalid="ignore"):
            return self._update(tick)

    def _update(self, tick: Tick) -> np.ndarray:
        good = tick.count[self.tanks] > 0
        v = np.where(good, tick.mean[self.tanks], np.nan)
        step = v - self.prev
        back = np.where(np.sign(step) == -np.sign(self.prev_step),
                        np.minimum(np.abs(step), np.abs(self.prev_step)), 0.0)
        tol = NOISE * np.fmax(self.noise, 1e-9 * np.abs(v))
        held = good & (np.abs(step) <= tol) & (np.abs(self.prev_step) <= tol)
        at = []
        for end, sign in ((self.floor, 1.0), (self.top, -1.0)):
            beyond = held & ~(sign * (v - end) >= -tol)  # below the floor (NaN: none yet)
            near = np.abs(v - end) <= NEAR * tol
            end[:] = np.where(beyond, v, np.where(held & near, end + (v - end) / MEMORY, end))
            at.append(np.abs(v - end) <= NEAR * tol)
        # the noise: steps the next one takes back (a draining tank's steady steps are none)
        sized = good & (back > 0)
        self.steps = np.where(sized, np.minimum(self.steps + 1.0, MEMORY), self.steps)
        noise = np.nan_to_num(self.noise)
        self.noise = np.where(sized, noise + (back - noise) / self.steps, self.noise)
        self.prev_step = np.where(good, step, self.prev_step)
        self.prev = np.where(good, v, self.prev)
        state = np.where(at[0], FLOOR, np.where(at[1], TOP, BETWEEN))
        return np.where(good, state, np.nan)

    _STATE = ("floor", "top", "prev", "prev_step", "noise", "steps")

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self._STATE}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in self._STATE:
            setattr(self, name, state[name].astype(getattr(self, name).dtype))
