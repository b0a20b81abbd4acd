"""Footprint of `scadawatch run` (gateway + historian + API in one process) on the edge.

Starts loopback pymodbus servers (`bench.modbus.Servers`, a separate process), writes a site
file with `--devices` x `--points` float32 polled every `--interval` s, runs
`scadawatch run --config` as a child process and prints, after `--warmup` seconds, its
resident memory (VmRSS, and the peak VmHWM) and CPU share over `--seconds`, and the time
from start to the first stored reading.

    python -m bench.footprint [--devices 4] [--points 100] [--interval 1] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import tomli_w

from bench.modbus import Servers, cpu_seconds
from gateway.tokens import TokenStore
from scadawatch.demo import free_port


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def site_file(tmp: Path, ports: list[int], points: int, interval: float, api_port: int) -> Path:
    devices = [{"name": f"plc{i}", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": p,
                "unit": 1, "poll_interval": interval} for i, p in enumerate(ports)]
    pts = [{"tag": f"plc{i}.f{k}", "device": f"plc{i}", "kind": "flow", "unit": "L/s",
            "address": 2 * k, "type": "float32"} for i in range(len(ports))
           for k in range(points)]
    doc = {"site": {"name": "footprint", "data_dir": str(tmp / "data")},
           "api": {"host": "127.0.0.1", "port": api_port}, "devices": devices, "points": pts}
    path = tmp / "site.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    servers = Servers(args.devices, args.points)
    api_port = free_port()
    try:
        with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
            config = site_file(Path(tmp), servers.ports, args.points, args.interval, api_port)
            _, token = TokenStore(Path(tmp) / "data").create("viewer")
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "scadawatch", "run", "--config",
                                     str(config)], stderr=subprocess.DEVNULL)
            first = None
            deadline = t0 + 120
            while first is None and time.perf_counter() < deadline:
                try:
                    latest = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/latest",
                                       params={"tag": "plc0.f0"}, timeout=1,
                                       headers={"Authorization": f"Bearer {token}"}).json()
                    if latest["readings"][0]["value"] is not None:
                        first = time.perf_counter() - t0
                except (httpx.TransportError, KeyError, IndexError, ValueError):
                    pass
                time.sleep(0.05)
            time.sleep(args.warmup)
            cpu0, w0 = cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(args.seconds)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - w0)
            rss, peak = rss_mb(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        n = args.devices * args.points
        first_text = "n/a" if first is None else f"{first:.1f} s"
        print(f"scadawatch run: {n:,} points ({args.devices} devices) every {args.interval:g} s"
              f" = {n / args.interval:,.0f} readings/s, {os.cpu_count()} CPUs")
        print(f"  RSS {rss:.0f} MB (peak {peak:.0f} MB)   CPU {cpu:.1%} of a core   "
              f"cold start to first stored reading {first_text}")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
