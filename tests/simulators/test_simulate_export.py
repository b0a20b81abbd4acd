"""`scadawatch simulate --export`: recordings, labels and site file, on the real simulators."""

from __future__ import annotations

import csv
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from gateway.site.loader import load_site
from scadawatch.ports import free_port
from simulators.export import export
from simulators.scenario import parse_duration, scenario_dir
from simulators.site import SimulatedSite, build_site

START = datetime(2026, 1, 5, tzinfo=UTC)
STEP = 1800.0  # 30 min: few physics steps, still several readings in every fault window
HOURS = 6
SITES = ("water", "grid")
LABEL_KIND = {"stuck": "stuck", "spike": "spike", "drift": "drift", "dropout": "dropout",
              "noise": "anomaly", "comms": "comms", "leak": "leak"}
SPIKE = 250.0  # magnitude, in the tag's unit
DRIFT = 12.0  # per hour


def fault_events(site: SimulatedSite) -> list[dict]:
    """One of each sensor fault on distinct analog tags, and a silent Modbus unit.

    Times are whole hours after the start, so expected values need no parsing.
    """
    comms_device = list(site.devices)[-1]
    analog = [s.tag for s in site.signals if s.kind != "status" and s.device != comms_device]
    table = [  # kind, target, start hour, hours, parameters
        ("stuck", analog[0], 1, 2, {}),
        ("spike", analog[1], 1, 2, {"magnitude": SPIKE, "count": 2}),
        ("drift", analog[2], 1, 2, {"rate": DRIFT}),
        ("dropout", analog[3], 2, 1, {}),
        ("noise", analog[4], 1, 2, {"factor": 10}),
        ("comms", comms_device, 3, 1, {"mode": "silent"}),
    ]
    if site.name == "water":
        table.append(("leak", site.zones[0], 2, 3, {"size": 5.0}))
    return [{"kind": kind, "target": target, "start": f"{start:02d}:00", "duration": f"{n}h",
             "hours": (start, n), **params} for kind, target, start, n, params in table]


def scenario_doc(name: str, events: list[dict]) -> dict:
    return {name: {"events": [{k: v for k, v in e.items() if k != "hours"} for e in events]}}


