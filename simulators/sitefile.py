"""The site file (DESIGN.md format) that lets a gateway read a simulated site.

One modbus-tcp device per Modbus unit and one point per signal, with its Modbus address, its
OPC UA node id and its IEC 104 address (`common_address`, `ioa`, `typeid`), so the same file
says where each point is over any of the three protocols. A point's `scale` is its Modbus
register's: served as engineering values over OPC UA and IEC 104, the reader of those
protocols takes scale 1 (and offset -1 for a double point: DPI 2 = closed = the coil's 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from simulators.servers.iec104_server import Address, addresses
from simulators.signals import Signal
from simulators.site import SimulatedSite

POLL_INTERVAL = 1.0  # seconds


def node_id(site: str, tag: str) -> str:
    """The OPC UA node id under which the simulator serves `tag`."""
    return f"nsu=urn:scadawatch:sim:{site};s={tag}"


def _point(site: str, s: Signal, iec104: Address) -> dict[str, Any]:
    point: dict[str, Any] = {"tag": s.tag, "device": s.device, "kind": s.kind, "unit": s.unit}
    # TOML has no null: a key the signal does not have is left out.
    optional = {"description": s.description or None, "zone": s.zone, "role": s.role,
                "lo": None if s.lo is None else float(s.lo),
                "hi": None if s.hi is None else float(s.hi),
                "nominal": None if s.nominal is None else float(s.nominal),
                "area": None if s.area is None else float(s.area)}
    point.update({k: v for k, v in optional.items() if v is not None})
    point.update(register=s.register, address=s.address, type=s.type, word_order=s.word_order,
                 scale=float(s.scale), node=node_id(site, s.tag),
                 common_address=iec104.common_address, ioa=iec104.ioa, typeid=iec104.typeid)
    return point


def write_site_file(site: SimulatedSite, path: Path, *, host: str, modbus_port: int,
                    opcua_port: int, iec104_port: int = 2404,
                    data_dir: str = "./scadawatch-data") -> None:
    """Write the site file for `site` served on `host` at these ports."""
    doc = {
        "site": {"name": site.name, "data_dir": data_dir},
        "devices": [{"name": name, "protocol": "modbus-tcp", "host": host, "port": modbus_port,
                     "unit": unit, "poll_interval": POLL_INTERVAL}
                    for name, unit in site.devices.items()],
        "points": [_point(site.name, s, a) for s, a in
                   zip(site.signals, addresses(site.name, site.signals), strict=True)],
    }
    header = (f"# Simulated {site.name} site (scenario {site.scenario.name}, seed {site.seed}).\n"
              f"# Modbus TCP on {host}:{modbus_port}; OPC UA on "
              f"opc.tcp://{host}:{opcua_port}/scadawatch/{site.name}, where each point's "
              f"`node` names it;\n# IEC 104 on {host}:{iec104_port}, a station per device "
              "(common address = unit), where `ioa` and `typeid` name it.\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + tomli_w.dumps(doc), encoding="utf-8")
