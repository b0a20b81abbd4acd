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
tables that hold something (anomaly/tables/state_part.restored), so it should hold what the gateway
before the stop held. Neither shows a gateway whose tables are learned whole (every slot of
every day type: a week). `--learned` does: once the gateway has stopped, the site's own engine
(built as the gateway builds it) learns a week of synthetic readings of the site's tags through
its public API (`learn_week`), its state is saved into the data dir as the gateway saves it,
and the gateway is started on it and measured over the same window. `--state-size` prints the
bytes of a saved state per detector and dtype, a figure no load on the machine moves.
`run(quick)` gives `python -m bench` its rows in EMQX Neuron's format (tags x poll interval ->
RSS, CPU %) beside Neuron's published figures.

    python -m bench.footprint [--devices 4] [--points 100] [--interval 1] [--seconds 60]
                              [--engine-share] [--restart] [--learned] [--state-size]
                              [--heap-log PATH]
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
import numpy as np
import tomli_w

from anomaly.core.batch import Batch, Quality
from anomaly.core.clock import DAY_NS, is_weekend
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
          heap_log: Path | None = None, log: Path | None = None
          ) -> tuple[subprocess.Popen, float | None]:
    """`scadawatch run --config` as a child (through bench.heap_probe, logging to `heap_log`,
    if given; its log to `log`); seconds until plc0.f0 is stored (None: not within `limit`)."""
    t0 = time.perf_counter()
    probe = [] if heap_log is None else ["bench.heap_probe", str(heap_log)]
    with open(log or os.devnull, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", *(probe or ["scadawatch"]), "run",
                                 "--config", str(config)], stderr=err)
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


def anomaly_events(api_port: int, token: str) -> float:
    """Alarm events the gateway's engine has returned so far (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/metrics", timeout=5,
                     headers={"Authorization": f"Bearer {token}"}).text
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("scadawatch_anomaly_events_total "))


def measure(devices: int, points: int, interval: float, warmup: float, seconds: float,
            engine: bool = True, restart: bool = False, learned: bool = False,
            heap_log: Path | None = None, rss_log: Path | None = None
            ) -> dict[str, float | None]:
    """RSS (MB, and peak), CPU share and cold start (s) of `scadawatch run` polling
    `devices` x `points` float32 every `interval` s (`engine`: the anomaly engine on).
    `restart`: then stop it and start it again on the same data, and add the same figures of
    its window, `warmup` s after its engine took readings again, as `restarted_*`.
    `learned`: then stop it, give its data dir the state of a week of learning
    (`learn_week`: its figures as `learn_*`) and start it again on it, measured as a restart,
    as `learned_*`. `heap_log`: log where each run's memory is (bench.heap_probe) to
    `heap_log`.fresh, .restarted and .learned; `rss_log`: each run's RSS samples, likewise."""
    runs = ("fresh", "restarted", "learned")
    logs = dict.fromkeys(runs) if heap_log is None else {
        run: heap_log.with_name(f"{heap_log.name}.{run}") for run in runs}
    samples = dict.fromkeys(runs) if rss_log is None else {
        run: rss_log.with_name(f"{rss_log.name}.{run}") for run in runs}
    servers = Servers(devices, points)
    api_port = free_port()
    extra = {} if engine else {"anomaly": {"enabled": False}}
    out: dict[str, float | None] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="footprint-") as tmp:
            config = site_file(Path(tmp), servers.ports, points, interval, api_port, **extra)
            _, token = TokenStore(Path(tmp) / "data").create("viewer")
            proc, first = start(config, api_port, token, heap_log=logs["fresh"])
            try:
                time.sleep(warmup)
                out = {"first": first, **window(proc.pid, seconds, samples["fresh"])}
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            for run in ("restarted", "learned"):
                if not {"restarted": restart, "learned": learned}[run]:
                    continue
                if run == "learned":
                    out |= {f"learn_{k}": v for k, v in learn_week(config).items()}
                log = Path(tmp) / f"{run}.log"
                proc, _ = start(config, api_port, token, heap_log=logs[run], log=log)
                try:
                    # The engine loads its state in the drain, after the first poll: a busy
                    # machine takes seconds more than a quiet one, so its first drained
                    # readings start the clock, not the historian's.
                    engine_drained(api_port, token)
                    events = anomaly_events(api_port, token)
                    time.sleep(warmup)
                    out |= {f"{run}_{k}": v
                            for k, v in window(proc.pid, seconds, samples[run]).items()}
                    out[f"{run}_events"] = anomaly_events(api_port, token) - events
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
                if "event=anomaly_state_loaded" not in log.read_text():
                    raise RuntimeError(f"the {run} gateway did not load its engine state: "
                                       + log.read_text()[-2000:])
    finally:
        servers.stop()
    return out


# The synthetic week `learn_week` teaches: a reading burst every LEARN_STEP s (LEARN_READS
# readings a second apart, within one tick: its spread and range), a 10-minute step being
# enough for every slot of the daily profile (30 min) and every hour to learn each day.
LEARN_DAYS = 7.0
LEARN_STEP = 600.0
LEARN_READS = 5


def week_values(served: np.ndarray, t_ns: int, ref_ns: int, rng: np.random.Generator,
                phase: np.ndarray) -> np.ndarray:
    """The tags' readings at `t_ns` (`LEARN_READS` rows): what the servers serve (`served`)
    plus a daily shape, each tag's shifted by `phase` hours, flatter at weekends, taken as 0
    at `ref_ns` (when the gateway resumes, so that it resumes on its usual value), 10 % of the
    tag's size (1 + served) at full swing, and noise of 2 % of it; float32 as the registers
    hold them."""
    size = 1.0 + served

    def shape(t: int) -> np.ndarray:
        hour = (t % DAY_NS) / 3.6e12 - phase
        return ((0.6 * np.sin(2 * np.pi * (hour - 9) / 24)
                 + 0.3 * np.sin(4 * np.pi * (hour - 7) / 24)) * (0.6 if is_weekend(t) else 1.0))

    mean = served + 0.1 * size * (shape(t_ns) - shape(ref_ns))
    noise = rng.standard_normal((LEARN_READS, len(served)))
    return (mean + 0.02 * size * noise).astype(np.float32)


