"""A site file changed while `scadawatch run` polls the water simulator (its own process, every
device a unit id behind one Modbus TCP port) and a pyModbusTCP server every second: a device
added, one removed, a point of each edited, applied by SIGHUP; then files posted to the API,
one invalid. Checked in the embedded historian and the InfluxDB (a real influxd) the gateway
filled, and in the audit journal over the API."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import tomli_w
from conftest import CliRun
from support.harness import RUN_LIMIT, auth_headers, start_simulator
from support.peers.influx_servers import Influxd, influxd
from support.peers.modbus_servers import Image, pymodbustcp

from anomaly.core.batch import Batch
from anomaly.core.points import PointInfo
from anomaly.engine import Engine, EngineSettings
from gateway.data_dir import historian_path
from gateway.engine_carry import carry_over
from gateway.reload import diff, restart_only
from gateway.site.loader import load_site
from gateway.site.model import (
    AlarmsSection,
    ApiSection,
    Device,
    Point,
    Site,
    SiteSection,
    SpoolSection,
)
from gateway.storage.historian import EmbeddedHistorian
from scadawatch.ports import free_port

POLL = 1.0  # seconds between polls of every device
KEPT, REMOVED, ADDED, EDITED = "water-plant", "water-dma2", "water-dma3", "water-dma1"
ALONE = "meter"  # the only device behind its port: a change restarts its connection
OFFSET = 1000.0  # added to the edited point: no reading of the simulator comes near it
DATABASE = "reload"
METER = [{"tag": f"meter.r{a}", "register": "holding", "address": a, "kind": "other",
          "unit": ""} for a in range(2)]


@dataclass
class Run:
    config: Path
    before: dict  # the site files as TOML tables
    after: dict
    edited: list[str]  # the edited points' tags (of EDITED, of ALONE)
    api: str
    headers: dict[str, dict[str, str]]  # role -> Authorization header
    influx: Influxd
    sighup_at: float = 0.0  # time.time() of the SIGHUP
    proc: subprocess.Popen | None = None

    def tags(self, site: dict, device: str) -> list[str]:
        return [p["tag"] for p in site["points"] if p["device"] == device]


def _files(sim_site: Path, folder: Path, api_port: int, influx: Influxd,
           meter_port: int) -> tuple[dict, dict, list[str]]:
    """The simulator's site without REMOVED's successor ADDED, and the change: ADDED's points
    first (so every later index moves), REMOVED gone, one point of EDITED and of ALONE
    offset."""
    sim = tomllib.loads(sim_site.read_text())
    devices = {d["name"]: d | {"poll_interval": POLL} for d in sim["devices"]}
    devices[ALONE] = {"name": ALONE, "protocol": "modbus-tcp", "host": "127.0.0.1",
                      "port": meter_port, "poll_interval": POLL}
    points = sim["points"] + [p | {"device": ALONE, "type": "uint16"} for p in METER]
    base = {"site": {"name": "reload", "data_dir": "data"}, "api": {"port": api_port},
            "historian": {"flush_interval": 0.2, "kind": "influxdb", "api": "v1",
                          "url": influx.url, "database": DATABASE}}
    before = base | {"devices": [devices[n] for n in (KEPT, EDITED, REMOVED, ALONE)],
                     "points": [p for p in points
                                if p["device"] in (KEPT, EDITED, REMOVED, ALONE)]}
    edited = [next(p for p in points if p["device"] == d and p["register"] != "coil")
              for d in (EDITED, ALONE)]
    after = base | {"devices": [devices[n] for n in (ADDED, KEPT, EDITED, ALONE)],
                    "points": [p for p in points if p["device"] == ADDED]
                    + [p | {"offset": OFFSET} if p in edited else p
                       for p in points if p["device"] in (KEPT, EDITED, ALONE)]}
    folder.mkdir()
    return before, after, [p["tag"] for p in edited]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """`scadawatch run` on the simulator, until the tests of this module are done."""
    tmp = tmp_path_factory.mktemp("reload")
    with contextlib.ExitStack() as stack:
        sim, sim_site = start_simulator(tmp)
        stack.callback(sim.wait, timeout=RUN_LIMIT)
        stack.callback(sim.terminate)
        influx = influxd(tmp / "influxd")
        stack.callback(influx.stop)
        influx.create_database(DATABASE)
        image = Image()
        for p in METER:
            image.put(Point(tag=p["tag"], address=p["address"], type="uint16"), p["address"] + 7)
        api_port = free_port()
        before, after, edited = _files(sim_site, tmp / "site", api_port, influx,
                                       stack.enter_context(pymodbustcp(image)))
        config = tmp / "site" / "site.toml"
        config.write_text(tomli_w.dumps(before))
        data_dir = load_site(config).site.data_dir
        data_dir.mkdir()
        r = Run(config, before, after, edited, f"http://127.0.0.1:{api_port}/api/v1",
                {role: auth_headers(data_dir, role) for role in ("viewer", "engineer")}, influx)
        with open(tmp / "gateway.log", "wb") as log:
            r.proc = subprocess.Popen([sys.executable, "-m", "scadawatch", "run", "--config",
                                       str(config)], stdout=subprocess.DEVNULL, stderr=log)
        stack.callback(r.proc.wait, timeout=RUN_LIMIT)
        stack.callback(r.proc.send_signal, signal.SIGTERM)
        yield r


def latest_of(r: Run, tags: list[str]) -> dict[str, float | None]:
    """Each tag's latest reading time (s), as the API has it; {} while it is starting."""
    try:
        rows = httpx.get(f"{r.api}/latest", headers=r.headers["viewer"], timeout=5).json()
    except httpx.TransportError:
        return {}
    times = {row["tag"]: row["source_ts"] for row in rows.get("readings", [])}
    return {t: datetime.fromisoformat(times[t]).timestamp() if times.get(t) else None
            for t in tags if t in times}


