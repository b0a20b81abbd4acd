"""Live/replay parity: the alarms the gateway raises live are those `scadawatch replay` finds in
the recording exported from what the gateway stored.

Both runs fold the same readings into the same ticks; what could set them apart, and is
checked here: bad readings (a failed read is a `nan` cell of the recording, not an empty one,
so `comms` judges it as it did live), tick sums cut differently into live polls and replay
chunks, timestamps written to the nanosecond (no reading moves to another tick), and the
ticks only one side closed (live: the clock; replay: the end of the recording), left out of
the comparison: an alarm is compared if it started by the last tick both closed, and an end
beyond that tick counts as still active.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from conftest import CliRun
from support.harness import gateway_site, start_simulator

from anomaly.core.alarms import OFF_DELAY, Alarm
from anomaly.core.batch import Batch, Quality
from anomaly.core.points import PointInfo
from anomaly.core.ticks import Tick, TickAccumulator
from anomaly.engine import Engine, EngineSettings
from api.times import parse_time
from gateway.alarms.encoding import encode
from gateway.alarms.store import AlarmStore, Filter
from gateway.data_dir import historian_path, state_path, store_path
from gateway.detection import build_engine
from gateway.engine_state import load_state
from gateway.site.loader import load_site
from gateway.site.model import Site
from gateway.storage.historian import EmbeddedHistorian
from gateway.storage.recording import (
    RecordingReader,
    read_recording,
    write_history,
    write_recording,
)
from scadawatch.commands.replay import run
from scadawatch.commands.serve import serve

S = 10**9
T0 = 1767571200 * S  # 2026-01-05T00:00:00Z
COMPARED = ("id", "kind", "tag", "zone", "device", "tags", "start", "end", "priority",
            "message", "value", "details")


def compared(alarms: Iterable[dict], horizon_ns: int) -> list[dict]:
    """The alarms that started by `horizon_ns`, as of then (an end after it: still active),
    in a stable order."""
    out = []
    for a in alarms:
        if parse_time(a["start"], 0) > horizon_ns:
            continue
        a = {k: a[k] for k in COMPARED}
        if a["end"] is not None and parse_time(a["end"], 0) > horizon_ns:
            a["end"] = None
        out.append(a)
    return sorted(out, key=lambda a: (a["start"], a["id"]))


def last_tick_end(last_ns: int, interval_ns: int) -> int:
    """End of the tick of a recording's last reading: the last tick a replay closes."""
    return (last_ns // interval_ns + 1) * interval_ns


# --- the engine fed as the gateway feeds it, and from the recording of the same readings ---

POINTS = [
    PointInfo("a.flow", "flow", "L/s", device="rtu1", lo=0.0, hi=100.0),
    PointInfo("a.pressure", "pressure", "m", device="rtu1"),
    PointInfo("a.level", "level", "m", device="rtu1", lo=0.0, hi=5.0),
    PointInfo("b.flow", "flow", "L/s", device="rtu2"),
    PointInfo("b.pressure", "pressure", "m", device="rtu2"),
]
TAGS = [p.tag for p in POINTS]
DEVICES = {"rtu1": np.array([0, 1, 2]), "rtu2": np.array([3, 4])}
SETTINGS = EngineSettings(interval=1.0, lateness=0.5,
                          off_delay={**OFF_DELAY, "comms": 2.0, "limit": 2.0})
# the devices' stale windows (0.2 s polls x 3): failed reads judged reading by reading
WINDOWS = replace(SETTINGS, comms_window={"rtu1": 0.6, "rtu2": 0.6})
CLOCK_DELAY = 30_000_000  # ns from a poll to the gateway's clock tick that follows it


def polls(seconds: int) -> Iterator[Batch]:
    """What the gateway spools: a batch per poll of each device every 0.2 s, stamped at odd
    nanoseconds; rtu1 answers with exceptions (bad readings) from 40 s to 60 s, rtu2 is
    silent from 100 s to 120 s, a.level is over its limit from 140 s to 150 s."""
    rng = np.random.default_rng(6)
    for k in range(seconds * 5):
        for d, (device, points) in enumerate(DEVICES.items()):
            t = T0 + k * 200_000_000 + d * 37_000_000 + int(rng.integers(0, 10**6))
            s = (t - T0) / S
            if device == "rtu2" and 100 <= s < 120:
                continue
            base = np.array([50 + 10 * np.sin(s / 10), 30.0, 6.0 if 140 <= s < 150 else 2.5,
                             20 + 5 * np.cos(s / 7), 25.0])[points]
            value = base * (1 + rng.normal(0, 0.01, len(points)))
            bad = device == "rtu1" and 40 <= s < 60
            yield Batch.of(source_ts=t, point=points, value=np.nan if bad else value,
                           quality=Quality.BAD if bad else Quality.GOOD)


def live_ticks(batches: list[Batch]) -> list[Tick]:
    """Ticks as the gateway closes them: by readings, and by its clock each second."""
    acc = TickAccumulator(len(TAGS), interval_ns=S, lateness_ns=int(SETTINGS.lateness * S))
    ticks: list[Tick] = []
    for batch in batches:
        ticks += acc.add(batch)
        ticks += acc.advance(int(batch.source_ts.max()) + CLOCK_DELAY)
    return ticks


def live_alarms(batches: list[Batch], settings: EngineSettings) -> tuple[list[Alarm], int]:
    """Alarms as the gateway's engine has them at the end, and the end of its last tick."""
    engine = Engine(POINTS, settings)
    alarms: dict[str, Alarm] = {}
    for batch in batches:
        for e in engine.process(batch) + engine.advance(int(batch.source_ts.max())
                                                        + CLOCK_DELAY):
            alarms[e.alarm.id] = e.alarm
    assert engine.ticks.current is not None and engine.ticks.late_total == 0
    return list(alarms.values()), engine.ticks.current * S


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Batch], Path]:
    """Three minutes of polls, and their recording."""
    batches = list(polls(180))
    path = tmp_path_factory.mktemp("parity") / "recording.csv"
    write_recording(path, TAGS, batches)
    return batches, path


