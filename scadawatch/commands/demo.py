"""`scadawatch demo`: simulators, gateway, historian and API on 127.0.0.1, in one command.

The simulators run as child processes (`scadawatch simulate water|grid`), so the gateway
reaches them only over the network, as it would reach field devices: the water site's
outstations over Modbus TCP, the grid's RTUs over OPC UA (a session per RTU, so that one RTU's
fault is that device's), except feeder 2's RTU, read over IEC 60870-5-104 (its breakers as
double points, its measurands as short floats, reported on change). The default scenario,
`demo`, is in wall-clock time: its outages and excursions come in the first minutes for the
gateway whatever `--speed` does to the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from api.tokens import TokenStore
from gateway.logs import setup_logging
from gateway.site.loader import load_site
from gateway.site.model import Site
from scadawatch.cli import UsageError, require_extra
from scadawatch.commands.serve import unwritable
from scadawatch.ports import free_port, port_open

log = logging.getLogger("scadawatch.demo")

SITES = ("water", "grid")
OPCUA_SITES = ("grid",)  # read over OPC UA; the others over Modbus TCP
IEC104_DEVICES = ("grid-feeder2",)  # of those, read over IEC 104
STARTUP_TIMEOUT = 120.0  # seconds for a simulator to write its site file and open its ports


@dataclass(frozen=True, slots=True)
class Simulator:
    proc: subprocess.Popen
    site_file: Path  # written by the simulator once it is ready
    opcua_port: int
    iec104_port: int
    port: int  # the one to wait for: what the gateway reads it over first


def start_simulator(site: str, args: argparse.Namespace, data_dir: Path) -> Simulator:
    """The simulator's process, its site file (to be written) and its ports."""
    site_file = data_dir / f"sim-{site}.toml"
    modbus_port, opcua_port, iec104_port = free_port(), free_port(), free_port()
    # OPC UA source timestamps and IEC 104 time tags in wall-clock time, as a field device's
    # clock, so that at any speed they agree with the gateway's own stamps of Modbus readings.
    cmd = [sys.executable, "-m", "scadawatch", "simulate", site, "--scenario", args.scenario,
           "--speed", str(args.speed), "--seed", str(args.seed),
           "--modbus-port", str(modbus_port), "--opcua-port", str(opcua_port),
           "--iec104-port", str(iec104_port),
           "--opcua-source-time", "wall", "--write-site", str(site_file)]
    port = opcua_port if site in OPCUA_SITES else modbus_port
    log.info("event=simulator_starting site=%s modbus_port=%d opcua_port=%d iec104_port=%d",
             site, modbus_port, opcua_port, iec104_port)
    return Simulator(subprocess.Popen(cmd, stdin=subprocess.DEVNULL), site_file, opcua_port,
                     iec104_port, port)


def wait_ready(procs: list[Simulator]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = list(procs)
    while pending:
        proc, site_file, port = pending[0].proc, pending[0].site_file, pending[0].port
        if proc.poll() is not None:
            raise UsageError(f"simulator for {site_file.stem} exited with code {proc.returncode}")
        if site_file.exists() and port_open(port):
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"simulator for {site_file.stem} not ready after "
                               f"{STARTUP_TIMEOUT:.0f} s")
        time.sleep(0.2)


def over_opcua(devices: list[dict], endpoint: str) -> list[dict]:
    """The simulator's Modbus units as OPC UA devices of its server: one session each, with
    the unit's name and poll interval (the points keep both addresses)."""
    return [{"name": d["name"], "protocol": "opcua", "endpoint": endpoint,
             "poll_interval": d["poll_interval"]} for d in devices]


def over_iec104(device: dict, points: list[dict], port: int) -> tuple[dict, list[dict]]:
    """A simulator's Modbus unit as an IEC 104 station of its server (common address = unit)
    and its points as the server reports them: engineering values (scale 1), a double point's
    DPI 2 (closed) stored as 1, as its Modbus coil reads."""
    station = {"name": device["name"], "protocol": "iec104", "host": "127.0.0.1", "port": port,
               "common_address": device["unit"], "poll_interval": device["poll_interval"]}
    return station, [p | {"scale": 1.0, "offset": -1.0 if p["typeid"] == "M_DP_NA_1" else 0.0}
                     if p["device"] == device["name"] else p for p in points]


