"""`anomaly` (zone scope): a zone's readings, taken together, unlike what it has learned.

The specific detectors each judge one signal against one model (a tag's own history, a zone's
water balance, a voltage band). Some faults show only in the combination of a zone's readings,
each of them inside its band: a pump trip (pressures sag at a demand they never sag at), a
valve closed on a pump's inlet (flow, temperature and vibration move a little each, against
how they usually move together), a feeder whose currents and voltages move against each other.
The engine raises this catch-all only where no more specific alarm is active in the zone
(`Engine._unexplained`), so it adds alarms, never duplicates.

The model is multivariate statistical process control, per zone and online: the zone's tags'
running mean and covariance (a shrunk correlation), and Hotelling's T-squared of each sample
against them, smoothed as a multivariate EWMA chart (MEWMA, Lowry et al. 1992) where readings
come fast enough that one is mostly sensor noise. T-squared weighs a deviation by how the tags
usually vary together: a pressure down while the flow is up is normal demand, a pressure down
at a normal flow is not. Plain numpy, vectorised over zones (stacked by size).

Any step, from 1 s to 1 h:
- A zone sample is a tick in which at least half of the zone's tags have a good reading: its
  features are those tags' tick means (a tag without one sits at its mean). So the window is
  the tick, or the recording's step when that is longer, never a fixed period that holds one
  reading or none. Status points (0/1) are left out.
- The MEWMA span is `SMOOTH_S` of samples (10 at 1 s, 1 from 10 s on: a tick mean of many
  readings is smoothed already), from the zone's own learned sample step.
- Warm-up, counted in samples and bounded in time: `WARM_SAMPLES` (5 minutes at 1 s, 25 hours
  at 5 minutes, a whole day of a daily cycle), at least `WARM_PER_DIM` per tag and
  `WARM_MIN`, at most `WARM_MAX_S` of source time (3 days of 15-minute or hourly steps).
- Threshold: the `QUANTILE` of the zone's own past scores (a decaying histogram of log
  T-squared per tag, from a third into the warm-up on, high samples left out). The condition
  is raised when `HITS` of the last `OF` samples are high and held while any of them is.
- Learning: every sample, the high ones at `FLAGGED_RATE` of the weight (a lasting change is
  learned in the end, slowly); the memory is `MEMORY_DAYS` of samples.
- Zones of more than `MAX_DIM` tags are judged in blocks of `MAX_DIM` (tag order).

The alarm names the tags furthest from their usual value, with the value, the usual value and
the deviation in standard deviations of the smoothed mean.

Why not river's HalfSpaceTrees, as before: measured on SKAB (a pump rig at 1 Hz, 8 tags in
one zone) and on the water simulator exported at 1-hour steps (bench/zone_model.py), this
model found more with fewer false alarms at a fraction of the cost, and its state is plain
numbers (HalfSpaceTrees' trees were pickled: a state file that ran code, issue 13 D4).

Tuned on SKAB (mostly its `other` group, but `valve1`'s figures were in sight: SKAB is not
held out for this detector) and the water simulator's tuning seeds 1-3 (5-minute and hourly
exports of bench/zone_model.py's scenario); seeds >= 100 only evaluate.

>>> from anomaly.core.points import PointInfo, PointTable
>>> from anomaly.core.ticks import Tick
>>> d = ZoneScore(PointTable([PointInfo("pump.flow", "flow", "L/s", zone="pump"),
...                           PointInfo("pump.current", "current", "A", zone="pump")]))
>>> def tick(k, q, i):  # one reading a second
...     v = np.array([q, i])
...     return Tick(k * 10**9, (k + 1) * 10**9, np.array([1, 1]), v, v, v, v,
...                 np.array([0, 0]), np.array([0, 0]))
>>> rng = np.random.default_rng(0)
>>> def normal(k):  # the motor's current follows the flow
...     q = 30 + rng.normal(0, 1)
...     return tick(k, q, 10 + 0.2 * q + rng.normal(0, 0.05))
>>> any(d.update(normal(k))[0].active[0] for k in range(400))
False
>>> found = [d.update(tick(400 + k, 30.0, 16.5)) for k in range(4)]  # more current, same flow
>>> [bool(f[0].active[0]) for f in found]
[False, False, False, True]
>>> print(found[-1][-1].message)  # doctest: +NORMALIZE_WHITESPACE
{subject}: readings unlike the zone's learned behaviour; furthest from usual: pump.current
16.2 A (+0.246 A from its usual 16 A, +3.7 SD), pump.flow 29.8 L/s (-0.122 L/s from its usual
29.9 L/s, -0.39 SD) (T-squared {value} per tag, limit {limit})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from anomaly.core.alarms import Finding
from anomaly.core.points import PointTable
from anomaly.core.ticks import Tick

SMOOTH_S = 10.0  # seconds of samples the MEWMA averages: readings this close are one state
SMOOTH_MAX = 30  # samples, at most
WARM_MIN = 60  # samples, at least ...
WARM_PER_DIM = 10  # ... and this many per tag (a covariance needs several per dimension)
FAST_STEP_S = 60.0  # samples closer than this: a machine's signals, learned in WARM_SAMPLES
WARM_SAMPLES = 300
WARM_CYCLE_S = 7 * 86400.0  # slower: a network's demand, which cycles by the day and the week
RELEARN_MIN_S = 86400.0  # a condition held this long (and a warm-up) is learned as normal
CALIBRATE_FROM = 1 / 3  # of the warm-up: from here on, scores teach the threshold
MEMORY_DAYS = 7.0  # the mean and covariance forget with this time constant
SHRINK = 0.1  # of the identity in the correlation matrix: few samples, many tags
QUANTILE = 0.99  # of the zone's past scores, ...
MARGIN = 1.5  # ... times this: the threshold (1.25: 4 x the false alarms on water at 5 min)
HITS, OF = 3, 4  # high samples among the last OF: a random excursion is not
FLAGGED_RATE = 0.1  # of a sample's learning weight when it is judged high
SD_FLOOR = 1e-3  # of |mean|: a tag that never moved is judged against this spread
MAX_DIM = 64  # tags per model: larger zones are judged in blocks
BINS, LOG_LO, LOG_HI = 400, -3.0, 5.0  # histogram of log10(T-squared per tag)
NAMED = 2  # tags named in a message


def _units(table: PointTable) -> list[tuple[int, np.ndarray]]:
    """(zone, point indices) of every model: a zone's judged points, in blocks of MAX_DIM."""
    judged = (table.zone_of >= 0) & ~table.of_kind("status")
    out = []
    for zone in range(len(table.zones)):
        members = np.flatnonzero(judged & (table.zone_of == zone))
        out += [(zone, members[i:i + MAX_DIM]) for i in range(0, len(members), MAX_DIM)]
    return out


