"""scadawatch beside Node-RED on the peer harness (../shared/peers), in one run, one table.

    python -m bench.peers [--seconds 30] [--intervals 1,0.5] [--gateways nodered,scadawatch]
                          [--sinks influxdb,victoria]

The harness (its README) gives both gateways the same Modbus farm (20 devices x 2,500 float32,
polled every 1 s = 50k values/s, every 0.5 s = 100k/s), a fresh InfluxDB 1.6 each run and the
same sampler: stored values/s over a window, the gateway's process-tree CPU and RSS, influxd's
CPU, and a decode check of the stored values against the farm's value model. Runs alternate
gateway by gateway within each load, so both see the same machine; the load average before and
after each run is printed beside its figures (the machine may be shared).

For scadawatch the harness keeps the run's directory (KEEP=1); once the gateway has stopped,
its InfluxDB is started again on the same data to count every reading stored since the start,
beside what the gateway spooled (its final status.json, written once it has stopped cleanly):
`lost` is spooled minus stored, and `left` is what the spool still held for InfluxDB when the
gateway stopped. The farm's count of values served (its registers / 2) is the cross-check no
gateway writes: every one is a good reading, so `count(value)` must reach it, short of at most
one poll per device (a poll cut short at stop is not acknowledged, so not spooled). Then the
directory is removed.

`--sinks victoria`: scadawatch's InfluxDB sink in api v2 (`/api/v2/write` through
influxdb-client) into Debian's VictoriaMetrics, started here on loopback with its own data
directory, on the same farm (the harness's modbus_farm.py), the same site (its make_site.py,
the historian turned to v2), the same 10 s warm-up (counted from the gateway's start-up
done, where the harness counts from its launch: the same on a quiet machine), window, sampler
and decode check (`bench.peers_victoria`, since the harness's speak InfluxQL), and the same
spooled-vs-stored count: issue 17's "the v2 path keeps the v1 path's throughput". Node-RED
runs only against InfluxDB 1.6 (its flow is the harness's).

Where the harness lives: `$SCADAWATCH_PEERS`, else the first `shared/peers` found going up from
this repository. It needs the venv at `$PY` (default /tmp/v, made here if missing, as the
harness README says) and Node-RED under /tmp (the harness's idempotent setup_peers.sh, run
here). scadawatch runs as `<this python> -m scadawatch` with this checkout first on PYTHONPATH.
Every run is bounded (the harness's own watchdog, and a timeout here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers_victoria import readings, values
from gateway.storage.influxdb.sink import KINDS, READINGS
from scadawatch.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
PY = os.environ.get("PY", "/tmp/v/bin/python")
RUN_ROOT = Path(os.environ.get("RUN_ROOT", "/tmp/peers-run"))  # the harness's
DEVICES, POINTS = 20, 2500
SETUP_LIMIT = 900  # seconds: npm installs on a cold machine
RUN_SLACK = 420  # seconds beyond the window a run may take (the harness's watchdog: 250 + window)
COUNT_LIMIT = 300  # seconds to restart influxd on a run's data and count it
WARMUP = 10  # seconds between the gateway's start and the window (the harness's)
START_LIMIT = 120  # seconds the gateway may take to start (load its site, open its spool)
STOP_LIMIT = 10  # seconds a process has after SIGTERM before SIGKILL (the harness's)
METRICS = "(" + "|".join(KINDS) + ")_"  # VictoriaMetrics: `<measurement>_<field>`


def peers_dir() -> Path:
    """The harness: $SCADAWATCH_PEERS, else `shared/peers` in this repository's parents."""
    if env := os.environ.get("SCADAWATCH_PEERS"):
        return Path(env)
    for parent in ROOT.parents:
        if (parent / "shared" / "peers" / "run_peer.sh").is_file():
            return parent / "shared" / "peers"
    raise SystemExit("peer harness not found: set SCADAWATCH_PEERS to its folder "
                     "(the one holding run_peer.sh)")


