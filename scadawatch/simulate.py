"""`scadawatch simulate water|grid`: serve a simulated site over Modbus TCP and OPC UA, or
export a recording of it (readings.csv, labels.csv, site.toml) with `--export DIR`."""

from __future__ import annotations

import argparse
import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path

from scadawatch.cli import UsageError

DEFAULT_STEP = {"water": "5min", "grid": "15min"}
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
    positive = {"--speed": args.speed, "--days": args.days}
    for flag, value in positive.items():
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"{flag} {value:g}: must be above 0")
    if args.duration is not None and not args.duration >= 0:
        raise UsageError(f"--duration {args.duration:g}: must be 0 or more seconds")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be 0 or more")
    for flag, port in (("--modbus-port", args.modbus_port), ("--opcua-port", args.opcua_port)):
        if not 0 < port < 65536:
            raise UsageError(f"{flag} {port}: not a TCP port (1-65535)")


def main(args: argparse.Namespace) -> int:
    from simulators.scenario import ScenarioError, parse_duration
    from simulators.site import build_site, check_step

    _check(args)
    step_text = args.step or DEFAULT_STEP[args.site]
    try:
        step = parse_duration(step_text)
        check_step(step)
    except ValueError as e:
        raise UsageError(f"--step {step_text!r}: {e}") from None
    now = datetime.now(UTC).replace(microsecond=0)
    start = _start(args.start, EXPORT_START if args.export else now)
    try:
        site = build_site(args.site, args.scenario, seed=args.seed, start=start, step=step)
    except ScenarioError as e:
        raise UsageError(str(e)) from None

    if args.export:
        from simulators.export import export

        out = Path(args.export)
        export(site, out, days=args.days, step=step, host=args.host,
               modbus_port=args.modbus_port, opcua_port=args.opcua_port)
        print(f"{site.name}: {args.days:g} days every {step_text} from {start:%Y-%m-%dT%H:%M:%SZ}"
              f" (scenario {site.scenario.name}, seed {args.seed}) in {out}/:\n"
              f"  readings.csv  {len(site.tags)} tags\n"
              f"  labels.csv    {len(site.labels())} labels\n"
              f"  site.toml     for scadawatch replay --config {out / 'site.toml'}", flush=True)
        return 0

    from simulators.serve import serve

    if args.write_site:
        from simulators.sitefile import write_site_file

        write_site_file(site, Path(args.write_site), host=args.host,
                        modbus_port=args.modbus_port, opcua_port=args.opcua_port)
        print(f"site file: {args.write_site}", flush=True)
    asyncio.run(serve(site, host=args.host, modbus_port=args.modbus_port,
                      opcua_port=args.opcua_port, speed=args.speed, duration=args.duration))
    return 0
