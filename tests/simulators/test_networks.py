"""Recordings of wntr networks the water simulator does not use (simulators/networks.py), and
the leak detector on one of them as `scadawatch replay` runs it: a small case (Net1, a few
days at 15 minutes, EPANET solves it in a fraction of a second); bench/networks.py has the full
tables."""

from __future__ import annotations

import csv
import dataclasses
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from anomaly.core.alarms import Alarm
from gateway.site.loader import load_site
from gateway.storage.recording import RecordingReader
from scadawatch.commands.replay import replay_engine
from scadawatch.commands.replay import run as replay
from simulators.export import export
from simulators.networks import NETWORKS, build, recording
from simulators.scenario import Event

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
DAY = 86400.0
STEP = 900.0
DAYS = 5.0
LEAK_AT = 3 * DAY + 6 * 3600.0  # Thursday 06:00: the evening's quiet hours are its first


def exported(tmp_path: Path, name: str, events: list[Event], days: float = DAYS,
             seed: int = 7) -> tuple[Path, np.ndarray]:
    """Export a run of network `name`; (its directory, its leaks' true flow per step)."""
    rec = build(name, events, seed=seed, start=START, step=STEP, days=days)
    out = tmp_path / name
    export(rec.site, out, days=days, step=STEP)
    return out, np.array(rec.model.leak_flow)


def replayed(directory: Path, outside: str | None = None) -> list[Alarm]:
    """The alarms of `scadawatch replay` over an export (with point `outside` in no zone)."""
    site = load_site(directory / "site.toml")
    if outside is not None:
        site = site.model_copy(update={"points": [
            dataclasses.replace(p, zone=None) if p.tag == outside else p
            for p in site.points]})
    with RecordingReader(directory, [p.tag for p in site.points]) as reader:
        batches = list(reader)
        engine = replay_engine(site, batches[0])
        alarms, _ = replay(engine, reader, batches, progress=False)
    return alarms


def test_a_recording_is_what_a_utility_measures(tmp_path: Path) -> None:
    out, _ = exported(tmp_path, "net1", [], days=2.0)
    doc = tomllib.loads((out / "site.toml").read_text(encoding="utf-8"))
    points = {p["tag"]: p for p in doc["points"]}
    assert points["net1.tank2.level"]["area"] == pytest.approx(186.1, abs=0.1)  # 50.5 ft
    assert points["net1.pump9.flow"]["role"] == "inflow"
    assert not any(p["kind"] == "flow" and "tank" in tag for tag, p in points.items())
    assert sum(p["kind"] == "pressure" for p in points.values()) == 5
    with (out / "readings.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    flow = np.array([float(r["net1.pump9.flow"]) for r in rows])
    running = np.array([float(r["net1.pump9.status"]) for r in rows])
    # the meter's low-flow cut-off: exactly 0 while its pump is off, never noise around 0
    assert (flow[running == 0] == 0).all() and (running == 0).any()
    assert (flow[running == 1] > 50).all()
    level = np.array([float(r["net1.tank2.level"]) for r in rows])
    assert 30 < level.min() < level.max() < 45.72  # Net1's controls: on below 33.5, off 42.7


def test_a_recording_starts_in_the_networks_daily_cycle(tmp_path: Path) -> None:
    """ky10 as its .inp starts drains its tanks to their floors over four days, and a
    junction then loses all pressure for hours every day: a recording starts after that, and
    its loggers stand where the pressure holds."""
    out, _ = exported(tmp_path, "ky10", [], days=6.0)
    with (out / "readings.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    pressures = np.array([[float(v) for k, v in r.items() if k.endswith(".pressure")]
                          for r in rows])
    assert pressures.shape[1] == 5 and pressures.min() > 0


def test_the_same_seed_gives_the_same_recording(tmp_path: Path) -> None:
    first = recording("net1", "faults", 3, START)
    again = recording("net1", "faults", 3, START)
    assert first.site.events == again.site.events
    assert {e.kind for e in first.site.events} == {"stuck", "spike", "drift", "dropout"}
    times = np.arange(0.0, 3 * DAY, STEP)
    assert np.array_equal(first.site.run(times), again.site.run(times), equal_nan=True)


def test_tuning_and_held_out_networks_are_apart() -> None:
    roles = {name: spec.role for name, spec in NETWORKS.items()}
    assert {n for n, r in roles.items() if r == "tuning"} == {"net1", "ky4", "net3"}
    assert {n for n, r in roles.items() if r == "held-out"} >= {"ky10", "anytown", "net6"}


@pytest.mark.parametrize(("what", "outside", "leaks"), [
    ("tank in the balance: pump switching and tank filling are no leak", None, 0),
    ("tank left out: its filling looks like a burst", "net1.tank2.level", None),
])
def test_pump_and_tank_operation_raise_no_leak(tmp_path: Path, what: str, outside: str | None,
                                               leaks: int | None) -> None:
    out, _ = exported(tmp_path, "net1", [])
    found = [a for a in replayed(out, outside) if a.kind == "leak"]
    if leaks is None:  # the balance without the tank: the case the storage term is for
        assert found, what
    else:
        assert len(found) == leaks, (what, [a.message for a in found])


def test_a_leak_is_found_with_its_size(tmp_path: Path) -> None:
    leak = Event("leak", "net1", LEAK_AT, DAYS * DAY - LEAK_AT, {"percent": 10.0})
    out, truth = exported(tmp_path, "net1", [leak])
    found = [a for a in replayed(out) if a.kind == "leak"]
    assert [a.zone for a in found] == ["net1"], [a.message for a in found]
    (alarm,) = found
    at = alarm.start_ns / 1e9 - START.timestamp()
    assert LEAK_AT < at < LEAK_AT + DAY
    recent = (truth[:, 0] > at - 2 * 3600) & (truth[:, 0] <= at)
    true = truth[recent, 1].mean()
    assert alarm.details["size_lps"] == pytest.approx(true, rel=0.5)
    assert f"leak of ~{alarm.details['size_lps']:g} L/s" in alarm.message
