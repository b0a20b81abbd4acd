"""`anomaly` (zone scope): a zone's readings, taken together, unlike anything it has learned.

The specific detectors each judge one signal against one model (a tag's own history, a zone's
water balance, a voltage band). Some faults show only in the combination of a zone's readings,
or in a signal whose every reading is within its band: a pump trip (pressures across a zone
sag at an hour when they never do, while every reading stays inside its limits), a noise burst
on a meter (readings scatter without a spike, a step or a drift), a valve left in a wrong
position, a feeder whose currents and voltages move against each other. The simulator labels
such events `anomaly`. This detector forecasts, per zone, each of its points' half-hour mean
and range from a time-of-day profile, scores the vector of residuals with river's
HalfSpaceTrees (the `ml` extra; the engine leaves this detector out without river or with
`river = false`), and raises `anomaly` when the score stays above a threshold it learns
online. The engine raises it only where no more specific alarm is active in the zone
(`Engine._unexplained`), so it adds alarms, never duplicates.

Per zone, every `PERIOD` seconds of source time:
- features: each point's mean and range (max - min) over the period, minus the feature's
  time-of-day profile (one slot per period of the day, an EWMA over `SCALE_DAYS` days), in
  robust units (the running mean absolute residual) and squashed into [0, 1] with tanh; a
  point without good readings in the period sits at its profile (silence is the comms and
  dropout detectors' business), and a zone with fewer than half its points reporting is not
  judged;
- model: HalfSpaceTrees (seeded: deterministic; 10 trees of height 8) with a reference
  window of one day;
- threshold: the `QUANTILE` of the zone's past scores (a decaying histogram: plain arrays);
  a residual beyond `DEV_HIGH` robust SD counts as a high score too. The condition is raised
  when `HITS` of the last `OF` scores are high, left when none of the last `OF` are; nothing
  before `WARMUP_DAYS` (a day of profiles, a day of reference window, half a day of scores).

What it catches, measured on the tuning seeds: zone-wide shifts far outside the learned daily
pattern (a line outage, a pump trip deep enough to sag a zone's pressures by many robust SD;
the synthetic trip in the tests). What it does not: the simulator's 90-minute pump trip and
its noise bursts stay within a week's normal spread (weekend demand moves pressures as far),
so they go unflagged; a week of history cannot tell them apart, a weekly profile would need
weeks of data. A per-point roughness feature (mean |second difference| over the period) was
tried for the noise bursts: the burst on a demand-driven flow meter (10 x the meter's noise,
~1 L/s, on a flow whose own 5-minute steps are ~1 L/s) held 3 of 4 periods at 3.0, 1.9 and
1.4 robust SD on seeds 1-3, where normal weeks reach 2.3, and the trees, over 15 such
features, did not rise at all; so it is not used. The pump trip is labelled on the pump's
status tag, which belongs to no zone: a zone alarm cannot be at its location. Its false
alarms: 1 in 9 zone-weeks (water normal, seeds 1-3).

Costs: HalfSpaceTrees learn_one + score_one is ~50-100 us per zone sample in Python, plus
~30 ms per zone to build the trees on its first sample (2^height nodes a tree), so the
detector runs once per period and zone, not per tick or per tag, and the per-period work
around river is vectorised over zones. A 2,000-tag site (240 zones, 7 days of 5-minute
readings): ~20 s of replay CPU with it, ~3.3 s without.

Tuned on simulator exports with TUNING SEEDS 1, 2, 3 only (normal, leak, sensor-faults,
grid-events); seeds >= 100 are for the evaluation in bench/anomaly.py.

>>> import numpy as np
>>> from anomaly.points import PointInfo, PointTable
>>> from anomaly.ticks import Tick
>>> table = PointTable([PointInfo("z.p", "pressure", zone="z"),
...                     PointInfo("z.q", "flow", zone="z")])
>>> d = ZoneScore(table, interval=PERIOD)
>>> def tick(k, p, q):
...     v = np.array([p, q])
...     return Tick(k * PERIOD * 10**9, (k + 1) * PERIOD * 10**9, np.array([1, 1]), v, v, v, v,
...                 np.array([0, 0]), np.array([0, 0]))
>>> day = 86400 // PERIOD
>>> rng = np.random.default_rng(0)
>>> def normal(k):  # pressure falls as demand (flow) rises over the day
...     q = 10 + 5 * np.sin(2 * np.pi * k / day) + rng.normal(0, 0.3)
...     return tick(k, 50 - q, q)
>>> quiet = [bool(d.update(normal(k))[0].active[0]) for k in range(5 * day)]
>>> any(quiet)
False
>>> k = 5 * day
>>> trip = [bool(d.update(tick(k + i, 20.0, 12.0))[0].active[0]) for i in range(4)]
>>> any(trip)  # pressure down 20 m at normal demand: a pump trip
True
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping

import numpy as np

from anomaly.alarms import Finding
from anomaly.points import PointTable
from anomaly.ticks import Tick

log = logging.getLogger(__name__)

PERIOD = 1800  # seconds of source time per zone sample: river's cost is per sample
SCALE_DAYS = 3.0  # time constant of the running scale of each feature
WARMUP_DAYS = 2.5  # a day of profiles, a day of reference window, half a day of scores
QUANTILE = 0.99  # of the zone's past scores: the threshold
HITS, OF = 3, 4  # scores above the threshold among the last OF: a random excursion is not
BINS = 1000  # score histogram resolution (scores are in [0, 1])
HISTORY_DAYS = 14.0  # half-life of the score histogram: old behaviour fades
# river's defaults but the fixed seed (replay parity). Height 5 would cost a third (2^height
# nodes to build per tree, a shorter walk per sample) but raised the false alarms on water
# normal from 1 to 2 in 9 zone-weeks (seeds 1-3), height 6 to 2 as well.
N_TREES, HEIGHT, SEED = 10, 8, 42
SQUASH = 2.0  # robust deviations mapped to tanh(1) ~ 0.76 of the half range
# A residual this far out counts as a high score whatever the trees say: the trees' mass
# estimates, from one day's window, hardly tell 5 from 50 deviations (tuning seeds 1-3).
DEV_HIGH = 12.0
FEATURES = ("mean", "range")


class ZoneScore:
    """HalfSpaceTrees per zone over its points' scaled period features."""

    name = "zone_score"

    def __init__(self, table: PointTable, settings: object | None = None, *,
                 interval: float | None = None) -> None:
        interval = float(interval if interval is not None
                         else getattr(settings, "interval", 60.0))
        self.period_ns = int(max(PERIOD, interval) * 1e9)
        per_day = 86400e9 / self.period_ns
        self.window = max(round(per_day), 8)
        self.warmup = int(np.ceil(WARMUP_DAYS * per_day))
        self.scale_n = SCALE_DAYS * per_day
        self.decay = 0.5 ** (1.0 / (HISTORY_DAYS * per_day))
        n_zones = len(table.zones)
        self.zone_of = table.zone_of
        self.zoned = np.flatnonzero(table.zone_of >= 0)
        n = len(table)
        # Features are [FEATURES[0] of the zoned points, FEATURES[1] of them, ...]; a zone's
        # columns and their names are fixed, so each period's loop over zones only slices.
        zone_of_feature = np.tile(self.zone_of[self.zoned], len(FEATURES))
        self.order = np.argsort(zone_of_feature, kind="stable")  # columns grouped by zone
        sizes = np.bincount(zone_of_feature, minlength=n_zones)
        self.bounds = np.concatenate([[0], np.cumsum(sizes)])  # zone k: order[bounds[k]:...]
        self.filled = np.flatnonzero(sizes > 0)  # zones with points: reduceat's segments
        tags = [table.tags[i] for i in self.zoned.tolist()]
        names = [f"{t}.{f}" for f in FEATURES for t in tags]
        self.names = [tuple(names[c] for c in self.order[self.bounds[k]:self.bounds[k + 1]])
                      for k in range(n_zones)]
        n_feat = len(FEATURES) * len(self.zoned)
        self.slots = max(round(per_day), 1)
        self.prof_n = np.zeros((n_feat, self.slots))  # samples per time-of-day slot
        self.prof = np.zeros((n_feat, self.slots))  # time-of-day profile of each feature
        self.feat_n = np.zeros(n_feat)
        self.feat_dev = np.zeros(n_feat)  # mean absolute residual against the profile
        self.p_sum = np.zeros(n)
        self.p_count = np.zeros(n, dtype=np.int64)
        self.p_min = np.full(n, np.inf)
        self.p_max = np.full(n, -np.inf)
        self.period = -1  # index of the period being accumulated
        self.samples = np.zeros(n_zones, dtype=np.int64)  # zone samples learned
        self.hist = np.zeros((n_zones, BINS))
        self.recent = np.zeros(n_zones, dtype=np.int64)  # bit i: the i-th last score was high
        self.active = np.zeros(n_zones, dtype=bool)
        self.score = np.full(n_zones, np.nan)
        self.limit = np.full(n_zones, np.nan)
        self.deviation = np.full(n_zones, np.nan)
        self.known = np.zeros(n_zones, dtype=bool)
        # Built on a zone's first judged sample: importing river takes seconds, which a
        # gateway starting up should spend polling.
        self.models: list[object | None] = [None] * n_zones

    def _model(self) -> object:
        from river.anomaly import HalfSpaceTrees  # the `ml` extra: only when this detector runs

        return HalfSpaceTrees(n_trees=N_TREES, height=HEIGHT, window_size=self.window, seed=SEED)

    def update(self, tick: Tick) -> list[Finding]:
        period = tick.start_ns // self.period_ns
        if self.period < 0:
            self.period = period
        if period != self.period:
            self._judge(self.period)
            self.period = period
        good = tick.count > 0
        if good.any():
            self.p_sum[good] += tick.mean[good]
            self.p_count[good] += 1
            np.minimum(self.p_min, np.where(good, tick.min, np.inf), out=self.p_min)
            np.maximum(self.p_max, np.where(good, tick.max, -np.inf), out=self.p_max)
        return [Finding("anomaly", "zone", self.active.copy(), known=self.known.copy(),
                        value=self.score, limit=self.limit,
                        details={"deviation": self.deviation},
                        message="{subject}: readings unlike the zone's learned behaviour "
                                "(score {value} above {limit}; largest deviation {deviation} "
                                "robust SD)")]

    def _features(self) -> tuple[np.ndarray, np.ndarray]:
        """The period's features of the zoned points (NaN where missing), and which points
        had a good reading; resets the period's sums."""
        z = self.zoned
        count = self.p_count[z]
        has = count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(has, self.p_sum[z] / np.maximum(count, 1), np.nan)
        spread = np.where(has, self.p_max[z] - self.p_min[z], np.nan)
        self.p_sum[:] = 0.0
        self.p_count[:] = 0
        self.p_min[:] = np.inf
        self.p_max[:] = -np.inf
        return np.concatenate([mean, spread]), has

    def _judge(self, period: int) -> None:
        """Score and learn the period just ended; updates the zones' conditions."""
        x, has = self._features()
        u, dev = self._scale(x, int(period % self.slots))
        n_zones = len(self.models)
        reporting = np.bincount(self.zone_of[self.zoned], weights=has, minlength=n_zones)
        size = np.bincount(self.zone_of[self.zoned], minlength=n_zones)
        self.known = (size > 0) & (2 * reporting >= size)
        self.recent <<= 1
        self.recent &= (1 << OF) - 1
        self.samples[self.known] += 1
        # The first day teaches the profiles: residuals mean nothing yet.
        judged = np.flatnonzero(self.known & (self.samples > self.window))
        u = u[self.order].tolist()
        scores = np.empty(len(judged))
        for i, k in enumerate(judged.tolist()):
            model = self.models[k]
            if model is None:
                model = self.models[k] = self._model()
            features = dict(zip(self.names[k], u[self.bounds[k]:self.bounds[k + 1]],
                                strict=True))
            scores[i] = model.score_one(features)  # type: ignore[attr-defined]
            model.learn_one(features)  # type: ignore[attr-defined]
        # Until the reference window is full, scores mean nothing.
        full = self.samples[judged] > 2 * self.window
        judged, scores = judged[full], scores[full]
        if judged.size == 0:
            return self._hold()
        absdev = np.where(np.isfinite(dev), np.abs(dev), -np.inf)[self.order]
        largest = np.full(n_zones, -np.inf)
        largest[self.filled] = np.maximum.reduceat(absdev, self.bounds[self.filled])
        largest = largest[judged]
        largest[np.isneginf(largest)] = np.nan
        hist = self.hist[judged]
        total = hist.sum(axis=1)
        ready = (self.samples[judged] > self.warmup) & (total > 0)
        limit = (np.argmax(np.cumsum(hist, axis=1) >= QUANTILE * total[:, None], axis=1)
                 + 1) / BINS
        high = ready & ((scores > limit) | (largest > DEV_HIGH))
        self.limit[judged[ready]] = limit[ready]
        self.recent[judged] |= high
        hist *= self.decay
        hist[np.arange(judged.size), np.minimum((scores * BINS).astype(np.int64), BINS - 1)] += 1
        self.hist[judged] = hist
        self.score[judged] = scores
        self.deviation[judged] = largest
        self._hold()

    def _hold(self) -> None:
        """Raise a zone's condition on HITS high scores of the last OF, hold it while any."""
        hits = np.array([r.bit_count() for r in self.recent.tolist()], dtype=np.int64)
        self.active = np.where(self.known, np.where(self.active, hits > 0, hits >= HITS),
                               self.active)

    def _scale(self, x: np.ndarray, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Residuals against each feature's time-of-day profile, in robust SD units (NaN
        where missing), and squashed into [0, 1] for the trees (0.5 where missing)."""
        has = np.isfinite(x)
        prof, n = self.prof[:, slot], self.prof_n[:, slot]
        first = has & (n == 0)
        prof[first] = x[first]
        scale = np.maximum(self.feat_dev, 1e-6 * np.maximum(np.abs(prof), 1.0))
        with np.errstate(invalid="ignore"):
            dev = np.where(self.feat_n > 0, (x - prof) / scale / 1.25, np.nan)  # MAD ~ 0.8 SD
        u = np.where(np.isfinite(dev), 0.5 + 0.5 * np.tanh(dev / SQUASH), 0.5)
        n[has] += 1
        rate = np.maximum(1.0 / np.maximum(n, 1), 1.0 / SCALE_DAYS)[has]  # a sample a day
        residual = np.abs(x - prof)
        prof[has] += rate * (x - prof)[has]
        later = has & ~first
        self.feat_n[later] += 1
        r = np.maximum(1.0 / np.maximum(self.feat_n, 1), 1.0 / self.scale_n)[later]
        self.feat_dev[later] += r * (residual[later] - self.feat_dev[later])
        self.prof[:, slot], self.prof_n[:, slot] = prof, n
        return u, dev

    def state(self) -> dict[str, np.ndarray]:
        # The trees are river objects: pickled into a uint8 array of this detector's state,
        # so the engine's state file stays plain numpy (np.load with allow_pickle=False).
        # Rebuilding them from a saved window would be exact only by replaying river's
        # private window pivot; a pickle resumes exactly, and the file is one the engine
        # wrote itself in its data_dir (the same trust as the site file). A river upgrade
        # that cannot read it costs one warm-up (see load_state), not a failure.
        models = np.frombuffer(pickle.dumps(self.models, protocol=5), dtype=np.uint8)
        return {"models": models, "feat_n": self.feat_n, "prof": self.prof, "prof_n": self.prof_n,
                "feat_dev": self.feat_dev, "p_sum": self.p_sum, "p_count": self.p_count,
                "p_min": self.p_min, "p_max": self.p_max, "period": np.array([self.period]),
                "samples": self.samples, "hist": self.hist, "recent": self.recent,
                "active": self.active, "score": self.score, "limit": self.limit,
                "deviation": self.deviation, "known": self.known}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        try:
            models = pickle.loads(state["models"].tobytes())  # our own file: see state()
        except Exception as e:  # any unpickling failure: relearn rather than refuse to start
            log.warning("event=zone_score_relearn reason=%r", str(e))
            return  # the fresh models built in __init__ learn again
        if len(models) != len(self.models):
            log.warning("event=zone_score_relearn reason=zone_count")
            return
        self.models = models
        for name in ("feat_n", "prof", "prof_n", "feat_dev", "p_sum", "p_count", "p_min", "p_max",
                     "samples", "hist", "recent", "active", "score", "limit", "deviation",
                     "known"):
            setattr(self, name, state[name].copy())
        self.period = int(state["period"][0])
