"""Faults injected while a gateway ingests from the water simulator: kill -9 of its process,
and an outage of its InfluxDB; with what InfluxDB and the embedded historian then hold."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import tomli_w

from gateway.data_dir import status_path
from gateway.runtime import Gateway
from gateway.site.model import Site
from gateway.storage.influxdb.sink import READINGS
from support.harness import RUN_LIMIT, stored
from support.peers.influx_servers import Influxd, Server

# The InfluxDB admin of tests/gateway/storage/test_influx.py's servers.
USER, PASSWORD = "scada", "s3cret"


def wait_polling(proc: subprocess.Popen, site: Site, since: float) -> None:
    """Until the gateway started at `since` has spooled a poll: its status.json, written
    after that, counts one (a sign of life, instead of a fixed sleep)."""
    path = status_path(site)
    deadline = time.monotonic() + RUN_LIMIT
    while True:
        assert proc.poll() is None, "the gateway died on its own"
        assert time.monotonic() < deadline, "the gateway never polled"
        try:
            snapshot = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # not yet, or being replaced
            snapshot = {}
        if snapshot.get("updated", 0) > since and sum(
                d["polls_total"] for d in snapshot["devices"].values()) > 0:
            return
        time.sleep(0.05)


def kill_9_runs(config: Path, site: Site, kills: int, seed: int = 7) -> None:
    """Run `scadawatch gateway` and kill -9 it `kills` times, each at a random moment up to
    a second after it first polled; then a last run that ends with SIGTERM (which flushes)."""
    cmd = [sys.executable, "-m", "scadawatch", "gateway", "--config", str(config)]
    rng = np.random.default_rng(seed)
    for _ in range(kills):
        gw = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_polling(gw, site, time.time())
        time.sleep(rng.uniform(0, 1.0))
        assert gw.poll() is None, "the gateway died on its own"
        os.kill(gw.pid, signal.SIGKILL)
        gw.wait()
    gw = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_polling(gw, site, time.time())
    gw.send_signal(signal.SIGTERM)
    _, err = gw.communicate(timeout=RUN_LIMIT)
    assert gw.returncode == 0, err.decode()


def outage(site: Site, server: Server, seconds: float) -> tuple[float, float]:
    """Run a gateway on `site` (InfluxDB at `server`), stop the server for `seconds`, start
    it again and wait for the backlog to drain. Returns the poll rates (polls/s) before and
    during the outage."""

    async def run() -> tuple[float, float]:
        gateway, stop = Gateway(site), asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))

        def polls() -> int:
            return sum(d.polls_total for d in gateway.status.devices.values())

        async def rate(seconds: float) -> float:
            before, t = polls(), time.monotonic()
            await asyncio.sleep(seconds)
            return (polls() - before) / (time.monotonic() - t)

        # The normal rate is taken once every device answers: a simulator slow to start (a
        # loaded machine) answers "busy" at first, and the backoff that follows is no outage's.
        for _ in range(int(RUN_LIMIT / 0.2)):
            devices = gateway.status.devices.values()
            if devices and all(d.state == "ok" for d in devices):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)
        normal = await rate(10.0)
        await asyncio.to_thread(server.stop)
        during = await rate(seconds)
        sink = gateway.status.sinks["influxdb"]
        assert sink.backlog_readings > 0 and sink.backlog_age_seconds > seconds / 2
        await asyncio.to_thread(server.start)
        # The drain's backoff (at most 30 s) decides when it notices; then it catches up.
        for _ in range(int(RUN_LIMIT / 0.2)):
            if sink.backlog_age_seconds < 5:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task
        return normal, during

    return asyncio.run(run())


def influx_count(influx: Influxd, database: str, where: str = "") -> dict[str, int]:
    """Readings per tag, in the measurements of readings (`where`: an InfluxQL condition). A
    reading has `value`, `quality` or both (an uncertain one with a value: quality 1)."""
    def per_tag(select: str, *conditions: str) -> dict[str, int]:
        clause = " AND ".join(c for c in (where, *conditions) if c)
        out: dict[str, int] = {}
        for s in influx.query(f'SELECT {select} FROM {READINGS} '
                              f'{"WHERE " + clause if clause else ""} GROUP BY "tag"',
                              db=database):
            out[s["tags"]["tag"]] = out.get(s["tags"]["tag"], 0) + s["values"][0][1]
        return out

    values, flagged = per_tag("count(value)"), per_tag("count(quality)")
    both = per_tag("count(value)", "quality = 1")
    return {t: values.get(t, 0) + flagged.get(t, 0) - both.get(t, 0)
            for t in values | flagged}


def stored_counts(site: Site) -> dict[str, int]:
    """Readings per tag in the embedded historian."""
    tags = [p.tag for p in site.points]
    counts = {tags[i]: n for i, n in _per_point(stored(site)).items()}
    return {t: n for t, n in counts.items() if n}


def _per_point(readings: dict[tuple[int, int], int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for (point, _), n in readings.items():
        out[point] = out.get(point, 0) + n
    return out


def with_influx(config: Path, influx: Server, database: str, **extra: object) -> Path:
    raw = tomllib.loads(config.read_text())
    raw["historian"] = {"kind": "influxdb", "api": "v1", "url": influx.url,
                        "database": database, "username": USER, **extra}
    config.write_text(tomli_w.dumps(raw))
    return config
