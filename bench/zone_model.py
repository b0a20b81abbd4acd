"""The zone model (anomaly/zone_score.py) against river HalfSpaceTrees over the same zones, on
the same data, at hourly and 5-minute steps.

Data: the water simulator's `zone-events` scenario (ZONE_EVENTS: after two clean weeks, a
burst, leaks of 10 and 15 % of a zone's inflow, a 3-hour pump trip, a noisy meter), 28 days,
exported at 1-hour and 5-minute steps with EVALUATION seeds (the zone model was tuned on
seeds 1-3 of the same scenario and on SKAB's `other` group; bench/skab.py scores SKAB).
The zone model runs alone (the engine's other detectors left out) on ticks of the recording's
step, as a replay would; river's is bench/anomaly.py's hst/zone baseline (MinMaxScaler |
HalfSpaceTrees in QuantileFilter(q=0.995) per zone, flags merged within 30 minutes). Both
are scored kind-agnostically (any alarm at a label's location detects it, bench/anomaly.py's
Tally): recall per label kind, false alarms per zone-week, and the CPU seconds of each.

    python -m bench.zone_model [--quick] [--seeds 101,102,103] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anomaly.core.points import PointInfo, PointTable
from anomaly.engine import Engine, EngineSettings
from anomaly.zone_score import ZoneScore
from bench.anomaly import (
    CACHE,
    EVALUATION_SEEDS,
    TUNING_SEEDS,
    Tally,
    exported,
    hst_per_zone,
    print_scenario,
    ratio,
    table_of,
)
from bench.table import Row
from gateway.site.loader import load_site
from gateway.storage.recording import RecordingReader, read_recording
from scadawatch.commands.evaluate import read_labels

DAYS = 28.0
STEPS = {"1 h": 3600.0, "5 min": 300.0}
ZONE_EVENTS = """\
description = "After two clean weeks, events a zone model should see (bench/zone_model.py)."

[water]
[[water.events]]
kind = "burst"
target = "dma2"
start = "15d 19:00"
duration = "4h"
size = 20.0

[[water.events]]
kind = "leak"
target = "dma1"
start = "17d 02:00"
duration = "2d"
percent = 15.0

[[water.events]]
kind = "pump_trip"
target = "plant.pump1.status"
start = "20d 10:00"
duration = "3h"

[[water.events]]
kind = "noise"
target = "dma3.inlet2.flow"
start = "22d 08:00"
duration = "6h"
factor = 10.0

[[water.events]]
kind = "leak"
target = "dma3"
start = "24d 03:00"
duration = "2d"
percent = 10.0
ramp = "12h"

[grid]
events = []
"""


def runs(dirs: Sequence[Path], step: float) -> tuple[dict[str, Tally], dict[str, float]]:
    """Tallies and CPU seconds of the zone model and river HST over the recordings."""
    tallies = {"zone model": Tally(), "hst/zone": Tally()}
    cpu = {name: 0.0 for name in tallies}
    for directory in dirs:
        site = load_site(directory / "site.toml")
        points = [PointInfo.of(p) for p in site.points]
        zone_of = {p.tag: p.zone for p in points}
        labels = read_labels(directory / "labels.csv")
        settings = EngineSettings(interval=step)
        engine = Engine(points, settings, detectors=[ZoneScore(PointTable(points), settings)])
        found = {}
        with RecordingReader(directory, engine.table.tags) as reader:
            batches = list(reader)
            began = time.thread_time()
            for batch in batches:
                found |= {e.alarm.id: e.alarm for e in engine.process(batch)}
            found |= {e.alarm.id: e.alarm for e in engine.finish()}
            cpu["zone model"] += time.thread_time() - began
        batch, stats = read_recording(directory, [p.tag for p in points])
        assert stats.first_ns is not None and stats.last_ns is not None
        span = (stats.first_ns, stats.last_ns)
        times, values = table_of(batch, len(points))
        flags = hst_per_zone(points, times, values)
        cpu["hst/zone"] += flags.seconds
        tallies["zone model"].add(list(found.values()), labels, zone_of, span, agnostic=True)
        tallies["hst/zone"].add(flags.alarms(int(np.median(np.diff(times)))), labels, zone_of,
                                span, agnostic=True)
    return tallies, cpu


def f1(t: Tally) -> float | None:
    rec = ratio(sum(t.detected.values()), sum(t.labels.values()))
    prec = ratio(t.alarms - t.false, t.alarms)
    if rec is None or prec is None:
        return None
    return 2 * prec * rec / (prec + rec) if prec + rec else 0.0


def recordings(cache: Path, seeds: Sequence[int], step: float) -> list[Path]:
    return [exported(cache, "water", "zone-events", s, DAYS, step=step, text=ZONE_EVENTS)
            for s in seeds]


def run(quick: bool) -> list[Row]:
    """The hourly comparison (cheap: quick or not, three seeds)."""
    seeds = EVALUATION_SEEDS
    CACHE.mkdir(parents=True, exist_ok=True)
    tallies, _ = runs(recordings(CACHE, seeds, STEPS["1 h"]), STEPS["1 h"])
    ours, river = tallies["zone model"], tallies["hst/zone"]

    def figure(t: Tally) -> str:
        score = f1(t)
        return (f"F1 {'-' if score is None else f'{score:.2f}'}, "
                f"{7 * t.false / t.zone_days:.2f} false alarms per zone-week")

    return [Row(f"zone model, water at 1 h steps ({DAYS:g} days x {len(seeds)} seeds)",
                figure(ours), f"river HalfSpaceTrees per zone: {figure(river)}", None,
                "python -m bench.zone_model")]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="hourly steps only")
    p.add_argument("--seeds", default=",".join(map(str, EVALUATION_SEEDS)))
    p.add_argument("--cache", default=str(CACHE), help="where exports are kept between runs")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: expected integers like 101,102,103")
    if used := sorted(set(seeds) & set(TUNING_SEEDS)):
        p.error(f"--seeds: {used} tuned the zone model; evaluate on other seeds (e.g. 101)")
    steps = {"1 h": STEPS["1 h"]} if args.quick else STEPS
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"water zone-events, {DAYS:g} days, evaluation seeds {seeds}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}. Scored kind-agnostically: any alarm at a "
          "label's location detects it; anomaly labels (pump trip, noisy meter) in `anom`")
    for name, step in steps.items():
        tallies, cpu = runs(recordings(cache, seeds, step), step)
        print_scenario(f"every {name}", len(seeds), tallies)
        print("  F1 " + ", ".join(f"{k} {'-' if f1(t) is None else f'{f1(t):.2f}'}"
                                  for k, t in tallies.items())
              + "; CPU s " + ", ".join(f"{k} {s:.1f}" for k, s in cpu.items()))


if __name__ == "__main__":
    main()
