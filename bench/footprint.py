"""Footprint of `scadawatch run` (gateway + historian + API in one process) on the edge.

Starts loopback pymodbus servers (`bench.modbus.Servers`, a separate process), writes a site
file with `--devices` x `--points` float32 polled every `--interval` s, runs
`scadawatch run --config` as a child process and prints, after `--warmup` seconds, its
resident memory (VmRSS, and the peak VmHWM) and CPU share over `--seconds` (a whole number of
the engine's 60 s ticks by default, so the share counts them), and the time from start to the
first stored reading. `--engine-share` runs it again with `[anomaly] enabled = false` and
prints the anomaly engine's share of RSS and CPU. `--restart` then starts it again on the
same data and prints its RSS over the same window once the engine's saved state is loaded:
the engine's tables are allocated zeroed, a process holds in memory only the pages written so
far (the hours, the slots of the day learned), and a restart writes only the pages of its saved
tables that hold something (anomaly/state_part.restored), so it should hold what the gateway
before the stop held. Neither shows a gateway whose tables are learned whole (a week of day
types): up to `--state-size` more, the bytes of that saved state per detector and dtype, a
figure no load on the machine moves. `run(quick)` gives
`python -m bench` its rows in EMQX Neuron's format (tags x poll interval -> RSS, CPU %)
beside Neuron's published figures.

    python -m bench.footprint [--devices 4] [--points 100] [--interval 1] [--seconds 60]
                              [--engine-share] [--restart] [--state-size] [--heap-log PATH]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import tomli_w

from api.tokens import TokenStore
from bench.modbus import Servers, cpu_seconds
from bench.table import Row
from scadawatch.ports import free_port


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def site_file(tmp: Path, ports: list[int], points: int, interval: float, api_port: int,
              hi: float | None = None, **extra: dict) -> Path:
    """A site of `points` float32 per server port, each with limit `hi` if given; `extra`:
    more top-level sections."""
    devices = [{"name": f"plc{i}", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": p,
                "unit": 1, "poll_interval": interval} for i, p in enumerate(ports)]
    pts = [{"tag": f"plc{i}.f{k}", "device": f"plc{i}", "kind": "flow", "unit": "L/s",
            "address": 2 * k, "type": "float32"} | ({} if hi is None else {"hi": hi})
           for i in range(len(ports)) for k in range(points)]
    doc = {"site": {"name": "footprint", "data_dir": str(tmp / "data")},
           "api": {"host": "127.0.0.1", "port": api_port}, "devices": devices, "points": pts,
           **extra}
    path = tmp / "site.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def start(config: Path, api_port: int, token: str, limit: float = 120.0,
          heap_log: Path | None = None) -> tuple[subprocess.Popen, float | None]:
    """`scadawatch run --config` as a child (through bench.heap_probe, logging to `heap_log`,
    if given); seconds until plc0.f0 is stored (None: not within `limit`)."""
    t0 = time.perf_counter()
    probe = [] if heap_log is None else ["bench.heap_probe", str(heap_log)]
    proc = subprocess.Popen([sys.executable, "-m", *(probe or ["scadawatch"]), "run",
                             "--config", str(config)], stderr=subprocess.DEVNULL)
    while time.perf_counter() < t0 + limit and proc.poll() is None:
        try:
            latest = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/latest",
                               params={"tag": "plc0.f0"}, timeout=1,
                               headers={"Authorization": f"Bearer {token}"}).json()
            if latest["readings"][0]["value"] is not None:
                return proc, time.perf_counter() - t0
        except (httpx.TransportError, KeyError, IndexError, ValueError):
            pass
        time.sleep(0.05)
    return proc, None


def engine_drained(api_port: int, token: str, limit: float = 120.0) -> bool:
    """Wait until the anomaly engine has taken readings from the spool (its saved state is
    loaded by then); False: not within `limit` seconds."""
    t0 = time.perf_counter()
    while time.perf_counter() < t0 + limit:
        try:
            sinks = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=1,
                              headers={"Authorization": f"Bearer {token}"}).json()["sinks"]
            if any(s["name"] == "anomaly" and s["readings_total"] > 0 for s in sinks):
                return True
        except (httpx.TransportError, KeyError, TypeError, ValueError):
            pass
        time.sleep(0.2)
    return False


def measure(devices: int, points: int, interval: float, warmup: float, seconds: float,
            engine: bool = True, restart: bool = False, heap_log: Path | None = None
            ) -> dict[str, float | None]:
    """RSS (MB, and peak), CPU share and cold start (s) of `scadawatch run` polling
    `devices` x `points` float32 every `interval` s (`engine`: the anomaly engine on).
    `restart`: then stop it and start it again on the same data, and add the same figures of
    its window, `warmup` s after its engine took readings again, as `restarted_*`.
    `heap_log`: log where each run's memory is (bench.heap_probe) to `heap_log`.fresh and
    `heap_log`.restarted."""
    logs = (None, None) if heap_log is None else tuple(
        heap_log.with_name(f"{heap_log.name}.{run}") for run in ("fresh", "restarted"))
    servers = Servers(devices, points)
    api_port = free_port()
    extra = {} if engine else {"anomaly": {"enabled": False}}
    out: dict[str, float | None] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
            config = site_file(Path(tmp), servers.ports, points, interval, api_port, **extra)
            _, token = TokenStore(Path(tmp) / "data").create("viewer")
            proc, first = start(config, api_port, token, heap_log=logs[0])
            try:
                time.sleep(warmup)
                out = {"first": first, **window(proc.pid, seconds)}
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            if restart:
                proc, _ = start(config, api_port, token, heap_log=logs[1])
                try:
                    # The engine loads its state in the drain, after the first poll: a busy
                    # machine takes seconds more than a quiet one, so its first drained
                    # readings start the clock, not the historian's.
                    engine_drained(api_port, token)
                    time.sleep(warmup)
                    out |= {f"restarted_{k}": v for k, v in window(proc.pid, seconds).items()}
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
    finally:
        servers.stop()
    return out


def window(pid: int, seconds: float) -> dict[str, float]:
    """RSS (MB) at the end of `seconds` and its peak, its median and max sampled once a second
    over them (RSS moves by tens of MB within seconds: the heap's freed pages between two
    hand-backs, a tick's arrays), and the CPU share."""
    cpu0, w0 = cpu_seconds(pid), time.perf_counter()
    samples = []
    while (left := w0 + seconds - time.perf_counter()) > 0:
        time.sleep(min(1.0, left))
        samples.append(rss_mb(pid)[0])
    cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - w0)
    rss, peak = rss_mb(pid)
    return {"rss": rss, "peak": peak, "cpu": cpu, "median": statistics.median(samples),
            "max": max(samples)}


