"""Argument parsing for `scadawatch`; each subcommand's body lives in its own module and is
imported only when that subcommand runs, so `scadawatch run` never imports wntr."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from timegrammar import DurationError, seconds

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# Modules of the optional extras, each with the extra that brings it: a subcommand that needs
# one on a core install (`pip install scadawatch`, as on a field gateway) says what to install.
EXTRA_OF = {"wntr": "sim", "six": "sim", "pandapower": "sim", "tomli_w": "sim", "river": "ml",
            "matplotlib": "plot"}


class UsageError(Exception):
    """A usage or configuration error: printed without a traceback, exit 2."""


def require_extra(extra: str) -> None:
    """Raise ModuleNotFoundError (reported as the extra to install) unless every module of
    `extra` can be imported; cheap: nothing is imported."""
    for module, of in EXTRA_OF.items():
        if of == extra and importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def duration(text: str) -> float:
    """An argument in the duration grammar (`90`, `30s`, `10m`, `1h30m`), in seconds."""
    try:
        return seconds(text)
    except DurationError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _config(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required, metavar="SITE.toml", help="site file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scadawatch",
        description="Monitoring for water and energy utility networks: Modbus/OPC UA gateway, "
        "historian, anomaly detection and control-room API.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = command("demo", "scadawatch.commands.demo:main",
                "simulators + gateway + historian + API on 127.0.0.1, on the example site")
    p.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    p.add_argument("--duration", type=duration, default=None, metavar="D",
                   help="stop after D (90, 30s, 10m, 1h; default: run until Ctrl-C)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where data lives (default: a fresh temporary directory)")
    p.add_argument("--scenario", default="demo",
                   help="simulator scenario (default demo: RTU outages and limit excursions "
                   "from its first minute, in wall-clock time whatever the speed)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="simulated-time factor of the process (default 1)")
    p.add_argument("--seed", type=int, default=1)

    for name, help_ in (("run", "gateway + detector + API in one process (edge)"),
                        ("gateway", "the gateway alone: poll, spool, store, detect"),
                        ("api", "the API alone, over the historian a gateway fills")):
        p = command(name, "scadawatch.commands.serve:main", help_)
        _config(p)

    p = command("check-config", "scadawatch.commands.check:main",
                "validate a site file; every error names file, key path and reason; exit 2")
    _config(p)

    p = command("central", "scadawatch.commands.central:main",
                "the multi-site control room: Sparkplug B host application, historian, "
                "alarm list and API for every site")
    p.add_argument("--config", required=True, metavar="CENTRAL.toml", help="central file")

    p = command("simulate", "scadawatch.commands.simulate:main",
                "physical simulators served over Modbus TCP, OPC UA and IEC 104, or exported "
                "to CSV")
    p.add_argument("site", choices=["water", "grid"])
    p.add_argument("--scenario", default="normal", help="shipped scenario name or a .toml path")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed", type=float, default=1.0, help="simulated-time factor when serving")
    p.add_argument("--start", default=None,
                   help="simulated clock start, ISO 8601 (default: now when serving, "
                   "2026-01-05T00:00:00Z, a Monday, when exporting)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--iec104-port", type=int, default=2404)
    p.add_argument("--opcua-pki", default=None, metavar="DIR",
                   help="also offer Basic256Sha256 Sign/SignAndEncrypt: server certificate in "
                   "DIR/own/, trusted client certificates in DIR/trusted/")
    p.add_argument("--opcua-trust-all-clients", action="store_true",
                   help="with --opcua-pki: accept any client certificate (demos only)")
    p.add_argument("--opcua-source-time", choices=["simulated", "wall"], default="simulated",
                   help="OPC UA source timestamps and IEC 104 time tags: the sample's "
                   "simulated time (default) or the wall-clock time it is served, as a field "
                   "device's clock")
    p.add_argument("--write-site", default=None, metavar="SITE.toml",
                   help="write the site file that lets the gateway read this simulator")
    p.add_argument("--duration", type=duration, default=None, metavar="D",
                   help="stop serving after D of wall-clock time (90, 30s, 10m, 1h)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="export readings.csv, labels.csv and site.toml to DIR instead of serving")
    p.add_argument("--days", type=float, default=7.0, help="simulated days to export")
    p.add_argument("--step", default=None,
                   help="physics step (default 1min when serving; 5min water, 15min grid "
                   "when exporting)")

    p = command("opcua", "scadawatch.commands.opcua:main",
                "OPC UA security: `cert` creates (once) and shows the gateway's client "
                "certificate for the server admin, and where trusted server certificates go")
    p.add_argument("action", choices=["cert"])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="SITE.toml", help="site file (its data_dir and name)")
    where.add_argument("--data-dir", metavar="DIR", help="the gateway's data dir")
    p.add_argument("--site", default="gateway",
                   help="site name for the certificate with --data-dir (default gateway)")

    p = command("browse", "scadawatch.commands.browse:main",
                "walk a server's address space and write its variables as a point list "
                "(the site file's CSV format)")
    protocols = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    a = protocols.add_parser("opcua", help="OPC UA: every numeric variable under --root")
    a.add_argument("--endpoint", default=None, metavar="opc.tcp://HOST:PORT/PATH",
                   help="the server (without it: the endpoint, security and login of the "
                   "--config file's device --device)")
    a.add_argument("--security", default="None", metavar="POLICY[:MODE]",
                   help="None (default), or Basic256Sha256, Aes128_Sha256_RsaOaep, "
                   "Aes256_Sha256_RsaPss with mode Sign or SignAndEncrypt (the default)")
    a.add_argument("--username", default=None)
    a.add_argument("--password-env", default=None, metavar="VAR",
                   help="environment variable holding the password")
    a.add_argument("--allow-plaintext-password", action="store_true",
                   help="accept --username with --security None (the password crosses the "
                   "network in clear text)")
    where = a.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="SITE.toml",
                       help="the gateway's site file: its data_dir holds the certificate and "
                       "trust list used for a secure connection, its --device the server")
    where.add_argument("--data-dir", metavar="DIR", help="the gateway's data dir (instead of "
                       "--config)")
    a.add_argument("--site", default="gateway",
                   help="site name for the certificate with --data-dir (default gateway)")
    a.add_argument("--root", default="i=85", metavar="NODE",
                   help="where to start, as a site file writes a node id (default i=85, the "
                   "Objects folder)")
    a.add_argument("--device", default=None, metavar="NAME",
                   help="the device name to put in each row (the site file's [[devices]] name)")
    a.add_argument("--prefix", default="", help="put PREFIX. before every tag")
    a.add_argument("--out", default=None, metavar="POINTS.csv",
                   help="where the point list goes (default: stdout)")
    a.add_argument("--timeout", type=duration, default="10s",
                   help="for the connection and each request (default 10s)")

    p = command("probe", "scadawatch.commands.probe:main",
                "read a device once and show every decoding, to pick a point's type and "
                "word_order (read-only function codes)")
    protocols = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    a = protocols.add_parser("modbus", help="Modbus TCP: one read of holding or input "
                             "registers (function code 3 or 4)")
    a.add_argument("--host", required=True)
    a.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    a.add_argument("--unit", type=int, default=1, choices=range(256), metavar="0-255",
                   help="unit id (default 1)")
    a.add_argument("--register", choices=["holding", "input"], default="holding",
                   help="register table (default holding)")
    a.add_argument("--address", type=int, required=True, choices=range(65536),
                   metavar="0-65535", help="first register, 0-based as in the site file")
    a.add_argument("--count", type=int, default=4, choices=range(1, 126), metavar="1-125",
                   help="registers to read (default 4: a float64)")
    a.add_argument("--scale", type=float, default=1.0, help="value = raw * scale + offset")
    a.add_argument("--offset", type=float, default=0.0)
    a.add_argument("--expect", type=float, default=None, metavar="VALUE",
                   help="mark the decodings within 0.5%% of VALUE and print their site-file "
                   "keys")
    a.add_argument("--timeout", type=duration, default="3s",
                   help="for the connection and the answer (default 3s)")

    p = command("token", "scadawatch.commands.token:main",
                "API tokens: create (printed once, stored hashed in data_dir), list, revoke")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("create", help="make a token and print it (once)")
    a.add_argument("--role", required=True, metavar="ROLE",
                   help="viewer (reads), operator (+ acknowledges and shelves alarms), engineer "
                   "(as operator today; points and devices change through the site file) or "
                   "admin (+ manages tokens)")
    a.add_argument("--name", default=None, help="a name to list and revoke it by "
                   "(default ROLE-N)")
    a.add_argument("--expires", type=float, default=None, metavar="DAYS",
                   help="valid for DAYS days (default: until revoked)")
    _config(a)
    _config(actions.add_parser("list", help="names, roles, dates and last 4 characters"))
    a = actions.add_parser("revoke", help="invalidate a token at once, also in a running API")
    a.add_argument("name", metavar="NAME")
    _config(a)

    p = command("replay", "scadawatch.commands.replay:main",
                "run the anomaly engine offline over a recording; write alarms.jsonl")
    _config(p)
    p.add_argument("--input", required=True, metavar="PATH",
                   help="wide CSV (timestamp, one column per tag), .csv.gz, or a directory "
                   "holding readings.csv (as `simulate --export` writes)")
    p.add_argument("--out", required=True, metavar="ALARMS.jsonl",
                   help="where the alarms go, one JSON object per line")
    p.add_argument("--state", default=None, metavar="FILE",
                   help="engine state: loaded if the file exists, saved at the end")

    p = command("evaluate", "scadawatch.commands.evaluate:main",
                "score alarms against ground-truth labels: recall, precision, F1, delay, "
                "false alarms per zone-day")
    p.add_argument("--alarms", required=True, metavar="ALARMS.jsonl")
    p.add_argument("--labels", required=True, metavar="LABELS.csv")
    _config(p, required=False)
    p.add_argument("--grace", type=duration, default="1h",
                   help="an alarm up to this long after a label's end still detects it "
                   "(default 1h)")
    p.add_argument("--slack", type=duration, default="5min",
                   help="an alarm up to this long before a label's start still detects it "
                   "(default 5min)")
    p.add_argument("--input", default=None, metavar="PATH",
                   help="the recording: its time span gives the days, and --plot draws it")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="draw each tag with label windows and alarms shaded (needs --input "
                   "and matplotlib: pip install 'scadawatch[plot]')")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or EXIT_OK)
    except ModuleNotFoundError as e:
        extra = EXTRA_OF.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"scadawatch {args.command}: error: this needs {e.name}, of the {extra} extra, "
              f"which is not installed: pip install 'scadawatch[{extra}]'", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"scadawatch {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error of ours; silence the final flush.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
