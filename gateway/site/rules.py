"""Rules of a site file that span fields, points or devices (pydantic checks each value alone).

Each rule yields a `SiteProblem` (section, index, field, reason); the loader turns it into a
`ConfigProblem` naming the file and key path, so a point from a CSV is named by its row.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence

from anomaly.water.storage import length_factor
from gateway.site.dnp3_rules import dnp3_device_problems, dnp3_point_problems
from gateway.site.iec104_rules import iec104_device_problems, iec104_point_problems
from gateway.site.model import (
    BIT_TABLES,
    RENAMED_ALARMS_KEYS,
    AlarmsSection,
    Device,
    HistorianSection,
    Point,
    opcua_security_problem,
)
from gateway.site.problems import RowName, SiteProblem

READ_ONLY_TABLES = ("input", "discrete")
_TABLE_NAMES = {"holding": "holding registers", "input": "input registers", "coil": "coils",
                "discrete": "discrete inputs"}
_SERIAL_SETTINGS = ("baudrate", "parity", "stopbits", "bytesize")
# Keys the rules read whose default, standing in for an invalid value, would mislead them: an
# entry with a fault in one of these sits the rules out (its fault is reported all the same).
RULE_KEYS = frozenset({"tag", "name", "device", "protocol", "register", "register_kind",
                       "address", "type", "node", "endpoint", "serial_port", "kind", "api",
                       "url", "bucket", "database", "deadband_type", "ioa", "typeid",
                       "common_address", "t1", "t2", "k", "w", "time_zone",
                       "group", "index", "variation", "event_variation", "master_address",
                       "outstation_address",
                       *_SERIAL_SETTINGS})
_MAX_LISTED = 20
MODBUS = ("modbus-tcp", "modbus-rtu")

_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_NODE_ID = re.compile(
    r"(?:(?:nsu=(?P<uri>[^;]+)|ns=(?P<ns>\d+));)?"
    rf"(?:i=(?P<i>\d+)|s=.+|g={_GUID}|b=[A-Za-z0-9+/]+={{0,2}})",
    re.DOTALL,
)


def node_id_problem(node: str) -> str | None:
    """Why `node` is not an OPC UA node id string, or None if it is one.

    Accepts `nsu=<uri>;` or `ns=<int>;` (or neither: namespace 0) followed by `s=<string>`,
    `i=<uint32>`, `g=<guid>` or `b=<base64>`.
    """
    m = _NODE_ID.fullmatch(node)
    if m is None:
        return (f"malformed node id {node!r}: expected a namespace ('nsu=<uri>;' or "
                "'ns=<int>;') and an identifier ('s=<name>', 'i=<int>', 'g=<guid>' or "
                "'b=<base64>'), e.g. 'ns=2;s=dma1.flow'")
    if m["ns"] is not None and int(m["ns"]) > 0xFFFF:
        return f"malformed node id {node!r}: namespace index {m['ns']} is above 65535"
    if m["i"] is not None and int(m["i"]) > 0xFFFFFFFF:
        return f"malformed node id {node!r}: numeric identifier {m['i']} is above 2^32-1"
    return None


# The policies the gateway's OPC UA client offers, by their name in the site file.
def clear_text_logins(devices: Sequence[Device]) -> list[tuple[int, Device]]:
    """(index, device) of the devices whose password crosses the network unencrypted, as
    their `allow_plaintext_password` accepts: said at every start and by check-config."""
    return [(i, d) for i, d in enumerate(devices) if d.protocol == "opcua"
            and d.username is not None and d.security_policy == "None"
            and d.allow_plaintext_password]


def old_key_names(alarms: AlarmsSection) -> list[tuple[str, str]]:
    """(old key path, new key path) of the renamed keys the site file still uses: said at
    every start and by check-config."""
    return [(f"alarms.{old}", f"alarms.{RENAMED_ALARMS_KEYS[old]}") for old in alarms.old_keys]


def check_site(historian: HistorianSection, devices: Sequence[Device | None],
               points: Sequence[Point | None], label: RowName) -> list[SiteProblem]:
    """Every cross-field problem; `None` entries (already reported invalid) are skipped."""
    return [*_historian(historian), *_devices(devices, label),
            *_points(devices, points, label), *_overlaps(devices, points, label),
            *iec104_point_problems(devices, points, label),
            *dnp3_point_problems(devices, points, label)]


def _historian(h: HistorianSection) -> list[SiteProblem]:
    if h.kind != "influxdb":
        return []
    out: list[SiteProblem] = []
    if not h.url.startswith(("http://", "https://")):
        out.append(("historian", -1, "url", f"{h.url!r} is not an http:// or https:// URL"))
    if h.api == "v1" and not h.database:
        out.append(("historian", -1, "database",
                    "required with api = 'v1' (InfluxDB 1.x writes to a database)"))
    if h.api == "v2" and not h.bucket:
        out.append(("historian", -1, "bucket",
                    "required with api = 'v2' (InfluxDB 1.8+, 2.x, 3.x write to a bucket)"))
    return out


def _devices(devices: Sequence[Device | None], label: RowName) -> list[SiteProblem]:
    out: list[SiteProblem] = []
    first: dict[str, int] = {}
    serial_line: dict[str, tuple[int, Device]] = {}  # serial port -> first device on it
    for i, d in enumerate(devices):
        if d is None:
            continue
        if d.name in first:
            out.append(("devices", i, "name", f"duplicate device name {d.name!r}, "
                        f"also at {label('devices', first[d.name])}"))
        first.setdefault(d.name, i)
        if d.protocol == "opcua":
            if d.endpoint is None:
                out.append(("devices", i, "endpoint", "required for protocol 'opcua' "
                            "(e.g. 'opc.tcp://10.0.0.5:4840')"))
            elif not d.endpoint.startswith("opc.tcp://"):
                out.append(("devices", i, "endpoint",
                            f"{d.endpoint!r} is not an opc.tcp:// URL"))
            if (bad := opcua_security_problem(d.security_policy, d.security_mode)) is not None:
                out.append(("devices", i, *bad))
            if d.password_env is not None and d.password_file is not None:
                out.append(("devices", i, "password_file",
                            "give password_env or password_file, not both"))
            if d.username is not None and d.security_policy == "None" and (
                    not d.allow_plaintext_password):
                out.append(("devices", i, "username", "with security_policy 'None' the "
                            "password crosses the network in clear text: use a security "
                            "policy (Basic256Sha256 with security_mode 'SignAndEncrypt'), or "
                            "set allow_plaintext_password = true on this device to accept "
                            "that risk"))
        if d.allow_plaintext_password and d.username is None:
            out.append(("devices", i, "allow_plaintext_password",
                        "has no effect without a username"))
        if d.protocol == "iec104":
            out += iec104_device_problems(i, d)
        if d.protocol == "dnp3":
            out += dnp3_device_problems(i, d)
        if d.protocol == "modbus-rtu":
            if d.serial_port is None:
                out.append(("devices", i, "serial_port", "required for protocol 'modbus-rtu' "
                            "(e.g. '/dev/ttyUSB0')"))
                continue
            j, other = serial_line.setdefault(d.serial_port, (i, d))
            for key in _SERIAL_SETTINGS:
                if getattr(d, key) != getattr(other, key):
                    out.append(("devices", i, key, f"{getattr(d, key)!r} differs from "
                                f"{getattr(other, key)!r} of {other.name!r} "
                                f"({label('devices', j)}) on the same serial line "
                                f"{d.serial_port}"))
    return out


def _points(devices: Sequence[Device | None], points: Sequence[Point | None],
            label: RowName) -> list[SiteProblem]:
    by_name = {d.name: d for d in reversed(devices) if d is not None}  # first of duplicates
    known = list(dict.fromkeys(d.name for d in devices if d is not None))
    out: list[SiteProblem] = []
    first: dict[str, int] = {}
    for i, p in enumerate(points):
        if p is None:
            continue
        if p.tag in first:
            out.append(("points", i, "tag",
                        f"duplicate tag {p.tag!r}, also at {label('points', first[p.tag])}"))
        first.setdefault(p.tag, i)
        if p.lo is not None and p.hi is not None and p.lo >= p.hi:
            out.append(("points", i, "lo", f"lo ({p.lo:g}) must be below hi ({p.hi:g})"))
        if p.node is not None and (why := node_id_problem(p.node)):
            out.append(("points", i, "node", why))
        out += _deadband(i, p) + _tank(i, p)
        device = by_name.get(p.device) if p.device is not None else None
        if p.device is not None and device is None:
            out.append(("points", i, "device", f"unknown device {p.device!r} ({_known(known)})"))
        if device is not None and device.protocol == "opcua" and p.node is None:
            out.append(("points", i, "node",
                        f"required for a point on OPC UA device {device.name!r}"))
        if device is not None and device.protocol == "iec104" and p.ioa is None:
            out.append(("points", i, "ioa", f"required for a point on IEC 104 device "
                        f"{device.name!r} (its information object address)"))
        modbus = device is not None and device.protocol in MODBUS
        if modbus and p.address is None:
            out.append(("points", i, "address",
                        f"required for a point on Modbus device {p.device!r}"))
        if modbus or p.address is not None:
            out += _modbus_point(i, p)
    return out


def _deadband(i: int, p: Point) -> list[SiteProblem]:
    if p.deadband_type == "none" and p.deadband > 0:
        return [("points", i, "deadband", f"{p.deadband:g} has no effect with deadband_type "
                 "'none': set deadband_type = 'absolute' or 'percent'")]
    if p.deadband_type == "percent" and p.deadband > 100:
        return [("points", i, "deadband", f"a percent deadband must be at most 100, "
                 f"got {p.deadband:g}")]
    return []


def _tank(i: int, p: Point) -> list[SiteProblem]:
    """A tank's geometry belongs on its level point, in a unit the balance can use."""
    key = "area" if p.area is not None else "volume_curve" if p.volume_curve else None
    if key is None:
        return []
    if p.kind != "level":
        return [("points", i, key, f"a tank's geometry goes on its level point, not on a "
                 f"{p.kind!r} point")]
    if p.area is not None and p.volume_curve:
        return [("points", i, "area", "give area or volume_curve, not both")]
    if p.area is not None and math.isnan(length_factor(p.unit)):
        return [("points", i, "area", f"needs a level in m, cm, mm, ft or in, not "
                 f"{p.unit!r} (a volume_curve takes any unit)")]
    return []