def _pad(size: int) -> int:
    """The stacked size a model of `size` tags is kept at (powers of two: few stacks)."""
    return 1 << max(size - 1, 0).bit_length()


class _Stack:
    """The models of the units padded to one size, as stacked arrays."""

    def __init__(self, members: list[np.ndarray], zones: list[int], dim: int) -> None:
        u = len(members)
        padded = np.full((u, dim), -1, dtype=np.int64)
        for i, m in enumerate(members):
            padded[i, :len(m)] = m
        self.valid = padded >= 0
        self.idx = np.where(self.valid, padded, 0)
        self.size = self.valid.sum(1)
        self.zone = np.array(zones, dtype=np.int64)
        self.eye = np.eye(dim)
        self.n = np.zeros(u)  # samples learned (their weights)
        self.mu = np.zeros((u, dim))
        self.cov = np.zeros((u, dim, dim))
        self.z = np.zeros((u, dim))  # MEWMA of the standardised deviations
        self.step = np.full(u, np.nan)  # learned seconds between samples
        self.last_ns = np.full(u, -1, dtype=np.int64)  # the last sample's tick start
        self.hist = np.zeros((u, BINS))
        self.recent = np.zeros(u, dtype=np.int64)  # bit i: the i-th last sample was high
        self.active = np.zeros(u, dtype=bool)
        self.since_ns = np.zeros(u, dtype=np.int64)  # the condition's start
        self.score = np.full(u, np.nan)  # T-squared per tag of the last sample
        self.limit = np.full(u, np.nan)
        self.sd = np.ones((u, dim))  # spreads and inverse shrunk correlation, as of n_ref
        self.inv = np.tile(self.eye, (u, 1, 1))
        self.n_ref = np.full(u, -np.inf)
        self.x = np.zeros((u, dim))  # each tag's recent level, for messages
        self.dev = np.zeros((u, dim))  # ... its deviation, in SD of the smoothed mean

    _STATE = ("n", "mu", "cov", "z", "step", "last_ns", "hist", "recent", "active", "since_ns",
              "score", "limit", "sd", "inv", "n_ref", "x", "dev")

    def update(self, start_ns: int, good: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Score and learn the units with a sample in this tick; returns which those are."""
        has = good[self.idx] & self.valid
        reporting = has.sum(1)
        sampled = (reporting > 0) & (2 * reporting >= self.size)
        if not sampled.any():
            return sampled
        # Every unit sampled (the common case): slices, so that the stacks change in place.
        u: slice | np.ndarray = slice(None) if sampled.all() else np.flatnonzero(sampled)
        has = has[u]
        n, mu, size = self.n[u], self.mu[u], self.size[u]
        x = np.where(has, mean[self.idx[u]], mu)
        step = self._step(u, start_ns)
        step_s = np.nan_to_num(step, nan=1.0)
        memory = MEMORY_DAYS * 86400.0 / step_s
        warm = np.maximum(np.maximum(WARM_MIN, WARM_PER_DIM * size),
                          np.where(step_s < FAST_STEP_S, WARM_SAMPLES, WARM_CYCLE_S / step_s))
        self._refresh(u, n, np.minimum(n, np.maximum(memory, warm)))
        span = np.clip(np.round(SMOOTH_S / np.nan_to_num(step, nan=np.inf)), 1, SMOOTH_MAX)
        lam = 2.0 / (span + 1.0)
        e = np.where(has & (n[:, None] >= 2), (x - mu) / self.sd[u], 0.0)
        z = lam[:, None] * e + (1 - lam[:, None]) * self.z[u]
        t2 = np.einsum("ud,ude,ue->u", z, self.inv[u], z)
        t2 *= (2 - lam) / lam  # the MEWMA's covariance is lam / (2 - lam) of the samples'
        per_tag = t2 / size
        log_s = np.log10(per_tag + 1e-12)

        hist = self.hist[u]
        total = hist.sum(1)
        at = np.argmax(np.cumsum(hist, axis=1) >= QUANTILE * total[:, None], axis=1)
        limit = LOG_LO + (at + 1) * (LOG_HI - LOG_LO) / BINS + np.log10(MARGIN)
        high = (n >= warm) & (total > 0) & (log_s > limit)
        recent = ((self.recent[u] << 1) | high) & ((1 << OF) - 1)
        hits = np.array([r.bit_count() for r in recent.tolist()], dtype=np.int64)
        was = self.active[u]
        active = np.where(was, hits > 0, hits >= HITS)
        self.since_ns[u] = np.where(active & ~was, start_ns, self.since_ns[u])
        self.active[u] = active
        # A condition that has held for a warm-up (a day at least) is the new normal.
        held_s = np.where(active, (start_ns - self.since_ns[u]) / 1e9, 0.0)
        lasting = held_s >= np.maximum(warm * step_s, RELEARN_MIN_S)
        self.recent[u] = recent
        self.score[u] = per_tag
        self.limit[u] = np.where(total > 0, 10.0 ** limit, np.nan)
        # The recent level (the smoothed mean), and its deviation in its own SD.
        self.x[u], self.dev[u] = mu + z * self.sd[u], z * np.sqrt((2 - lam) / lam)[:, None]

        # Learn: the threshold from the scores of normal samples, the model from every one.
        teach = ~high & (n >= CALIBRATE_FROM * warm)
        decay = 0.5 ** (1.0 / np.maximum(memory, warm))
        hist *= np.where(teach, decay, 1.0)[:, None]
        bins = np.clip(((log_s - LOG_LO) * BINS / (LOG_HI - LOG_LO)).astype(np.int64), 0,
                       BINS - 1)
        hist[np.flatnonzero(teach), bins[teach]] += 1.0
        self.hist[u] = hist
        w = np.where(high & ~lasting, FLAGGED_RATE, 1.0)
        n = n + w
        rate = np.maximum(w / n, w / np.maximum(memory, warm))
        dx = x - mu
        self.mu[u] = mu + rate[:, None] * dx
        cov = self.cov[u]
        cov += rate[:, None, None] * dx[:, :, None] * dx[:, None, :]
        cov *= (1 - rate)[:, None, None]
        self.cov[u] = cov
        self.n[u], self.z[u] = n, z
        return sampled

    def _refresh(self, u: slice | np.ndarray, n: np.ndarray, weight: np.ndarray) -> None:
        """The spreads and the inverse shrunk correlation T-squared uses, recomputed once the
        model has learned a 32nd more (every sample while it is young): they change slowly,
        and inverting every unit's matrix every tick would be most of the cost."""
        stale = (n < 2) | (n - self.n_ref[u] >= np.maximum(weight / 32, 1.0))
        if not stale.any():
            return
        at = np.arange(len(self.n))[u][stale]
        cov, mu = self.cov[at], self.mu[at]
        var = np.diagonal(cov, axis1=1, axis2=2)
        sd = np.sqrt(np.maximum(var, (SD_FLOOR * np.abs(mu)) ** 2 + 1e-300))
        corr = cov / (sd[:, :, None] * sd[:, None, :])
        self.inv[at] = np.linalg.inv((1 - SHRINK) * corr + SHRINK * self.eye)
        self.sd[at], self.n_ref[at] = sd, n[stale]

    def _step(self, u: slice | np.ndarray, start_ns: int) -> np.ndarray:
        """Seconds between the units' samples: the median-like running estimate (a step that
        a gap doubles moves it little), NaN before the second sample."""
        last = self.last_ns[u]
        dt = np.where(last >= 0, (start_ns - last) / 1e9, np.nan)
        step = self.step[u]
        fresh = np.isnan(step)
        # A running median: move a tenth of the step towards each new gap's side.
        moved = step * np.where(dt > step, 1.1, np.where(dt < step, 1 / 1.1, 1.0))
        step = np.where(fresh, dt, np.where(np.isnan(dt), step, moved))
        self.step[u], self.last_ns[u] = step, start_ns
        return step

    def state(self, key: str) -> dict[str, np.ndarray]:
        return {f"{key}/{name}": getattr(self, name) for name in self._STATE}

    def load_state(self, key: str, state: Mapping[str, np.ndarray]) -> None:
        for name in self._STATE:
            setattr(self, name, state[f"{key}/{name}"].copy())


class ZoneScore:
    """Hotelling's T-squared (MEWMA) of each zone's tags against their learned mean and
    covariance (see the module doc)."""

    name = "zone_score"

    def __init__(self, table: PointTable, settings: object | None = None, *,
                 interval: float | None = None) -> None:
        del settings, interval  # the step is learned from the data, whatever the tick
        self.table = table
        self.n_zones = len(table.zones)
        units = _units(table)
        dims = sorted({_pad(len(m)) for _, m in units})
        self.stacks = {d: _Stack([m for _, m in units if _pad(len(m)) == d],
                                 [z for z, m in units if _pad(len(m)) == d], d) for d in dims}
        self._idle = Finding("anomaly", "zone", np.zeros(self.n_zones, dtype=bool), "",
                             known=np.zeros(self.n_zones, dtype=bool))
        self._active = np.zeros(self.n_zones, dtype=bool)

    def update(self, tick: Tick) -> list[Finding]:
        good = tick.count > 0
        known = np.zeros(self.n_zones, dtype=bool)
        for stack in self.stacks.values():
            sampled = stack.update(tick.start_ns, good, tick.mean)
            known[stack.zone[sampled]] = True
        if not known.any():
            return [replace(self._idle, active=self._active.copy())]
        active = np.zeros(self.n_zones, dtype=bool)
        for stack in self.stacks.values():
            active[stack.zone[stack.active]] = True
        self._active = active
        finding = Finding("anomaly", "zone", active, "", known=known)
        hit = np.flatnonzero(active & known)
        if hit.size == 0:
            return [finding]
        return self._messages(finding, hit)

    def _messages(self, finding: Finding, zones: np.ndarray) -> list[Finding]:
        """The finding, with each active zone's own message (the tags at fault) split off."""
        n = self.n_zones
        value, limit = np.full(n, np.nan), np.full(n, np.nan)
        worst: dict[int, tuple[float, _Stack, int]] = {}
        for stack in self.stacks.values():
            for i in np.flatnonzero(stack.active).tolist():
                zone, ratio = int(stack.zone[i]), stack.score[i] / stack.limit[i]
                if zone not in worst or ratio > worst[zone][0]:
                    worst[zone] = (ratio, stack, i)
        rest = finding.known.copy() if finding.known is not None else np.ones(n, dtype=bool)
        out = []
        for zone in zones.tolist():
            _, stack, i = worst[zone]
            value[zone], limit[zone] = stack.score[i], stack.limit[i]
            rest[zone] = False
            one = np.zeros(n, dtype=bool)
            one[zone] = True
            out.append(replace(finding, known=one, message=self._message(stack, i)))
        return [replace(finding, known=rest), *[replace(f, value=value, limit=limit)
                                                for f in out]]

    def _message(self, stack: _Stack, i: int) -> str:
        valid = np.flatnonzero(stack.valid[i])
        order = valid[np.argsort(-np.abs(stack.dev[i, valid]), kind="stable")][:NAMED]
        named = []
        for j in order.tolist():
            point = int(stack.idx[i, j])
            unit = f" {self.table.units[point]}" if self.table.units[point] else ""
            x, usual = stack.x[i, j], stack.mu[i, j]
            named.append(f"{self.table.tags[point]} {_sig(x)}{unit} ({_sig(x - usual, '+')}"
                         f"{unit} from its usual {_sig(usual)}{unit}, "
                         f"{_sig(stack.dev[i, j], '+', 2)} SD)")
        text = ", ".join(named).replace("{", "{{").replace("}", "}}")  # a format string
        return ("{subject}: readings unlike the zone's learned behaviour; furthest from usual: "
                + text + " (T-squared {value} per tag, limit {limit})")

    def state(self) -> dict[str, np.ndarray]:
        out = {"active": self._active}
        for dim, stack in self.stacks.items():
            out |= stack.state(f"d{dim}")
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._active = state["active"].copy()
        for dim, stack in self.stacks.items():
            stack.load_state(f"d{dim}", state)


def _sig(x: float, sign: str = "", figures: int = 3) -> str:
    """Three significant figures (or `figures`), as an operator reads them."""
    return format(float(x), f"{sign}.{figures}g")