# EMQX Neuron's published footprint (4-core Xeon), in its format: tags @ 1 s -> RSS MB, CPU %.
NEURON = {10_000: (199, 3), 100_000: (497, 30)}
LOADS = ((4, 250, 0.1), (4, 2500, 1.0), (20, 2500, 1.0))  # devices, points each, interval


def neuron(n: int, interval: float) -> tuple[str, float | None]:
    """Neuron's figure beside `n` tags @ `interval`, and the key of an exact match."""
    published = "; ".join(f"{k:,} @ 1 s: {mb} MB, {cpu} %" for k, (mb, cpu) in NEURON.items())
    if interval == 1.0 and n in NEURON:
        return f"EMQX Neuron {n:,} @ 1 s: {NEURON[n][0]} MB, {NEURON[n][1]} %", NEURON[n][0]
    return f"EMQX Neuron (none at this load; 4-core Xeon): {published}", None


def state_sizes(devices: int, points: int) -> dict[str, dict[str, int]]:
    """Bytes of the anomaly engine's saved state per detector and dtype for this site
    (`Engine.state()`'s arrays, numpy's nbytes): what a restarted gateway holds whole,
    whatever the machine's load."""
    from anomaly.engine import Engine
    from anomaly.points import PointInfo

    engine = Engine([PointInfo(f"plc{i}.f{k}", "flow", "L/s", device=f"plc{i}")
                     for i in range(devices) for k in range(points)])
    out: dict[str, dict[str, int]] = {}
    for name, arr in engine.state().items():
        part = out.setdefault(name.split("/")[0], {})
        part[str(arr.dtype)] = part.get(str(arr.dtype), 0) + arr.nbytes
    return out