def _known(names: list[str]) -> str:
    if not names:
        return "no devices are defined"
    shown = ", ".join(names[:_MAX_LISTED])
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"known devices: {shown}{more}"


def _modbus_point(i: int, p: Point) -> list[SiteProblem]:
    out: list[SiteProblem] = []
    table = p.register_kind
    if table in BIT_TABLES and p.type != "bool":
        out.append(("points", i, "type", f"a {_TABLE_NAMES[table][:-1]} holds one bit: type "
                    f"must be 'bool', not {p.type!r}"))
    if p.writable and table in READ_ONLY_TABLES:
        out.append(("points", i, "writable", f"{_TABLE_NAMES[table]} are read-only in "
                    "Modbus; a writable point needs register = 'holding' or 'coil'"))
    if p.address is not None and p.address + p.width - 1 > 0xFFFF:
        out.append(("points", i, "address", f"{p.type} at {p.address} needs "
                    f"{_span(p.address, p.address + p.width - 1, table)}, past the last "
                    "address 65535"))
    return out


def _span(first: int, last: int, table: str = "") -> str:
    """"holding registers 10-11", "coil 3", or without a table "10-11"."""
    if not table:
        return str(first) if first == last else f"{first}-{last}"
    name = _TABLE_NAMES[table]
    return f"{name[:-1]} {first}" if first == last else f"{name} {first}-{last}"