def merge_sites(site_files: list[Path], data_dir: Path, port: int,
                opcua_ports: dict[str, int], iec104_ports: dict[str, int]) -> Path:
    """One gateway site holding the devices and points of every simulator; the sites in
    `opcua_ports` read over OPC UA at that port, but for their `IEC104_DEVICES`, read over
    IEC 104 at the site's port in `iec104_ports`."""
    # A desktop, not an SD card: the page's live values within a second, not the field
    # default's 10 s (docs/field-gateway.md, disk writes).
    merged: dict = {"site": {"name": "demo", "data_dir": str(data_dir)},
                    "historian": {"flush_interval": 1.0},
                    "api": {"host": "127.0.0.1", "port": port}, "devices": [], "points": []}
    for path in site_files:
        raw = tomllib.loads(path.read_text())
        name = raw["site"]["name"]
        devices = raw.get("devices", [])
        points = raw.get("points", [])
        if name in opcua_ports:
            devices = over_opcua(devices, f"opc.tcp://127.0.0.1:{opcua_ports[name]}"
                                          f"/scadawatch/{name}")
            for i, d in enumerate(raw.get("devices", [])):
                if d["name"] in IEC104_DEVICES:
                    devices[i], points = over_iec104(d, points, iec104_ports[name])
        merged["devices"] += devices
        merged["points"] += points
    out = data_dir / "demo-site.toml"
    out.write_text(tomli_w.dumps(merged))
    return out


def main(args: argparse.Namespace) -> int:
    require_extra("sim")  # before anything starts: the simulators need it
    setup_logging()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="scadawatch-demo-")).resolve()
    if (why := unwritable(data_dir)) is not None:
        raise UsageError(f"--data-dir {why}")
    if port_open(args.port):
        raise UsageError(f"--port {args.port}: something already listens there; "
                         "pick another with --port")
    procs = [start_simulator(site, args, data_dir) for site in SITES]
    try:
        wait_ready(procs)
        site_file = merge_sites([p.site_file for p in procs], data_dir, args.port,
                                {site: p.opcua_port for site, p in zip(SITES, procs, strict=True)
                                 if site in OPCUA_SITES},
                                {site: p.iec104_port for site, p in zip(SITES, procs,
                                                                        strict=True)})
        site = load_site(site_file)
        base = f"http://127.0.0.1:{args.port}"
        # A fresh operator token each run (a reused data dir's old one is replaced): the page
        # reads it from the link's fragment, which the browser never sends to a server.
        _, token = TokenStore(data_dir).create("operator", "demo", replace=True)
        protocols = ", ".join(f"{sum(d.protocol == p for d in site.devices)} over {p}"
                              for p in sorted({d.protocol for d in site.devices}))
        print(f"\nscadawatch demo: {len(site.devices)} devices ({protocols}), "
              f"{len(site.points)} points (scenario {args.scenario}, speed {args.speed:g}x)\n"
              f"  control room {base}/#token={token}\n"
              f"  token        {token} (operator; send 'Authorization: Bearer <token>')\n"
              f"  API docs     {base}/docs\n"
              f"  latest       {base}/api/v1/latest\n"
              f"  health       {base}/api/v1/health\n"
              f"  history      {base}/api/v1/history?tag={site.points[0].tag}&start=-10min\n"
              f"  site file    {site_file}\n"
              f"  data         {data_dir}\n"
              f"  try          curl -H 'Authorization: Bearer {token}' {base}/api/v1/latest\n"
              "Stop with Ctrl-C.\n", flush=True)
        asyncio.run(_run(site, args.port, args.duration))
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.proc.kill()
    return 0


async def _run(site: Site, port: int, duration: float | None) -> None:
    from scadawatch.commands.serve import serve

    stop = asyncio.Event()
    if duration is not None:
        asyncio.get_running_loop().call_later(duration, stop.set)
    await serve(site, gateway=True, api=True, port=port, stop=stop)
