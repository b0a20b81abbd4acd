"""The site's clock (`[anomaly] time_zone`, anomaly/core/clock.py): a water zone whose demand
follows local time is judged on local days and hours, through daylight-saving changes, and a
state learned on another clock is not resumed.

The recordings are test_anomaly_leak's zone (its `site()`: weekends running 1.5 h later and
taking 4 % more, as bench.networks makes them) on the local wall clock, read out at each UTC
5-minute step: a spring-forward day has no readings of its skipped hour, a fall-back day
those of its repeated hour twice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tomli_w
from conftest import CliRun
from test_anomaly_leak import DAY, HOUR, POINTS, S, run, site

from anomaly.core.clock import Clock, hour_of_day, is_weekend
from anomaly.core.points import PointTable
from anomaly.engine import Engine, EngineSettings, StateError
from anomaly.water.leak import Leak
from gateway.engine_carry import carry_over
from gateway.engine_state import load_state, save_state
from scadawatch.cli import EXIT_OK

STEP = 300


def local_recording(zone: str, monday: str, days: float,
                    **kwargs: float) -> tuple[np.ndarray, np.ndarray]:
    """`site(days, **kwargs)` from `monday` 00:00 on `zone`'s wall clock: (UTC ns, values)."""
    _, values = site(days, weekend_later=1.5, weekend_more=1.04, **kwargs)
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(monday)
    wall0 = int(start.replace(tzinfo=UTC).timestamp())
    utc = np.arange(int(start.replace(tzinfo=tz).timestamp()), wall0 + int(days * DAY) + DAY,
                    STEP)
    wall = np.array([int(datetime.fromtimestamp(u, tz).replace(tzinfo=UTC).timestamp())
                     for u in utc.tolist()])
    i = (wall - wall0) // STEP
    kept = (i >= 0) & (i < len(values))
    return utc[kept] * S, values[i[kept]]


def engine(zone: str, *, leak_only: bool = True) -> Engine:
    settings = EngineSettings(interval=STEP, lateness=0.0, time_zone=zone)
    return Engine(POINTS, settings, detectors=[Leak(PointTable(POINTS), settings)]
                  if leak_only else None)


def local(zone: str, ns: int) -> datetime:
    return datetime.fromtimestamp(ns / S, ZoneInfo(zone))


# Two weeks of a zone on its own clock. In UTC (main's clock, red before), Sydney's Saturday
# night fell on a UTC Friday and Monday's on a UTC Sunday: 8 false leaks over the fortnight
# (Sat 01:00 local onwards: "leak of ~22.5 L/s" on its later morning); Chicago's Friday
# evening on a UTC Saturday: 2.
@pytest.mark.parametrize(("zone", "monday"), [
    ("Australia/Sydney", "2026-01-05"),  # UTC+11 all month
    ("America/Chicago", "2026-01-05"),  # UTC-6
])
def test_a_zone_on_local_time_raises_no_leak_on_its_weekends(zone: str, monday: str) -> None:
    raised, _ = run(*local_recording(zone, monday, 15), engine=engine(zone))
    assert [(a.zone, local(zone, a.start_ns).strftime("%a %H:%M")) for a in raised] == []


@pytest.mark.parametrize(("zone", "what", "leak_at"), [
    ("Australia/Sydney", "6 % from the second Thursday 01:00", 10 * DAY + HOUR),
    ("Australia/Sydney", "6 % from the second Saturday 01:00", 12 * DAY + HOUR),
    ("America/Chicago", "6 % from the second Saturday 01:00", 12 * DAY + HOUR),
])
def test_a_leak_in_a_zone_on_local_time_is_found(zone: str, what: str, leak_at: float) -> None:
    times, values = local_recording(zone, "2026-01-05", 15, leak=1.2, leak_at=leak_at)
    raised, _ = run(times, values, engine=engine(zone))
    assert [a.zone for a in raised] == ["z"], what
    start = local(zone, raised[0].start_ns).replace(tzinfo=None)
    hours = (start - datetime(2026, 1, 5)).total_seconds() / HOUR - leak_at / HOUR
    assert 0 <= hours <= 12, what
    assert raised[0].details["size_lps"] == pytest.approx(1.2, rel=0.5), what


# Two weeks learned, then the change (a Sunday 02:00-03:00), then two days: every detector
# (leak, drift, sensor faults, tag anomaly, the zone model) raises nothing, the skipped hour's
# profile rows learning nothing that day, the repeated hour's judged against its own rows
# twice.
@pytest.mark.parametrize(("zone", "monday", "change"), [
    ("Australia/Sydney", "2026-09-21", "spring forward, Sunday 4 October"),
    ("Australia/Sydney", "2026-03-23", "fall back, Sunday 5 April"),
    ("America/Chicago", "2026-02-23", "spring forward, Sunday 8 March"),
    ("America/Chicago", "2026-10-19", "fall back, Sunday 1 November"),
])
def test_a_daylight_saving_change_raises_nothing(zone: str, monday: str, change: str) -> None:
    times, values = local_recording(zone, monday, 16)
    offsets = {local(zone, int(t)).utcoffset() for t in times}
    assert len(offsets) == 2, change  # the recording holds the change
    raised, _ = run(times, values, engine=engine(zone, leak_only=False))
    assert [(a.kind, a.tag or a.zone) for a in raised] == [], change


