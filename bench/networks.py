"""Leaks and sensor faults on wntr networks the water simulator does not use, beside the river
baselines of bench.anomaly.

Recordings come from `simulators.networks` (EPANET 2.2 pressure-driven, the networks' own
tanks, pumps and level controls, inlet meters with low-flow cut-offs, tank levels without tank
meters, five pressures): per network, `--leaks` recordings with one leak each (2-15 % of mean
consumption, log-uniform, abrupt or ramped over 2-24 h, any time after day 3), `--runs`
recordings with sensor faults (two stuck, a spike, a 1.5 m/day pressure drift, a dropout) and
`--runs` clean ones; 10-30 days at 5- or 15-minute steps, by seed (`recording_plan`). Seeds
start at 101: the detectors were tuned on networks net1 and ky4 with seeds 1-20 only; ky10,
anytown and net6 are held out (`simulators.networks.NETWORKS`).

Each recording is replayed as `scadawatch replay` does (bench.anomaly.engine_run: the engine
at the recording's step, river zone detector on), twice: with the tanks' `area` the export
writes, and without it (the engine learns the areas). Per network:
  - leaks: recall of leaks >= 3 % and < 3 % of mean consumption, the share of leaks >= 6 %
    found within 12 h and of 3-4 % within 24 h, median delay of small (<= 4 %) and larger
    leaks, and the size error, median |size_lps - true| / true, the truth being the leak's
    mean flow over the two hours before the alarm (its orifice's flow follows the pressure);
  - sensor faults: recall per kind (a `stuck` label needs a `stuck` alarm on its tag, ...);
    a `stuck` label that froze its tag at a rest value (0, its lo or hi: a pump's flow meter
    while the pump stands; or the one reading the tag holds at least half of the time: a tank
    its controls keep shut) is counted apart: no detector can tell it from rest;
  - false alarms per zone-day on the clean recordings (every kind), and leak alarms from
    pump and tank operation: on clean recordings, or before the leak began.
The baselines (river GaussianScorer per tag, HalfSpaceTrees per zone, flags merged within 30
min into `anomaly` alarms) are scored kind-agnostically: any alarm in the zone during a leak
finds it, any alarm on a faulty tag finds the fault.

    python -m bench.networks [--quick] [--networks net1,ky4,ky10,anytown,net6] [--leaks 12]
                             [--runs 2] [--areas both|given|learned] [--cache DIR]

Recordings are cached under --cache (in the temp dir by default, named with
`simulators.networks.RECORDING_VERSION`: a cache of older recordings is not reused): the first
full run exports ~90 recordings (net6's take 1-5 min each, by load), later runs only replay.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from anomaly.core.alarms import Alarm
from anomaly.core.points import PointInfo
from anomaly.evaluation import Label, evaluate, family
from bench.anomaly import engine_run, gauss_per_tag, hst_per_zone, table_of
from bench.table import Row
from gateway.site.loader import load_site
from gateway.site.model import Site
from gateway.storage.recording import read_recording
from scadawatch.commands.evaluate import read_labels

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
FIRST_SEED = 101  # seeds below it tuned the detectors (on the tuning networks only)


def default_cache() -> Path:
    """The temp dir's cache of this version's recordings (wntr is imported only when used)."""
    from simulators.networks import RECORDING_VERSION

    return Path(tempfile.gettempdir()) / f"scadawatch-networks-v{RECORDING_VERSION}"
NS = 10**9
HOUR = 3600 * NS
GRACE = HOUR  # an alarm up to an hour after a label's end still counts (evaluation's default)
FAULT_KINDS = ("stuck", "spike", "drift", "dropout")
VARIANTS = ("area given", "area learned")
TRUTH_WINDOW = 2 * HOUR


def exported(cache: Path, name: str, kind: str, seed: int) -> Path:
    """The export directory of a recording (made once): readings.csv, labels.csv, site.toml
    as `scadawatch simulate --export` writes them, and truth.json (the leaks' true flow)."""
    out = cache / f"{name}-{kind}-s{seed}"
    if (out / "site.toml").exists():
        return out
    from simulators.export import export
    from simulators.networks import recording, recording_plan

    days, step = recording_plan(seed)
    rec = recording(name, kind, seed, START)
    tmp = out.with_name(out.name + ".tmp")
    began = time.perf_counter()
    export(rec.site, tmp, days=days, step=step)
    t, lps = zip(*rec.model.leak_flow, strict=True)
    truth = {"mean_demand_lps": rec.model.mean_demand,
             "leaks": [{"start": e.start, "percent": e.params.get("percent"),
                        "ramp": e.params.get("ramp", 0.0)} for e in rec.site.events
                       if e.kind == "leak"],
             "leak_flow": {"t": list(t), "lps": list(lps)},
             "export_s": time.perf_counter() - began}
    (tmp / "truth.json").write_text(json.dumps(truth), encoding="utf-8")
    tmp.rename(out)
    return out


def without_areas(site: Site) -> Site:
    return site.model_copy(update={"points": [dataclasses.replace(p, area=None)
                                              for p in site.points]})


# --- scoring -------------------------------------------------------------------------------


@dataclass
class Leaks:
    """Leak outcomes of one detector on one network."""

    found: list[tuple[float, float, float | None]] = field(default_factory=list)  # %, h, err
    missed: list[float] = field(default_factory=list)  # %
    # every leak's %, start (ns) and delay (h, None if missed): which start hours miss an aim
    starts: list[tuple[float, int, float | None]] = field(default_factory=list)

    def recall(self, lo: float, hi: float = math.inf) -> str:
        n = [p for p in [*(f[0] for f in self.found), *self.missed] if lo <= p < hi]
        k = [f for f in self.found if lo <= f[0] < hi]
        return f"{len(k)}/{len(n)}" if n else "-"

    def within(self, lo: float, hi: float, hours: float) -> str:
        n = [p for p in [*(f[0] for f in self.found), *self.missed] if lo <= p < hi]
        k = [f for f in self.found if lo <= f[0] < hi and f[1] <= hours]
        return f"{len(k)}/{len(n)}" if n else "-"

    def delay(self, lo: float, hi: float) -> str:
        d = [f[1] for f in self.found if lo <= f[0] < hi]
        return f"{statistics.median(d):.1f} h" if d else "-"

    def late(self) -> list[str]:
        """Leaks of >= 6 % not found within 12 h and of 3-4 % not within 24 h, with the
        weekday and hour each began: a leak that begins by day waits for the night's
        evidence, so the start hour says which misses are the night's and which are not."""
        out = []
        for percent, start_ns, delay in sorted(self.starts, key=lambda s: s[1]):
            aim = 12.0 if percent >= 6.0 else 24.0 if 3.0 <= percent < 4.0 else None
            if aim is None or (delay is not None and delay <= aim):
                continue
            start = datetime.fromtimestamp(start_ns / 1e9, UTC).strftime("%a %H:%M")
            out.append(f"{percent:.1f} {start} " + (f"{delay:.1f} h" if delay is not None
                                                     else "missed"))
        return out

    def size_error(self) -> str:
        e = [f[2] for f in self.found if f[2] is not None]
        return f"{statistics.median(e):.2f}" if e else "-"


@dataclass
class Tally:
    leaks: Leaks = field(default_factory=Leaks)
    faults: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    clean_false: int = 0
    zone_days: float = 0.0
    false_kinds: Counter[str] = field(default_factory=Counter)
    operation_leaks: int = 0  # leak alarms on clean recordings or before the leak began
    # stuck labels whose frozen value is a rest state (0, the point's lo or hi: a pump's flow
    # meter frozen while the pump stands reads what the standing pump reads; the reading a
    # tank kept shut holds): no detector can tell them from rest, so they are counted apart,
    # not in the recall
    stuck_at_rest: int = 0
    seconds: float = 0.0


def true_size(truth: dict, start_ns: int, first_ns: int, at_ns: int) -> float:
    """The leak's flow (L/s) when an alarm rose at `at_ns`: its mean over the TRUTH_WINDOW
    before (a ramp's size then, not its mean since it began)."""
    t = np.asarray(truth["leak_flow"]["t"]) * NS + first_ns
    lps = np.asarray(truth["leak_flow"]["lps"])
    inside = (t >= max(start_ns, at_ns - TRUTH_WINDOW)) & (t <= at_ns)
    return float(lps[inside].mean()) if inside.any() else math.nan


def score_leak(tally: Tally, alarms: list[Alarm], labels: list[Label], truth: dict,
               first_ns: int, agnostic: bool) -> None:
    (label,) = [x for x in labels if x.kind == "leak"]
    percent = float(truth["leaks"][0]["percent"])
    kinds = None if agnostic else {"leak"}
    hits = sorted((a for a in alarms if (kinds is None or a.kind in kinds)
                   and a.zone == label.location
                   and label.start_ns <= a.start_ns <= label.end_ns + GRACE),
                  key=lambda a: a.start_ns)
    if not agnostic:
        tally.operation_leaks += sum(a.kind == "leak" and a.start_ns < label.start_ns
                                     for a in alarms)
    if not hits:
        tally.leaks.missed.append(percent)
        tally.leaks.starts.append((percent, label.start_ns, None))
        return
    first = hits[0]
    error = None
    if not agnostic and "size_lps" in first.details:
        true = true_size(truth, label.start_ns, first_ns, first.start_ns)
        error = abs(first.details["size_lps"] - true) / true
    delay = (first.start_ns - label.start_ns) / HOUR
    tally.leaks.found.append((percent, delay, error))
    tally.leaks.starts.append((percent, label.start_ns, delay))


def at_rest(label: Label, points: Sequence[PointInfo], times: np.ndarray,
            values: np.ndarray) -> bool:
    """Whether a stuck label froze its tag at a rest value: 0, the point's lo or hi, or the
    one reading the tag holds at least half of the time outside the fault (ky10's T-8, which
    its controls keep at 37.11 m, +-0.01, for the whole recording: frozen there it reads what
    it reads anyway)."""
    if label.kind != "stuck":
        return False
    j = next(i for i, p in enumerate(points) if p.tag == label.location)
    during = (times >= label.start_ns) & (times < label.end_ns)
    inside = values[during, j]
    inside = inside[np.isfinite(inside)]
    outside = values[~during, j]
    outside = outside[np.isfinite(outside)]
    rests = [0.0] + [v for v in (points[j].lo, points[j].hi) if v is not None]
    if len(outside):
        held, count = np.unique(outside, return_counts=True)
        if 2 * count.max() >= len(outside):
            rests.append(float(held[np.argmax(count)]))
    return bool(len(inside)) and any(np.all(inside == r) for r in rests)


def score_faults(tally: Tally, alarms: list[Alarm], labels: list[Label],
                 zone_of: dict[str, str | None], span: tuple[int, int], agnostic: bool,
                 resting: Sequence[Label] = ()) -> None:
    tally.stuck_at_rest += len(resting)
    for x in labels:
        if x in resting:
            continue
        if agnostic:
            found = evaluate([replace(a, kind="any") for a in alarms],
                             [replace(x, kind="any")], zone_of={}, span_ns=span)
        else:
            found = evaluate([a for a in alarms if a.kind in family(x.kind)], [x],
                             zone_of={}, span_ns=span)
        tally.faults[x.kind].append(found.overall.detected == 1)


def score_clean(tally: Tally, alarms: list[Alarm], zones: int, span: tuple[int, int]) -> None:
    tally.clean_false += len(alarms)
    tally.false_kinds.update(a.kind for a in alarms)
    tally.operation_leaks += sum(a.kind == "leak" for a in alarms)
    tally.zone_days += zones * (span[1] - span[0]) / (86400 * NS)


# --- runs ----------------------------------------------------------------------------------


def run_network(name: str, cache: Path, seeds: dict[str, list[int]],
                baselines: bool, variants: Sequence[str] = VARIANTS) -> dict[str, Tally]:
    """Every recording of a network through the engine (`variants`: tank areas given and/or
    learned) and the baselines."""
    tallies = {m: Tally() for m in (*variants, *(("gauss/tag", "hst/zone") if baselines
                                                 else ()))}
    for kind, kind_seeds in seeds.items():
        for seed in kind_seeds:
            directory = exported(cache, name, kind, seed)
            site = load_site(directory / "site.toml")
            points = [PointInfo.of(p) for p in site.points]
            zone_of = {p.tag: p.zone for p in points}
            labels = read_labels(directory / "labels.csv")
            truth = json.loads((directory / "truth.json").read_text(encoding="utf-8"))
            batch, stats = read_recording(directory, [p.tag for p in points])
            assert stats.first_ns is not None and stats.last_ns is not None
            span = (stats.first_ns, stats.last_ns)
            times, values = table_of(batch, len(points))
            resting = [x for x in labels if at_rest(x, points, times, values)]
            runs: dict[str, list[Alarm]] = {}
            for variant, variant_site in zip(VARIANTS, (site, without_areas(site)),
                                             strict=True):
                if variant not in variants:
                    continue
                alarms, _, seconds = engine_run(variant_site, directory, zone_model=True)
                tallies[variant].seconds += seconds
                runs[variant] = alarms
            if baselines:
                step = int(np.median(np.diff(times)))
                for method, fn in (("gauss/tag", gauss_per_tag), ("hst/zone", hst_per_zone)):
                    flags = fn(points, times, values)
                    tallies[method].seconds += flags.seconds
                    runs[method] = flags.alarms(step)
            for method, alarms in runs.items():
                agnostic = method not in VARIANTS
                t = tallies[method]
                if kind == "leak":
                    score_leak(t, alarms, labels, truth, stats.first_ns, agnostic)
                elif kind == "faults":
                    score_faults(t, alarms, labels, zone_of, span, agnostic, resting)
                else:
                    score_clean(t, alarms, len({z for z in zone_of.values() if z}), span)
    return tallies


def ratio(k: int, n: int) -> str:
    return f"{k}/{n}" if n else "-"


def print_network(name: str, role: str, tallies: dict[str, Tally]) -> None:
    print(f"\n{name} ({role})")
    print(f"  {'detector':13}{'>=3%':>7}{'<3%':>6}{'>=6%<12h':>9}{'3-4%<24h':>9}"
          f"{'size err':>9}{'delay<=4%':>10}{'delay>4%':>9}"
          + "".join(f"{k:>8}" for k in FAULT_KINDS)
          + f"{'FA/zone-d':>10}{'op.leaks':>9}")
    for method, t in tallies.items():
        agnostic = method not in VARIANTS
        per_day = t.clean_false / t.zone_days if t.zone_days else math.nan
        faults = "".join(f"{ratio(sum(t.faults[k]), len(t.faults[k])):>8}" for k in FAULT_KINDS)
        print(f"  {method:13}{t.leaks.recall(3.0):>7}{t.leaks.recall(0.0, 3.0):>6}"
              f"{t.leaks.within(6.0, math.inf, 12):>9}{t.leaks.within(3.0, 4.0, 24):>9}"
              f"{'-' if agnostic else t.leaks.size_error():>9}"
              f"{t.leaks.delay(0.0, 4.0):>10}{t.leaks.delay(4.0, math.inf):>9}{faults}"
              f"{per_day:>10.3f}{'-' if agnostic else t.operation_leaks:>9}")
    for method in (m for m in VARIANTS if m in tallies):
        t = tallies[method]
        if t.false_kinds:
            print(f"  {method}: clean-recording alarms by kind: "
                  + ", ".join(f"{k} {n}" for k, n in t.false_kinds.most_common()))
        if t.stuck_at_rest:
            print(f"  {method}: stuck labels frozen at a rest value (0, lo, hi, the reading "
                  f"the tag holds), not scored: {t.stuck_at_rest}")
        missed = sorted(t.leaks.missed)
        if missed:
            print(f"  {method}: leaks missed (% of mean consumption): "
                  + ", ".join(f"{p:.1f}" for p in missed))
        if late := t.leaks.late():
            print(f"  {method}: leaks past their aim (%, start in the recording's clock, "
                  "delay): " + ", ".join(late))


def main(argv: Sequence[str] | None = None) -> None:
    from simulators.networks import NETWORKS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="net1 only: 3 leak recordings, one faults, one clean")
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--leaks", type=int, default=12, help="leak recordings per network")
    p.add_argument("--runs", type=int, default=2,
                   help="sensor-fault recordings and clean recordings per network")
    p.add_argument("--first-seed", type=int, default=FIRST_SEED,
                   help="seeds below 101 tuned the detectors on the tuning networks")
    p.add_argument("--no-baselines", action="store_true", help="the engine only")
    p.add_argument("--areas", choices=("both", "given", "learned"), default="both",
                   help="replay with the tanks' areas given, withheld (learned), or both")
    p.add_argument("--cache", default=None, help="default: the temp dir's, per generator version")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    if unknown := [n for n in names if n not in NETWORKS]:
        p.error(f"--networks: unknown {unknown}; networks: {', '.join(NETWORKS)}")
    leaks, runs = args.leaks, args.runs
    if args.quick:
        names, leaks, runs = ["net1"], 3, 1
    cache = Path(args.cache) if args.cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    first = args.first_seed
    seeds = {"leak": list(range(first, first + leaks)),
             "faults": list(range(first, first + runs)),
             "clean": list(range(first + 50, first + 50 + runs))}
    print(f"seeds from {first}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("leaks: found / leaks by size (% of mean consumption), found within 12 h (>= 6 %) "
          "and 24 h (3-4 %); size err: median |size - true| / true; faults: found / faults; "
          "FA/zone-d: alarms of any kind per zone-day on clean recordings; op.leaks: leak "
          "alarms on clean recordings or before the leak began. Baselines kind-agnostic.")
    for name in names:
        began = time.perf_counter()
        variants = [v for v in VARIANTS if args.areas in ("both", v.split()[-1])]
        tallies = run_network(name, cache, seeds, baselines=not args.no_baselines,
                              variants=variants)
        print_network(name, NETWORKS[name].role, tallies)
        print(f"  ({time.perf_counter() - began:.0f} s with exports; engine CPU "
              + ", ".join(f"{m} {tallies[m].seconds:.0f} s" for m in variants) + ")")


