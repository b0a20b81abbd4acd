"""Anomaly engine quality per scenario and replay throughput, beside two river baselines.

Quality: simulator exports made with EVALUATION seeds (default 101, 102, 103), never used
while tuning (the detectors were tuned on TUNING_SEEDS 1, 2, 3 only), for water normal, leak,
small-leaks (a generated scenario: leaks of 5-10 % of a zone's inflow, abrupt and ramped),
sensor-faults, comms-faults, and grid normal, grid-events, sensor-faults. Each recording goes
through our engine as `scadawatch replay` runs it (scadawatch/commands/replay.py's engine:
ticks of the recording's step, 5 min for water and 15 min for grid, not the site's 60 s), and
through two river off-the-shelf baselines on the same data:
  - gauss/tag: per tag, GaussianScorer in QuantileFilter(q=0.995);
  - hst/zone: per zone, MinMaxScaler | HalfSpaceTrees(seed) in QuantileFilter(q=0.995), over
    all tags of the zone (the zone-less tags form one group of their own).
Baseline flags become alarms the same way for both (flags closer than MERGE_GAP merge into
one alarm), of kind `anomaly`, so they are scored KIND-AGNOSTICALLY: any alarm at a label's
location detects it. Our engine is scored by kind (anomaly/evaluation.py: a leak label needs a
`leak` alarm). `anomaly` labels (pump trips, noise bursts) are not in the recall columns;
the `anom` column says how many of them any alarm at their location found.

Throughput: tag-samples/s of our engine's replay (zone model on and off) and of river
HalfSpaceTrees (learn_one + score_one per zone sample) on the same data, in the same run: on
the simulator sites and on a wide site (the water recording tiled over --wide copies, written
as a recording and replayed). `run(quick)` gives the wide site's rows of `python -m bench`.

    python -m bench.anomaly [--quick] [--seeds 101,102,103] [--days 7] [--wide 80]
                            [--cache DIR] [--no-baselines]

`--no-baselines`: the engine's quality columns only (no river, no wide site): minutes, not an
hour, on a shared machine.

Exports are cached under --cache (default: the temp dir), keyed by scenario, seed and days.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from anomaly.core.batch import Batch
from anomaly.core.points import PointInfo
from anomaly.evaluation import UNSCORED, Label, evaluate
from bench.table import Row
from gateway.site.loader import load_site
from gateway.site.model import Point, Site
from gateway.storage.recording import RecordingReader, read_recording, write_recording
from scadawatch.commands.evaluate import read_labels
from scadawatch.commands.replay import replay_engine
from scadawatch.commands.replay import run as replay_run

TUNING_SEEDS = (1, 2, 3)  # the detectors were tuned on these: never evaluate on them
EVALUATION_SEEDS = (101, 102, 103)
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, as `simulate --export` starts
STEP = {"water": 300.0, "grid": 900.0}
Q = 0.995  # the baselines' quantile threshold
HST_SEED = 42
MERGE_GAP = 1800  # seconds: baseline flags closer than this are one alarm
AIM = 1_000_000  # tag-samples/s of a replay (issue 6)
# Exports, kept between runs. The suffix names what the simulators record: bump it when they
# change (v2: a stopped pump's motor current reads 0 A), so an older cache is not replayed.
CACHE = Path(tempfile.gettempdir()) / "scadawatch-bench-v2"
SMALL_LEAKS = """\
description = "Leaks of 5-10 % of a zone's mean inflow, abrupt and ramped (bench/anomaly.py)."

[water]
[[water.events]]
kind = "leak"
target = "dma1"
start = "3d 01:30"
duration = "1d 12h"
percent = 5.0

[[water.events]]
kind = "leak"
target = "dma2"
start = "3d 14:00"
duration = "2d"
percent = 5.0
ramp = "12h"

[[water.events]]
kind = "leak"
target = "dma3"
start = "4d 20:00"
duration = "1d 12h"
percent = 10.0

[[water.events]]
kind = "leak"
target = "dma1"
start = "5d 06:00"
duration = "1d 12h"
percent = 8.0
ramp = "6h"