def learn_week(config: Path, seed: int = 0) -> dict[str, float]:
    """Save into the site's data dir the engine state a week of learning leaves: the site's
    engine, built as the gateway builds it (`gateway.detection.build_engine`), fed LEARN_DAYS
    of `week_values` for its tags (plc<i>.f<k>, served at k by bench.modbus) through its
    public API (`process`, `advance`), up to now; saved as the gateway saves it, with the
    spool position of the state the stopped gateway left there (it resumes at its spool's
    end). Every per-tag table is then written as the detectors write it. Left out beside a
    week polled at 1 s: the ticks between two bursts are empty (what the engine learns of
    readings' spacing is a 10-minute one), and most ticks' learning (rates that a count past
    its cap no longer changes). Returns the seconds it took, readings and alarm events."""
    from gateway.data_dir import state_path
    from gateway.detection import build_engine
    from gateway.engine_state import EXTRA, save_state
    from gateway.site.loader import load_site

    t0 = time.perf_counter()
    site = load_site(config)
    path = state_path(site)
    with np.load(path) as saved:
        extra = {k: saved[EXTRA + k] for k in ("cursor", "released")}
    engine = build_engine(site)
    n = len(site.points)
    served = np.array([float(p.tag.rpartition(".f")[2]) for p in site.points])
    rng = np.random.default_rng(seed)
    phase = rng.uniform(-3.0, 3.0, n)
    step = int(LEARN_STEP * 1e9)
    end = time.time_ns() // step * step
    point = np.tile(np.arange(n, dtype=np.int32), LEARN_READS)
    offsets = np.repeat(np.arange(LEARN_READS, dtype=np.int64) * 10**9, n)
    readings = events = 0
    for t in range(end - int(LEARN_DAYS * DAY_NS), end, step):
        value = week_values(served, t, end, rng, phase).reshape(-1)
        events += len(engine.process(Batch.of(source_ts=t + offsets, point=point, value=value,
                                              quality=Quality.GOOD)))
        readings += len(value)
    events += len(engine.advance(end))
    save_state(engine, path, extra=extra)
    return {"seconds": time.perf_counter() - t0, "readings": readings, "events": events}


def window(pid: int, seconds: float, log: Path | None = None) -> dict[str, float]:
    """RSS (MB) at the end of `seconds` and its peak, its median and max sampled once a second
    over them (RSS moves by tens of MB within seconds: the heap's freed pages between two
    hand-backs, a tick's arrays), and the CPU share. `log`: each sample written there (seconds
    into the window, RSS MB), to find what a max falls on."""
    cpu0, w0 = cpu_seconds(pid), time.perf_counter()
    samples = []
    with open(log or os.devnull, "w") as out:
        while (left := w0 + seconds - time.perf_counter()) > 0:
            time.sleep(min(1.0, left))
            samples.append(rss_mb(pid)[0])
            print(f"{time.perf_counter() - w0:.1f} {samples[-1]:.1f}", file=out, flush=True)
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
    (`Engine.state()`'s arrays, numpy's nbytes), whatever the machine's load: about what a
    learned gateway holds (less where a detector saves per point what it holds for fewer
    points: limits' points with a limit, tag anomaly's counts held one a slot)."""
    from anomaly.core.points import PointInfo
    from anomaly.engine import Engine

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
    ap.add_argument("--learned", action="store_true",
                    help="then give it the engine state of a week of learning (synthetic "
                         "readings of its tags) and print its RSS started on it")
    ap.add_argument("--heap-log", type=Path, help="run the gateway through bench.heap_probe, "
                    "logging its heap and SQLite memory every second to HEAP_LOG.fresh (and "
                    ".restarted, .learned)")
    ap.add_argument("--rss-log", type=Path, help="write each window's RSS samples (seconds, "
                    "MB) to RSS_LOG.fresh (and .restarted, .learned)")
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
                restart=args.restart, learned=args.learned, heap_log=args.heap_log,
                rss_log=args.rss_log)
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
              f"{m['restarted_cpu']:.1%}, {m['restarted_events']:.0f} alarm events (load "
              f"average {os.getloadavg()[0]:.1f})")
    if args.learned:
        print(f"  learned: a week of readings ({m['learn_readings']:,.0f}, every "
              f"{LEARN_STEP:g} s; {m['learn_events']:.0f} alarm events) through the site's "
              f"engine in {m['learn_seconds']:.0f} s, saved into its data dir, started on it, "
              f"the same window: RSS {m['learned_rss']:.0f} MB (peak "
              f"{m['learned_peak']:.0f} MB; median {m['learned_median']:.0f}, max "
              f"{m['learned_max']:.0f})   CPU {m['learned_cpu']:.1%}, "
              f"{m['learned_events']:.0f} alarm events (load average "
              f"{os.getloadavg()[0]:.1f})")
    if args.engine_share:
        e = measure(args.devices, args.points, args.interval, args.warmup, args.seconds,
                    engine=False)
        print(f"  without the anomaly engine: RSS {e['rss']:.0f} MB, CPU {e['cpu']:.1%}: the "
              f"engine's share {m['rss'] - e['rss']:.0f} MB, {m['cpu'] - e['cpu']:.1%} of a "
              f"core (load average {os.getloadavg()[0]:.1f})")

if __name__ == "__main__":
    main()
