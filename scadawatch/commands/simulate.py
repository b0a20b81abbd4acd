"""`scadawatch simulate water|grid`: serve a simulated site over Modbus TCP, OPC UA and
IEC 104, or export a recording of it (readings.csv, labels.csv, site.toml) with `--export DIR`."""

from __future__ import annotations

import argparse
import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path

from gateway.logs import setup_logging
from scadawatch.cli import UsageError
from timegrammar import seconds

EXPORT_STEP = {"water": "5m", "grid": "15m"}
SERVE_STEP = "1m"  # physics step when serving: events start within a minute of their time
EXPORT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: weekly cycles start on day 0


def _start(text: str | None, default: datetime) -> datetime:
    if text is None:
        return default
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--start {text!r}: not an ISO 8601 time such as "
                         "2026-01-05T00:00:00Z") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check(args: argparse.Namespace) -> None:
    if not (args.days > 0 and math.isfinite(args.days)):
        raise UsageError(f"--days {args.days:g}: must be above 0")
    if not (args.speed >= 0 and math.isfinite(args.speed)):  # 0 freezes the clock
        raise UsageError(f"--speed {args.speed:g}: must be 0 or more")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be 0 or more")
    for flag, port in (("--modbus-port", args.modbus_port), ("--opcua-port", args.opcua_port),
                       ("--iec104-port", args.iec104_port)):
        if not 0 < port < 65536:
            raise UsageError(f"{flag} {port}: not a TCP port (1-65535)")


def main(args: argparse.Namespace) -> int:
    from simulators.scenario import ScenarioError
    from simulators.site import build_site, check_step

    _check(args)
    setup_logging()
    step_text = args.step or (EXPORT_STEP[args.site] if args.export else SERVE_STEP)
    try:
        step = seconds(step_text)
        check_step(step)
    except ValueError as e:
        raise UsageError(f"--step {step_text!r}: {e}") from None
    now = datetime.now(UTC).replace(microsecond=0)
    start = _start(args.start, EXPORT_START if args.export else now)
    try:
        site = build_site(args.site, args.scenario, seed=args.seed, start=start, step=step,
                          speed=None if args.export else args.speed)
    except ScenarioError as e:
        raise UsageError(str(e)) from None

    if args.export:
        from simulators.export import export

        out = Path(args.export)
        export(site, out, days=args.days, step=step, host=args.host,
               modbus_port=args.modbus_port, opcua_port=args.opcua_port,
               iec104_port=args.iec104_port)
        print(f"{site.name}: {args.days:g} days every {step_text} from {start:%Y-%m-%dT%H:%M:%SZ}"
              f" (scenario {site.scenario.name}, seed {args.seed}) in {out}/:\n"
              f"  readings.csv  {len(site.tags)} tags\n"
              f"  labels.csv    {len(site.labels(args.days * 86400))} labels\n"
              f"  site.toml     for scadawatch replay --config {out / 'site.toml'}", flush=True)
        return 0

    from simulators.serve import serve

    if args.write_site:
        from simulators.sitefile import write_site_file

        # Written under a temporary name and renamed: whoever waits for the file (the demo)
        # never reads half of it.
        target = Path(args.write_site)
        partial = target.with_name(target.name + ".partial")
        write_site_file(site, partial, host=args.host, modbus_port=args.modbus_port,
                        opcua_port=args.opcua_port, iec104_port=args.iec104_port)
        partial.replace(target)
        print(f"site file: {args.write_site}", flush=True)
    asyncio.run(serve(site, host=args.host, modbus_port=args.modbus_port,
                      opcua_port=args.opcua_port, iec104_port=args.iec104_port,
                      speed=args.speed, duration=args.duration,
                      opcua_pki=Path(args.opcua_pki) if args.opcua_pki else None,
                      opcua_trust_all_clients=args.opcua_trust_all_clients,
                      wall_timestamps=args.opcua_source_time == "wall"))
    return 0