@pytest.mark.parametrize(("zone", "utc", "hour", "weekend"), [
    ("UTC", "2026-01-09T14:00:00", 14, False),
    ("Australia/Sydney", "2026-01-09T14:00:00", 1, True),  # Saturday 01:00 AEDT
    ("America/Chicago", "2026-01-10T03:00:00", 21, False),  # Friday 21:00 CST
    ("Asia/Kolkata", "2026-01-09T18:30:00", 0, True),  # UTC+05:30: Saturday 00:00
    # Sydney's fall back: 03:00 AEDT becomes 02:00 AEST at 16:00 UTC
    ("Australia/Sydney", "2026-04-04T15:59:59", 2, True),
    ("Australia/Sydney", "2026-04-04T16:00:00", 2, True),
    # Lord Howe's spring forward, +10:30 to +11 at 15:30 UTC: a change off the UTC hour
    ("Australia/Lord_Howe", "2026-10-03T15:29:59", 1, True),
    ("Australia/Lord_Howe", "2026-10-03T15:30:00", 2, True),
])
def test_the_clock_reads_local_hours_and_day_types(zone: str, utc: str, hour: int,
                                                   weekend: bool) -> None:
    ns = int(datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp()) * S
    clock = Clock(zone)
    assert (hour_of_day(clock.local(ns)), is_weekend(clock.local(ns))) == (hour, weekend)
    # a batch's timestamps alike, one lookup per distinct UTC hour
    many = ns + np.arange(-3, 4) * 600 * S
    assert clock.local_array(many).tolist() == [Clock(zone).local(int(t)) for t in many]


def test_a_state_learned_on_another_clock_is_refused(tmp_path: Path) -> None:
    """Like a state of another version: the gateway logs why and learns afresh."""
    times, values = local_recording("Australia/Sydney", "2026-01-05", 2)
    learned = engine("UTC")
    run(times, values, engine=learned)
    path = tmp_path / "engine.npz"
    save_state(learned, path)
    with pytest.raises(StateError, match=r"engine\.npz: learned in time zone UTC, not the "
                       r"site's Australia/Sydney"):
        load_state(engine("Australia/Sydney"), path)
    load_state(engine("UTC"), path)
    # a state from before the key was learned in UTC: read as such
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["engine/meta"][0]))
    del meta["time_zone"]
    arrays["engine/meta"] = np.array([json.dumps(meta)])
    engine("UTC").load_state(arrays)
    with pytest.raises(StateError, match="learned in time zone UTC"):
        engine("Australia/Sydney").load_state(arrays)


def test_a_site_file_reload_to_another_clock_carries_nothing() -> None:
    """The gateway's reload (gateway.engine_carry) learns afresh, as for another tick."""
    times, values = local_recording("Australia/Sydney", "2026-01-05", 2)
    learned = engine("UTC")
    run(times, values, engine=learned)
    assert carry_over(learned, POINTS, engine("UTC"), POINTS) == len(POINTS)
    assert carry_over(learned, POINTS, engine("Australia/Sydney"), POINTS) == 0


def test_replay_judges_on_the_site_files_clock(cli: CliRun, tmp_path: Path) -> None:
    """`scadawatch replay` end to end: the site file's `time_zone` reaches the engine."""
    zone = "Australia/Sydney"
    times, values = local_recording(zone, "2026-01-05", 15, leak=1.2, leak_at=12 * DAY + HOUR)
    points = [{"tag": p.tag, "device": "plc1", "address": 2 * i, "kind": p.kind, "unit": p.unit}
              | ({"zone": p.zone} if p.zone else {}) | ({"role": p.role} if p.role else {})
              for i, p in enumerate(POINTS)]
    config = tmp_path / "site.toml"
    config.write_text(tomli_w.dumps({
        "site": {"name": "a zone on Sydney's clock"},
        "devices": [{"name": "plc1", "protocol": "modbus-tcp", "host": "127.0.0.1"}],
        "points": points, "anomaly": {"interval": 300.0, "time_zone": zone}}))
    csv = tmp_path / "readings.csv"
    stamps = [datetime.fromtimestamp(t / S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in times]
    rows = [",".join([s, *(f"{v:g}" for v in row)]) for s, row in zip(stamps, values,
                                                                       strict=True)]
    csv.write_text("\n".join(["timestamp," + ",".join(p.tag for p in POINTS), *rows]) + "\n")
    out = tmp_path / "alarms.jsonl"
    code, _, err = cli("replay", "--config", config, "--input", csv, "--out", out)
    assert code == EXIT_OK, err
    alarms = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(a["kind"], a["zone"]) for a in alarms if a["kind"] == "leak"] == [("leak", "z")]