def read_readings(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(timestamps, tags, values) of a readings.csv; an empty cell reads as NaN."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    values = np.array([[float(c) if c else np.nan for c in r[1:]] for r in rows[1:]])
    return [r[0] for r in rows[1:]], rows[0][1:], values


def read_labels(path: Path) -> list[tuple[str, ...]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["kind", "location", "start", "end"]
    return [tuple(r) for r in rows[1:]]


@dataclass(frozen=True)
class Recording:
    out: Path  # readings.csv, labels.csv, site.toml
    scenario: Path
    events: list[dict]
    site: SimulatedSite  # the site that was exported


@pytest.fixture(scope="module")
def plain_site() -> Callable[[str], SimulatedSite]:
    """A site without events, built once per module: its tags, devices and zones."""
    done: dict[str, SimulatedSite] = {}

    def get(name: str) -> SimulatedSite:
        if name not in done:
            done[name] = build_site(name, "normal", seed=1, start=START, step=STEP)
        return done[name]

    return get


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory,
               plain_site: Callable[[str], SimulatedSite]) -> Callable[..., Recording]:
    """Export a site once per (site, faults, seed) for the whole module."""
    done: dict[tuple[str, bool, int], Recording] = {}

    def get(name: str, *, faults: bool = True, seed: int = 1) -> Recording:
        key = (name, faults, seed)
        if key not in done:
            base = tmp_path_factory.mktemp(f"{name}-{int(faults)}-{seed}")
            events = fault_events(plain_site(name))
            if not faults:  # the same physics without sensor or comms faults: the reference
                events = [e for e in events if e["kind"] == "leak"]
            scenario = base / "scenario.toml"
            scenario.write_text(tomli_w.dumps(scenario_doc(name, events)))
            site = build_site(name, scenario, seed=seed, start=START, step=STEP)
            export(site, base / "out", days=HOURS / 24, step=STEP)
            done[key] = Recording(base / "out", scenario, events, site)
        return done[key]

    return get


@pytest.mark.parametrize("name", SITES)
def test_labels_match_scenario_file(recordings: Callable[..., Recording], name: str) -> None:
    rec = recordings(name)
    points = load_site(rec.out / "site.toml").points
    expected = []
    for e in rec.events:
        begin = START + timedelta(hours=e["hours"][0])
        span = (f"{begin:%Y-%m-%dT%H:%M:%SZ}",
                f"{begin + timedelta(hours=e['hours'][1]):%Y-%m-%dT%H:%M:%SZ}")
        where = ([p.tag for p in points if p.device == e["target"]] if e["kind"] == "comms"
                 else [e["target"]])
        expected += [(LABEL_KIND[e["kind"]], w, *span) for w in where]
    assert sorted(read_labels(rec.out / "labels.csv")) == sorted(expected)


SHIPPED = [("comms-faults", "water"), ("comms-faults", "grid"), ("grid-events", "grid"),
           ("leak", "water"), ("sensor-faults", "water"), ("sensor-faults", "grid")]
PHYSICS_LABEL = {"leak": "leak", "burst": "leak", "pump_trip": "anomaly",
                 "voltage_sag": "voltage_sag", "voltage_swell": "voltage_swell",
                 "overload": "overload", "line_outage": "line_outage", "frequency": "frequency"}


def _expected_location(e: dict, site: SimulatedSite) -> list[str]:
    if e["kind"] == "comms":
        return [s.tag for s in site.signals if s.device == e["target"]]
    if e["kind"] == "line_outage":  # a line's tag prefix starts with its feeder
        return [e["target"].split(".")[0]]
    if e["kind"] == "frequency" and e["target"] == "grid":
        return ["substation.frequency"]
    return [e["target"]]


@pytest.mark.parametrize(("scenario", "name"), SHIPPED, ids=["-".join(x) for x in SHIPPED])
def test_shipped_scenarios_label_every_event(scenario: str, name: str) -> None:
    site = build_site(name, scenario, seed=1, start=START, step=STEP)
    events = tomllib.loads((scenario_dir() / f"{scenario}.toml").read_text())[name]["events"]
    expected = []
    for e in events:
        begin = START + timedelta(seconds=parse_duration(e["start"]))
        end = begin + timedelta(seconds=parse_duration(e["duration"]))
        kind = {**LABEL_KIND, **PHYSICS_LABEL}[e["kind"]]
        expected += [(kind, where, f"{begin:%Y-%m-%dT%H:%M:%SZ}", f"{end:%Y-%m-%dT%H:%M:%SZ}")
                     for where in _expected_location(e, site)]
    assert sorted(site.labels()) == sorted(expected)


@pytest.mark.parametrize("name", SITES)
def test_same_seed_same_bytes_other_seed_differs(recordings: Callable[..., Recording],
                                                 tmp_path: Path, name: str) -> None:
    rec = recordings(name)
    again = build_site(name, rec.scenario, seed=1, start=START, step=STEP)
    export(again, tmp_path, days=HOURS / 24, step=STEP)
    for file in ("readings.csv", "labels.csv", "site.toml"):
        assert (tmp_path / file).read_bytes() == (rec.out / file).read_bytes(), file
    other = recordings(name, seed=2).out / "readings.csv"
    assert other.read_bytes() != (rec.out / "readings.csv").read_bytes()


@pytest.mark.parametrize("name", SITES)
def test_site_file_loads_in_gateway_and_names_every_column(
        recordings: Callable[..., Recording], name: str) -> None:
    out = recordings(name).out
    site = load_site(out / "site.toml")
    _, tags, values = read_readings(out / "readings.csv")
    assert [p.tag for p in site.points] == tags
    assert values.shape == (HOURS * 3600 / STEP, len(tags))
    assert {p.device for p in site.points} == {d.name for d in site.devices}
    assert all(d.protocol == "modbus-tcp" and d.port == 5020 for d in site.devices)
    assert len({d.unit for d in site.devices}) == len(site.devices)
    assert all(p.node == f"nsu=urn:scadawatch:sim:{name};s={p.tag}" for p in site.points)
    assert all(p.address is not None for p in site.points)


# Each check gets one tag's column with and without the fault, the fault's window, the event
# and the sensor's resolution (both columns are quantised, so differences carry that error).
Check = Callable[[np.ndarray, np.ndarray, np.ndarray, dict, float], None]


def _check_stuck(faulty: np.ndarray, clean: np.ndarray, active: np.ndarray, e: dict,
                 res: float) -> None:
    assert np.all(faulty[active] == clean[active][0])


def _check_spike(faulty: np.ndarray, clean: np.ndarray, active: np.ndarray, e: dict,
                 res: float) -> None:
    jump = np.abs(faulty[active] - clean[active])
    assert np.count_nonzero(jump > SPIKE / 2) == e["count"]
    assert np.allclose(jump[jump > SPIKE / 2], SPIKE, atol=res + 1e-3 * SPIKE)


def _check_drift(faulty: np.ndarray, clean: np.ndarray, active: np.ndarray, e: dict,
                 res: float) -> None:
    offset = faulty[active] - clean[active]
    expected = DRIFT * np.arange(active.sum()) * STEP / 3600
    assert np.allclose(offset, expected, atol=res + 1e-5 * np.abs(clean).max())


def _check_dropout(faulty: np.ndarray, clean: np.ndarray, active: np.ndarray, e: dict,
                   res: float) -> None:
    assert np.all(np.isnan(faulty[active]))
    assert not np.any(np.isnan(clean[active]))


def _check_noise(faulty: np.ndarray, clean: np.ndarray, active: np.ndarray, e: dict,
                 res: float) -> None:
    assert np.count_nonzero(faulty[active] != clean[active]) >= active.sum() // 2


CHECKS: dict[str, Check] = {"stuck": _check_stuck, "spike": _check_spike,
                            "drift": _check_drift, "dropout": _check_dropout,
                            "noise": _check_noise}


@pytest.mark.parametrize("kind", [*CHECKS, "comms"])
@pytest.mark.parametrize("name", SITES)
def test_faults_show_in_export(recordings: Callable[..., Recording], name: str,
                               kind: str) -> None:
    """Against the same run without faults: the fault's effect in its window, none outside."""
    rec = recordings(name)
    stamps, tags, faulty = read_readings(rec.out / "readings.csv")
    _, _, clean = read_readings(recordings(name, faults=False).out / "readings.csv")
    times = np.array([(datetime.fromisoformat(s) - START).total_seconds() for s in stamps])
    event = next(e for e in rec.events if e["kind"] == kind)
    begin, n = (h * 3600 for h in event["hours"])
    active = (times >= begin) & (times < begin + n)
    if kind == "comms":
        columns = [i for i, s in enumerate(rec.site.signals) if s.device == event["target"]]
        assert np.all(np.isnan(faulty[np.ix_(active, columns)]))
    else:
        columns = [tags.index(event["target"])]
        res = rec.site.signals[columns[0]].resolution
        CHECKS[kind](faulty[:, columns[0]], clean[:, columns[0]], active, event, res)
    outside = np.ix_(~active, columns)
    np.testing.assert_array_equal(faulty[outside], clean[outside])


def test_export_command_records_a_window_of_the_scenario(
        cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    """4.5 h of comms-faults at the default step: feeder2 silent 00:15-00:45, the plant unit
    answering with exceptions from 04:00, after the recording's end at 04:30."""
    out = tmp_path / "rec"
    code, said, err = cli("simulate", "grid", "--scenario", "comms-faults", "--export", out,
                          "--days", "0.1875")
    assert code == 0, err
    assert str(out) in said
    stamps, tags, values = read_readings(out / "readings.csv")
    assert stamps == [f"2026-01-05T{m // 60:02d}:{m % 60:02d}:00Z" for m in range(0, 270, 15)]
    points = load_site(out / "site.toml").points
    unit = {d: [p.tag for p in points if p.device == d] for d in ("grid-feeder2", "grid-plant")}
    day = "2026-01-05T"
    assert sorted(read_labels(out / "labels.csv")) == sorted(
        [("comms", t, f"{day}00:15:00Z", f"{day}00:45:00Z") for t in unit["grid-feeder2"]]
        + [("comms", t, f"{day}04:00:00Z", f"{day}04:30:00Z") for t in unit["grid-plant"]])
    for device, rows in (("grid-feeder2", [1, 2]), ("grid-plant", [16, 17])):
        missing = np.isnan(values[:, [tags.index(t) for t in unit[device]]])
        assert np.array_equal(np.flatnonzero(missing.all(axis=1)), rows)
        assert np.array_equal(np.flatnonzero(missing.any(axis=1)), rows)


def test_serve_command_writes_the_site_file_first(cli: Callable[..., tuple[int, str, str]],
                                                  tmp_path: Path) -> None:
    ports = free_port(), free_port(), free_port()
    path = tmp_path / "etc" / "water.toml"
    code, out, err = cli("simulate", "water", "--write-site", path, "--duration", "0.5",
                         "--modbus-port", ports[0], "--opcua-port", ports[1],
                         "--iec104-port", ports[2])
    assert code == 0, err
    assert str(path) in out
    site = load_site(path)
    assert {(d.host, d.port) for d in site.devices} == {("127.0.0.1", ports[0])}
    assert f"opc.tcp://127.0.0.1:{ports[1]}/scadawatch/water" in path.read_text()
    assert f"IEC 104 on 127.0.0.1:{ports[2]}" in path.read_text()


def _event(**fields: object) -> dict:
    event = {"kind": "stuck", "target": "{tag}", "start": "01:00", "duration": "1h"}
    return {"water": {"events": [{**event, **fields}]}}


BAD_SCENARIOS = [
    # (id, scenario doc or TOML text, key the message must name)
    ("malformed-toml", "[[water.events]\nkind = ", ""),
    ("unknown-kind", _event(kind="flood"), "water.events[0].kind"),
    ("unknown-tag", _event(target="dma9.no.such.tag"), "water.events[0].target"),
    ("unknown-zone", _event(kind="leak", target="dma99", size=5.0), "water.events[0].target"),
    ("unknown-device", _event(kind="comms", target="water-nowhere"), "water.events[0].target"),
    ("bad-comms-mode", _event(kind="comms", target="{device}", mode="sulky"),
     "water.events[0].mode"),
    ("impossible-time", _event(start="25:99"), "water.events[0].start"),
    ("negative-duration", _event(duration=-3600), "water.events[0].duration"),
    ("beyond-a-year", _event(start="400d"), "water.events[0].start"),
    ("bad-clock", 'clock = "lunar"\n[water]\nevents = []\n', "clock"),
    ("overlapping-faults", {"water": {"events": [
        {"kind": "stuck", "target": "{tag}", "start": "01:00", "duration": "2h"},
        {"kind": "dropout", "target": "{tag}", "start": "02:00", "duration": "1h"}]}},
     "water.events[1].start"),
]


@pytest.fixture(scope="module")
def water_names(plain_site: Callable[[str], SimulatedSite]) -> dict[str, str]:
    site = plain_site("water")
    return {"tag": site.tags[0], "device": next(iter(site.devices))}


def _fill(doc: dict | str, names: dict[str, str]) -> dict | str:
    if isinstance(doc, str):
        return doc
    return {site: {"events": [{k: v.format(**names) if isinstance(v, str) else v
                               for k, v in e.items()} for e in t["events"]]}
            for site, t in doc.items()}


@pytest.mark.parametrize(("doc", "key"), [b[1:] for b in BAD_SCENARIOS],
                         ids=[b[0] for b in BAD_SCENARIOS])
def test_bad_scenario_exits_2_naming_file_and_key(
        cli: Callable[..., tuple[int, str, str]], scenario_file: Callable[..., Path],
        water_names: dict[str, str], tmp_path: Path, doc: dict | str, key: str) -> None:
    path = scenario_file(_fill(doc, water_names))
    code, _, err = cli("simulate", "water", "--scenario", path, "--export", tmp_path / "out")
    assert code == 2
    assert f"{path}: {key}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


BAD_ARGS = [
    # (id, extra arguments, what the message must name)
    ("unknown-scenario", ["--scenario", "no-such-scenario"], "no-such-scenario: unknown scenario"),
    ("step-not-minutes", ["--step", "90s"], "--step '90s'"),
    ("step-gibberish", ["--step", "soon"], "--step 'soon'"),
    ("start-not-iso", ["--start", "yesterday"], "--start 'yesterday'"),
    ("negative-days", ["--days", "-1"], "--days -1"),
    ("negative-serving-time", ["--duration", "-5"], "--duration: '-5' is not a duration"),
]


@pytest.mark.parametrize(("argv", "says"), [b[1:] for b in BAD_ARGS], ids=[b[0] for b in BAD_ARGS])
def test_bad_arguments_exit_2(cli: Callable[..., tuple[int, str, str]], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], argv: list[str],
                              says: str) -> None:
    try:
        code, _, err = cli("simulate", "water", "--export", tmp_path / "out", *argv)
    except SystemExit as e:  # argparse refusing an argument (a duration): its own exit
        code, err = e.code, capsys.readouterr().err
    assert code == 2
    assert says in err
    assert "Traceback" not in err


def test_bad_scenario_through_a_real_process(scenario_file: Callable[..., Path],
                                            tmp_path: Path) -> None:
    path = scenario_file(_event(start="2d 25:99"))
    proc = subprocess.run(
        [sys.executable, "-m", "scadawatch", "simulate", "water", "--scenario", str(path),
         "--export", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert f"{path}: water.events[0].start" in proc.stderr
    assert "Traceback" not in proc.stderr
