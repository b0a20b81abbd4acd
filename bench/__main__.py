"""`python -m bench [--quick]`: every headline figure beside its ceiling or peer, one table.

Runs, in order: end to end over Modbus (bench.modbus), OPC UA (bench.opcua), the InfluxDB
sink and the history query against InfluxDB (bench.influx, bench.history; one influxd started
here), the anomaly engine against river HalfSpaceTrees (bench.anomaly), alarm latency
(bench.alarm_latency) and the footprint in EMQX Neuron's format (bench.footprint). Everything
runs on loopback; every load is bounded in count and time. `--quick` runs small sizes (a smoke
test, under 3 minutes); the full run takes about 10. A part that fails gets a row saying so and
the others go on. Each row names the command that prints its details.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import alarm_latency, footprint, history, influx, modbus, opcua
from bench.table import Row, markdown


def anomaly_rows(quick: bool) -> list[Row]:
    """Engine replay vs river HalfSpaceTrees on the water recording tiled wide (bench.anomaly's
    throughput part; its quality tables need `python -m bench.anomaly`)."""
    from bench import anomaly

    days, copies = (1.0, 4) if quick else (7.0, 80)
    cache = Path(tempfile.gettempdir()) / "scadawatch-bench"
    cache.mkdir(parents=True, exist_ok=True)
    speed = anomaly.Speed()
    recording = anomaly.exported(cache, "water", "normal", anomaly.EVALUATION_SEEDS[0], days)
    anomaly.wide(recording, copies, speed)
    ours = next(n for n in speed.samples if n.startswith("engine, wide") and "off" not in n)
    river = next(n for n in speed.samples if n.startswith("hst/zone"))
    return [Row(f"anomaly engine replay, {ours.removeprefix('engine, wide ')} (water site "
                f"x {copies}, {days:g} days)", f"{speed.rate(ours):,.0f} tag-samples/s",
                f"river HalfSpaceTrees per zone: {speed.rate(river):,.0f}/s",
                speed.rate(ours) / speed.rate(river),
                f"python -m bench.anomaly{' --quick' if quick else ''}")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 3 min)")
    args = ap.parse_args()
    quick: bool = args.quick
    rows: list[Row] = []
    began = time.perf_counter()

    def part(name: str, fn: Callable[[], list[Row]]) -> None:
        print(f"[{time.perf_counter() - began:5.0f} s] {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(fn())
        except (Exception, SystemExit) as e:  # one broken part must not hide the rest
            traceback.print_exc()
            rows.append(Row(name, f"FAILED: {type(e).__name__}: {e}", "", None,
                            f"python -m bench.{name}"))

    part("modbus", lambda: modbus.run(quick))
    part("opcua", lambda: opcua.run(quick))
    with influx.server(None) as url:
        part("influx", lambda: influx.run(quick, url))
        part("history", lambda: history.run(quick, url))
    part("anomaly", lambda: anomaly_rows(quick))
    part("alarm_latency", lambda: alarm_latency.run(quick))
    part("footprint", lambda: footprint.run(quick))
    print(f"\n{'quick' if quick else 'full'} run, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, {time.perf_counter() - began:.0f} s\n")
    print(markdown(rows))
    return 1 if any(r.figure.startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
