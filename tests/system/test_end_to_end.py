"""The whole gateway, as a user runs it: devices on loopback -> gateway -> spool -> historian
-> API. Real sockets, real processes (the demo case runs `scadawatch` itself; the kill -9
case is in test_reliability.py)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import select
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import tomli_w
from support.harness import (
    RUN_LIMIT,
    api_until,
    auth_headers,
    gateway_site,
    start_simulator,
)
from support.peers.modbus_servers import Image, every_type_order_and_table, pymodbus_tcp, source

from api.tokens import TokenStore
from gateway.site.loader import load_site
from gateway.site.model import Device, Point, Site, SiteSection
from scadawatch.ports import free_port


def precision(type_: str, value: float) -> float:
    """What the type can hold of `value`: float32 keeps ~7 significant digits."""
    return abs(value) * 1e-6 if type_ == "float32" else 1e-9 * max(1.0, abs(value))


def test_every_type_word_order_and_table_reaches_the_api_unchanged(tmp_path: Path) -> None:
    """Beside the live device, a dead one (closed port): its point turns bad, then stale,
    and health shows it down while the live points stay good."""
    points, raw = every_type_order_and_table()
    image = Image()
    for point, value in zip(points, raw, strict=True):
        image.put(point, value)
    dead = Device(name="dead", protocol="modbus-tcp", port=free_port(), poll_interval=0.1,
                  timeout=0.2, stale_after=2)
    dead_point = Point(tag="dead.flow", device="dead", address=0, unit="L/s")
    async def live_good_and_dead_stale(http: httpx.AsyncClient) -> dict | None:
        by_tag = {r["tag"]: r for r in (await http.get("/api/v1/latest")).json()["readings"]}
        if not (all(by_tag[p.tag]["quality"] == "good" for p in points)
                and by_tag[dead_point.tag]["stale"]):
            return None
        history = {tag: (await http.get("/api/v1/history", params={
            "tag": tag, "start": "-1min"})).json() for tag in (points[0].tag, dead_point.tag)}
        return {"latest": by_tag, "history": history[points[0].tag],
                "dead_history": history[dead_point.tag],
                "health": (await http.get("/api/v1/health")).json()}

    async def scenario() -> dict:
        async with pymodbus_tcp({1: image}) as served:
            device = Device(name="dev", protocol="modbus-tcp", port=served.port, unit=1,
                            poll_interval=0.1, timeout=0.5)
            site = Site(site=SiteSection(name="e2e", data_dir=tmp_path),
                        devices=[device, dead], points=[*points, dead_point])
            return await api_until(site, live_good_and_dead_stale)

    answer = asyncio.run(scenario())
    got = answer["latest"]
    for point, value in zip(points, raw, strict=True):
        expected = value * point.scale + point.offset
        reading = got[point.tag]
        assert reading["value"] == pytest.approx(expected, abs=precision(point.type, expected)
                                                 * abs(point.scale) + 1e-12), point.tag
        assert reading["source_ts"].endswith("Z") and reading["stale"] is False
    history = answer["history"]
    assert history["tag"] == points[0].tag and len(history["ts"]) >= 1
    assert history["value"][-1] == pytest.approx(source(points[0].type, 0) * points[0].scale
                                                 + points[0].offset, rel=1e-6)
    # The dead device: bad (never a last good value), then stale; health says down.
    dead_reading = got[dead_point.tag]
    assert dead_reading["quality"] == "bad" and dead_reading["value"] is None
    assert dead_reading["cause"] == "connection" and dead_reading["unit"] == "L/s"
    assert set(answer["dead_history"]["quality"]) == {"bad"}
    states = {d["name"]: d["state"] for d in answer["health"]["devices"]}
    assert states == {"dev": "ok", "dead": "down"}
    assert answer["health"]["status"] == "degraded"


# --- scadawatch demo ------------------------------------------------------------------------

def moving_tags(values: dict[str, list[float]]) -> list[str]:
    return [t for t, v in values.items() if len(set(v)) > 1 and not math.isnan(v[-1])]


class Raises:
    """The first `raise` on the alarm stream, read in a thread from when the API is up."""

    def __init__(self, url: str, headers: dict[str, str], deadline: float) -> None:
        self.first: tuple[float, dict] | None = None
        self.thread = threading.Thread(target=self._read, args=(url, headers, deadline),
                                       daemon=True)
        self.thread.start()

    def _read(self, url: str, headers: dict[str, str], deadline: float) -> None:
        while self.first is None and time.monotonic() < deadline:
            try:
                with httpx.stream("GET", url, headers={**headers, "Last-Event-ID": "0"},
                                  timeout=httpx.Timeout(5, read=20)) as r:
                    event = ""
                    for line in r.iter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "raise":
                            self.first = (time.monotonic(), json.loads(line[6:]))
                            return
            except httpx.HTTPError:
                time.sleep(0.5)


@pytest.mark.slow
def test_demo_serves_live_values_over_three_protocols_and_raises_alarms_at_once(
        tmp_path: Path) -> None:
    """The default demo (scenario `demo`): the first alarm on the stream within 90 s of the
    command, water read over Modbus TCP, the grid over OPC UA but feeder 2's RTU over IEC 104,
    values moving."""
    port = free_port()
    headers = auth_headers(tmp_path, "viewer")  # the demo adds its own token beside it
    began = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "scadawatch", "demo", "--duration", "90", "--port", str(port),
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    raises = Raises(f"http://127.0.0.1:{port}/api/v1/alarms/stream", headers, began + 90)
    seen: dict[str, set[str]] = {"water": set(), "grid": set(), "feeder2": set()}
    values: dict[str, list[float]] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                latest = httpx.get(f"http://127.0.0.1:{port}/api/v1/latest", timeout=2,
                                   headers=headers).json()
            except (httpx.TransportError, ValueError):
                time.sleep(0.5)
                continue
            for r in latest["readings"]:
                if r["quality"] == "good" and not r["stale"]:
                    values.setdefault(r["tag"], []).append(r["value"])
                    site = "grid" if r["tag"].startswith(("feeder", "substation")) else "water"
                    seen[site].add(r["tag"])
                    if r["tag"].startswith("feeder2."):
                        seen["feeder2"].add(r["tag"])
            if raises.first is not None and len(moving_tags(values)) >= 20:
                demo.send_signal(signal.SIGINT)  # seen enough: Ctrl-C, as a user stops it
                break
            time.sleep(1.0)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, err
    assert "/docs" in out and "/api/v1/latest" in out
    # The operator token it printed, and the link that logs the page in with it.
    [token] = re.findall(rf"http://127\.0\.0\.1:{port}/#token=(sw_\S+)", out)
    checked = TokenStore(tmp_path).check(token)
    assert checked is not None and checked.role == "operator"
    protocols = {d.name: d.protocol for d in load_site(tmp_path / "demo-site.toml").devices}
    assert {protocols[d] for d in ("grid-feeder1", "grid-plant")} == {"opcua"}
    assert protocols["grid-feeder2"] == "iec104"
    assert protocols["water-dma1"] == "modbus-tcp"
    assert len(seen["water"]) >= 20 and len(seen["grid"]) >= 50, seen
    assert len(seen["feeder2"]) >= 15, seen  # its 18 points, read over IEC 104
    assert "over iec104" in out
    # Live: values move while the demo runs (flows and voltages are never frozen).
    assert len(moving_tags(values)) >= 20, values
    # The scenario's first outage, raised on the stream within 90 s of the command.
    assert raises.first is not None, err[-3000:]
    arrived, alarm = raises.first
    assert arrived - began <= 90 and alarm["kind"] in ("comms", "limit"), alarm


# --- gateway and API as separate processes ---------------------------------------------------

@pytest.mark.slow
def test_gateway_and_api_as_separate_processes_share_the_data_dir(tmp_path: Path) -> None:
    sim, sim_site = start_simulator(tmp_path)
    config = gateway_site(sim_site, tmp_path)
    raw = tomllib.loads(config.read_text())
    port = free_port()
    raw["api"] = {"host": "127.0.0.1", "port": port}
    config.write_text(tomli_w.dumps(raw))
    headers = auth_headers(load_site(config).site.data_dir, "viewer")
    scadawatch = [sys.executable, "-m", "scadawatch"]
    # The API first: it waits for the gateway's historian instead of failing.
    api = subprocess.Popen([*scadawatch, "api", "--config", str(config)],
                           stderr=subprocess.PIPE, text=True)
    assert api.stderr is not None
    ready, _, _ = select.select([api.stderr], [], [], RUN_LIMIT)
    assert ready and "event=waiting_for_historian" in api.stderr.readline()
    gw = subprocess.Popen([*scadawatch, "gateway", "--config", str(config)],
                          stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + RUN_LIMIT
        health: dict = {}
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2,
                                   headers=headers).json()
                latest = httpx.get(f"http://127.0.0.1:{port}/api/v1/latest",
                                   params={"zone": "dma1"}, timeout=2, headers=headers).json()
                states = {d["state"] for d in health["devices"]}
                if health["gateway"]["running"] and states == {"ok"} and all(
                        r["quality"] == "good" for r in latest["readings"]):
                    break
            except (httpx.TransportError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"the API never showed the gateway's readings: {health}")
        assert latest["count"] >= 5
    finally:
        for proc in (gw, api, sim):
            proc.send_signal(signal.SIGTERM)
        for proc in (gw, api, sim):
            proc.wait(timeout=RUN_LIMIT)
    assert gw.returncode == 0 and api.returncode == 0
