"""The peer harness's measurement window and decode check against VictoriaMetrics, for
`python -m bench.peers --sinks victoria` (the harness's own, sample.py and decode_check.py,
speak InfluxQL, which VictoriaMetrics does not).

    <harness python> -m bench.peers_victoria window --url URL --match RE --gw-pid N ...
    <harness python> -m bench.peers_victoria decode --url URL --devices 20 --points 2500

Same measurements, same JSON keys as the harness's: the gateway's process tree sampled once a
second by the harness's `TreeMeter` (so psutil, so the harness's Python, with the harness folder
on `sys.path`); stored readings counted at the window's start and end, and those stamped in a
whole number of poll intervals within it, counted after a 3 s settle; the decode check's ~64
seeded points matched against the farm's value model (`farmvalues`).

Counting: the InfluxDB 2.x write API stores field `f` of measurement `m` as metric `m_f`; a
reading is a `value` sample, a `quality` sample, or both (an uncertain one, quality 1), so
readings = count(value) + count(quality != 1), with MetricsQL's `count_over_time` and
`count_ne_over_time` at an explicit time (never the server's clock less its 30 s
`-search.latencyOffset`), uncached, after `/internal/force_flush` (VictoriaMetrics makes
what it took searchable about once a second), over the run's span only (VictoriaMetrics
1.79 counting over 30 days at the current time, writes going on, gave 0 at first, then less
than over the last hour). Stdlib and numpy only besides the sampler:
`bench.peers` imports `readings` too.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
import urllib.parse
import urllib.request

TIMEOUT = 120.0  # seconds per query
SETTLE = 3.0  # seconds before the count of readings stamped in the window (as sample.py)
LOOKBACK = 20  # seconds of values read back per point by the decode check (as decode_check.py)


def _get(url: str, path: str, params: dict[str, str]) -> bytes:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}",
                                timeout=TIMEOUT) as r:
        return r.read()


def flush(url: str) -> None:
    """Make every sample taken so far searchable."""
    _get(url, "/internal/force_flush", {})


def _instant(url: str, query: str, at: float) -> float:
    body = json.loads(_get(url, "/api/v1/query", {"query": query, "time": f"{at:.3f}",
                                                  "nocache": "1"}))
    if body.get("status") != "success":
        raise RuntimeError(f"{query}: {body}")
    return sum(float(r["value"][1]) for r in body["data"]["result"])


def values(url: str, match: str, end: float, span: float) -> int:
    """`value` samples of metrics matching `match` (`<measurement>_`, e.g. "(pressure|flow)_")
    stamped in (end - span, end], seconds: the readings with a value."""
    flush(url)
    return round(_instant(url, f'sum(count_over_time({{__name__=~"{match}value"}}'
                               f'[{_ms(span)}]))', end))


def readings(url: str, match: str, end: float, span: float) -> int:
    """Readings (`values`' arguments): those with a value, and those flagged without one."""
    return values(url, match, end, span) + round(_instant(
        url, f'sum(count_ne_over_time({{__name__=~"{match}quality"}}[{_ms(span)}], 1))', end))


def _ms(span: float) -> str:
    return f"{max(1, round(span * 1000))}ms"


def window(args: argparse.Namespace) -> dict:
    """sample.py's window: counts at the start and end, the process trees every second."""
    import psutil
    from sample import TreeMeter, med  # the harness's, on sys.path

    def count() -> tuple[int, float]:
        at = time.time()  # what a query sees is fixed when it starts (as sample.py)
        return readings(args.url, args.match, at, at - args.since), at

    gateway = TreeMeter(args.gw_pid)
    others = {"farm": TreeMeter(args.farm_pid), "database": TreeMeter(args.db_pid)}
    cpus = psutil.cpu_count() or 1
    c0, t0 = count()
    for meter in (gateway, *others.values()):
        meter.sample()  # from here: the count's own cost is nobody's
    psutil.cpu_percent(None)
    rss: list[float] = []
    cpu: list[float] = []
    machine: list[float] = []
    other_cpu: dict[str, list[float]] = {k: [] for k in others}
    start = last = time.monotonic()
    alive = True
    for i in range(1, max(1, round(args.seconds)) + 1):
        time.sleep(max(0.0, start + i - time.monotonic()))
        now = time.monotonic()
        dt, last = max(1e-3, now - last), now
        if not psutil.pid_exists(args.gw_pid):
            alive = False
            break
        used, resident = gateway.sample()
        cpu.append(100 * used / dt)
        rss.append(resident / 2**20)
        for name, meter in others.items():
            other_cpu[name].append(100 * meter.sample()[0] / dt)
        machine.append(psutil.cpu_percent(None) * cpus)
    c1, t1 = count()
    time.sleep(SETTLE)
    # a whole number of poll intervals, so every poll phase is cut alike (as sample.py)
    span = max(1, int((t1 - t0) / args.interval)) * args.interval
    # [t0, t0 + span) at the ms, as sample.py's `time >= t0 AND time < t1`
    stamped = readings(args.url, args.match, math.floor(t0 * 1000) / 1000 + span - 0.001, span)
    out = {
        "window_s": round(t1 - t0, 2), "stored_before": c0, "stored_after": c1,
        "stored_values_per_s": round((c1 - c0) / (t1 - t0), 1),
        "stored_ts_values_per_s": round(stamped / span, 1),
        "rss_mb_median": med(rss), "rss_mb_max": round(max(rss), 1) if rss else None,
        "cpu_pct_median": med(cpu), "cpu_pct_max": round(max(cpu), 1) if cpu else None,
        "samples": len(cpu), "system_cpu_pct_median": med(machine), "gateway_alive": alive,
    }
    return out | {f"{name}_cpu_pct_median": med(v) for name, v in other_cpu.items()}


def _series(url: str, tag: str, since: float) -> list[tuple[int, float]]:
    """(ms, value) of the `value` samples of point `tag` since `since`."""
    flush(url)
    body = _get(url, "/api/v1/export", {"match[]": f'{{__name__=~".+_value",tag="{tag}"}}',
                                        "start": f"{since:.3f}"})
    return [(t, v) for line in body.splitlines() if line.strip()
            for t, v in zip(*(json.loads(line)[k] for k in ("timestamps", "values")),
                            strict=True)]


def decode(args: argparse.Namespace) -> dict:
    """decode_check.py's check: the same seeded points, the same tick search and tolerance."""
    from farmvalues import value_of  # the harness's, on sys.path

    total = args.devices * args.points
    picks = sorted(random.Random(7).sample(range(total), min(60, total)))
    picks += [i for i in (0, args.points - 1, total - args.points, total - 1) if i not in picks]
    since = time.time() - LOOKBACK
    ages: list[float] = []
    bad: list[dict] = []
    checked = with_data = 0
    for index in picks:
        d, p = divmod(index, args.points)
        tag = f"d{d:02d}_p{p:04d}"
        rows = _series(args.url, tag, since)
        with_data += bool(rows)
        for t_ms, v in rows:
            checked += 1
            tick = t_ms // 100
            hit = next((k for k in range(tick + 20, tick - 201, -1)
                        if abs(value_of(d, p, k) - v) <= 1e-3), None)
            if hit is None:
                bad.append({"tag": tag, "time_ms": t_ms, "stored": v,
                            "farm_at_time": value_of(d, p, tick)})
            else:
                ages.append(t_ms - hit * 100.0)
    return {"decode_points_sampled": len(picks), "decode_points_with_data": with_data,
            "decode_checked": checked, "decode_matched": len(ages),
            "decode_ok": checked > 0 and not bad,
            "data_age_ms_median": round(statistics.median(ages), 1) if ages else None,
            "data_age_ms_max": round(max(ages), 1) if ages else None,
            **({"decode_mismatches": bad[:5]} if bad else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("window", help="the measurement window (sample.py's)")
    w.add_argument("--url", required=True)
    w.add_argument("--match", required=True, help="metric name prefix, a regex: '(pressure)_'")
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--interval", type=float, required=True, help="the gateway's poll, s")
    w.add_argument("--since", type=float, required=True,
                   help="a time (epoch s) before the gateway's first reading")
    for name in ("gw", "farm", "db"):
        w.add_argument(f"--{name}-pid", type=int, required=True)
    d = sub.add_parser("decode", help="the decode check (decode_check.py's)")
    d.add_argument("--url", required=True)
    d.add_argument("--devices", type=int, required=True)
    d.add_argument("--points", type=int, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(window(args) if args.command == "window" else decode(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