# one line per chunk, chunks that cut ticks, one chunk
@pytest.mark.parametrize("chunk_bytes", [1, 2000, 4 << 20])
def test_replay_of_the_recording_sees_the_live_ticks(recorded: tuple[list[Batch], Path],
                                                     chunk_bytes: int) -> None:
    batches, path = recorded
    acc = TickAccumulator(len(TAGS), interval_ns=S, lateness_ns=int(SETTINGS.lateness * S))
    with RecordingReader(path, TAGS, chunk_bytes=chunk_bytes) as reader:
        replayed = [t for b in reader for t in acc.add(b)] + acc.finish()
    live = live_ticks(batches)
    assert len(live) >= 179 and len(replayed) >= len(live)
    for a, b in zip(live, replayed, strict=False):  # the ticks both closed
        assert (a.start_ns, a.end_ns) == (b.start_ns, b.end_ns)
        for name in ("count", "mean", "min", "max", "last", "last_ts", "bad"):
            # bit for bit: a mean one ulp off could tip a threshold
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name),
                                          err_msg=f"{name} of tick {a.start_ns}")


@pytest.mark.parametrize("settings", [SETTINGS, WINDOWS], ids=["ticks", "windows"])
@pytest.mark.parametrize("chunk_bytes", [1, 2000, 4 << 20])
def test_replay_of_the_recording_gives_the_live_alarms(recorded: tuple[list[Batch], Path],
                                                       chunk_bytes: int,
                                                       settings: EngineSettings) -> None:
    batches, path = recorded
    alarms, closed = live_alarms(batches, settings)
    with RecordingReader(path, TAGS, chunk_bytes=chunk_bytes) as reader:
        replayed, _ = run(Engine(POINTS, settings), reader, reader, progress=False)
    horizon = min(closed, last_tick_end(reader.stats.last_ns or 0, S))
    live = compared((encode(a) for a in alarms), horizon)
    assert {(a["kind"], a["tag"] or a["device"]) for a in live} == {
        ("comms", "rtu1"), ("comms", "rtu2"), ("limit", "a.level")}
    # the same is not enough: rtu1's alarm spans its failed reads (40-60 s) and the off-delay
    (rtu1,) = (a for a in alarms if a.kind == "comms" and a.device == "rtu1")
    assert rtu1.end_ns is not None
    assert (40 * S <= rtu1.start_ns - T0 <= 41 * S and rtu1.end_ns - T0 >= 62 * S), rtu1
    assert compared((encode(a) for a in replayed), horizon) == live


# --- the gateway on the live simulator, and a replay of what it stored ----------------------

SPEED = 60.0  # simulated seconds per second
FAULTS = [  # device, mode, start (simulated)
    ("water-dma1", "silent", "8min"),
    ("water-dma3", "exception", "16min"),
]
FAULT_MINUTES = 5
POLL = 0.2  # seconds
INTERVAL = 1.0  # seconds per tick: a tick holds about five polls of each device
WAIT_LIMIT = 180.0  # seconds the whole live run may take (a loaded machine slows the physics)