[grid]
events = []
"""
SCENARIOS = (("water", "normal"), ("water", "leak"), ("water", "small-leaks"),
             ("water", "sensor-faults"), ("water", "comms-faults"), ("grid", "normal"),
             ("grid", "grid-events"), ("grid", "sensor-faults"))
QUICK = (("water", "sensor-faults"),)


def exported(cache: Path, site: str, scenario: str, seed: int, days: float,
             step: float | None = None, text: str | None = None) -> Path:
    """The export directory of a run, made once (the simulators' own export); `step`:
    seconds (default the site's usual); `text`: the scenario file for a scenario defined
    here (small-leaks has its own)."""
    step = step or STEP[site]
    at = "" if step == STEP[site] else f"-t{step:g}"
    out = cache / f"{site}-{scenario}-s{seed}-d{days:g}{at}"
    if (out / "site.toml").exists():
        return out
    from simulators.export import export
    from simulators.site import build_site

    source: str | Path = scenario
    text = text or (SMALL_LEAKS if scenario == "small-leaks" else None)
    if text is not None:
        source = cache / f"{scenario}.toml"
        source.write_text(text, encoding="utf-8")
    tmp = out.with_name(out.name + ".tmp")
    built = build_site(site, source, seed=seed, start=START, step=step)  # type: ignore
    export(built, tmp, days=days, step=step)
    tmp.rename(out)
    return out


# --- the baselines -------------------------------------------------------------------------


@dataclass
class Flags:
    """A baseline's flagged sample times per subject (a tag or a group of tags)."""

    subjects: list[tuple[str | None, str | None, tuple[str, ...]]]  # (tag, zone, tags)
    times: list[list[int]] = field(default_factory=list)
    seconds: float = 0.0  # in river calls
    samples: int = 0  # tag-samples the river calls saw

    def alarms(self, step_ns: int) -> list[Alarm]:
        out = []
        for k, ((tag, zone, tags), ts) in enumerate(zip(self.subjects, self.times,
                                                        strict=True)):
            start = prev = None
            for t in [*ts, None]:
                if t is not None and prev is not None and t - prev <= MERGE_GAP * 10**9:
                    prev = t
                    continue
                if start is not None and prev is not None:
                    out.append(Alarm(id=f"anomaly:{k}:{start // 10**9}",
                                     kind="anomaly", tag=tag, zone=zone, start_ns=start,
                                     end_ns=prev + step_ns, priority="low", message="",
                                     tags=tags))
                start = prev = t
        return out


def table_of(batch: Batch, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a recording: times and a (rows, tags) array, NaN where missing."""
    times, row = np.unique(batch.source_ts, return_inverse=True)
    values = np.full((len(times), n), np.nan)
    values[row, batch.point] = batch.value
    return times, values


def gauss_per_tag(points: Sequence[PointInfo], times: np.ndarray, values: np.ndarray) -> Flags:
    from river import anomaly

    flags = Flags([(p.tag, p.zone, (p.tag,)) for p in points])
    for j in range(len(points)):
        model = anomaly.QuantileFilter(anomaly.GaussianScorer(), q=Q)
        hit = []
        rows = np.flatnonzero(np.isfinite(values[:, j]))
        col = values[rows, j].tolist()
        began = time.thread_time()
        for i, y in zip(rows.tolist(), col, strict=True):
            if model.classify(model.score_one(None, y)):
                hit.append(int(times[i]))
            model.learn_one(None, y)
        flags.seconds += time.thread_time() - began
        flags.samples += len(col)
        flags.times.append(hit)
    return flags


def zone_groups(points: Sequence[PointInfo]) -> dict[tuple[str | None, str | None], list[int]]:
    """Point indices per zone; zone-less points per device (the plant, the substation)."""
    groups: dict[tuple[str | None, str | None], list[int]] = defaultdict(list)
    for i, p in enumerate(points):
        groups[(p.zone, None if p.zone else p.device)].append(i)
    return groups


def hst_per_zone(points: Sequence[PointInfo], times: np.ndarray, values: np.ndarray,
                 limit: int | None = None) -> Flags:
    """MinMaxScaler | HalfSpaceTrees per zone; missing cells hold the tag's last value.
    `limit`: stop after this many zone samples (a throughput probe)."""
    from river import anomaly, compose, preprocessing

    groups = zone_groups(points)
    flags = Flags([(None, zone, () if zone else tuple(points[i].tag for i in idx))
                   for (zone, _), idx in groups.items()])
    filled = values.copy()
    for j in range(filled.shape[1]):  # forward fill: HalfSpaceTrees wants every feature
        col = filled[:, j]
        ok = np.isfinite(col)
        if ok.any():
            last = np.maximum.accumulate(np.where(ok, np.arange(len(col)), 0))
            filled[:, j] = np.where(np.arange(len(col)) < np.argmax(ok), col[np.argmax(ok)],
                                    col[last])
    done = 0
    for idx in groups.values():
        model = compose.Pipeline(preprocessing.MinMaxScaler(),
                                 anomaly.QuantileFilter(anomaly.HalfSpaceTrees(seed=HST_SEED),
                                                        q=Q))
        names = [points[i].tag for i in idx]
        rows = [dict(zip(names, r, strict=True)) for r in filled[:, idx].tolist()]
        hit = []
        began = time.thread_time()
        for t, x in zip(times.tolist(), rows, strict=True):
            if limit is not None and done >= limit:
                break
            if model["QuantileFilter"].classify(model.score_one(x)):
                hit.append(t)
            model.learn_one(x)
            done += 1
            flags.samples += len(idx)
        flags.seconds += time.thread_time() - began
        flags.times.append(hit)
    return flags


# --- scoring -------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one detector over the runs of one scenario."""

    labels: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    detected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    delays: list[float] = field(default_factory=list)
    alarms: int = 0
    false: int = 0
    zone_days: float = 0.0
    anomaly_labels: int = 0
    anomaly_found: int = 0
    false_kinds: Counter[str] = field(default_factory=Counter)

    def add(self, alarms: list[Alarm], labels: list[Label], zone_of: dict[str, str | None],
            span: tuple[int, int], agnostic: bool) -> None:
        anything = [replace(a, kind="any") for a in alarms]
        if agnostic:  # any alarm detects any scored label at its location
            alarms = anything

        def scored(x: Label) -> Label:
            return replace(x, kind="any") if agnostic and x.kind not in UNSCORED else x

        kw = {"zone_of": zone_of, "span_ns": span}
        whole = evaluate(alarms, [scored(x) for x in labels], **kw)
        self.alarms += whole.overall.alarms
        self.false += whole.overall.false_alarms
        self.false_kinds.update(a.kind for a in whole.false)
        self.zone_days += whole.zones * whole.days
        for x in labels:
            if x.kind in UNSCORED:
                self.anomaly_labels += 1
                found = evaluate(anything, [replace(x, kind="any")], **kw)
                self.anomaly_found += found.overall.detected
                continue
            one = evaluate(alarms, [scored(x)], **kw)  # this label's own delay
            self.labels[x.kind] += 1
            if one.overall.detected:
                self.detected[x.kind] += 1
                assert one.overall.median_delay_s is not None
                self.delays.append(one.overall.median_delay_s)


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_scenario(name: str, runs: int, tallies: dict[str, Tally]) -> None:
    kinds = sorted({k for t in tallies.values() for k in t.labels})
    first = next(iter(tallies.values()))
    head = "".join(f"{k[:9]:>10}" for k in kinds)
    print(f"\n{name}: {runs} run(s), {first.zone_days:.1f} zone-days; labels "
          + (", ".join(f"{k} {first.labels[k]}" for k in kinds) or "none")
          + (f", anomaly {first.anomaly_labels}" if first.anomaly_labels else ""))
    print(f"  {'detector':12}{head}{'prec':>7}{'F1':>6}{'delay':>8}{'alarms':>7}"
          f"{'false':>6}{'/zone-d':>8}{'/zone-wk':>9}{'anom':>6}")
    for method, t in tallies.items():
        recalls = "".join(f"{fmt(ratio(t.detected[k], t.labels[k])):>10}" for k in kinds)
        n_labels, n_found = sum(t.labels.values()), sum(t.detected.values())
        rec = ratio(n_found, n_labels)
        prec = ratio(t.alarms - t.false, t.alarms)
        f1 = (2 * prec * rec / (prec + rec) if prec is not None and rec is not None
              and prec + rec else None)
        delay = statistics.median(t.delays) / 3600 if t.delays else None
        per_day = ratio(t.false, t.zone_days)
        anom = f"{t.anomaly_found}/{t.anomaly_labels}" if t.anomaly_labels else "-"
        print(f"  {method:12}{recalls}{fmt(prec):>7}{fmt(f1):>6}"
              f"{fmt(delay, '.1f') + ' h' if delay is not None else '-':>8}{t.alarms:>7}"
              f"{t.false:>6}{fmt(per_day, '.3f'):>8}"
              f"{fmt(None if per_day is None else 7 * per_day, '.2f'):>9}{anom:>6}")
    ours = first.false_kinds
    if ours:
        print(f"  {next(iter(tallies))}'s false alarms by kind: "
              + ", ".join(f"{k} {n}" for k, n in ours.most_common()))


# --- runs ----------------------------------------------------------------------------------


@dataclass
class Speed:
    """Tag-samples and seconds per detector, summed over runs."""

    samples: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, name: str, samples: int, seconds: float) -> None:
        self.samples[name] += samples
        self.seconds[name] += seconds

    def rate(self, name: str) -> float:
        return self.samples[name] / self.seconds[name] if self.seconds[name] else math.nan


def engine_run(site: Site, directory: Path, zone_model: bool) -> tuple[list[Alarm], int, float]:
    """Alarms (final state), readings and engine CPU seconds of `scadawatch replay` over the
    recording (its engine and its loop; the site's `[anomaly] zone_model` as given). The
    recording is read before the clock starts: only the engine is timed."""
    site = site.model_copy(update={"anomaly": site.anomaly.model_copy(
        update={"zone_model": zone_model})})
    with RecordingReader(directory, [p.tag for p in site.points]) as reader:
        batches = list(reader)
        engine = replay_engine(site, batches[0] if batches else None)
        began = time.thread_time()
        alarms, _ = replay_run(engine, reader, batches, progress=False)
        seconds = time.thread_time() - began
    return alarms, sum(len(b) for b in batches), seconds


def scenario_runs(name: str, dirs: list[Path], speed: Speed,
                  baselines: bool = True) -> dict[str, Tally]:
    tallies = {m: Tally() for m in ("engine", "gauss/tag", "hst/zone")[:3 if baselines else 1]}
    for directory in dirs:
        site = load_site(directory / "site.toml")
        points = [PointInfo.of(p) for p in site.points]
        zone_of = {p.tag: p.zone for p in points}
        labels = read_labels(directory / "labels.csv")
        alarms, readings, seconds = engine_run(site, directory, zone_model=True)
        speed.add(f"engine, {name.split()[0]}", readings, seconds)
        batch, stats = read_recording(directory, [p.tag for p in points])
        assert stats.first_ns is not None and stats.last_ns is not None
        span = (stats.first_ns, stats.last_ns)
        times, values = table_of(batch, len(points))
        step = int(np.median(np.diff(times)))
        tallies["engine"].add(alarms, labels, zone_of, span, agnostic=False)
        for method, fn in (("gauss/tag", gauss_per_tag), ("hst/zone", hst_per_zone))[
                :2 if baselines else 0]:
            flags = fn(points, times, values)
            speed.add(f"{method}, {name.split()[0]}", flags.samples, flags.seconds)
            tallies[method].add(flags.alarms(step), labels, zone_of, span, agnostic=True)
    return tallies


def wide_site(site: Site, copies: int) -> Site:
    """`copies` of the site's points, each copy with zones and devices of its own."""
    def copy(k: int, p: Point) -> Point:
        return dataclasses.replace(p, tag=f"c{k}.{p.tag}",
                                   zone=f"c{k}.{p.zone}" if p.zone else None,
                                   device=f"c{k}.{p.device}" if p.device else None)

    return site.model_copy(update={"points": [copy(k, p) for k in range(copies)
                                              for p in site.points]})


def tiled(directory: Path, copies: int) -> tuple[Site, Path, np.ndarray, np.ndarray]:
    """The recording in `directory` tiled over `copies` sites' worth of zones: the wide site,
    its recording (written once, beside the export), its times and (rows, tags) values."""
    site = load_site(directory / "site.toml")
    big = wide_site(site, copies)
    batch, _ = read_recording(directory, [p.tag for p in site.points])
    times, values = table_of(batch, len(site.points))
    values = np.tile(values, (1, copies))
    out = directory.with_name(f"{directory.name}-x{copies}")
    if not (out / "readings.csv").exists():
        ok = np.isfinite(values)
        whole = Batch.of(source_ts=np.broadcast_to(times[:, None], values.shape)[ok],
                         point=np.broadcast_to(np.arange(values.shape[1]), values.shape)[ok],
                         value=values[ok], quality=0)
        tmp = out.with_name(out.name + ".tmp")
        tmp.mkdir(exist_ok=True)
        write_recording(tmp / "readings.csv", [p.tag for p in big.points], [whole])
        tmp.rename(out)
    return big, out, times, values


def wide(directory: Path, copies: int, speed: Speed) -> tuple[str, str, str]:
    """Replays of the water recording tiled over `copies` sites' worth of zones, zone model
    on and off, and river HST on the same data; the names of their `speed` entries."""
    site, recording, times, values = tiled(directory, copies)
    names = []
    for zone_model in (True, False):
        _, readings, seconds = engine_run(site, recording, zone_model)
        names.append(f"engine, wide {len(site.points):,} tags"
                     + ("" if zone_model else ", zone model off"))
        speed.add(names[-1], readings, seconds)
    # River over every zone sample of the wide site would take minutes: a bounded probe.
    probe = hst_per_zone([PointInfo.of(p) for p in site.points], times, values, limit=3000)
    names.append(f"hst/zone, wide {len(site.points):,} tags (first 3,000 zone samples)")
    speed.add(names[-1], probe.samples, probe.seconds)
    return names[0], names[1], names[2]


def run(quick: bool) -> list[Row]:
    """The wide site's replay, zone model on and off, beside river HST on the same
    data (this module's quality tables need `python -m bench.anomaly`)."""
    days, copies = (1.0, 4) if quick else (7.0, 80)
    CACHE.mkdir(parents=True, exist_ok=True)
    speed = Speed()
    recording = exported(CACHE, "water", "normal", EVALUATION_SEEDS[0], days)
    on, off, river = wide(recording, copies, speed)
    tags = on.removeprefix("engine, wide ")
    peer = f"river HalfSpaceTrees per zone: {speed.rate(river):,.0f}/s"
    command = f"python -m bench.anomaly{' --quick' if quick else ''}"
    return [Row(f"anomaly engine replay, {tags} (water site x {copies}, {days:g} day"
                f"{'' if days == 1 else 's'}), "
                f"zone model {state}", f"{speed.rate(name):,.0f} tag-samples/s", peer,
                speed.rate(name) / speed.rate(river), command)
            for name, state in ((on, "on"), (off, "off"))]


def print_speed(speed: Speed) -> None:
    print("\nReplay throughput: tag-samples per CPU second (this thread's CPU time: the machine "
          "may be shared). river: the hst/zone baseline, MinMaxScaler | HalfSpaceTrees in "
          "QuantileFilter, learn_one + score_one per zone sample")
    names = list(speed.samples)
    for name in names:
        print(f"  {name:62}{speed.rate(name):>12,.0f}")
    for name in names:
        where = name.removeprefix("engine, ").removesuffix(", zone model off")
        hst = next((n for n in names if n.startswith("hst/zone") and where in n), None)
        if name.startswith("engine") and hst:
            print(f"  {'ratio ' + name + ' / river':62}"
                  f"{speed.rate(name) / speed.rate(hst):>12.2f}")
    for name in names:
        if name.startswith("engine, wide"):
            print(f"  {'share of the aim (1,000,000/s), ' + name:62}"
                  f"{speed.rate(name) / AIM:>12.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: water sensor-faults, 2 days, one seed, 4 copies")
    p.add_argument("--seeds", default=",".join(map(str, EVALUATION_SEEDS)),
                   help="evaluation seeds, comma-separated (never the tuning seeds 1-3)")
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--wide", type=int, default=80, help="copies of the water site (~26 tags)")
    p.add_argument("--cache", default=str(CACHE),
                   help="where exports are kept between runs")
    p.add_argument("--no-baselines", action="store_true",
                   help="the engine's quality only: no river baselines, no wide site")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected integers like 101,102,103")
    if used := sorted(set(seeds) & set(TUNING_SEEDS)):
        p.error(f"--seeds: {used} tuned the detectors; evaluate on other seeds (e.g. 101)")
    scenarios, days, copies = SCENARIOS, args.days, args.wide
    if args.quick:
        scenarios, days, copies, seeds = QUICK, min(days, 2.0), min(copies, 4), seeds[:1]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"evaluation seeds {seeds} (tuning seeds {list(TUNING_SEEDS)} are never used here), "
          f"{days:g} days per run; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("engine: scored by kind. gauss/tag, hst/zone (river, q=0.995, flags merged within "
          f"{MERGE_GAP // 60} min): alarms of kind 'anomaly', scored KIND-AGNOSTICALLY (any "
          "alarm at a label's location detects it). recall per label kind; delay: median "
          "over detected labels; anom: anomaly labels (pump trip, noise) any alarm found")
    speed = Speed()
    water: Path | None = None  # a water recording to tile into the wide site
    for site_name, scenario in scenarios:
        dirs = [exported(cache, site_name, scenario, s, days) for s in seeds]
        if site_name == "water" and (water is None or scenario == "normal"):
            water = dirs[0]
        name = f"{site_name} {scenario}"
        print_scenario(name, len(dirs), scenario_runs(name, dirs, speed,
                                                      baselines=not args.no_baselines))
    if args.no_baselines:
        return
    wide(water or exported(cache, "water", "normal", seeds[0], days), copies, speed)
    print_speed(speed)


if __name__ == "__main__":
    main()
