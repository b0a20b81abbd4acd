"""`scadawatch browse opcua`: an OPC UA server's variables as a point list for the site file.

Connects as the gateway does (its certificate and trust list under the data dir, the same
security policies and login), walks the address space (`gateway.inputs.opcua.browse`) and writes one
CSV row per numeric variable in the site file's point format: `node` as `nsu=<uri>;...` (stable
when the server renumbers its namespaces), `tag` from the browse path, `unit` from
EngineeringUnits, `lo`/`hi` from EURange, `kind` guessed from the unit or else the names on the
path, `description` from the node's Description, and `device` as given. A cell is left blank
where the server does not say (a blank kind reads as `other`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from gateway.inputs.opcua.browse import (
    BrowseLimits,
    BrowseRefused,
    Variable,
    Walk,
    Walker,
    node_text,
)
from gateway.inputs.opcua.session import NodeRef
from gateway.site.loader import ConfigError, load_site
from gateway.site.model import NAME_MAX, Device
from gateway.site.rules import node_id_problem, opcua_security_problem
from scadawatch.cli import EXIT_FAILURE, EXIT_OK, UsageError

COLUMNS = ("tag", "device", "kind", "unit", "lo", "hi", "description", "node")
# Units that name their quantity (compared lower case, without spaces, ³ as 3). A length or
# a percentage does not: a level, or a pressure as head; the names decide those.
_UNIT_KIND = {
    **dict.fromkeys(("bar", "mbar", "kpa", "pa", "hpa", "mpa", "psi", "psig", "psia", "atm",
                     "mh2o", "mwc", "kg/cm2", "inh2o"), "pressure"),
    **dict.fromkeys(("m3/h", "m3/s", "m3/d", "m3/min", "l/s", "l/min", "l/h", "lps", "lpm",
                     "gpm", "mgd", "ml/d", "mld", "cfs", "ft3/s"), "flow"),
    **dict.fromkeys(("v", "kv", "mv"), "voltage"),
    **dict.fromkeys(("a", "ka", "ma"), "current"),
    "hz": "frequency",
    **dict.fromkeys(("w", "kw", "mw", "gw", "va", "kva", "mva", "var", "kvar", "mvar"), "power"),
    **dict.fromkeys(("°c", "degc", "℃", "°f", "degf", "k"), "temperature"),
}
_NAME_KIND = {
    **dict.fromkeys(("pressure", "press", "pres", "head"), "pressure"),
    **dict.fromkeys(("flow", "flowrate"), "flow"),
    **dict.fromkeys(("level", "lvl"), "level"),
    **dict.fromkeys(("voltage", "volt", "volts"), "voltage"),
    **dict.fromkeys(("current", "amps"), "current"),
    **dict.fromkeys(("frequency", "freq"), "frequency"),
    **dict.fromkeys(("power", "kw", "mw"), "power"),
    **dict.fromkeys(("temperature", "temp"), "temperature"),
    **dict.fromkeys(("status", "state", "running", "run", "open", "closed", "trip", "tripped",
                     "fault", "alarm"), "status"),
}
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_NOT_IN_TAG = re.compile(r"[^\w-]+")


def unit_text(unit: str) -> str:
    """EngineeringUnits' display name as a site file writes it: m³/h -> m3/h."""
    return unit.strip().replace("³", "3").replace("²", "2")


def guess_kind(path: Sequence[str], unit: str, boolean: bool) -> str:
    """The point kind a unit or the names on a path (deepest first) say, else "".

    >>> guess_kind(["Plant", "PT101"], "bar", False), guess_kind(["Tank", "Level"], "m", False)
    ('pressure', 'level')
    >>> guess_kind(["Pump", "Speed"], "", False), guess_kind(["Pump", "Speed"], "", True)
    ('', 'status')
    """
    if boolean:
        return "status"
    if (kind := _UNIT_KIND.get(unit_text(unit).lower().replace(" ", ""))) is not None:
        return kind
    for name in reversed(path):
        for word in _WORDS.findall(name):
            if (kind := _NAME_KIND.get(word.lower())) is not None:
                return kind
    return ""


def make_tags(paths: Sequence[Sequence[str]], prefix: str = "") -> list[str]:
    """A unique tag per browse path: names joined by dots, other characters as `_`.

    >>> make_tags([["Area 1", "Flow (m3/h)"], ["Area_1", "Flow_m3_h"]], "w1")
    ['w1.Area_1.Flow_m3_h', 'w1.Area_1.Flow_m3_h_2']
    """
    used: set[str] = set()
    out = []
    for path in paths:
        parts = [prefix] if prefix else []
        parts += [_NOT_IN_TAG.sub("_", name).strip("_") or "_" for name in path]
        tag = ".".join(parts)[-NAME_MAX + 4:]
        unique, n = tag, 1
        while unique in used:
            n += 1
            unique = f"{tag}_{n}"
        used.add(unique)
        out.append(unique)
    return out