def setup(peers: Path) -> None:
    """The harness's venv (as its README says) and Node-RED (its setup_peers.sh), if missing."""
    if not Path(PY).exists():
        venv = Path(PY).parent.parent
        print(f"creating the harness venv {venv}", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=SETUP_LIMIT)
        subprocess.run([PY, "-m", "pip", "install", "-q", "pymodbus==3.16.*", "numpy", "psutil"],
                       check=True, timeout=SETUP_LIMIT)
    subprocess.run([str(peers / "setup_peers.sh")], check=True, timeout=SETUP_LIMIT,
                   stdout=subprocess.DEVNULL)


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Run:
    gateway: str
    interval: float
    sink: str = "influxdb"  # "influxdb": InfluxDB 1.6, api v1; "victoria": VictoriaMetrics, v2
    result: dict = field(default_factory=dict)  # the harness's JSON line
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before, after
    drain: dict = field(default_factory=dict)  # scadawatch: spooled, stored, lost, left

    @property
    def asked(self) -> float:
        return DEVICES * POINTS / self.interval

    @property
    def name(self) -> str:
        return self.gateway + (" v2 -> VictoriaMetrics" if self.sink == "victoria" else "")

    def get(self, key: str) -> float | None:
        if key == "database_cpu_pct_median" and self.sink == "influxdb":
            key = "influxd_cpu_pct_median"
        return self.result.get(key)