def parity_site(sim_site: Path, tmp_path: Path) -> Path:
    """The simulator's site polled every 0.2 s, ticks of 1 s, comms alarms clearing 2 s
    after the device answers again (so that the run sees them end)."""
    path = gateway_site(sim_site, tmp_path)
    raw = tomllib.loads(path.read_text())
    for device in raw["devices"]:
        device.update(poll_interval=POLL, timeout=0.5)
    # lateness: room for a loaded machine's stalls; a reading later than that is left out
    # live but not in a replay (the one way the two may differ, checked below)
    raw["anomaly"] = {"interval": INTERVAL, "lateness": 5.0, "off_delay": {"comms": 2.0}}
    path.write_text(tomli_w.dumps(raw))
    return path


def faults_over(site: Site, log: Path) -> bool:
    """The simulator has ended the last fault and each faulty device's comms alarm came and
    went."""
    last = f"device={FAULTS[-1][0]} "
    if not any("event=comms_state" in line and last in line and "state=ok" in line
               for line in log.read_text().splitlines()):
        return False
    store = AlarmStore(store_path(site.site.data_dir))
    try:
        comms = store.alarms(Filter(kind="comms"), limit=10_000)[0]
    finally:
        store.close()
    return all(any(a["device"] == device for a in comms)
               and all(a["end"] is not None for a in comms if a["device"] == device)
               for device, _, _ in FAULTS)


async def run_until_faults_over(site: Site, log: Path) -> None:
    stop = asyncio.Event()
    gateway = asyncio.create_task(serve(site, gateway=True, api=False, stop=stop))
    try:
        deadline = time.monotonic() + WAIT_LIMIT
        while not gateway.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if store_path(site.site.data_dir).exists() and faults_over(site, log):
                return
        raise AssertionError(f"the faults did not come and go within {WAIT_LIMIT} s: "
                             f"{gateway}\n{log.read_text()[-2000:]}")
    finally:
        stop.set()
        await gateway


@pytest.mark.slow
def test_gateway_live_and_replay_of_its_recording_give_the_same_alarms(
        tmp_path: Path, scenario_file: Callable[[dict], Path], cli: CliRun) -> None:
    scenario = scenario_file({
        "description": "comms faults minutes apart",
        "water": {"events": [{"kind": "comms", "target": device, "mode": mode, "start": start,
                              "duration": f"{FAULT_MINUTES}min"}
                             for device, mode, start in FAULTS]}})
    sim, sim_site = start_simulator(tmp_path, scenario=scenario, speed=SPEED)
    try:
        config = parity_site(sim_site, tmp_path)
        site = load_site(config)
        asyncio.run(run_until_faults_over(site, tmp_path / "simulator.log"))
    finally:
        sim.terminate()
        sim.wait(timeout=60)

    store = AlarmStore(store_path(site.site.data_dir))
    try:
        live = store.alarms(limit=10_000)[0]
    finally:
        store.close()
    engine = build_engine(site)
    load_state(engine, state_path(site))  # where the live engine stopped
    assert engine.ticks.current is not None
    late = engine.ticks.late_total
    tags = [p.tag for p in site.points]
    recording = tmp_path / "recording.csv"
    historian = EmbeddedHistorian(historian_path(site), tags, readonly=True)
    try:
        write_history(recording, historian, tags, 0, 2**62)
    finally:
        historian.close()
    _, stats = read_recording(recording, tags)
    assert stats.bad > 0, "the failed reads are in the recording"

    out = tmp_path / "alarms.jsonl"
    code, _, err = cli("replay", "--config", config, "--input", recording, "--out", out)
    assert code == 0, err
    assert "ticks of" not in err  # the site's 1 s ticks, not raised to the recording's step
    replayed = [json.loads(line) for line in out.read_text().splitlines()]

    interval = int(INTERVAL * S)
    horizon = min(engine.ticks.current * interval, last_tick_end(stats.last_ns or 0, interval))
    expected = compared(live, horizon)
    cleared = {a["device"] for a in expected if a["kind"] == "comms" and a["end"] is not None}
    assert cleared >= {device for device, _, _ in FAULTS}
    # a fault's comms alarm lasts about the fault (5 s here; longer on a loaded machine),
    # never ending before it starts (as when the ticks of the device's last answers, closed
    # after the alarm had raised, cleared it)
    for device, _, _ in FAULTS:
        last = max((a for a in live if a["device"] == device and a["kind"] == "comms"),
                   key=lambda a: parse_time(a["start"], 0))
        seconds = (parse_time(last["end"], 0) - parse_time(last["start"], 0)) / S
        assert seconds >= FAULT_MINUTES * 60 / SPEED / 2, last
    assert compared(replayed, horizon) == expected, (
        f"{late} readings came after their tick had closed live" if late else "")