def _overlaps(devices: Sequence[Device | None], points: Sequence[Point | None],
              label: RowName) -> list[SiteProblem]:
    """Points of one device and table whose addresses overlap: one O(n log n) sweep."""
    modbus = {d.name for d in devices if d is not None and d.protocol in MODBUS}
    spans: defaultdict[tuple[str, str], list[tuple[int, int, int, str]]] = defaultdict(list)
    for i, p in enumerate(points):
        if p is not None and p.device in modbus and p.address is not None:
            spans[(p.device, p.register_kind)].append(
                (p.address, p.address + p.width - 1, i, p.tag))
    out: list[SiteProblem] = []
    for (device, table), items in spans.items():
        items.sort()
        reach = (-1, -1, -1, "")  # the span reaching furthest so far
        for span in items:
            start, end = span[0], span[1]
            if start <= reach[1]:
                # Report at the point further down the file, naming the one above it.
                later, earlier = sorted((span, reach), key=lambda s: s[2], reverse=True)
                verb = "overlaps" if later[0] == later[1] else "overlap"
                out.append(("points", later[2], "address",
                            f"{_span(later[0], later[1], table)} on device {device!r} {verb} "
                            f"{earlier[3]!r} ({label('points', earlier[2])}, "
                            f"{_span(earlier[0], earlier[1])}) at "
                            f"{_span(start, min(end, reach[1]))}"))
            if end > reach[1]:
                reach = span
    out.sort(key=lambda f: f[1])
    return out