def wait_for(what: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + RUN_LIMIT
    while not ready():
        assert time.monotonic() < deadline, f"not within {RUN_LIMIT} s: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sighup(run: Run) -> Run:
    """Polling for a few seconds, the change by SIGHUP, polling a few seconds more."""
    first = run.tags(run.before, KEPT) + run.tags(run.before, REMOVED)
    wait_for("every point polled", lambda: all(latest_of(run, first).get(t) for t in first)
             and len(latest_of(run, first)) == len(first))
    time.sleep(3 * POLL)
    run.config.write_text(tomli_w.dumps(run.after))
    run.sighup_at = time.time()
    assert run.proc is not None
    run.proc.send_signal(signal.SIGHUP)
    added = run.tags(run.after, ADDED)
    wait_for("the added device's points", lambda: all(
        (latest_of(run, added).get(t) or 0) > run.sighup_at for t in added))
    time.sleep(3 * POLL)
    return run


def historian(run: Run, tags: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per tag: its readings' source times (s) and values in the embedded historian."""
    h = EmbeddedHistorian(historian_path(load_site(run.config)), tags, readonly=True)
    try:
        batches = {t: h.history(t, 0, 2**62) for t in tags}
        return {t: (b.source_ts / 1e9, b.value) for t, b in batches.items()}
    finally:
        h.close()


def influxdb(run: Run, tags: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The same from InfluxDB."""
    out = {}
    for t in tags:
        rows = sorted(v for s in run.influx.query(
            f"SELECT value FROM /.*/ WHERE \"tag\" = '{t}'", db=DATABASE) for v in s["values"])
        out[t] = (np.array([r[0] for r in rows]) / 1e9, np.array([r[1] for r in rows], float))
    return out


def audit(run: Run) -> list[dict]:
    r = httpx.get(f"{run.api}/config/audit", headers=run.headers["viewer"], timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["entries"]


@pytest.mark.parametrize("store", [historian, influxdb], ids=["historian", "influxdb"])
def test_sighup_applies_the_change_device_by_device(sighup: Run, store: Callable) -> None:
    r = sighup
    [entry] = [e for e in audit(r) if e["via"] == "sighup"]
    applied = datetime.fromisoformat(entry["at"]).timestamp()
    removed, added = r.tags(r.before, REMOVED), r.tags(r.after, ADDED)
    kept = r.tags(r.before, KEPT)
    restarted = r.tags(r.before, ALONE)
    data = store(r, kept + removed + added + restarted + r.edited)
    recent = {t: ts > applied - 3 * POLL for t, (ts, _) in data.items()}  # not the start-up
    # The unchanged device never missed a poll: no gap beyond one poll, the change included.
    for tag in kept:
        ts = data[tag][0][recent[tag]]
        assert ts[0] < applied - 2 * POLL and ts[-1] > applied + 2 * POLL, tag
        assert np.diff(ts).max() < 1.5 * POLL, (tag, np.diff(ts).max())
    # The added device's points live within two polls; none filed before it was added.
    for tag in added:
        ts = data[tag][0]
        assert applied - 0.1 < ts[0] < applied + 2 * POLL, (tag, ts[0] - applied)
    # The removed device stopped; its readings up to then are all stored.
    for tag in removed:
        ts = data[tag][0]
        assert ts[0] < applied - 2 * POLL and applied - 1.5 * POLL < ts[-1] < applied + POLL
        assert np.diff(ts[recent[tag]]).max() < 1.5 * POLL, tag
    # A device alone on its connection, changed: it reconnects, missing at most a poll.
    for tag in restarted:
        ts = data[tag][0][recent[tag]]
        assert ts[-1] > applied + 2 * POLL and np.diff(ts).max() < 2.5 * POLL, tag
    # The edited points: the old definition up to the change, the new one after, never mixed.
    for tag in r.edited:
        ts, values = data[tag]
        new = values >= OFFSET / 2
        switch = int(np.argmax(new))
        assert new.any() and not new[:switch].any() and new[switch:].all(), (tag, values)
        assert abs(ts[switch] - applied) < 2 * POLL, tag
        assert np.diff(ts[recent[tag]]).max() < 2.5 * POLL, tag
    assert (entry["who"], entry["role"], entry["outcome"], entry["errors"]) == (
        "SIGHUP", None, "applied", [])
    assert entry["changes"] == {"devices_added": [ADDED], "devices_removed": [REMOVED],
                                "points_added": added, "points_removed": removed,
                                "points_changed": r.edited}


def test_a_posted_file_check_config_refuses_changes_nothing(sighup: Run, cli: CliRun,
                                                          tmp_path: Path) -> None:
    r = sighup
    engineer = r.headers["engineer"]
    bad = r.after | {
        "devices": [d | {"port": "502"} if d["name"] == KEPT else d for d in r.after["devices"]],
        "points": [p | {"word_order": "ABDC"} if p["tag"] == r.edited[0] else p
                   for p in r.after["points"]],
        "alarms": {"flood_start": 5, "flood_end": 10}}
    text = tomli_w.dumps(bad)
    running = httpx.get(f"{r.api}/config", headers=engineer, timeout=5)
    points = httpx.get(f"{r.api}/points", headers=engineer, timeout=5).json()
    answer = httpx.post(f"{r.api}/config", content=text, timeout=RUN_LIMIT,
                        headers=engineer | {"Content-Type": "application/toml"})
    assert answer.status_code == 422, answer.text
    problems = answer.json()["problems"]
    # check-config on the same file says the same, problem by problem.
    (tmp_path / "site.toml").write_text(text)
    code, _, err = cli("check-config", "--config", tmp_path / "site.toml")
    prefix = f"{tmp_path / 'site.toml'}: "
    said = [line.removeprefix(prefix) for line in err.splitlines() if line.startswith(prefix)]
    assert code != 0 and said == [f"{p['key']}: {p['reason']}" for p in problems] + [
        f"{len(problems)} problems"], (err, problems)
    assert all(p["file"] == str(r.config) for p in problems)
    edited = next(i for i, p in enumerate(bad["points"]) if p["tag"] == r.edited[0])
    assert [p["key"] for p in problems] == ["alarms", "devices[1].port",
                                            f"points[{edited}].word_order"]
    # Nothing changed: the file, the points served, the journal says why.
    assert r.config.read_bytes() == running.content == tomli_w.dumps(r.after).encode()
    assert httpx.get(f"{r.api}/points", headers=engineer, timeout=5).json() == points
    last = audit(r)[-1]
    assert (last["via"], last["role"], last["outcome"]) == ("api", "engineer", "refused")
    assert last["errors"] == [f"{r.config}: {p['key']}: {p['reason']}" for p in problems]


def test_only_an_engineer_may_post_a_site_file(sighup: Run) -> None:
    r = sighup
    entries = len(audit(r))
    changed = r.after | {"alarms": {"max_shelve": "2h"}}
    viewer = httpx.post(f"{r.api}/config", content=tomli_w.dumps(changed), timeout=5,
                        headers=r.headers["viewer"])
    assert viewer.status_code == 403 and len(audit(r)) == entries
    engineer = httpx.post(f"{r.api}/config", content=tomli_w.dumps(changed),
                          timeout=RUN_LIMIT, headers=r.headers["engineer"])
    assert engineer.json() == {"outcome": "applied", "changes": {"settings_changed": ["alarms"]}}
    assert tomllib.loads(r.config.read_text()) == changed  # the file is what runs
    name = httpx.get(f"{r.api}/auth/me", headers=r.headers["engineer"], timeout=5).json()["name"]
    last = audit(r)[-1]
    assert (last["who"], last["role"], last["outcome"]) == (name, "engineer", "applied")


def test_the_engine_keeps_what_it_learned_of_the_points_that_did_not_change() -> None:
    """An engine that learned three points for fifteen minutes, the last five with a flow
    above its limit, rebuilt over a list where that flow moved, a pressure changed its limits,
    one point is gone and two are new: every per-point array holds the old engine's figures
    for the moved point and a fresh engine's for the others; the flow's alarm stays open, and
    clears under its own id once the flow is back."""
    settings = EngineSettings(interval=1.0, comms_window={"a": 3.0, "b": 3.0})
    flow = PointInfo("a.f", "flow", "m3/h", device="a", lo=0, hi=60)
    before = [PointInfo("a.p", "pressure", "bar", device="a", lo=0, hi=10), flow,
              PointInfo("b.p", "pressure", "bar", device="b")]
    after = [PointInfo("c.l", "level", "m", device="c"), PointInfo("c.q", "flow", device="c"),
             PointInfo("a.p", "pressure", "bar", device="a", lo=0, hi=12), flow]
    old = Engine(before, settings)
    rng = np.random.default_rng(7)
    t0 = 1_700_000_000 * 10**9
    for k in range(900):
        old.process(Batch.of(source_ts=np.full(3, t0 + k * 10**9), point=np.arange(3),
                             value=rng.normal([5, 50 if k < 600 else 75, 3], [0.1, 2, 0.1]),
                             quality=0))
    [alarm] = old.active
    new = Engine(after, dataclasses.replace(settings, comms_window={"a": 3.0, "c": 3.0}))
    fresh = Engine(after, new.settings).state()
    assert carry_over(old, before, new, after) == 1
    learned, carried = old.state(), new.state()
    checked = 0
    for name, arr in carried.items():
        axes = [j for j, n in enumerate(arr.shape) if n == len(after)
                and learned[name].shape[j] == len(before)]
        if len(axes) != 1 or arr.dtype.kind not in "biuf":
            continue
        was, now = np.moveaxis(learned[name], axes[0], 0), np.moveaxis(arr, axes[0], 0)
        assert np.array_equal(now[3], was[1], equal_nan=True), name  # a.f: kept
        # new, new, changed: as a fresh engine has them (the gate's times of a condition
        # kind: only once one arose, -1 for the subjects where none did)
        blank = np.moveaxis(fresh[name] if name in fresh else np.full_like(arr, -1), axes[0], 0)
        for i in (0, 1, 2):
            assert np.array_equal(now[i], blank[i], equal_nan=True), (name, i)
        checked += 1
    assert checked > 20  # the detectors' per-point arrays were found
    assert [(a.id, a.tag) for a in new.active] == [(alarm.id, "a.f")]
    events = []
    for k in range(900, 1500):
        events += new.process(Batch.of(source_ts=np.full(4, t0 + k * 10**9), point=np.arange(4),
                                       value=np.array([2.0, 1.0, 5.0, 50.0]), quality=0))
    assert [(e.action, e.alarm.id) for e in events if e.alarm.tag == "a.f"] == [
        ("clear", alarm.id)]


def _site(**changes: object) -> Site:
    """A small site, with `changes` to its sections, devices or points."""
    base = {"site": SiteSection(name="s", data_dir=Path("/tmp/s")),
            "devices": [Device(name="a", protocol="modbus-tcp", port=5020),
                        Device(name="b", protocol="modbus-tcp", port=5021)],
            "points": [Point(tag="a.p", device="a", address=0),
                       Point(tag="b.p", device="b", address=0)]}
    return Site(**base | changes)


WHAT_CHANGED = {
    "nothing": ({}, {}, []),
    "a point's scale": ({"points": [Point(tag="a.p", device="a", address=0, scale=2.0),
                                    Point(tag="b.p", device="b", address=0)]},
                        {"points_changed": ["a.p"]}, []),
    "a device's poll and a point gone": (
        {"devices": [Device(name="a", protocol="modbus-tcp", port=5020, poll_interval=5),
                     Device(name="b", protocol="modbus-tcp", port=5021)],
         "points": [Point(tag="a.p", device="a", address=0)]},
        {"devices_changed": ["a"], "points_removed": ["b.p"]}, []),
    "alarm limits": ({"alarms": AlarmsSection(max_shelve=7200)}, {"settings_changed": ["alarms"]},
                     []),
    "the API's port and the spool": (
        {"api": ApiSection(port=8001), "spool": SpoolSection(max_bytes=1 << 21)}, {},
        ["spool", "api"]),
}


@pytest.mark.parametrize(("edit", "changes", "restart"), WHAT_CHANGED.values(),
                         ids=WHAT_CHANGED.keys())
def test_what_a_change_changes_and_what_needs_a_restart(edit: dict, changes: dict,
                                                        restart: list[str]) -> None:
    old, new = _site(), _site(**edit)
    assert diff(old, new) == changes
    problems = restart_only(old, new, "site.toml")
    assert [p.key for p in problems] == restart
    assert all("takes effect on a restart only" in p.reason for p in problems)