def run(quick: bool) -> list[Row]:
    """Neuron's format: tags x poll interval -> RSS and CPU, and cold start; the ratio is
    RSS over Neuron's where it published the same load."""
    loads, warmup, seconds = (LOADS[:1], 3.0, 5.0) if quick else (LOADS, 10.0, 60.0)
    rows = []
    for devices, points, interval in loads:
        n = devices * points
        m = measure(devices, points, interval, warmup, seconds)
        first = "n/a" if m["first"] is None else f"{m['first']:.1f} s"
        peer, mb = neuron(n, interval)
        rows.append(Row(f"footprint of `scadawatch run`: {n:,} tags @ {interval * 1000:g} ms",
                        f"{m['rss']:.0f} MB RSS, {m['cpu']:.1%} CPU, first stored reading "
                        f"{first} after start", peer,
                        None if mb is None else m["rss"] / mb,  # type: ignore[operator]
                        f"python -m bench.footprint --devices {devices} --points "
                        f"{points} --interval {interval:g}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--engine-share", action="store_true",
                    help="run again without the anomaly engine and print its share")
    ap.add_argument("--state-size", action="store_true",
                    help="only print the anomaly engine's saved state per detector (bytes)")
    ap.add_argument("--restart", action="store_true",
                    help="then restart it on the same data and print its RSS with the "
                         "engine's learned state loaded")
    ap.add_argument("--heap-log", type=Path, help="run the gateway through bench.heap_probe, "
                    "logging its heap and SQLite memory every 5 s to HEAP_LOG.fresh (and "
                    ".restarted)")
    args = ap.parse_args()
    if args.state_size:
        sizes = state_sizes(args.devices, args.points)
        total = sum(sum(p.values()) for p in sizes.values())
        print(f"anomaly engine state, {args.devices * args.points:,} flow points: "
              f"{total / 1e6:.1f} MB")
        for name, part in sorted(sizes.items(), key=lambda kv: -sum(kv[1].values())):
            print(f"  {name:12s} {sum(part.values()) / 1e6:6.1f} MB  " + ", ".join(
                f"{dtype} {b / 1e6:.1f}" for dtype, b in sorted(part.items(),
                                                                key=lambda kv: -kv[1])))
        return
    m = measure(args.devices, args.points, args.interval, args.warmup, args.seconds,
                restart=args.restart, heap_log=args.heap_log)
    n = args.devices * args.points
    first_text = "n/a" if m["first"] is None else f"{m['first']:.1f} s"
    print(f"scadawatch run: {n:,} points ({args.devices} devices) every {args.interval:g} s"
          f" = {n / args.interval:,.0f} readings/s, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  RSS {m['rss']:.0f} MB (peak {m['peak']:.0f} MB; once a second over the "
          f"{args.seconds:g} s: median {m['median']:.0f}, max {m['max']:.0f})   CPU "
          f"{m['cpu']:.1%} of a core   cold start to first stored reading {first_text}")
    if args.restart:
        print(f"  restarted on its data (the engine's saved state loaded), the same window "
              f"{args.warmup:g} s after the engine's first readings: RSS "
              f"{m['restarted_rss']:.0f} MB (peak {m['restarted_peak']:.0f} MB; median "
              f"{m['restarted_median']:.0f}, max {m['restarted_max']:.0f})   CPU "
              f"{m['restarted_cpu']:.1%} (load average {os.getloadavg()[0]:.1f})")
    if args.engine_share:
        e = measure(args.devices, args.points, args.interval, args.warmup, args.seconds,
                    engine=False)
        print(f"  without the anomaly engine: RSS {e['rss']:.0f} MB, CPU {e['cpu']:.1%}: the "
              f"engine's share {m['rss'] - e['rss']:.0f} MB, {m['cpu'] - e['cpu']:.1%} of a "
              f"core (load average {os.getloadavg()[0]:.1f})")

if __name__ == "__main__":
    main()
