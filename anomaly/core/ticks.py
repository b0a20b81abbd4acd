"""Readings grouped into fixed ticks of source time, the unit every detector updates on.

Devices report at their own pace, in batches of any size; detectors need one aligned row of
values per tick. The accumulator folds good readings into per-point count, mean, min, max and
last value of each tick, and closes a tick once readings (or the live clock) have gone
`lateness` past its end. Every tick is closed in order, empty ones included, so the detectors
see the same sequence whether batches come live from pollers or from a recording: this is
what makes a replay give the alarms of the live run.

>>> import numpy as np
>>> from anomaly.core.batch import Batch, Quality
>>> acc = TickAccumulator(2, interval_ns=60 * 10**9, lateness_ns=0)
>>> s = 10**9
>>> ticks = acc.add(Batch.of(source_ts=[0, 30 * s, 70 * s], point=[0, 0, 1],
...                          value=[1.0, 3.0, 5.0], quality=[Quality.GOOD] * 3))
>>> [(t.start_ns // s, t.count.tolist(), t.mean.tolist()) for t in ticks]
[(0, [2, 0], [2.0, nan])]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from anomaly.core.batch import Batch, Quality


@dataclass(frozen=True, slots=True)
class Tick:
    """Per point aggregates of the good readings of one tick [start_ns, end_ns).

    Points without a good reading have count 0 and NaN statistics; `bad` counts the bad
    readings (failed reads), which detectors of the process ignore.
    """

    start_ns: int
    end_ns: int
    count: np.ndarray  # int64
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray
    last_ts: np.ndarray  # int64 ns of the last good reading; -1 without one
    bad: np.ndarray  # int64 count of bad (and uncertain) readings

    @property
    def good(self) -> np.ndarray:
        return self.count > 0


class TickAccumulator:
    """Folds batches into ticks and hands back the ticks that closed."""

    def __init__(self, n_points: int, *, interval_ns: int, lateness_ns: int) -> None:
        if interval_ns <= 0:
            raise ValueError(f"the tick interval must be above 0, not {interval_ns} ns")
        self.n = n_points
        self.interval = int(interval_ns)
        self.lateness = int(lateness_ns)
        self.current: int | None = None  # index (start // interval) of the oldest open tick
        self.late_total = 0  # good readings that came after their tick had closed
        self._open: dict[int, _Sums] = {}

    def add(self, batch: Batch) -> list[Tick]:
        """Fold in a batch; the ticks it closes, oldest first."""
        if len(batch) == 0:
            return []
        ts, point = batch.source_ts, batch.point
        index = ts // self.interval
        if self.current is None:
            self.current = int(index.min())
        late = index < self.current
        if late.any():
            self.late_total += int(np.count_nonzero(late & (batch.quality == Quality.GOOD)))
            keep = ~late
            ts, point, index = ts[keep], point[keep], index[keep]
            value, quality = batch.value[keep], batch.quality[keep]
            if len(ts) == 0:
                return []
        else:
            value, quality = batch.value, batch.quality
        if index[0] != index[-1] or np.any(index != index[0]):
            # A recording's chunk spans many ticks: one slice per tick, in tick order.
            if np.any(np.diff(index) < 0):
                order = np.argsort(index, kind="stable")
                ts, point, index = ts[order], point[order], index[order]
                value, quality = value[order], quality[order]
            edges = [0, *(np.flatnonzero(np.diff(index)) + 1).tolist(), len(index)]
        else:
            edges = [0, len(index)]
        runs = [(int(index[a]), a, b) for a, b in itertools.pairwise(edges)]
        # Ticks this batch opens (a recording's chunk, a device's backlog) are folded
        # together, all at once; ticks already open (a batch of another device came first,
        # within the lateness) take their readings after the ones they hold, as one batch
        # after another would, so a tick's sums do not depend on how its readings came.
        fresh: list[tuple[int, int, int]] = []
        held: list[tuple[int, int, int]] = []
        for run in runs:
            (held if run[0] in self._open else fresh).append(run)
        if len(fresh) > 1:
            if len(fresh) == len(runs):
                take: slice | np.ndarray = slice(0, len(index))
            else:
                take = np.concatenate([np.arange(a, b) for _, a, b in fresh])
            k0 = fresh[0][0]
            for j, folded in enumerate(_fold(self.n, index[take] - k0, fresh[-1][0] - k0 + 1,
                                           ts[take], point[take], value[take],
                                           quality[take], k0 * self.interval,
                                           self.interval)):
                # a tick between two fresh ones may be open: this batch has no reading there
                self._open.setdefault(k0 + j, folded)
            runs = held
        for k, a, b in runs:
            sums = self._open.get(k)
            if sums is None:
                sums = self._open[k] = _Sums.empty(self.n)
            sums.add(ts[a:b], point[a:b], value[a:b], quality[a:b])
        return self._close_until(int(ts.max()) - self.lateness)

    def advance(self, now_ns: int) -> list[Tick]:
        """Close the ticks the clock has passed (live: devices may all be silent)."""
        if self.current is None:
            return []
        return self._close_until(now_ns - self.lateness)

    def finish(self) -> list[Tick]:
        """Close every open tick (end of a recording)."""
        if not self._open:
            return []
        return self._close_until((max(self._open) + 1) * self.interval)

    def _close_until(self, watermark_ns: int) -> list[Tick]:
        closed = []
        assert self.current is not None
        end = watermark_ns // self.interval  # ticks before this one are complete
        while self.current < end:
            sums = self._open.pop(self.current, None)
            if sums is None:
                # A long silence (an outage, a restart days later, a recording's gap) closes
                # MAX_SILENT_TICKS empty ticks, enough for every silence-driven condition, then
                # skips to the next tick with readings: days of empty ticks would hold up the
                # gateway for seconds and teach the detectors nothing.
                resume = min((k for k in self._open if k > self.current), default=end)
                if min(resume, end) - self.current > MAX_SILENT_TICKS:
                    for _ in range(MAX_SILENT_TICKS):
                        closed.append(_Sums.empty(self.n).tick(self.current * self.interval,
                                                         self.interval))
                        self.current += 1
                    self.current = min(resume, end)
                    continue
                sums = _Sums.empty(self.n)
            closed.append(sums.tick(self.current * self.interval, self.interval))
            self.current += 1
        return closed

    def state(self) -> dict[str, np.ndarray]:
        """The open ticks are dropped on save: a restart resumes at the next tick."""
        return {"current": np.array([-1 if self.current is None else self.current]),
                "late_total": np.array([self.late_total])}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        current = int(state["current"][0])
        self.current = None if current < 0 else current
        self.late_total = int(state["late_total"][0])
        self._open.clear()


MAX_SILENT_TICKS = 1000  # empty ticks closed one by one before a silence is skipped
GOOD = int(Quality.GOOD)  # a plain int: an enum member costs an attribute lookup per use


def _fold(n: int, rel: np.ndarray, n_ticks: int, ts: np.ndarray, point: np.ndarray,
          value: np.ndarray, quality: np.ndarray, start_ns: int,
          interval_ns: int) -> list[_Sums]:
    """The sums of readings that span `n_ticks` ticks (`rel`: tick of each reading, counted
    from the first), computed for all of them in one go."""
    good = (quality == GOOD) & np.isfinite(value)
    key = rel * n + point
    size = n_ticks * n
    bad = np.bincount(key[~good], minlength=size).reshape(n_ticks, n)
    key, ts, value = key[good], ts[good], value[good]
    count = np.bincount(key, minlength=size).reshape(n_ticks, n)
    total = np.bincount(key, weights=value, minlength=size).reshape(n_ticks, n)
    low: np.ndarray = np.full(size, np.inf)
    high: np.ndarray = np.full(size, -np.inf)
    np.minimum.at(low, key, value)
    np.maximum.at(high, key, value)
    if len(ts) > 1 and np.any(np.diff(ts) < 0):
        order = np.lexsort((ts, key))
        key, ts, value = key[order], ts[order], value[order]
    last: np.ndarray = np.full(size, np.nan)
    last_ts: np.ndarray = np.full(size, -1, dtype=np.int64)
    last[key], last_ts[key] = value, ts  # repeated keys: the last assignment, the latest, stays
    low, high = low.reshape(n_ticks, n), high.reshape(n_ticks, n)
    last, last_ts = last.reshape(n_ticks, n), last_ts.reshape(n_ticks, n)
    has = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has, total / count, np.nan)
    shown_low, shown_high = np.where(has, low, np.nan), np.where(has, high, np.nan)
    # Rows of the arrays, each with its tick computed here for all at once (a chunk of a
    # long recording holds thousands of ticks); a batch that reaches one of these ticks later
    # adds to its row, and the tick is computed again.
    out = []
    for j in range(n_ticks):
        sums = _Sums(count[j], total[j], low[j], high[j], last[j], last_ts[j], bad[j])
        start = start_ns + j * interval_ns
        sums.done = Tick(start_ns=start, end_ns=start + interval_ns, count=count[j], mean=mean[j],
                         min=shown_low[j], max=shown_high[j], last=last[j],
                         last_ts=last_ts[j], bad=bad[j])
        out.append(sums)
    return out


class _Sums:
    """Running sums of one open tick."""

    def __init__(self, count: np.ndarray, total: np.ndarray, low: np.ndarray,
                 high: np.ndarray, last: np.ndarray, last_ts: np.ndarray,
                 bad: np.ndarray) -> None:
        self.count, self.total, self.min, self.max = count, total, low, high
        self.last, self.last_ts, self.bad = last, last_ts, bad
        self.done: Tick | None = None  # the tick as of these sums, if computed

    @classmethod
    def empty(cls, n: int) -> _Sums:
        return cls(np.zeros(n, dtype=np.int64), np.zeros(n), np.full(n, np.inf),
                   np.full(n, -np.inf), np.full(n, np.nan), np.full(n, -1, dtype=np.int64),
                   np.zeros(n, dtype=np.int64))

    def add(self, ts: np.ndarray, point: np.ndarray, value: np.ndarray,
            quality: np.ndarray) -> None:
        self.done = None
        good = (quality == GOOD) & np.isfinite(value)
        if not good.all():
            self.bad += np.bincount(point[~good], minlength=len(self.bad))
            ts, point, value = ts[good], point[good], value[good]
        if len(point) == 0:
            return
        n = len(self.count)
        self.count += np.bincount(point, minlength=n)
        # Reading by reading, in order (as `_fold`'s bincount from zero): a tick's sum, and
        # so its mean to the last bit, does not depend on how its readings were cut into
        # batches (live polls, replay chunks), which live/replay parity needs.
        np.add.at(self.total, point, value)
        np.minimum.at(self.min, point, value)
        np.maximum.at(self.max, point, value)
        if len(ts) > 1 and np.any(np.diff(ts) < 0):
            order = np.argsort(ts, kind="stable")
            ts, point, value = ts[order], point[order], value[order]
        # With repeated indices a fancy assignment keeps the last: the latest reading.
        newer = ts >= self.last_ts[point]
        self.last[point[newer]] = value[newer]
        self.last_ts[point[newer]] = ts[newer]

    def tick(self, start_ns: int, interval_ns: int) -> Tick:
        if self.done is not None:
            return self.done
        has = self.count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(has, self.total / self.count, np.nan)
        return Tick(start_ns=start_ns, end_ns=start_ns + interval_ns, count=self.count,
                    mean=mean, min=np.where(has, self.min, np.nan),
                    max=np.where(has, self.max, np.nan), last=self.last,
                    last_ts=self.last_ts, bad=self.bad)
