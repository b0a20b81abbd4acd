"""Alarm-system KPIs (EEMUA 191) from the alarm store: rate per window, flood state, most
frequent, chattering alarms (those that repeat, and those the engine holds back), stale alarms,
priority mix.

Rates count *annunciated* raises (neither shelved nor suppressed) by the time the store
recorded them: that is the load the operator saw. Suppressed raises are counted apart.
"""

from __future__ import annotations

import numpy as np

from anomaly.core.alarms import PRIORITIES
from gateway.alarms.store import AlarmStore
from gateway.site.model import AlarmsSection
from timegrammar.iso import iso, iso_column

NS = 1_000_000_000
TOP = 10  # most frequent alarms shown
STALE_IDS = 100  # stale alarms named (all are counted)


def floods(times: np.ndarray, window_ns: int, start_above: int, end_below: int,
           until_ns: int) -> list[tuple[int, int | None, int]]:
    """Flood episodes in sorted raise times: (start, end or None while on, peak count in a
    window). The count at time t covers (t - window, t]; a flood starts when it exceeds
    `start_above` and ends when it falls below `end_below` (hysteresis)."""
    leave = times + window_ns
    out: list[tuple[int, int | None, int]] = []
    count = i = j = peak = 0
    since: int | None = None
    n = len(times)
    while i < n or j < n:
        if j < n and (i >= n or leave[j] <= times[i]):  # at a tie the old one leaves first
            t = int(leave[j])
            if t > until_ns:
                break
            count -= 1
            j += 1
            if since is not None and count < end_below:
                out.append((since, t, peak))
                since = None
        else:
            count += 1
            i += 1
            if since is None and count > start_above:
                since, peak = int(times[i - 1]), count
            peak = max(peak, count)
    if since is not None:
        out.append((since, None, peak))
    return out


def kpis(store: AlarmStore, settings: AlarmsSection, start_ns: int, end_ns: int) -> dict:
    """The KPIs over [start_ns, end_ns); `end_ns` is "now" for the current rate and flood."""
    window = int(settings.window * NS)
    # From a window before the period, so that a flood already on at its start is seen.
    times = store.raise_times(start_ns - window, end_ns)
    period_times = times[times >= start_ns]
    first = start_ns - start_ns % window
    bins = np.bincount((period_times - first) // window,
                       minlength=max(end_ns - 1 - first, 0) // window + 1)
    episodes = [e for e in floods(times, window, settings.flood_start, settings.flood_end,
                                  end_ns) if (e[1] or end_ns) > start_ns]
    flooded = sum(min(end or end_ns, end_ns) - max(begin, start_ns) for begin, end, _ in episodes)
    on = bool(episodes) and episodes[-1][1] is None

    subject = ("kind", "tag", "zone", "device")
    top = [{**{k: r[k] for k in subject}, "count": r["count"]}
           for r in store.raise_counts(start_ns, end_ns, "condition", TOP)]
    chatter_ns, k = int(settings.chatter_window * NS), settings.chatter_count
    repeats = store.repeats(start_ns, end_ns, k)
    conditions = np.array([r[0] for r in repeats], dtype=object)
    at = np.fromiter((r[1] for r in repeats), dtype=np.int64, count=len(repeats))
    chattering = []
    if len(repeats):
        starts = np.flatnonzero(np.r_[True, conditions[1:] != conditions[:-1]])
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(at)], strict=True):
            t = at[a:b]
            most = int((np.searchsorted(t, t + chatter_ns, side="right")
                        - np.arange(len(t))).max())
            if most >= k:
                chattering.append({**store.subject(conditions[a]), "count": len(t),
                                   "max_in_window": most})

    held, holding = store.held_back(start_ns, end_ns)
    mix = {r["priority"]: r["count"] for r in store.raise_counts(start_ns, end_ns, "priority")}
    raised = len(period_times)
    stale_n, stale_ids = store.stale(end_ns - int(settings.stale_alarm_after * NS), STALE_IDS)
    period = max(end_ns - start_ns, 1)
    return {
        "time": iso(end_ns, "ms"),
        "start": iso(start_ns, "ms"),
        "end": iso(end_ns, "ms"),
        "window_seconds": settings.window,
        "rate": {
            "current": int(np.count_nonzero(times > end_ns - window)),
            "average": round(raised * window / period, 3),
            "max": int(bins.max()) if len(bins) else 0,
            "series": [{"start": t, "count": c} for t, c in zip(
                iso_column(first + window * np.arange(len(bins), dtype=np.int64), "s"),
                bins.tolist(), strict=True)],
        },
        "flood": {
            "active": on,
            "since": iso(episodes[-1][0], "ms") if on else None,
            "start_above": settings.flood_start,
            "end_below": settings.flood_end,
            "percent_of_time": round(100.0 * flooded / period, 2),
            "episodes": [{"start": iso(b, "ms"), "end": None if e is None else iso(e, "ms"),
                          "peak": p}
                         for b, e, p in episodes],
        },
        "raised": raised,
        "suppressed_raised": store.unannunciated(start_ns, end_ns),
        "top": top,
        "chattering": chattering,
        # The gate's holds: a chattering alarm's id is chattering:<held kind>:<subject>:<time>.
        "held_back": {"raised": held,
                      "active": [{"id": r["id"], "kind": r["id"].split(":")[1], "tag": r["tag"],
                                  "zone": r["zone"], "device": r["device"],
                                  "since": iso(r["start_ns"], "ms")} for r in holding]},
        "stale": {"after_seconds": settings.stale_alarm_after, "count": stale_n, "ids": stale_ids},
        "priority_mix": {p: {"count": mix.get(p, 0),
                             "percent": round(100.0 * mix.get(p, 0) / raised, 1) if raised
                             else 0.0} for p in PRIORITIES},
        "standing": dict(store.standing(end_ns)),
    }
