"""`stuck` and `spike`: sensor faults seen in a tag's own readings, learned per tag.

- `stuck`: the readings stop changing. Each tag learns `p0`, how often a reading repeats the
  previous one (within the tag's resolution, the smallest step it has shown), and a run of `k`
  repeats is judged stuck once `p0 ** k < 1e-6` (and at least `MIN_RUN` repeats over at
  least `MIN_STUCK` seconds). With many readings per tick a repeat is a tick whose readings
  are all equal to the previous value, and `MIN_RUN` counts its readings: 6 repeated ticks
  of 1-minute readings would be an hour and a half at 15-minute ticks, not the 6 readings of
  evidence `MIN_RUN` asks for (a run that short still teaches p0: only runs of `MIN_RUN`
  ticks are kept out of it and can mark a resting value, as with one reading per tick).
  Never judged: status points, tags that have shown only 0 and 1, tags never seen to change,
  tags that repeat most of the time (`p0 >= P0_CONSTANT`), and a value the tag has rested at
  before for a long run and then left by itself (a flow meter's low-flow cut-off, PV at
  night).
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
        # The same per hour of day, hour-major so that a tick's hour is one contiguous row
        # (`state()` gives it tag-major, as `hourly`).
        self.by_hour = np.full((24, n), np.nan)
        self.by_hour_n = np.zeros((24, n))
        self.spread = np.full(n, np.nan)  # EWMA of max(max - mean, mean - min) in a tick
        self._res_changed()

    def _res_changed(self) -> None:
        """The resolution as the judgements use it (0 while unknown): it changes rarely, so
        it is kept rather than derived on every tick."""
        self._res0 = np.where(np.isfinite(self.res), self.res, 0.0)
        self._half_res = 0.5 * self._res0

    def update(self, tick: Tick) -> list[Finding]:
        # NaN stands for "no value yet" throughout: its warnings are noise.
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._update(tick)

    def _update(self, tick: Tick) -> list[Finding]:
        good = tick.count > 0
        n_good = np.count_nonzero(good)
        if not n_good:  # an empty tick (a sparse recording) teaches and judges nothing
            return [Finding(kind, "tag", good, known=good, message="")
                    for kind in ("stuck", "spike")]
        # Every tag read (the common case): the `good` masks below are no-ops and are skipped.
        every = n_good == len(good)
        v = tick.mean
        zero_one = (v == 0.0) | (v == 1.0)
        if not every:
            zero_one |= ~good
        self.binary &= zero_one
        most = int(tick.count.max())
        # With one reading per tag and tick, max - min is 0 wherever read: no spread to learn.
        spread = tick.max - tick.min if most > 1 else None
        d2 = v - self.prev
        diff = np.abs(d2)
        # Float sums of equal readings may differ in the last bits.
        tiny = np.abs(v)
        tiny *= 1e-9
        finer = self._finer(diff, tiny)
        if spread is not None:
            finer |= self._finer(spread, tiny)
        if finer:
            self._res_changed()
        tol = self._half_res + tiny
        # diff < tol implies a good reading and a previous value (NaN compares False), and a
        # spread of 0 is below any tol above a diff.
        same = diff < tol
        if spread is not None:
            same &= spread < tol
        moved = ~same
        step = ~np.isnan(self.prev)
        if not every:
            moved &= good
            step &= good
        stuck, k = self._stuck(tick, good, v, same, moved, step, most)
        spike, score = self._spike(tick, good, v, step, d2, diff, most)
        if every:  # both shift whole: swap the buffers
            self.prev2, self.prev = self.prev, self.prev2
            np.copyto(self.prev, v)
        else:
            self.prev2 = np.where(good, self.prev, self.prev2)
            self.prev = np.where(good, v, self.prev)
        # how long it has been stuck, for the message: all NaN on most ticks
        minutes = (np.where(stuck, (tick.last_ts - self.since) / 60e9, np.nan)
                   if stuck is not self._none and stuck.any() else self._none_score)
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

    def _finer(self, step: np.ndarray, tiny: np.ndarray) -> bool:
        """Lower the resolution to the nonzero steps below it; whether any was."""
        finer = (step > tiny) & (step < self.res)
        if not finer.any():
            return False
        np.copyto(self.res, step, where=finer)
        return True

    def _limits(self, count: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """k: the run of repeats that is implausible for each tag (inf: never judged), and
        the one judged on this tick's `count` readings per tag (k itself without `count`)."""
        peers = self.peers
        pool = np.bincount(self.peer_id, self.repeats, peers)
        pool += P0_PRIOR[0]
        pool /= np.bincount(self.peer_id, self.steps, peers) + P0_PRIOR[1]
        p0 = pool.take(self.peer_id)
        p0 *= PEERS
        p0 += self.repeats
        p0 /= self.steps + PEERS
        # 0 < p0 <= 1 (pseudo-counts): p0 = 1 gives k = inf, never stuck
        k = np.log(p0)
        np.divide(LOG_IMPLAUSIBLE, k, out=k)
        np.ceil(k, out=k)
        constant = p0 >= P0_CONSTANT
        judged = None
        if count is not None:
            judged = np.maximum(MIN_RUN / np.maximum(count, 1), k)
            np.ceil(judged, out=judged)
            judged[constant] = np.inf
        np.maximum(MIN_RUN, k, out=k)
        k[constant] = np.inf
        return k, k if judged is None else judged

    def _stuck(self, tick: Tick, good: np.ndarray, v: np.ndarray, same: np.ndarray,
               moved: np.ndarray, step: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray]:
        k, judged = self._limits(tick.count if most > 1 else None)
        # A run ends: its repeats teach p0 unless the run was long enough to be judged (a
        # stuck sensor must not teach that repeats are normal); a long run the tag left by
        # itself marks a resting value.
        ended = moved & step
        long_run = self.run >= k
        if long_run.any():
            counted = np.where(long_run, 0.0, self.run)
            self.rest = np.where(ended & long_run, self.prev, self.rest)
        else:
            counted = self.run
        m = counted + 1.0
        decay = np.negative(m)
        decay /= P0_MEMORY
        np.exp(decay, out=decay)
        repeats = decay * self.repeats
        repeats += counted
        self.repeats = np.where(ended, repeats, self.repeats)
        decay *= self.steps
        decay += m
        self.steps = np.where(ended, decay, self.steps)
        self.moves += ended
        np.minimum(self.moves, MIN_MOVES, out=self.moves)
        self.run = np.where(moved, 0.0, self.run + same)
        self.since = np.where(moved, tick.start_ns, self.since)
        stuck = self.run >= judged  # rare, and all else is judged only then
        if not stuck.any():
            return self._none, k
        held = tick.last_ts - self.since
        stuck &= (self.eligible & ~self.binary & good & (self.moves >= MIN_MOVES)
                  & (held >= MIN_STUCK * 1e9) & (v != self.rest))
        return stuck, k

    def _spike(self, tick: Tick, good: np.ndarray, v: np.ndarray, step: np.ndarray,
               d2: np.ndarray, d: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray]:
        d1 = self.prev - self.prev2
        hour = int(tick.start_ns // 3_600_000_000_000 % 24)
        by_hour, n_h = self.by_hour[hour], self.by_hour_n[hour]
        # Steps are larger at some hours (PV under clouds at noon, the morning demand ramp):
        # a reading is judged against the larger of the tag's overall and this hour's scale.
        scale = np.fmax(self.scale, np.where(n_h >= HOUR_STEPS, by_hour, np.nan))
        np.fmax(scale, self._res0, out=scale)  # never NaN: the resolution is 0 while unknown
        score = np.abs(d1)
        np.minimum(score, d, out=score)
        score /= scale
        # A score above SPIKE implies both steps are numbers, so a good reading after two.
        jump = score > SPIKE
        # The rest of the test only for candidates: most ticks have none.
        jumped = bool(jump.any())
        if jumped:
            jump &= (self._judged() & (np.sign(d1) != np.sign(d2))
                     & (np.abs(v - self.prev2) <= BACK * np.abs(d1)))
            jumped = bool(jump.any())
        wide = (self._stray(tick, good, v) if most >= SPREAD_MIN_COUNT
                else self._no_stray())
        # the scale learns from every step, clipped, except the jump's way back, nor from
        # repeats: a stuck spell would shrink it
        learn = d2 != 0
        learn &= step
        if jumped:
            learn &= ~jump
        # Where the tag has no scale yet neither has any hour (they learn together): both
        # start at d, so the clip needs no exception for them.
        scale *= CLIP
        clipped = np.minimum(d, scale, out=scale)
        # a plain mean at first, so the scale is sound once warm
        alpha = self.scale_n + 1
        np.divide(1.0, alpha, out=alpha)
        np.maximum(SCALE_ALPHA, alpha, out=alpha)
        self.scale = np.where(learn, _ewma(self.scale, clipped, alpha, d), self.scale)
        self.scale_n += learn
        a_h = n_h + 1
        np.divide(1.0, a_h, out=a_h)
        np.maximum(HOUR_ALPHA, a_h, out=a_h)
        by_hour[:] = np.where(learn, _ewma(by_hour, clipped, a_h, d), by_hour)
        n_h += learn
        if wide is not self._none:  # a tick of many readings each
            score = np.where(wide & ~jump, self._stray_score, score)
        spikes = jump | wide
        if not spikes.any():  # the common case
            return spikes, score
        # Several tags of a kind jumping at once is the process (a pump trip, a network
        # transient), not a sensor.
        alike = np.bincount(self.kind_id[spikes], minlength=self.kinds)
        return spikes & (alike[self.kind_id] < COMMON), score

    def _judged(self) -> np.ndarray:
        """Tags whose spikes are judged: warm, not status, not 0/1."""
        return self.eligible & ~self.binary & (self.scale_n >= WARM_STEPS)

    def _no_stray(self) -> np.ndarray:
        """Few readings per tag in the tick: no spread to judge."""
        self._stray_score = self._none_score
        return self._none

    def _stray(self, tick: Tick, good: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Many readings in a tick: a single wild one shows as a max or min far from the mean,
        against the learned spread (which learns from the other ticks, clipped)."""
        judge = self._judged()
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
        return {"hourly": self.by_hour.T, "hourly_n": self.by_hour_n.T,
                **{name: getattr(self, name) for name in _STATE}}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in _STATE:
            setattr(self, name, state[name].copy())
        self.by_hour = np.array(state["hourly"].T, order="C")
        self.by_hour_n = np.array(state["hourly_n"].T, order="C")
        self._res_changed()


LOG_IMPLAUSIBLE = np.log(IMPLAUSIBLE)


def _ewma(mean: np.ndarray, x: np.ndarray, alpha: np.ndarray, first: np.ndarray) -> np.ndarray:
    """mean + alpha (x - mean), or `first` where there is no mean yet."""
    out = x - mean
    out *= alpha
    out += mean
    nan = np.isnan(mean)
    return np.where(nan, first, out) if nan.any() else out


_STATE = ("prev", "prev2", "res", "binary", "repeats", "steps", "run", "moves", "since", "rest",
          "scale", "scale_n", "spread")
