"""The sensor layer: what an instrument reports for a true physical value.

Each reading is the true value plus Gaussian noise (`Signal.noise`), held at the instrument's
`Signal.floor` (a motor current's RMS never reads below 0 A), quantised to
`Signal.resolution`, then altered by the scenario's sensor faults on that tag:

| kind    | effect during the event                         | parameters (defaults)              |
|---------|-------------------------------------------------|------------------------------------|
| stuck   | frozen at the reading taken when it started     | -                                  |
| spike   | `count` short excursions of `magnitude`         | magnitude (span/2), count (3)      |
| drift   | an offset growing by `rate` per hour            | rate (2 % of the span per hour)    |
| dropout | no reading (NaN)                                | -                                  |
| noise   | noise `factor` times the sensor's own           | factor (10)                        |
| offset  | `size` added to every reading (a shifted zero)  | size (span/2)                      |

Magnitudes and rates are in the signal's engineering unit; the span is `hi - lo`, or
`max(10 * noise, 1)` for a sensor without a range. Spikes start on the site's step grid and last
`min(step, 60 s)`, so an export at that step sees every one of them.

Noise is drawn from a generator keyed on (seed, site, whole second of simulated time), so a
reading depends only on the seed and the time, not on which times were asked before: a value
served over Modbus and the same instant in an export agree.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from simulators.scenario import Event
from simulators.signals import Signal

SENSOR_FAULTS = frozenset({"stuck", "spike", "drift", "dropout", "noise", "offset"})
SPIKE_WIDTH = 60.0  # seconds; "short" on any step of a minute or more
DEFAULT_SPIKES = 3
DEFAULT_NOISE_FACTOR = 10.0


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str
    column: int
    start: float
    end: float
    size: float  # spike magnitude, drift rate per second, or noise-burst standard deviation
    spikes: np.ndarray  # spike start times (spike only)
    signs: np.ndarray  # +1/-1 per spike


def _span(sig: Signal) -> float:
    if sig.lo is not None and sig.hi is not None and sig.hi > sig.lo:
        return sig.hi - sig.lo
    return max(10.0 * sig.noise, 1.0)


class Sensors:
    """Turns true values into readings for one site's signals and sensor-fault events."""

    def __init__(self, site: str, signals: Sequence[Signal], events: Sequence[Event], *,
                 seed: int, step: float) -> None:
        self._key = (seed, zlib.crc32(site.encode()))
        self.noise = np.array([s.noise for s in signals], dtype=np.float64)
        self.resolution = np.array([s.resolution for s in signals], dtype=np.float64)
        self._quantised = np.flatnonzero(self.resolution > 0)
        self.cutoff = np.array([s.cutoff for s in signals], dtype=np.float64)
        self._cut = np.flatnonzero(self.cutoff > 0)
        self.floor = np.array([-np.inf if s.floor is None else s.floor for s in signals])
        self._floored = np.flatnonzero(np.isfinite(self.floor))
        column = {s.tag: i for i, s in enumerate(signals)}
        self._faults = [
            self._fault(i, e, column[e.target], signals[column[e.target]], step)
            for i, e in enumerate(events) if e.kind in SENSOR_FAULTS
        ]
        self._frozen: dict[int, float] = {}  # stuck fault index -> frozen reading

    def _fault(self, index: int, e: Event, col: int, sig: Signal, step: float) -> _Fault:
        span = _span(sig)
        spikes = signs = np.empty(0)
        if e.kind == "spike":
            size = float(e.params.get("magnitude", span / 2))
            slots = np.arange(np.ceil(e.start / step) * step, e.end, step)
            if slots.size == 0:
                slots = np.array([e.start])
            rng = np.random.default_rng((*self._key, 1, index))
            count = min(int(e.params.get("count", DEFAULT_SPIKES)), slots.size)
            spikes = np.sort(rng.choice(slots, size=count, replace=False))
            signs = rng.choice([-1.0, 1.0], size=count)
        elif e.kind == "drift":
            size = float(e.params.get("rate", 0.02 * span)) / 3600.0
        elif e.kind == "noise":
            base = sig.noise if sig.noise > 0 else 0.001 * span
            size = float(e.params.get("factor", DEFAULT_NOISE_FACTOR)) * base
        elif e.kind == "offset":
            size = float(e.params.get("size", span / 2))
        else:
            size = 0.0
        return _Fault(e.kind, col, e.start, e.end, size, spikes, signs)

    def standard_normals(self, times: np.ndarray) -> np.ndarray:
        """(len(times), n) standard normal draws, one generator per whole simulated second."""
        n = self.noise.size
        out = np.empty((times.size, n))
        for row, t in enumerate(times):
            out[row] = np.random.default_rng((*self._key, 0, int(t))).standard_normal(n)
        return out

    def _clean(self, true: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self._quantise(self._noisy(true, z))

    def _noisy(self, true: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The true values with each sensor's noise, held at its floor (before any fault: a
        fault may make an instrument read what it never would)."""
        values = true + z * self.noise
        f = self._floored
        if f.size:
            values[:, f] = np.maximum(values[:, f], self.floor[f])
        return values

    def _quantise(self, values: np.ndarray) -> np.ndarray:
        """Rounded to each sensor's resolution, and 0 below a meter's cut-off."""
        q = self._quantised
        if q.size:
            values[:, q] = np.round(values[:, q] / self.resolution[q]) * self.resolution[q]
        c = self._cut
        if c.size:
            values[:, c] = np.where(np.abs(values[:, c]) < self.cutoff[c], 0.0, values[:, c])
        return values

    def freeze_between(self, t0: float, t1: float,
                       true_at: Callable[[np.ndarray], np.ndarray]) -> None:
        """Take the frozen reading of every stuck fault starting in (t0, t1]."""
        for i, f in enumerate(self._faults):
            if f.kind == "stuck" and t0 < f.start <= t1:
                at = np.array([f.start])
                reading = self._clean(true_at(at), self.standard_normals(at))
                self._frozen[i] = float(reading[0, f.column])

    def measure(self, times: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Readings at `times` (shape (m,)) from true values (shape (m, n)); NaN = no reading.

        Every stuck fault active at `times` must have been frozen with `freeze_between`.
        """
        z = self.standard_normals(times)
        values = self._noisy(true, z)
        late: list[tuple[_Fault, int, np.ndarray]] = []  # faults that override a reading
        for i, f in enumerate(self._faults):
            active = (times >= f.start) & (times < f.end)
            if not active.any():
                continue
            col = values[:, f.column]  # a view: the updates below land in `values`
            if f.kind == "noise":
                col[active] += z[active, f.column] * (f.size - self.noise[f.column])
            elif f.kind == "drift":
                col[active] += f.size * (times[active] - f.start)
            elif f.kind == "offset":
                col[active] += f.size
            elif f.kind == "spike":
                width = min(SPIKE_WIDTH, f.end - f.start)
                hit = (times[:, None] >= f.spikes) & (times[:, None] < f.spikes + width)
                col[active] += (hit[active] * f.signs).sum(axis=1) * f.size
            else:
                late.append((f, i, active))
        values = self._quantise(values)
        for f, i, active in late:
            values[active, f.column] = self._frozen[i] if f.kind == "stuck" else np.nan
        return values
