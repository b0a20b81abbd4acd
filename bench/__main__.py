"""`python -m bench [--quick]`: every headline figure beside its ceiling or peer, one table.

Runs, in order: end to end over Modbus (bench.modbus), OPC UA (bench.opcua), IEC 104
(bench.iec104), DNP3 (bench.dnp3), the InfluxDB
sink and the history query against InfluxDB (bench.influx, bench.history; one influxd started
here), the anomaly engine's replay with the zone model on and off against river
HalfSpaceTrees (bench.anomaly), the zone model against river HalfSpaceTrees on hourly water data
(bench.zone_model), leaks found on wntr networks the simulator does not use (bench.networks),
the public NAB and SKAB benchmarks beside river (bench.nab, bench.skab; skipped without
../shared/benchmarks), alarm latency (bench.alarm_latency), the control-room page under an
alarm flood in headless Chromium (bench.page), the footprint in EMQX Neuron's format
(bench.footprint), the bytes written to disk per reading (bench.disk_writes) and the
central's Sparkplug ingest from 10 to 1,000 sites beside a bare aiomqtt subscriber
(bench.sparkplug); each part's `run(quick)` picks its sizes. Everything runs on loopback;
every load is bounded in count and time. `--quick` runs small sizes (a smoke test, about 5
minutes on 2 shared cores); the full run takes about 25 (NAB and SKAB with their river
baselines: ~8), the first one a minute more (bench.anomaly exports and tiles its recording
into the temp dir once). A part that fails gets a row saying so and the others go on. Each
row names the command that prints its details.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable

from bench import (
    alarm_latency,
    anomaly,
    disk_writes,
    dnp3,
    footprint,
    history,
    iec104,
    influx,
    modbus,
    nab,
    networks,
    opcua,
    page,
    skab,
    sparkplug,
    zone_model,
)
from bench.table import Row, markdown


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test (~3 min)")
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
    part("iec104", lambda: iec104.run(quick))
    part("dnp3", lambda: dnp3.run(quick))
    with influx.server(None) as url:
        part("influx", lambda: influx.run(quick, url))
        part("history", lambda: history.run(quick, url))
    part("anomaly", lambda: anomaly.run(quick))
    part("zone_model", lambda: zone_model.run(quick))
    part("networks", lambda: networks.run(quick))
    part("nab", lambda: nab.run(quick))
    part("skab", lambda: skab.run(quick))
    part("alarm_latency", lambda: alarm_latency.run(quick))
    part("page", lambda: page.run(quick))
    part("footprint", lambda: footprint.run(quick))
    part("disk_writes", lambda: disk_writes.run(quick))
    part("sparkplug", lambda: sparkplug.run(quick))
    print(f"\n{'quick' if quick else 'full'} run, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, {time.perf_counter() - began:.0f} s\n")
    print(markdown(rows))
    return 1 if any(r.figure.startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
