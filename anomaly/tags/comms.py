"""`comms` and `dropout`: points that stop delivering good values.

A device the gateway polls fails loudly: a timeout, a refused connection, an exception
response, a lost OPC UA session are each recorded as bad readings of its points. Given the
device's stale window (`windows`: `stale_after` poll intervals of the site file), that record
is judged reading by reading (`judge`, `fire`), not per tick: once every point of the device
has a bad reading since its last good one, `comms` raises when the window has passed since the
device's last good reading (or at that bad reading, if later), and it clears at the next good
reading. Judged on the readings' own times, so a replay of the stored readings (bad ones are
`nan` cells) raises the same alarms at the same instants.

What follows is learned per tick, for recordings and for silence that no error announces.

Each point learns its usual spacing of good readings in ticks (EWMA of the gaps, each clipped
at twice the spacing so an outage does not teach that long gaps are normal); a point not yet
learned (fewer than two good readings) takes the slowest spacing learned, so a device that
goes silent right after the first readings is still found (while a device slower than all
others may raise one comms alarm in a first start without saved state). Bad readings never
count as values.

- `comms` (scope device): every point of a device is down and none brought a good value in
  this tick; down means at least `COMMS_LATE` spacings without a good value, or a bad reading
  since the last good one (the gateway's record of a failed read, once per outage for OPC UA).
  One alarm per device; its `tags` list the device's points.
- `dropout` (scope tag): a point without a good value for more than `DROPOUT_LATE` of its
  spacings and at least `MIN_DROPOUT` seconds, or with a bad reading since its last good one
  for that long, while its device still reports (a point of a device in `comms` raises no
  dropout). Points without a device: dropout only.
- Points whose gaps vary by more than `IRREGULAR` of their spacing report on change (OPC UA
  subscriptions): their silence is normal, so only a bad reading makes them down, and they
  neither raise a dropout for silence nor hold back their device's comms alarm.

Tuned on simulator exports of seeds 1-3 only (scenarios normal, sensor-faults and
comms-faults); seeds >= 100 are for evaluation.

>>> import numpy as np
>>> from anomaly.core.points import PointInfo, PointTable
>>> from anomaly.core.ticks import Tick
>>> d = Comms(PointTable([PointInfo("a", device="rtu"), PointInfo("b", device="rtu")]))
>>> def tick(i, good):
...     c = np.array(good, dtype=np.int64)
...     v = np.where(c > 0, 1.0, np.nan)
...     return Tick(i * 60 * 10**9, (i + 1) * 60 * 10**9, c, v, v, v, v, c - 1, 0 * c)
>>> out = [d.update(tick(i, [i < 10 or i > 20, i < 5])) for i in range(30)]
>>> [i for i, (c, _) in enumerate(out) if c.active[0]]
[11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
>>> [i for i, (_, dropout) in enumerate(out) if dropout.active[1]]
[9, 10, 21, 22, 23, 24, 25, 26, 27, 28, 29]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from anomaly.core.alarms import Finding
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointTable
from anomaly.core.ticks import Tick
from anomaly.tables.state_part import restored

COMMS_LATE = 2.0  # spacings: a whole device late by one reading is an outage, not chance
DROPOUT_LATE = 3.0  # spacings
MIN_DROPOUT = 300.0  # seconds
SPACING_ALPHA = 0.05  # per gap
REGULAR_GAPS = 3  # gaps learned before a point's silence is judged on its own
IRREGULAR = 0.5  # of the spacing: gaps varying more than this come from reports on change


ROW_MESSAGE = "{subject}: every read failing, no good reading for {seconds} s"


class Comms:
    """`comms` per device and `dropout` per point: from each device's failed reads as they
    come (devices with a stale window in `windows`, ns per device, NaN: none), and from the
    clock of the ticks."""

    name = "comms"

    def __init__(self, table: PointTable, windows: np.ndarray | None = None) -> None:
        n = len(table)
        self.device_of = table.device_of
        self.n_devices = len(table.devices)
        nd = self.n_devices
        self.window = np.full(nd, np.nan) if windows is None else np.asarray(windows, float)
        # Points whose failures the readings judge (their device has a stale window); a
        # point without a device (-1) picks the appended False.
        self.owned = np.append(~np.isnan(self.window), False)[self.device_of]
        self.members = np.bincount(self.device_of[self.device_of >= 0], minlength=nd)
        self.fail_ts = np.full(n, -1, dtype=np.int64)  # first bad reading since the last good
        self.failing = np.zeros(nd, dtype=np.int64)  # points of the device with fail_ts set
        self.dev_good = np.full(nd, -1, dtype=np.int64)  # its last good reading
        self.down = np.zeros(nd, dtype=bool)  # every point failing
        self.down_prev = np.zeros(nd, dtype=bool)  # ... before its last change,
        self.down_at = np.full(nd, -1, dtype=np.int64)  # ... which came at this time
        self.due = np.full(nd, -1, dtype=np.int64)  # when a down device raises
        self.raised = np.zeros(nd, dtype=bool)  # the condition, as the readings judge it
        self.last_good = np.full(n, -1, dtype=np.int64)  # tick index; -1: none yet
        self.spacing = np.full(n, np.nan)  # ticks between good readings
        self.spread = np.full(n, np.nan)  # EWMA of |gap - spacing|
        self.gaps = np.zeros(n)  # gaps learned, up to REGULAR_GAPS
        self.failed = np.zeros(n, dtype=bool)  # a bad reading came after the last good one
        self.start = np.array([-1], dtype=np.int64)  # first tick index seen
        has = self.device_of >= 0
        # Points grouped by device, for per-device minima by `reduceat` (every device of the
        # table has at least one point).
        self._by_device = np.argsort(np.where(has, self.device_of, -1), kind="stable")[
            np.count_nonzero(~has):].astype(np.int32)
        self._device_starts = np.searchsorted(self.device_of[self._by_device],
                                              np.arange(self.n_devices))
        self._has = has
        self._dev = self.device_of[has]
        self._derived: tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray],
                             np.ndarray] | None = None

    def update(self, tick: Tick) -> list[Finding]:
        # NaN stands for "no value yet" throughout: its warnings are noise.
        with np.errstate(invalid="ignore"):
            return self._update(tick)

    def _update(self, tick: Tick) -> list[Finding]:
        width = tick.end_ns - tick.start_ns
        now = tick.start_ns // width
        if self.start[0] < 0:
            self.start[0] = now
        good = tick.count > 0
        if good.any():  # an empty tick (a sparse recording) teaches nothing
            self._learn(good, now)
        self.failed = np.where(good, False, self.failed | (tick.bad > 0))
        spacing, known, steady, known_dev = self._learned()
        # A point never heard from is judged from the first tick the engine saw.
        age = now - np.where(self.last_good >= 0, self.last_good, self.start[0])
        late = age / spacing
        failed = self.failed
        # A device whose failures the readings judge is down here only by silence, and not
        # judged here while the readings have it down as of this tick's end, nor when they
        # turned it at or after that end: rows are judged up to `lateness` before the ticks
        # they fall in close (and a reading stamped at the end belongs to the next tick), so
        # this tick is older than what the readings last said. Judged here, its device
        # answering before a failure would clear the alarm the failure raised at a time
        # before that alarm began; silent before an answer, it would raise a second one.
        ahead = self.down_at >= tick.end_ns
        down = known & ((late >= COMMS_LATE) | (failed & ~self.owned))
        row_down = np.where(ahead, self.down_prev, self.down)
        # Points that report on change (OPC UA subscriptions) have irregular gaps: their
        # silence means nothing, only a bad reading does (`steady`: new or regular).
        regular = steady[1]
        lost = (((regular & (late > DROPOUT_LATE)) | failed)
                & (age * width >= MIN_DROPOUT * 1e9))
        has, dev, n = self._has, self._dev, self.n_devices
        counted = (steady[0] | failed)[has]
        members = np.bincount(dev[counted], minlength=n)
        downs = np.bincount(dev[counted & down[has]], minlength=n)
        judged = np.bincount(dev[counted & known_dev], minlength=n)
        alive = np.bincount(dev[good[has]], minlength=n) > 0
        comms = (members > 0) & (downs == members) & ~alive & ~row_down
        minutes = age * width / 60e9
        dev_minutes = np.full(n, np.nan)
        if comms.any() or row_down.any():  # the devices' points and the message only
            in_comms = np.zeros(len(good), dtype=bool)
            in_comms[has] = (comms | row_down)[dev]
            lost &= ~in_comms
            dev_minutes = np.minimum.reduceat(minutes[self._by_device], self._device_starts)
        return [
            Finding("comms", "device", comms, known=(judged == members) & ~row_down & ~ahead,
                    details={"minutes": dev_minutes},
                    message="{subject}: no good reading from any of its points for "
                            "{minutes} min"),
            Finding("dropout", "tag", lost, known=known, value=minutes,
                    limit=spacing * width / 60e9,
                    message="{subject}: no good reading for {value} min (usually every "
                            "{limit} min)"),
        ]

    # --- the readings, one time at a time ----------------------------------------------------

    def wants(self, point: np.ndarray, value: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Readings that change a device's record: bad ones, and good ones of points failing
        now or from an earlier bad reading of the same batch."""
        failing = self.fail_ts >= 0
        if not good.all():
            failing = failing.copy()
            failing[point[~good]] = True
        return self.owned[point] & (~good | failing[point])

    def restamp(self, batch: Batch) -> Batch:
        """A good reading of a failing point stamped before its failure is the device
        answering now with a value unchanged since before (an OPC UA server's initial values
        after a reconnect): judged at its receipt time, else the device would stay down until
        a value changes (the historians keep its stamp; a recording, which has no receipt
        times, holds such a reading before the failure, where it answers nothing)."""
        fail = self.fail_ts[batch.point]
        old = (fail >= 0) & (batch.source_ts <= fail) & (batch.quality == Quality.GOOD)
        if not old.any():
            return batch
        return dataclasses.replace(batch, source_ts=np.where(
            old, np.maximum(batch.gateway_ts, fail + 1), batch.source_ts))

    def observe(self, ts: np.ndarray, point: np.ndarray, good: np.ndarray) -> None:
        """Readings `wants` left out: good ones of healthy points, their device answering."""
        take = good & self.owned[point]
        if take.any():
            np.maximum.at(self.dev_good, self.device_of[point[take]], ts[take])

    def judge(self, ts: int, point: np.ndarray, value: np.ndarray,
              good: np.ndarray) -> list[Finding]:
        """The readings of one time `ts` (at most one per point): the devices that answer
        again, as a finding on those devices; the ones now down get a time to raise."""
        owned = self.owned[point]
        point, good = point[owned], good[owned]
        if len(np.unique(point)) < len(point):  # a point twice at one time: its last reading
            _, last = np.unique(point[::-1], return_index=True)
            keep = len(point) - 1 - last
            point, good = point[keep], good[keep]
        dev = self.device_of[point]
        back = good & (self.fail_ts[point] >= 0)
        new = ~good & (self.fail_ts[point] < 0)
        self.dev_good[dev[good]] = ts
        self.fail_ts[point[back]] = -1
        self.fail_ts[point[new]] = ts
        nd = self.n_devices
        self.failing += (np.bincount(dev[new], minlength=nd)
                         - np.bincount(dev[back], minlength=nd))
        down = self.failing == self.members
        turned = down != self.down
        if not turned.any():
            return []
        self.down_prev[turned], self.down_at[turned] = self.down[turned], ts
        self.down = down
        went = turned & down
        if went.any():
            start = np.where(self.dev_good[went] >= 0, self.dev_good[went], ts)
            self.due[went] = np.maximum(ts, start + self.window[went].astype(np.int64))
        came = turned & ~down
        self.due[came] = -1
        cleared = came & self.raised
        if not cleared.any():
            return []
        self.raised[cleared] = False
        return [self._finding(cleared, ts)]

    def next_due(self) -> int | None:
        """When the next down device raises (None: none is waiting)."""
        waiting = self.due[self.due >= 0]
        return int(waiting.min()) if len(waiting) else None

    def fire(self, at: int) -> list[Finding]:
        """The devices due to raise at `at` (see `next_due`)."""
        now = self.due == at
        self.due[now] = -1
        self.raised[now] = True
        return [self._finding(now, at)]

    def _finding(self, devices: np.ndarray, at: int) -> Finding:
        silent = (at - np.where(self.dev_good >= 0, self.dev_good, self.down_at)) / 1e9
        return Finding("comms", "device", self.raised.copy(), known=devices,
                       details={"seconds": np.round(silent, 1)}, message=ROW_MESSAGE)

    def _learn(self, good: np.ndarray, now: int) -> None:
        """The spacing and its spread learn from the gaps that end in this tick."""
        gap = now - self.last_good
        seen = good & (self.last_good >= 0)
        self.last_good = np.where(good, now, self.last_good)
        if not seen.any():
            return
        clipped = np.minimum(gap, 2 * np.where(np.isnan(self.spacing), gap, self.spacing))
        off = np.abs(clipped - self.spacing)
        alpha = np.maximum(SPACING_ALPHA, 1.0 / np.maximum(self.gaps, 1.0))
        self.spread = np.where(seen & ~np.isnan(off), np.where(
            np.isnan(self.spread), off, self.spread + alpha * (off - self.spread)), self.spread)
        self.gaps = np.minimum(self.gaps + seen, REGULAR_GAPS)
        self.spacing = np.where(seen, np.where(np.isnan(self.spacing), gap, self.spacing
                                               + SPACING_ALPHA * (clipped - self.spacing)),
                                self.spacing)
        self._derived = None

    def _learned(self) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray],
                                np.ndarray]:
        """(spacing in whole ticks, known, (new or regular, regular), known per device point):
        they change only when a gap is learned, so they are kept until then."""
        if self._derived is None:
            learned = ~np.isnan(self.spacing)
            slowest = float(self.spacing[learned].max()) if learned.any() else np.nan
            # in whole ticks: a learned 1.02 must not make two missed readings count as 1.96
            spacing = np.maximum(np.round(np.where(learned, self.spacing, slowest)), 1.0)
            known = ~np.isnan(spacing)
            new = self.gaps < REGULAR_GAPS
            regular = ~new & (self.spread <= IRREGULAR * self.spacing)
            self._derived = (spacing, known, (new | regular, regular), known[self._has])
        return self._derived

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in (*_STATE, *_ROW_STATE)}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in _STATE:
            setattr(self, name, restored(state[name]))
        for name in _ROW_STATE:  # absent from states saved before readings were judged
            if name in state:
                setattr(self, name, restored(state[name]))
        self._derived = None


_STATE = ("last_good", "spacing", "spread", "gaps", "failed", "start")
_ROW_STATE = ("fail_ts", "failing", "dev_good", "down", "down_prev", "down_at", "due", "raised")