def run(quick: bool) -> list[Row]:
    """Rows for `python -m bench`: leak recall and false alarms on held-out networks (Anytown
    and ky10; Net6's recordings take minutes each to make: `python -m bench.networks` has
    them), tank areas given, beside river HalfSpaceTrees per zone; quick: Net1 (tuning)."""
    from simulators.networks import NETWORKS

    cache = default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    names = ["net1"] if quick else ["anytown", "ky10"]
    n = 2 if quick else 4
    seeds = {"leak": list(range(FIRST_SEED, FIRST_SEED + n)), "clean": [FIRST_SEED + 50]}
    rows = []
    for name in names:
        tallies = run_network(name, cache, seeds, baselines=True)
        ours, river = tallies["area given"], tallies["hst/zone"]
        rows.append(Row(f"leaks >= 3 % found on {name} ({NETWORKS[name].role}; {n} leaks)",
                        f"{ours.leaks.recall(3.0)}, false alarms "
                        f"{ours.clean_false / ours.zone_days:.2f}/zone-day",
                        f"river HST per zone: {river.leaks.recall(3.0)}, "
                        f"{river.clean_false / river.zone_days:.2f}/zone-day", None,
                        f"python -m bench.networks --networks {name}"))
    return rows


if __name__ == "__main__":
    main()
