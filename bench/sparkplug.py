"""Readings per second `scadawatch central` ingests from N simulated Sparkplug B sites, its CPU
and RSS and the broker's (Debian's mosquitto), beside a bare aiomqtt subscriber (receive and
parse each payload, store nothing) in the same run.

    python -m bench.sparkplug                         # 10, 100 and 1,000 sites
    python -m bench.sparkplug --sites 100 --seconds 30

A load generator (`python -m bench.sparkplug play`, its own process) plays the edge nodes: one
MQTT connection each with its NDEATH will, NBIRTH, a DBIRTH of `--tags` metrics, then a DDATA
of every tag every `--interval` seconds for `--seconds`, then NDEATH; payloads made by the
gateway's own encoder (gateway.northbound.sparkplug.payloads). Everything on loopback;
every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.mosquitto import Mosquitto
from bench.peers import free_port
from bench.table import Row

GROUP, HOST = "bench", "bench-central"
SETTLE = 60.0  # seconds the centre may take to store what was sent, after the last DDATA
IDLE_END = 8.0  # seconds without DDATA after which the bare subscriber stops


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- the load generator -------------------------------------------------------------------

async def _edge(port: int, node: str, tags: int, interval: float, seconds: float,
                start: float) -> int:
    import aiomqtt

    from anomaly.core.batch import Batch
    from gateway.northbound.sparkplug import payloads as sp
    from gateway.site.model import Point

    points = [Point(tag=f"t{i}", device="plc", kind="pressure", unit="m", lo=0.0, hi=100.0)
              for i in range(tags)]
    aliases = np.arange(1, tags + 1)
    boolean = np.zeros(tags, bool)
    will = aiomqtt.Will(sp.topic(GROUP, "NDEATH", node), sp.node_death(0, 0), qos=1)
    sent = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{node}", will=will,
                              keepalive=30, clean_session=True, timeout=30) as client:
        now = time.time_ns() // 1_000_000
        await client.publish(sp.topic(GROUP, "NBIRTH", node),
                             sp.with_seq(0, sp.node_birth(0, now)), qos=1)
        await client.publish(sp.topic(GROUP, "DBIRTH", node, "plc"),
                             sp.with_seq(1, sp.device_birth(list(zip(aliases.tolist(), points,
                                                                     strict=True)), now)), qos=1)
        seq, record = 2, 0
        rng = np.random.default_rng(abs(hash(node)) % 2**32)
        await asyncio.sleep(start - time.monotonic() + rng.uniform(0, interval))
        end = start + seconds
        while time.monotonic() < end:
            ts = time.time_ns()
            batch = Batch.of(source_ts=np.full(tags, ts), point=np.arange(tags),
                             value=rng.normal(50, 5, tags), quality=0)
            record += sp.MAX_DEVICES
            body = sp.device_data(record, batch, aliases, boolean, ts // 1_000_000, False,
                                  after=record - sp.MAX_DEVICES)
            await client.publish(sp.topic(GROUP, "DDATA", node, "plc"), sp.with_seq(seq, body),
                                 qos=1)
            seq = (seq + 1) % 256
            sent += tags
            await asyncio.sleep(max(0.0, interval - (time.time_ns() - ts) / 1e9))
        await client.publish(sp.topic(GROUP, "NDEATH", node), sp.node_death(0, 0), qos=1)
    return sent


async def play(port: int, sites: int, tags: int, interval: float, seconds: float) -> int:
    """Connect every site (a few at a time), then send from all for `seconds`."""
    start = time.monotonic() + 5.0 + sites / 200  # connections first
    tasks = [asyncio.create_task(_edge(port, f"site{i:04d}", tags, interval, seconds, start))
             for i in range(sites)]
    return sum(await asyncio.gather(*tasks))


# --- the bare subscriber ------------------------------------------------------------------

async def bare(port: int, seconds: float) -> dict:
    """Receive every message of the group and parse it (protobuf), for `seconds` at most, or
    until the sites have been quiet for IDLE_END seconds after their data."""
    import aiomqtt

    from gateway.northbound.sparkplug import payloads as sp

    readings = messages = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-bare", timeout=30) as client:
        await client.subscribe(f"{sp.NAMESPACE}/{GROUP}/#", qos=1)
        print("ready", flush=True)
        try:
            async with asyncio.timeout(seconds) as deadline:
                async for message in client.messages:
                    if "/DDATA/" in str(message.topic):
                        p = sp.parse(message.payload)  # type: ignore[arg-type]
                        readings += len(p.metrics) - 1  # less the record number
                        deadline.reschedule(min(loop.time() + IDLE_END, end))
                    messages += 1
        except TimeoutError:
            pass
    return {"readings": readings, "messages": messages}


# --- one run ------------------------------------------------------------------------------

def measure(sites: int, tags: int, interval: float, seconds: float, folder: Path) -> dict:
    broker = Mosquitto(folder / "mosquitto")
    broker.start()
    assert broker.proc is not None
    api_port = free_port()
    data = folder / "central"
    data.mkdir()
    (folder / "central.toml").write_text(
        f'[site]\nname = "bench"\ndata_dir = "{data}"\n'
        f'[central]\nurl = "{broker.url}"\ngroup = "{GROUP}"\nhost_id = "{HOST}"\n'
        f'[api]\nport = {api_port}\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with (folder / "central.log").open("wb") as log:
        central = subprocess.Popen([sys.executable, "-m", "scadawatch", "central", "--config",
                                    str(folder / "central.toml")], stderr=log, env=env)
    window = seconds + 10.0 + sites / 200 + SETTLE
    bare_proc = subprocess.Popen([sys.executable, "-m", "bench.sparkplug", "bare", "--port",
                                  str(broker.port), "--seconds", str(window)],
                                 stdout=subprocess.PIPE, text=True, env=env)
    assert bare_proc.stdout is not None
    assert bare_proc.stdout.readline().strip() == "ready"
    time.sleep(2.0)  # the centre subscribed
    pids = {"central": central.pid, "broker": broker.proc.pid, "bare": bare_proc.pid}
    cpu0 = {k: _proc_cpu(p) for k, p in pids.items()}
    wall0 = time.perf_counter()
    player = subprocess.run([sys.executable, "-m", "bench.sparkplug", "play", "--port",
                             str(broker.port), "--sites", str(sites), "--tags", str(tags),
                             "--interval", str(interval), "--seconds", str(seconds)],
                            capture_output=True, text=True, env=env, timeout=window + 60)
    assert player.returncode == 0, player.stderr[-2000:]
    sent = int(player.stdout.strip().splitlines()[-1])
    rss = {k: _rss(p) for k, p in pids.items()}
    wall = time.perf_counter() - wall0
    cpu = {k: (_proc_cpu(p) - cpu0[k]) / wall for k, p in pids.items()}
    ended = time.monotonic()
    stored = _stored(data, sent, tags)
    lag = time.monotonic() - ended
    central.send_signal(signal.SIGTERM)
    central.wait(timeout=60)
    bare_out = json.loads(bare_proc.communicate(timeout=window + 30)[0].splitlines()[-1])
    broker.stop()
    return {"sites": sites, "tags": tags, "interval": interval, "seconds": seconds,
            "sent": sent, "stored": stored, "bare_received": bare_out["readings"],
            "rate_sent": sent / seconds, "cpu": cpu, "rss": rss, "wall": wall, "lag": lag}


def _stored(data: Path, sent: int, tags: int) -> int:
    """Readings in the centre's historians once it has them all (or SETTLE passed)."""
    from gateway.storage.historian import EmbeddedHistorian, HistorianError

    def count() -> int:
        total = 0
        for path in (data / "sites").glob("*/historian.sqlite"):
            try:
                h = EmbeddedHistorian(path, [f"t{i}" for i in range(tags)], readonly=True)
            except HistorianError:
                continue  # being created
            try:
                total += sum(len(h.history(t, 0, 2**62)) for t in h.tags)
            finally:
                h.close()
        return total

    deadline = time.monotonic() + SETTLE
    while True:
        now = count()
        if now >= sent or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def run(quick: bool) -> list[Row]:
    rows = []
    for sites in (10, 100) if quick else (10, 100, 1000):
        with tempfile.TemporaryDirectory() as d:
            m = measure(sites, 25, 1.0, 10.0 if quick else 30.0, Path(d))
        rows.append(Row(f"central ingest, {sites} Sparkplug sites x 25 tags @ 1 s",
                        f"{m['rate_sent']:,.0f} readings/s sent, {m['stored'] / m['sent']:.3f} "
                        f"stored (all {m['lag']:.0f} s after the last), "
                        f"{m['cpu']['central']:.0%} CPU, {m['rss']['central'] / 2**20:.0f} MB; "
                        f"mosquitto {m['cpu']['broker']:.0%}",
                        f"bare aiomqtt subscriber {m['cpu']['bare']:.0%} CPU",
                        m["cpu"]["central"] / max(m["cpu"]["bare"], 1e-9),
                        f"python -m bench.sparkplug --sites {sites}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", choices=["measure", "play", "bare"], default="measure")
    ap.add_argument("--sites", type=int, action="append")
    ap.add_argument("--tags", type=int, default=25)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between DDATA")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--port", type=int)
    args = ap.parse_args()
    if args.mode == "play":
        print(asyncio.run(play(args.port, args.sites[0], args.tags, args.interval,
                               args.seconds)))
        return
    if args.mode == "bare":
        print(json.dumps(asyncio.run(bare(args.port, args.seconds))))
        return
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    print("sites | sent/s | stored/sent | all stored after | central CPU, RSS "
          "| mosquitto CPU, RSS | bare subscriber CPU, RSS, received/sent")
    for sites in args.sites or [10, 100, 1000]:
        with tempfile.TemporaryDirectory() as d:
            m = measure(sites, args.tags, args.interval, args.seconds, Path(d))
        print(f"{sites} | {m['rate_sent']:,.0f} | {m['stored'] / max(m['sent'], 1):.3f} | "
              f"{m['lag']:.1f} s | {m['cpu']['central']:.0%}, "
              f"{m['rss']['central'] / 2**20:.0f} MB | {m['cpu']['broker']:.0%}, "
              f"{m['rss']['broker'] / 2**20:.0f} MB | {m['cpu']['bare']:.0%}, "
              f"{m['rss']['bare'] / 2**20:.0f} MB, {m['bare_received'] / max(m['sent'], 1):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