ENV = os.environ | {
    "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def run_peer(peers: Path, gateway: str, interval: float, seconds: int,
             sink: str = "influxdb") -> Run:
    run = Run(gateway, interval, sink)
    before = load_average()
    print(f"[{time.strftime('%H:%M:%S')}] {run.name} at {run.asked:,.0f} values/s, load "
          f"{before:.1f} ...", file=sys.stderr, flush=True)
    if sink == "victoria":
        try:
            run.result, run.drain = run_victoria(peers, interval, seconds)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
            run.result = {"error": str(e).strip().splitlines()[-1:]}
        run.load = (before, load_average())
        return run
    env = ENV | {"PY": PY, "KEEP": "1" if gateway == "scadawatch" else "0",
                 "SCADAWATCH_CMD": f"{sys.executable} -m scadawatch"}
    try:
        done = subprocess.run(
            [str(peers / "run_peer.sh"), gateway, str(DEVICES), str(POINTS), f"{interval:g}",
             str(seconds)], env=env, capture_output=True, text=True, timeout=seconds + RUN_SLACK)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        run.result = (json.loads(lines[-1]) if lines
                      else {"error": done.stderr.strip().splitlines()[-1:] or ["no output"]})
    except subprocess.TimeoutExpired:
        run.result = {"error": f"no result within {seconds + RUN_SLACK} s"}
    run.load = (before, load_average())
    if gateway == "scadawatch" and "run_dir" in run.result:
        directory = Path(run.result["run_dir"])
        try:
            run.drain = drained(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return run


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_LIMIT s (the harness's stop_pid)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _started(what: str, proc: subprocess.Popen, log: Path, limit: float,
             ready: Callable[[], bool]) -> None:
    """Waits until `ready()`; raises with the end of `log` if `proc` exits or `limit` s pass."""
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def run_victoria(peers: Path, interval: float, seconds: int) -> tuple[dict, dict]:
    """run_peer.sh's run of scadawatch, its historian in api v2 into a VictoriaMetrics started
    here: the harness's JSON line and the spooled-vs-stored count (`drained`'s)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.peers.influx_servers import victoria

    def harness(*args: object, module: bool = False) -> str:
        command = [PY, "-m", str(args[0])] if module else [PY, str(peers / str(args[0]))]
        return subprocess.run(
            [*command, *map(str, args[1:])], check=True, capture_output=True, text=True,
            env=ENV | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(peers)])},
            timeout=seconds + RUN_SLACK).stdout

    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"scadawatch-v2-d{DEVICES}-p{POINTS}-i{interval:g}-",
                                    dir=RUN_ROOT))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        since = time.time()  # before any reading: what the counts span
        db = victoria(run_dir / "victoria")
        stack.callback(db.stop)
        farm_base, api_port = map(int, harness("freeports.py", DEVICES, 1).split())
        with open(run_dir / "farm.log", "wb") as log:
            farm = subprocess.Popen(
                [PY, str(peers / "modbus_farm.py"), "--devices", str(DEVICES), "--points",
                 str(POINTS), "--base-port", str(farm_base), "--seconds", str(seconds + RUN_SLACK),
                 "--ready-file", str(run_dir / "farm.ready"), "--stats",
                 str(run_dir / "farm.json")], stdout=log, stderr=subprocess.STDOUT)
        stack.callback(_stop, farm)
        _started("farm", farm, run_dir / "farm.log", 30, (run_dir / "farm.ready").exists)
        site = run_dir / "site.toml"
        harness("make_site.py", "--devices", DEVICES, "--points", POINTS, "--base-port",
                farm_base, "--interval", interval, "--influx-url", db.url, "--database", "v1",
                "--api-port", api_port, "--data-dir", run_dir / "scadawatch-data", "--out", site)
        text, v1 = site.read_text(), '\napi = "v1"\ndatabase = "v1"\n'
        if text.count(v1) != 1:
            raise RuntimeError(f"{site}: the harness's [historian] changed: no {v1!r}")
        site.write_text(text.replace(v1, '\napi = "v2"\nbucket = "bench"\norg = "bench"\n'))
        with open(run_dir / "gateway.log", "wb") as log:
            gateway = subprocess.Popen([sys.executable, "-m", "scadawatch", "run", "--config",
                                        str(site)], cwd=run_dir, env=ENV, stdout=log,
                                       stderr=subprocess.STDOUT)
        stack.callback(_stop, gateway)
        # The warm-up counts from the gateway's start-up done, not from its launch: loading
        # 50,000 points took 15-20 s with the machine's load at 8, and a window opening before
        # the first poll measures the start-up.
        _started("gateway", gateway, run_dir / "gateway.log", START_LIMIT,
                 lambda: "event=gateway_started" in (run_dir / "gateway.log").read_text())
        time.sleep(WARMUP)
        if gateway.poll() is not None:
            raise RuntimeError("gateway exited during warm-up: "
                               + (run_dir / "gateway.log").read_text()[-2000:])
        result = json.loads(harness(
            "bench.peers_victoria", "window", "--url", db.url, "--match", METRICS, "--seconds",
            seconds, "--interval", interval, "--since", since, "--gw-pid", gateway.pid,
            "--farm-pid", farm.pid, "--db-pid", db.proc.pid, module=True))  # type: ignore[union-attr]
        result |= json.loads(harness("bench.peers_victoria", "decode", "--url", db.url,
                                     "--devices", DEVICES, "--points", POINTS, module=True))
        _stop(gateway)  # first, then the farm: it writes what it served on exit
        _stop(farm)
        errors = sum(bool(re.search(r"\[error\]|\berror\b|exception|traceback", line,
                                    re.IGNORECASE))
                     for line in (run_dir / "gateway.log").read_text().splitlines())
        farm_stats = json.loads((run_dir / "farm.json").read_text())
        drain = spooled(run_dir)
        now = time.time()
        drain |= {"stored": readings(db.url, METRICS, now, now - since),
                  "stored_good": values(db.url, METRICS, now, now - since)}
        drain["lost"] = drain["spooled"] - drain["stored"]
    asked = DEVICES * POINTS / interval
    return {"gateway": "scadawatch", "devices": DEVICES, "points": POINTS,
            "interval": interval, "expected_values_per_s": asked,
            "ratio": round(result["stored_values_per_s"] / asked, 3),
            "ratio_ts": round(result["stored_ts_values_per_s"] / asked, 3),
            "farm_requests_per_s": farm_stats.get("requests_per_s"),
            "gateway_log_error_lines": errors, **result}, drain


def influx_query(url: str, q: str, db: str | None = None) -> list[dict]:
    params = {"q": q} | ({"db": db} if db else {})
    with urllib.request.urlopen(f"{url}/query?{urllib.parse.urlencode(params)}",
                                timeout=COUNT_LIMIT) as r:
        results = json.loads(r.read())["results"]
    return [s for result in results for s in result.get("series", [])]


def count_readings(url: str, db: str) -> int:
    """Readings stored: each has `value`, `quality` or both (uncertain, quality 1)."""
    def total(q: str) -> int:
        return sum(int(s["values"][0][1]) for s in influx_query(url, q, db))

    return (total(f"SELECT count(value) FROM {READINGS}")
            + total(f"SELECT count(quality) FROM {READINGS}")
            - total(f"SELECT count(value) FROM {READINGS} WHERE quality = 1"))


def spooled(run_dir: Path) -> dict:
    """What the run's gateway spooled and left (its final status), and the farm served."""
    status = json.loads((run_dir / "scadawatch-data" / "status.json").read_text())
    sink = status["sinks"].get("influxdb", {})
    farm = json.loads((run_dir / "farm.json").read_text())
    return {"spooled": status["spool"]["readings_appended_total"],
            "spool_dropped": status["spool"]["readings_dropped_total"],
            "left": sink.get("backlog_readings"), "quarantined": sink.get("quarantined_total"),
            "served": farm["registers_served"] // 2,
            "stopped_cleanly": "event=gateway_stopped" in (run_dir / "gateway.log").read_text()}


def drained(run_dir: Path) -> dict:
    """What the run's gateway spooled beside what its InfluxDB holds (influxd restarted)."""
    out = spooled(run_dir)
    config = (run_dir / "influx" / "influxdb.conf").read_text()
    port = free_port()
    lines = [f'bind-address = "127.0.0.1:{free_port()}"' if line.startswith("bind-address")
             else f'  bind-address = "127.0.0.1:{port}"' if "bind-address" in line
             else line for line in config.splitlines()]
    conf = run_dir / "influx" / "count.conf"
    conf.write_text("\n".join(lines) + "\n")
    url = f"http://127.0.0.1:{port}"
    with open(run_dir / "influxd-count.log", "wb") as log:
        influxd = subprocess.Popen([shutil.which("influxd") or "influxd", "-config", str(conf)],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + COUNT_LIMIT
        while True:
            try:
                (db,) = [v[0] for s in influx_query(url, "SHOW DATABASES") for v in s["values"]
                         if v[0].startswith("bench_")]
                break
            except OSError:
                if time.monotonic() > deadline or influxd.poll() is not None:
                    raise
                time.sleep(0.5)
        out["stored"] = count_readings(url, db)
        out["stored_good"] = sum(int(s["values"][0][1]) for s in influx_query(
            url, f"SELECT count(value) FROM {READINGS}", db))
    finally:
        influxd.send_signal(signal.SIGTERM)
        try:
            influxd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            influxd.kill()
            influxd.wait()
    out["lost"] = out["spooled"] - out["stored"]
    return out


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def table(runs: Sequence[Run]) -> str:
    head = ("| asked values/s | gateway | stored values/s | ratio / ratio_ts | gateway CPU % "
            "(of a core) | gateway RSS MiB | database CPU % | farm CPU % | machine CPU % of "
            "200 | decode check | spooled -> stored (lost, left at stop) | load before / after |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        if "error" in r.result:
            lines.append(f"| {r.asked:,.0f} | {r.name} | failed: {r.result['error']} |"
                         + " |" * 9 + f" {r.load[0]:.1f} / {r.load[1]:.1f} |")
            continue
        decode = (f"{'ok' if r.get('decode_ok') else 'FAILED'} "
                  f"({r.get('decode_matched')}/{r.get('decode_checked')})")
        d = r.drain
        drain = (f"{d['spooled']:,} -> {d['stored']:,} ({d['lost']:,}, {d['left']:,}); farm "
                 f"served {d['served']:,}, good stored {d['stored_good']:,}"
                 + ("" if d["stopped_cleanly"] else "; gateway killed at stop")
                 if "stored" in d else "-")
        lines.append(
            f"| {r.asked:,.0f} | {r.name} | {fmt(r.get('stored_values_per_s'))} | "
            f"{fmt(r.get('ratio'), 3)} / {fmt(r.get('ratio_ts'), 3)} | "
            f"{fmt(r.get('cpu_pct_median'))} (max {fmt(r.get('cpu_pct_max'))}) | "
            f"{fmt(r.get('rss_mb_median'))} | {fmt(r.get('database_cpu_pct_median'))} | "
            f"{fmt(r.get('farm_cpu_pct_median'))} | {fmt(r.get('system_cpu_pct_median'))} | "
            f"{decode} | {drain} | {r.load[0]:.1f} / {r.load[1]:.1f} |")
    return "\n".join(lines)


def verdicts(runs: Sequence[Run]) -> list[tuple[bool, str]]:
    """The goals of issue 17, each with the figures that judge it."""
    out: list[tuple[bool, str]] = []

    def find(gateway: str, interval: float, sink: str = "influxdb") -> Run | None:
        return next((r for r in runs if (r.gateway, r.interval, r.sink)
                     == (gateway, interval, sink) and "error" not in r.result), None)

    def keeps_up(r: Run) -> tuple[bool, str]:
        # ratio_ts counts the values stamped in the window and stored by its end (+3 s);
        # ratio, the count's growth over the window, moves by whole writes: a gateway writing
        # once a second reads up to one second of values (1 / window) off (harness README).
        ratio, ratio_ts = r.get("ratio") or 0.0, r.get("ratio_ts") or 0.0
        quantum = 1 / (r.get("window_s") or 30)
        return (ratio_ts >= 0.99 and ratio >= 0.99 - quantum,
                f"ratio_ts {ratio_ts:.3f} (>= 0.99), ratio {ratio:.3f} (>= 0.99 less one "
                f"second's writes, {quantum:.3f})")

    sw, nr = find("scadawatch", 1.0), find("nodered", 1.0)
    if sw is not None and nr is not None:
        for what, key in (("CPU", "cpu_pct_median"), ("RSS", "rss_mb_median")):
            mine, theirs = sw.get(key) or 0.0, nr.get(key) or float("nan")
            out.append((mine <= 0.5 * theirs, f"50k/s: scadawatch {what} {mine:.1f} <= 0.5 x "
                        f"Node-RED's {theirs:.1f} (ratio {mine / theirs:.2f})"))
        mine, theirs = (sw.get("influxd_cpu_pct_median") or 0.0,
                        nr.get("influxd_cpu_pct_median") or float("nan"))
        if keeps_up(nr)[0]:
            out.append((mine <= theirs, f"50k/s: influxd CPU with scadawatch {mine:.1f} % <= "
                        f"with Node-RED {theirs:.1f} %"))
        else:  # Node-RED fell behind: its influxd had less to do; compare per value stored
            mine_per, theirs_per = (1000 * mine / (sw.get("stored_values_per_s") or 1),
                                    1000 * theirs / (nr.get("stored_values_per_s") or 1))
            out.append((mine_per <= theirs_per, f"50k/s: influxd CPU per 1,000 values/s "
                        f"stored with scadawatch {mine_per:.2f} % <= with Node-RED "
                        f"{theirs_per:.2f} % (Node-RED stored {nr.get('ratio'):.2f} of it: "
                        f"influxd {theirs:.1f} % against {mine:.1f} %)"))
    for r in runs:
        if r.gateway != "scadawatch" or "error" in r.result:
            continue
        at = f"{r.asked / 1000:g}k/s"
        ok, text = keeps_up(r)
        v1 = find("scadawatch", r.interval) if r.sink == "victoria" else None
        out.append((ok, f"{at}: {r.name} keeps up: {text}" + (
            "" if v1 is None else f"; api v1 into InfluxDB in this run: ratio_ts "
            f"{v1.get('ratio_ts'):.3f}, {fmt(v1.get('stored_values_per_s'))} values/s")))
        d = r.drain
        if "stored" in d and (r.interval == 0.5 or r.sink == "victoria"):
            cut = d["served"] - d["stored_good"]
            out.append((d["stopped_cleanly"] and d["lost"] == 0 and d["left"] == 0
                         and d["spool_dropped"] == 0 and 0 <= cut <= DEVICES * POINTS,
                         f"{at}: {r.name}: nothing lost: spooled {d['spooled']:,}, stored "
                         f"{d['stored']:,}, left in the spool {d['left']:,}, dropped "
                         f"{d['spool_dropped']:,}, stopped cleanly: {d['stopped_cleanly']} "
                         f"(farm served {d['served']:,} values, the database holds "
                         f"{d['stored_good']:,} good readings: {cut:,} in polls cut at stop, "
                         f"at most {DEVICES * POINTS:,})"))
    for r in runs:
        if "error" not in r.result:
            out.append((bool(r.get("decode_ok")), f"{r.asked / 1000:g}k/s {r.name}: decode "
                        f"check {r.get('decode_matched')}/{r.get('decode_checked')}"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=30, help="measurement window per run")
    ap.add_argument("--intervals", default="1,0.5",
                    help="poll intervals, s (20 x 2,500 values each: 1 -> 50k/s, 0.5 -> 100k/s)")
    ap.add_argument("--gateways", default="nodered,scadawatch")
    ap.add_argument("--sinks", default="influxdb",
                    help="influxdb (1.6, api v1), victoria (VictoriaMetrics, api v2; scadawatch "
                         "only), or both: influxdb,victoria")
    ap.add_argument("--out", type=Path, help="append the harness's JSON lines here")
    args = ap.parse_args(argv)
    sinks = args.sinks.split(",")
    if unknown := set(sinks) - {"influxdb", "victoria"}:
        ap.error(f"--sinks: unknown {', '.join(sorted(unknown))} (influxdb, victoria)")
    peers = peers_dir()
    setup(peers)
    began, load = time.time(), load_average()
    runs = []
    for interval in (float(i) for i in args.intervals.split(",")):
        for sink in sinks:
            for gateway in args.gateways.split(","):
                if sink == "victoria" and gateway != "scadawatch":
                    continue
                runs.append(run_peer(peers, gateway, interval, args.seconds, sink))
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(runs[-1].result | {
                            "sink": sink, "load": runs[-1].load, "drain": runs[-1].drain}) + "\n")
    databases = {"influxdb": "InfluxDB 1.6 (api v1)", "victoria": "VictoriaMetrics (api v2)"}
    print(f"\npeer harness {peers}: {DEVICES} devices x {POINTS:,} float32 over Modbus TCP -> "
          f"{', '.join(databases[s] for s in sinks)}, {args.seconds} s windows; "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the start, "
          f"{load_average():.1f} at the end, {time.time() - began:.0f} s\n")
    print(table(runs))
    results = verdicts(runs)
    print()
    for ok, text in results:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if results and all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
