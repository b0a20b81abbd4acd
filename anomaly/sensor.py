"""`stuck` and `spike`: sensor faults seen in a tag's own readings, learned per tag.

- `stuck`: the readings stop changing. Each tag learns `p0`, how often a reading repeats the
  previous one (within the tag's resolution, the smallest step it has shown), and a run of `k`
  repeats is judged stuck once `p0 ** k < 1e-6` (and at least `MIN_RUN` repeats over at
  least `MIN_STUCK` seconds). With many readings per tick a repeat is a tick whose readings
  are all equal to the previous value. Never judged: status points, tags that have shown only
  0 and 1, tags never seen to change, tags that repeat most of the time
  (`p0 >= P0_CONSTANT`), and a value the tag has rested at before for a long run and then left
  by itself (a flow meter's low-flow cut-off, PV at night).
- `spike`: a reading that jumps far from its neighbours and comes back. The tag's scale is an
  EWMA of its absolute first differences, each clipped at `CLIP` scales so a spike cannot
  inflate it. A spike is judged when the next reading arrives: both steps above `SPIKE`
  scales, opposite signs, and the value back within `BACK` of the jump. With several readings
  per tick, a tick whose max or min strays from its mean `SPIKE_SPREAD` times the learned
  spread is a spike too. Tags of one kind spiking together are a process event, not judged.

Tuned on simulator exports of seeds 1-3 only (scenarios normal and sensor-faults, water at 5
min and grid at 15 min); seeds >= 100 are for evaluation.

>>> import numpy as np
>>> from anomaly.points import PointInfo, PointTable
>>> from anomaly.ticks import Tick
>>> d = SensorFaults(PointTable([PointInfo("p", "pressure", "m")]))
>>> rng = np.random.default_rng(0)
>>> def tick(i, v):
...     a = np.array([v])
...     return Tick(i * 60 * 10**9, (i + 1) * 60 * 10**9, np.array([1]), a, a, a, a,
...                 np.array([i * 60 * 10**9]), np.array([0]))
>>> values = list(np.round(40 + rng.normal(0, 0.1, 60), 2)) + [40.0] * 30
>>> values[30] += 15.0  # a spike
>>> found = [{f.kind for f in d.update(tick(i, v)) if f.active[0]} for i, v in enumerate(values)]
>>> [i for i, f in enumerate(found) if "spike" in f], min(i for i, f in enumerate(found) if f)
([31], 31)
>>> min(i for i, f in enumerate(found) if "stuck" in f)
70
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from anomaly.alarms import Finding
from anomaly.points import PointTable
from anomaly.ticks import Tick

# stuck
IMPLAUSIBLE = 1e-6  # probability of a run of repeats under the tag's learned p0
MIN_RUN = 6  # repeats, however unlikely a single one is
MIN_STUCK = 600.0  # seconds: a value held for a few minutes is no fault yet
MIN_MOVES = 1  # a tag never seen to change may be a constant (a setpoint, a spare channel)
P0_CONSTANT = 0.5  # a tag that repeats this often is naturally constant
P0_PRIOR = (0.5, 2.0)  # pseudo-counts (repeats, steps) of a kind: p0 = 0.25 before any data
PEERS = 10.0  # pseudo-steps of the tag's kind and unit in its p0: a new tag borrows theirs
P0_MEMORY = 2000.0  # steps: p0 follows a change of the tag's behaviour within ~a week
# spike
SPIKE = 8.0  # scales (mean absolute step, ~0.8 sigma of the steps): ~6 sigma of a step
BACK = 0.3  # of the jump: how close the next reading must come back
CLIP = 4.0  # scales: the largest step that updates the scale
SCALE_ALPHA = 0.01  # per step
WARM_STEPS = 12  # steps learned before spikes are judged
HOUR_ALPHA = 0.05  # per step within an hour bin
HOUR_STEPS = 3  # steps an hour bin has learned before it counts
COMMON = 2  # tags of one kind spiking in the same tick: a process event
SPIKE_SPREAD = 5.0  # times the learned within-tick spread
SPREAD_MIN_COUNT = 5  # readings in a tick for its spread to mean anything


class SensorFaults:
    """`stuck` and `spike` on every tag at once."""

    name = "sensor"

    def __init__(self, table: PointTable) -> None:
        n = len(table)
        self.eligible = ~table.of_kind("status")
        self.spike_limit = np.full(n, SPIKE)
        self._none = np.zeros(n, dtype=bool)
        self._none_score = np.full(n, np.nan)
        self._stray_score = self._none_score
        _, self.kind_id = np.unique(table.kind.astype(str), return_inverse=True)
        _, self.peer_id = np.unique([f"{k}/{u}" for k, u in zip(table.kind, table.units,
                                                                strict=True)],
                                    return_inverse=True)
        self.kinds = int(self.kind_id.max(initial=0)) + 1
        self.peers = int(self.peer_id.max(initial=0)) + 1
        self.prev = np.full(n, np.nan)  # last good value
        self.prev2 = np.full(n, np.nan)  # the one before it
        self.res = np.full(n, np.inf)  # smallest nonzero step seen: the resolution
        self.binary = np.ones(n, dtype=bool)  # every value so far was 0 or 1
        self.repeats = np.zeros(n)  # forgetting counts of repeats and steps
        self.steps = np.zeros(n)
        self.run = np.zeros(n)  # repeats in the current run
        self.moves = np.zeros(n)  # changes seen, up to MIN_MOVES
        self.since = np.zeros(n, dtype=np.int64)  # ns the current value was first read
        self.rest = np.full(n, np.nan)  # value of the last long run the tag left by itself
        self.scale = np.full(n, np.nan)  # EWMA of |step|
        self.scale_n = np.zeros(n)  # steps the scale has learned
        self.hourly = np.full((n, 24), np.nan)  # the same per hour of day
        self.hourly_n = np.zeros((n, 24))
        self.spread = np.full(n, np.nan)  # EWMA of max(max - mean, mean - min) in a tick

    def update(self, tick: Tick) -> list[Finding]:
        # NaN stands for "no value yet" throughout: its warnings are noise.
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._update(tick)

    def _update(self, tick: Tick) -> list[Finding]:
        good = tick.count > 0
        if not good.any():  # an empty tick (a sparse recording) teaches and judges nothing
            return [Finding(kind, "tag", good, known=good, message="")
                    for kind in ("stuck", "spike")]
        v = tick.mean
        self.binary &= ~good | (v == 0.0) | (v == 1.0)
        spread = tick.max - tick.min
        step = good & ~np.isnan(self.prev)
        diff = np.abs(v - self.prev)
        # Float sums of equal readings may differ in the last bits.
        tiny = 1e-9 * np.abs(v)
        self.res = np.fmin(self.res, np.fmin(np.where(diff > tiny, diff, np.inf),
                                             np.where(spread > tiny, spread, np.inf)))
        tol = np.where(np.isfinite(self.res), 0.5 * self.res, 0.0) + tiny
        same = step & (diff < tol) & (spread < tol)
        moved = good & ~same
        stuck, k = self._stuck(tick, good, v, same, moved, step)
        spike, score = self._spike(tick, good, v, step)
        self.prev2 = np.where(good, self.prev, self.prev2)
        self.prev = np.where(good, v, self.prev)
        # how long it has been stuck, for the message: all NaN on most ticks
        minutes = (np.where(stuck, (tick.last_ts - self.since) / 60e9, np.nan) if stuck.any()
                   else self._none_score)
        return [
            Finding("stuck", "tag", stuck, known=good, value=v, limit=k,
                    details={"minutes": minutes},
                    message="{subject} stuck at {value} {unit} for {minutes} min "
                            "({limit} unchanged readings are implausible for it)"),
            Finding("spike", "tag", spike, known=good, value=score,
                    limit=self.spike_limit,
                    message="{subject}: a jump of {value} times its usual step that came "
                            "back"),
        ]

    def _stuck(self, tick: Tick, good: np.ndarray, v: np.ndarray, same: np.ndarray,
               moved: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        peers = self.peers
        pool = ((np.bincount(self.peer_id, self.repeats, peers) + P0_PRIOR[0])
                / (np.bincount(self.peer_id, self.steps, peers) + P0_PRIOR[1]))
        p0 = (self.repeats + PEERS * pool[self.peer_id]) / (self.steps + PEERS)
        # 0 < p0 <= 1 (pseudo-counts): p0 = 1 gives k = inf, never stuck
        k = np.maximum(MIN_RUN, np.ceil(np.log(IMPLAUSIBLE) / np.log(p0)))
        k = np.where(p0 >= P0_CONSTANT, np.inf, k)
        # A run ends: its repeats teach p0 unless the run was long enough to be judged (a
        # stuck sensor must not teach that repeats are normal); a long run the tag left by
        # itself marks a resting value.
        ended = moved & step
        long_run = self.run >= k
        counted = np.where(long_run, 0.0, self.run)
        m = counted + 1.0
        decay = np.exp(-m / P0_MEMORY)
        self.repeats = np.where(ended, decay * self.repeats + counted, self.repeats)
        self.steps = np.where(ended, decay * self.steps + m, self.steps)
        self.rest = np.where(ended & long_run, self.prev, self.rest)
        self.moves = np.minimum(self.moves + ended, MIN_MOVES)
        self.run = np.where(same, self.run + 1, np.where(moved, 0.0, self.run))
        self.since = np.where(moved, tick.start_ns, self.since)
        held = tick.last_ts - self.since
        stuck = (self.eligible & ~self.binary & good & (self.moves >= MIN_MOVES)
                 & (self.run >= k) & (held >= MIN_STUCK * 1e9) & (v != self.rest))
        return stuck, k

    def _spike(self, tick: Tick, good: np.ndarray, v: np.ndarray,
               step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        judge = self.eligible & ~self.binary & (self.scale_n >= WARM_STEPS)
        d1 = self.prev - self.prev2
        d2 = v - self.prev
        hour = int(tick.start_ns // 3_600_000_000_000 % 24)
        by_hour = self.hourly[:, hour]
        # Steps are larger at some hours (PV under clouds at noon, the morning demand ramp):
        # a reading is judged against the larger of the tag's overall and this hour's scale.
        scale = np.fmax(np.fmax(self.scale, np.where(self.hourly_n[:, hour] >= HOUR_STEPS,
                                                     by_hour, np.nan)),
                        np.where(np.isfinite(self.res), self.res, 0.0))
        score = np.minimum(np.abs(d1), np.abs(d2)) / scale
        jump = (step & judge & (score > SPIKE) & (np.sign(d1) != np.sign(d2))
                & (np.abs(v - self.prev2) <= BACK * np.abs(d1)))
        wide = self._stray(tick, good, v, judge)
        # the scale learns from every step, clipped, except the jump's way back
        d = np.abs(d2)
        # nor from repeats: a stuck spell would shrink it
        learn = step & ~jump & (d2 != 0)
        clipped = np.where(np.isnan(self.scale), d, np.minimum(d, CLIP * scale))
        # a plain mean at first, so the scale is sound once warm
        alpha = np.maximum(SCALE_ALPHA, 1.0 / (self.scale_n + 1))
        self.scale = np.where(learn, np.where(np.isnan(self.scale), d,
                                              self.scale + alpha * (clipped - self.scale)),
                              self.scale)
        self.scale_n += learn
        n_h = self.hourly_n[:, hour]
        a_h = np.maximum(HOUR_ALPHA, 1.0 / (n_h + 1))
        self.hourly[:, hour] = np.where(learn, np.where(np.isnan(by_hour), d,
                                                        by_hour + a_h * (clipped - by_hour)),
                                        by_hour)
        self.hourly_n[:, hour] = n_h + learn
        if wide is not self._none:  # a tick of many readings each
            score = np.where(wide & ~jump, self._stray_score, score)
        spikes = jump | wide
        if not spikes.any():  # the common case
            return spikes, score
        # Several tags of a kind jumping at once is the process (a pump trip, a network
        # transient), not a sensor.
        alike = np.bincount(self.kind_id[spikes], minlength=self.kinds)
        return spikes & (alike[self.kind_id] < COMMON), score

    def _stray(self, tick: Tick, good: np.ndarray, v: np.ndarray,
               judge: np.ndarray) -> np.ndarray:
        """Many readings in a tick: a single wild one shows as a max or min far from the mean,
        against the learned spread (which learns from the other ticks, clipped)."""
        if tick.count.max() < SPREAD_MIN_COUNT:  # one reading per tick: nothing to judge
            self._stray_score = self._none_score
            return self._none
        stray = np.maximum(tick.max - v, v - tick.min)
        dense = good & (tick.count >= SPREAD_MIN_COUNT)
        wide = dense & judge & (stray > SPIKE_SPREAD * self.spread)
        ref = np.where(np.isnan(self.spread), stray, np.minimum(stray, CLIP * self.spread))
        self._stray_score = stray / self.spread
        self.spread = np.where(dense & ~wide, np.where(np.isnan(self.spread), stray,
                                                       self.spread + SCALE_ALPHA
                                                       * (ref - self.spread)), self.spread)
        return wide

    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _STATE}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in _STATE:
            setattr(self, name, state[name].copy())


_STATE = ("prev", "prev2", "res", "binary", "repeats", "steps", "run", "moves", "since", "rest",
          "scale", "scale_n", "hourly", "hourly_n", "spread")