def _natural(tag: str) -> list[str | int]:
    """Sort key that puts Area2 before Area10."""
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", tag)]


def point_rows(walk: Walk, namespaces: Sequence[str], device: str | None,
               prefix: str = "") -> list[dict[str, str]]:
    """The CSV rows, in tag order (numbers in names counted, not spelled)."""
    rows = []
    for v, tag in zip(walk.variables, make_tags([v.path for v in walk.variables], prefix),
                      strict=True):
        rows.append({"tag": tag, "device": device or "",
                     "kind": guess_kind(v.path, v.unit, _is_boolean(v)),
                     "unit": unit_text(v.unit),
                     "lo": "" if v.lo is None else repr(v.lo),
                     "hi": "" if v.hi is None else repr(v.hi),
                     "description": v.description, "node": node_text(v.node, namespaces)})
    return sorted(rows, key=lambda row: _natural(row["tag"]))


def _is_boolean(v: Variable) -> bool:
    return v.data_type is not None and v.data_type.NamespaceIndex == 0 and \
        v.data_type.Identifier == 1  # Boolean


def write_csv(rows: list[dict[str, str]], out: TextIO) -> None:
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


class Progress:
    """Nodes browsed so far on stderr: one updating line on a terminal, a line every few
    seconds in a log."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = 0.1 if self.tty else 5.0
        self.last = time.monotonic()

    def __call__(self, nodes: int, variables: int, queued: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        text = f"browsing: {nodes} nodes, {variables} variables, {queued} queued"
        self.stream.write(f"\r{text}\033[K" if self.tty else text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")


def _device(args: argparse.Namespace) -> Device:
    """The server to browse and how to connect, from the command line."""
    if not args.endpoint.startswith("opc.tcp://"):
        raise UsageError(f"--endpoint {args.endpoint!r} is not an opc.tcp:// URL")
    policy, _, mode = args.security.partition(":")
    mode = mode or ("None" if policy == "None" else "SignAndEncrypt")
    if (bad := opcua_security_problem(policy, mode)) is not None:
        raise UsageError(f"--security {args.security}: {bad[1]}")
    if args.username is not None and policy == "None" and not args.allow_plaintext_password:
        raise UsageError("--username with --security None sends the password in clear text: "
                         "use --security Basic256Sha256, or --allow-plaintext-password")
    if args.username is not None and args.password_env is None:
        raise UsageError("--username needs --password-env VAR (the variable holding the "
                         "password)")
    try:
        return Device(name=args.device or "browse", protocol="opcua", endpoint=args.endpoint,
                      security_policy=policy, security_mode=mode, username=args.username,
                      password_env=args.password_env)
    except ValidationError as e:
        option = {"name": "device"}  # the model's key -> the option that set it
        raise UsageError("; ".join(f"--{option.get(str(err['loc'][0]), err['loc'][0])}: "
                                   f"{err['msg']}" for err in e.errors())) from None


def target(args: argparse.Namespace) -> tuple[Device, Path, str, bool]:
    """(device, data dir of the certificate and trust list, site name, whether the device is
    the site file's): `--endpoint` and its options, or `--config` with `--device` naming an
    OPC UA device of the site file (its endpoint, security and login)."""
    site = None
    if args.config is not None:
        try:
            site = load_site(args.config, read_points_csv=False)  # it may be what we write
        except ConfigError as e:
            raise UsageError("\n".join(str(p) for p in e.problems)) from None
    if args.endpoint is None:
        named = [d for d in site.devices if d.name == args.device] if site else []
        if not named or named[0].protocol != "opcua":
            ours = [d.name for d in site.devices if d.protocol == "opcua"] if site else []
            raise UsageError("give --endpoint, or --config SITE.toml with --device naming one of "
                             "its OPC UA devices" + (f" ({', '.join(ours) or 'it has none'})"
                                                     if site else ""))
        device = named[0]
    else:
        device = _device(args)
    if site is not None:
        return device, site.site.data_dir, site.site.name, args.endpoint is None
    if args.data_dir is None and device.security_policy != "None":
        raise UsageError(f"security policy {device.security_policy} uses the gateway's "
                         "certificate and trust list: give --config SITE.toml or --data-dir DIR")
    return device, Path(args.data_dir or "."), args.site, False


async def _browse(args: argparse.Namespace, device: Device, data_dir: Path, site_name: str,
                  progress: Progress) -> tuple[Walk, list[str], BrowseLimits]:
    from asyncua import Client, ua

    from gateway.inputs.opcua.browse import read_limits
    from gateway.inputs.opcua.security import apply_security

    client = Client(device.endpoint or "", timeout=args.timeout)
    await apply_security(client, device, data_dir, site_name)
    await client.connect()
    try:
        namespaces = await client.get_namespace_array()
        root = NodeRef.parse(args.root).resolve(namespaces)
        if root is None:
            raise BrowseRefused(f"--root {args.root}: the server has no namespace "
                                f"{NodeRef.parse(args.root).uri!r}",
                                ua.StatusCodes.BadNodeIdUnknown)
        limits = await read_limits(client)
        walk = await Walker(client, limits, progress).walk(root, args.root)
        return walk, namespaces, limits
    finally:
        try:
            async with asyncio.timeout(args.timeout):
                await client.disconnect()
        except Exception:  # the answer is in hand; a failed goodbye is no news
            client.uaclient.disconnect_socket()


def _failure(endpoint: str, timeout: float, e: BaseException) -> str:
    from gateway.inputs.opcua.security import OpcUaSecurityError

    if isinstance(e, OpcUaSecurityError):
        return f"{endpoint}: {e.reason}"
    if isinstance(e, BrowseRefused):
        return f"{endpoint}: {e}"
    if isinstance(e, TimeoutError):
        return (f"{endpoint}: no answer within {timeout:g} s (a server that does not speak "
                "OPC UA on this port, or one too busy: try --timeout)")
    if isinstance(e, ConnectionRefusedError):
        return f"{endpoint}: connection refused (nothing listens on that port)"
    if isinstance(e, OSError):
        return f"{endpoint}: cannot connect: {e.strerror or e}"
    return f"{endpoint}: {type(e).__name__}: {e}"


def main(args: argparse.Namespace) -> int:
    from asyncua import ua

    if (bad := node_id_problem(args.root)) is not None:
        raise UsageError(f"--root: {bad}")
    device, data_dir, site_name, in_site = target(args)
    # asyncua warns of what it negotiates (session timeout, ...): noise beside the progress
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    progress = Progress(sys.stderr)
    try:
        walk, namespaces, limits = asyncio.run(_browse(args, device, data_dir, site_name,
                                                       progress))
    except (OSError, TimeoutError, BrowseRefused, ua.UaError) as e:
        progress.done()
        print(f"scadawatch browse opcua: error: "
              f"{_failure(device.endpoint or '', args.timeout, e)}", file=sys.stderr)
        return EXIT_FAILURE
    progress.done()
    rows = point_rows(walk, namespaces, args.device, args.prefix)
    if args.out is None:
        write_csv(rows, sys.stdout)
    else:
        text = io.StringIO()
        write_csv(rows, text)
        tmp = Path(f"{args.out}.tmp")
        tmp.write_text(text.getvalue(), encoding="utf-8")
        os.replace(tmp, args.out)
    for line in summary(args, device, in_site, walk, limits, len(rows)):
        print(line, file=sys.stderr)
    return EXIT_OK


def summary(args: argparse.Namespace, device: Device, in_site: bool, walk: Walk,
            limits: BrowseLimits, n: int) -> list[str]:
    where = args.out or "stdout"
    lines = [f"{n} point{'' if n == 1 else 's'} to {where} from {walk.nodes} nodes browsed in "
             f"{walk.seconds:.1f} s (server limits: {limits.browse} nodes per Browse, "
             f"{limits.read} per Read)"]
    if walk.skipped:
        lines.append("left out (not a number, or an array): " + ", ".join(
            f"{k} {v}" for k, v in walk.skipped.most_common()))
    if walk.refused:
        lines.append("nodes the server would not browse: " + ", ".join(
            f"{k} {v}" for k, v in walk.refused.most_common()))
    security = "" if device.security_policy == "None" else (
        f', security_policy = "{device.security_policy}", security_mode = '
        f'"{device.security_mode}"')
    if args.device is None:
        lines.append("no --device: the rows have no device and would not be polled")
    lines += ["to poll them, in the site file:",
              f'  [site] points_csv = "{where if args.out else "points.csv"}"']
    if not in_site:
        lines.append(f'  [[devices]] name = "{device.name}", protocol = "opcua", '
                     f'endpoint = "{device.endpoint}"{security}')
    return lines
