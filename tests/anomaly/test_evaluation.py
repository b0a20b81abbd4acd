"""Scoring alarms against labels (anomaly/evaluation.py) and `scadawatch evaluate`, on
hand-made alarms and labels whose recall, precision and delay are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CliRun

from anomaly.core.alarms import Alarm
from anomaly.evaluation import Label, evaluate
from gateway.alarms.encoding import encode
from timegrammar.iso import iso

H = 3600 * 10**9
T0 = 1767571200 * 10**9  # 2026-01-05T00:00:00Z
ZONE_OF = {"dma1.inlet.flow": "dma1", "dma1.j1.pressure": "dma1", "dma2.inlet.flow": "dma2"}


def alarm(kind: str, start_h: float, *, tag: str | None = None, zone: str | None = None,
          tags: tuple[str, ...] = (), end_h: float | None = None) -> Alarm:
    return Alarm(id=f"{kind}:{tag or zone}:{start_h}", kind=kind, tag=tag, zone=zone,
                 start_ns=T0 + int(start_h * H), priority="low", message="",
                 end_ns=None if end_h is None else T0 + int(end_h * H),
                 tags=tags or ((tag,) if tag else ()))


def label(kind: str, location: str, start_h: float, end_h: float) -> Label:
    return Label(kind, location, T0 + int(start_h * H), T0 + int(end_h * H))


CASES = [  # name, alarms, labels, (recall, precision, median delay hours, false alarms)
    ("zone leak found by a zone alarm, 2 h late",
     [alarm("leak", 3, zone="dma1")], [label("leak", "dma1", 1, 10)], (1.0, 1.0, 2.0, 0)),
    ("tag label found through the alarm's zone (site map)",
     [alarm("stuck", 2, tag="dma1.j1.pressure", zone="dma1")],
     [label("stuck", "dma1.inlet.flow", 1, 3)], (1.0, 1.0, 1.0, 0)),
    ("wrong zone: missed, and the alarm is false",
     [alarm("leak", 3, zone="dma2")], [label("leak", "dma1", 1, 10)], (0.0, 0.0, None, 1)),
    ("wrong kind: missed, but not a false alarm",
     [alarm("limit", 3, tag="dma1.j1.pressure", zone="dma1")], [label("leak", "dma1", 1, 10)],
     (0.0, 1.0, None, 0)),
    ("comms label found by a dropout alarm",
     [alarm("dropout", 1.5, tag="dma2.inlet.flow", zone="dma2")],
     [label("comms", "dma2.inlet.flow", 1, 2)], (1.0, 1.0, 0.5, 0)),
    ("device comms alarm covers its tags",
     [alarm("comms", 1.25, tags=("dma1.inlet.flow", "dma2.inlet.flow"))],
     [label("comms", "dma1.inlet.flow", 1, 2), label("comms", "dma2.inlet.flow", 1, 2)],
     (1.0, 1.0, 0.25, 0)),
    ("within grace after the end, not beyond",
     [alarm("spike", 2.5, tag="dma1.inlet.flow"), alarm("spike", 8, tag="dma2.inlet.flow")],
     [label("spike", "dma1.inlet.flow", 1, 2), label("spike", "dma2.inlet.flow", 5, 6)],
     (0.5, 0.5, 1.5, 1)),
    ("slack before the start",
     [alarm("drift", 0.95, tag="dma1.inlet.flow"), alarm("drift", 0.5, tag="dma2.inlet.flow")],
     [label("drift", "dma1.inlet.flow", 1, 2), label("drift", "dma2.inlet.flow", 1, 2)],
     (0.5, 0.5, -0.05, 1)),
    ("anomaly labels are not scored, and explain alarms",
     [alarm("limit", 6.5, tag="dma1.j1.pressure", zone="dma1")],
     [label("anomaly", "dma1.j1.pressure", 6, 7)], (None, 1.0, None, 0)),
    ("alarm under a line's name",
     [alarm("line_outage", 10.1, tag="feeder1.line3_8.current")],
     [label("line_outage", "feeder1.line3_8", 10, 14)], (1.0, 1.0, 0.1, 0)),
    ("median delay over three leaks; a repeat alarm is not false",
     [alarm("leak", 2, zone="dma1"), alarm("leak", 4, zone="dma1"),
      alarm("leak", 28, zone="dma1"), alarm("leak", 58, zone="dma2")],
     [label("leak", "dma1", 1, 10), label("leak", "dma1", 24, 30),
      label("leak", "dma2", 48, 60)],
     (1.0, 1.0, 4.0, 0)),
]


@pytest.mark.parametrize(("alarms", "labels", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_scores(alarms: list[Alarm], labels: list[Label], expected: tuple) -> None:
    result = evaluate(alarms, labels, slack_ns=H // 10, grace_ns=H, zone_of=ZONE_OF)
    recall, precision, delay_h, false = expected
    o = result.overall
    assert o.recall == (None if recall is None else pytest.approx(recall))
    assert o.precision == pytest.approx(precision)
    assert o.median_delay_s == (None if delay_h is None else pytest.approx(delay_h * 3600))
    assert o.false_alarms == false
    if recall and precision:
        assert o.f1 == pytest.approx(2 * recall * precision / (recall + precision))


def test_false_alarms_per_zone_day_and_per_kind() -> None:
    """Two zones, four days, two alarms matching nothing: 0.25 false alarms per zone-day."""
    alarms = [alarm("leak", 3, zone="dma1"), alarm("stuck", 30, tag="dma2.inlet.flow",
                                                    zone="dma2"),
              alarm("spike", 50, tag="dma1.inlet.flow", zone="dma1")]
    result = evaluate(alarms, [label("leak", "dma1", 1, 10)], zone_of=ZONE_OF,
                      span_ns=(T0, T0 + 96 * H))
    assert (result.zones, result.days) == (2, 4.0)
    assert result.overall.false_per_zone_day == pytest.approx(0.25)
    by_kind = {s.kind: s for s in result.kinds}
    assert (by_kind["leak"].recall, by_kind["leak"].false_alarms) == (1.0, 0)
    assert (by_kind["stuck"].labels, by_kind["stuck"].false_alarms) == (0, 1)
    assert by_kind["spike"].false_per_zone_day == pytest.approx(0.125)
    assert {a.id for a in result.false} == {alarms[1].id, alarms[2].id}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """alarms.jsonl, labels.csv, a site and its recording: 1 of 2 leaks found, 1 false."""
    alarms = [alarm("leak", 2, zone="dma1", end_h=5), alarm("stuck", 20, tag="dma2.inlet.flow",
                                                            zone="dma2")]
    (tmp_path / "alarms.jsonl").write_text("".join(json.dumps(encode(a)) + "\n"
                                                   for a in alarms))
    (tmp_path / "labels.csv").write_text(
        "kind,location,start,end\n"
        f"leak,dma1,{iso(T0 + H)},{iso(T0 + 10 * H)}\n"
        f"leak,dma2,{iso(T0 + 30 * H)},{iso(T0 + 40 * H)}\n")
    (tmp_path / "site.toml").write_text('[site]\nname = "x"\ndata_dir = "d"\n' + "".join(
        f'[[points]]\ntag = "{tag}"\nzone = "{zone}"\n' for tag, zone in ZONE_OF.items()))
    rows = [f"{iso(T0 + k * H // 4)},{k % 7},{10 + k % 3},{k % 5}" for k in range(48 * 4)]
    (tmp_path / "readings.csv").write_text(
        "timestamp," + ",".join(ZONE_OF) + "\n" + "\n".join(rows) + "\n")
    return {name.split(".")[0]: tmp_path / name
            for name in ("alarms.jsonl", "labels.csv", "site.toml", "readings.csv")}


def test_evaluate_command_prints_a_table_per_kind(cli: CliRun, files: dict[str, Path]) -> None:
    code, out, err = cli("evaluate", "--alarms", files["alarms"], "--labels", files["labels"],
                         "--config", files["site"], "--input", files["readings"])
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:4]}
    assert rows["leak"][:7] == ["leak", "2", "1", "0.50", "1", "0", "1.00"]
    assert rows["stuck"][4:6] == ["1", "1"]
    assert rows["all"][3] == "0.50" and rows["all"][6] == "0.50"
    assert "zones 2, days 1.99 (recording)" in out
    assert "missed: leak at dma2 from 2026-01-06T06:00:00Z" in out


def test_evaluate_json_for_machines(cli: CliRun, files: dict[str, Path]) -> None:
    code, out, _ = cli("evaluate", "--alarms", files["alarms"], "--labels", files["labels"],
                       "--config", files["site"], "--grace", "30min", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["overall"]["recall"] == 0.5 and doc["overall"]["precision"] == 0.5
    assert doc["overall"]["median_delay_s"] == 3600.0
    assert doc["grace_s"] == 1800.0
    assert [k["kind"] for k in doc["kinds"]] == ["leak", "stuck"]


def test_plot_writes_a_png(cli: CliRun, files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "eval.png"
    code, _, err = cli("evaluate", "--alarms", files["alarms"], "--labels", files["labels"],
                       "--config", files["site"], "--input", files["readings"], "--plot", out)
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("alarms", '{"id": "a", "kind": "leak", "start": "2026-01-05T00:00:00Z"}\nnot json\n',
     "alarms.jsonl: line 2: not JSON"),
    ("alarms", '{"id": "a", "kind": "leak"}\n', "alarms.jsonl: line 1: no start"),
    ("alarms", '{"id": "a", "kind": "leak", "start": "yesterday"}\n',
     "alarms.jsonl: line 1, start: 'yesterday' is not a time"),
    ("labels", "kind,where,start,end\n", "labels.csv: row 1: no column location"),
    ("labels", "kind,location,start,end\nleak,dma1,2026-01-05T00:00:00Z,soon\n",
     "labels.csv: row 2, column end"),
    ("labels", "kind,location,start,end\nleak,dma1,2026-01-05T02:00:00Z,2026-01-05T01:00:00Z\n",
     "labels.csv: row 2, column end: 2026-01-05T01:00:00Z is before the start"),
    ("labels", "", "labels.csv: the file is empty"),
])
def test_bad_alarm_and_label_files_are_named(cli: CliRun, files: dict[str, Path], name: str,
                                             content: str, fragment: str) -> None:
    files[name].write_text(content)
    code, _, err = cli("evaluate", "--alarms", files["alarms"], "--labels", files["labels"])
    assert code == 2 and fragment in err and "Traceback" not in err


def test_plot_needs_the_recording(cli: CliRun, files: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = cli("evaluate", "--alarms", files["alarms"], "--labels", files["labels"],
                       "--plot", tmp_path / "x.png")
    assert code == 2 and "--plot needs --input" in err
