"""`scadawatch replay`: the anomaly engine the gateway runs live, run over a recording.

The recording streams through `Engine.process` in chunks (gateway/storage/recording.py); each alarm
is written once, in its final state, to alarms.jsonl (sorted by start; `end` null while it is
still active when the recording ends).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from anomaly.core.alarms import Alarm, AlarmEvent
from anomaly.core.batch import Batch
from anomaly.engine import Engine, StateError
from gateway.alarms.encoding import encode
from gateway.detection import build_engine
from gateway.engine_state import load_state, save_state
from gateway.site.model import Site
from gateway.storage.recording import ReadStats, RecordingError, RecordingReader
from scadawatch.cli import EXIT_OK, UsageError
from scadawatch.commands.serve import load
from timegrammar.iso import iso


def recording_step(batch: Batch | None) -> float:
    """Seconds between a recording's rows (the median over its first chunk); 0 if unknown."""
    if batch is None:
        return 0.0
    stamps = np.unique(batch.source_ts)
    return float(np.median(np.diff(stamps))) / 1e9 if len(stamps) > 1 else 0.0


def replay_engine(site: Site, first: Batch | None) -> Engine:
    """The engine a replay runs, given the recording's first chunk. A tick shorter than the
    recording's step would only add empty ticks: a 5-min recording is judged on 5-min ticks
    (live, the site's interval holds)."""
    return build_engine(site, interval=max(recording_step(first), site.anomaly.interval))


def run(engine: Engine, reader: RecordingReader, batches: Iterable[Batch], *,
        progress: bool | None = None) -> tuple[list[Alarm], float]:
    """Every alarm the engine raises over the recording's batches, in its final state, and
    the seconds spent in the engine."""
    alarms: dict[str, Alarm] = {a.id: a for a in engine.active}
    engine_s = 0.0

    def take(events: list[AlarmEvent]) -> None:
        for e in events:
            alarms[e.alarm.id] = e.alarm

    # disable=None: a bar on a terminal only, so logs and pipes stay clean.
    with tqdm(total=reader.size, unit="B", unit_scale=True, desc="replay", file=sys.stderr,
              disable=None if progress is None else not progress, mininterval=0.5) as bar:
        done = 0
        for batch in batches:
            began = time.perf_counter()
            take(engine.process(batch))
            engine_s += time.perf_counter() - began
            position = reader.position()
            bar.update(position - done)
            done = position
        began = time.perf_counter()
        take(engine.finish())
        engine_s += time.perf_counter() - began
    return sorted(alarms.values(), key=lambda a: (a.start_ns, a.id)), engine_s


def write_alarms(path: Path, alarms: list[Alarm]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for a in alarms:
            f.write(json.dumps(encode(a)) + "\n")


def summary(source: Path, tags: int, stats: ReadStats, alarms: list[Alarm], wall_s: float,
            engine_s: float) -> list[str]:
    kinds = Counter(a.kind for a in alarms)
    active = sum(a.end_ns is None for a in alarms)
    span = (f" from {iso(stats.first_ns, 'ms')} to {iso(stats.last_ns, 'ms')}"
            if stats.first_ns is not None and stats.last_ns is not None else "")
    rate = stats.cells / wall_s if wall_s > 0 else float("inf")
    return [
        f"{source}: {stats.rows:,} rows x {tags} tags{span}",
        f"  readings {stats.readings:,}; empty cells {stats.empty:,} (no reading); "
        f"nan/inf cells (bad readings) {stats.bad:,}",
        f"  alarms {len(alarms)}" + (": " + ", ".join(f"{k} {n}" for k, n in
                                                    sorted(kinds.items())) if kinds else "")
        + (f" ({active} still active at the end)" if active else ""),
        f"  {stats.cells:,} tag-samples in {wall_s:.2f} s: {rate:,.0f} tag-samples/s "
        f"(engine {engine_s:.2f} s, reading {max(wall_s - engine_s, 0.0):.2f} s)",
    ]


def main(args: argparse.Namespace) -> int:
    site = load(args.config)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: no such directory {str(out.parent)!r}")
    state = Path(args.state) if args.state else None
    began = time.perf_counter()
    try:
        with RecordingReader(args.input, [p.tag for p in site.points]) as reader:
            batches = iter(reader)
            first = next(batches, None)
            engine = replay_engine(site, first)
            if engine.settings.interval > site.anomaly.interval:
                print(f"  ticks of {engine.settings.interval:g} s, the recording's step "
                      f"(site interval {site.anomaly.interval:g} s)", file=sys.stderr)
            if state is not None and state.exists():
                try:
                    load_state(engine, state)
                except StateError as e:
                    raise UsageError(f"--state {e}; delete it to learn from scratch") from None
            alarms, engine_s = run(engine, reader,
                                   itertools.chain([first] if first else [], batches))
    except RecordingError as e:
        raise UsageError(str(e)) from None
    wall_s = time.perf_counter() - began
    try:
        write_alarms(out, alarms)
        if state is not None:
            save_state(engine, state)
    except OSError as e:
        raise UsageError(f"cannot write {e.filename}: {e.strerror}") from None
    print("\n".join(summary(reader.path, len(reader.columns), reader.stats, alarms, wall_s,
                            engine_s)))
    print(f"  wrote {out}" + (f" and engine state {state}" if state else ""))
    return EXIT_OK
